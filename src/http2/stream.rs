//! One HTTP/2 stream as the worker thread that runs its application uses it: the request
//! body as the application reads it, the response as the peer's flow-control window allows.
//!
//! A worker waits (the GIL released by its caller) on a waker that unparks it; `h2` calls it
//! when data, window or a reset arrives, which the connection's thread (server/http2.rs) reads
//! from the socket. What a worker sends or consumes wakes that thread in turn, through the
//! waker it left with the connection.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::HeaderValue;

use super::file_body::Handoff;
use super::head::Checked;
use super::session::Client;
use crate::conn::BufferedBody;
use crate::http::date;
use crate::http::error::HttpError;
use crate::http::response::AppHead;

/// One stream, waiting for a worker to run its application.
pub struct StreamJob {
    pub request: NewStream,
    pub client: Arc<Client>,
    /// Counts the stream among the server's in progress until the job is done.
    pub in_progress: InProgress,
    /// The same among its connection's (an application call may still send on it).
    pub in_session: InProgress,
    /// Where a file body goes for the connection's thread to send (a `--static` file).
    pub files: Handoff,
}

/// A stream whose request is complete enough for the application: its head checked, its
/// body collected (or to be read as the application asks).
pub struct NewStream {
    pub checked: Checked,
    pub body: Incoming,
    pub respond: SendResponse<Bytes>,
}

/// Where a stream's request body comes from.
pub enum Incoming {
    /// Collected before the application runs (http2/session.rs), in memory or spooled.
    Collected(BufferedBody),
    /// Read from the stream as the application reads (`Expect: 100-continue`, buffering
    /// off, or no body).
    Streamed(RequestBody),
}

/// A stream queued or running, counted in the gauge it holds until dropped.
pub struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    pub fn count(gauge: &Arc<AtomicUsize>) -> InProgress {
        gauge.fetch_add(1, Ordering::AcqRel);
        InProgress(Arc::clone(gauge))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wakes a parked worker thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `poll` until it is ready or `deadline` passes (`None`), parking the thread between
/// polls.
pub fn wait_for<T>(
    deadline: Instant,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Option<T> {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = poll(&mut cx) {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Why a stream's body or response cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The peer reset the stream or the connection is gone.
    Gone,
    /// Nothing moved before the deadline.
    TimedOut,
}

/// The request body, read as the application asks for it. Window is given back to the peer
/// as each DATA frame is taken, so the peer sends at most the stream window (src/http2/session.rs)
/// ahead of the application.
pub struct RequestBody {
    recv: RecvStream,
    chunk: Bytes,
    /// Bytes taken so far.
    pub received: u64,
}

impl RequestBody {
    pub fn new(recv: RecvStream) -> RequestBody {
        RequestBody {
            recv,
            chunk: Bytes::new(),
            received: 0,
        }
    }

    /// Appends up to `max` body bytes to `out`, waiting up to `deadline` for some; `Ok(0)` is
    /// the end of the body.
    pub fn read(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        deadline: Instant,
    ) -> Result<usize, StreamEnd> {
        if self.chunk.is_empty() {
            if self.recv.is_end_stream() {
                return Ok(0);
            }
            let next =
                wait_for(deadline, |cx| self.recv.poll_data(cx)).ok_or(StreamEnd::TimedOut)?;
            match next {
                None => return Ok(0),
                Some(Err(_)) => return Err(StreamEnd::Gone),
                Some(Ok(data)) => {
                    // Given back at once: the application holds at most this one frame.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.received += data.len() as u64;
                    self.chunk = data;
                }
            }
        }
        let n = self.chunk.len().min(max);
        out.extend_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The response side of a stream.
pub struct Response {
    respond: SendResponse<Bytes>,
    body: Option<SendStream<Bytes>>,
}

impl Response {
    pub fn new(respond: SendResponse<Bytes>) -> Response {
        Response {
            respond,
            body: None,
        }
    }

    /// The peer reset the stream (checked without waiting).
    pub fn is_reset(&mut self) -> bool {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polled = match &mut self.body {
            Some(body) => body.poll_reset(&mut cx),
            None => self.respond.poll_reset(&mut cx),
        };
        polled.is_ready()
    }

    /// `100 Continue`, before the body is read (RFC 9110 §10.1.1).
    pub fn send_continue(&mut self) -> Result<(), StreamEnd> {
        let head = http::Response::builder()
            .status(100)
            .body(())
            .map_err(|_| StreamEnd::Gone)?;
        self.respond
            .send_informational(head)
            .map_err(|_| StreamEnd::Gone)
    }

    /// Sends the response head; `end`: there is no body.
    pub fn send_head(&mut self, head: http::Response<()>, end: bool) -> Result<(), StreamEnd> {
        let body = self
            .respond
            .send_response(head, end)
            .map_err(|_| StreamEnd::Gone)?;
        if !end {
            self.body = Some(body);
        }
        Ok(())
    }

    /// Sends a piece of the body, after waiting (up to `deadline`) until the stream may
    /// buffer more: the peer's window and `max_send_buffer_size` bound what waits in memory.
    pub fn send(&mut self, data: Bytes, end: bool, deadline: Instant) -> Result<(), StreamEnd> {
        let Some(body) = self.body.as_mut() else {
            return Err(StreamEnd::Gone);
        };
        if !data.is_empty() {
            body.reserve_capacity(data.len());
            if body.capacity() == 0 {
                let polled = wait_for(deadline, |cx| loop {
                    match body.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => continue,
                        Poll::Ready(Some(Ok(_))) => return Poll::Ready(Ok(())),
                        Poll::Ready(Some(Err(_)) | None) => {
                            return Poll::Ready(Err(StreamEnd::Gone))
                        }
                        Poll::Pending => {
                            return match body.poll_reset(cx) {
                                Poll::Ready(_) => Poll::Ready(Err(StreamEnd::Gone)),
                                Poll::Pending => Poll::Pending,
                            }
                        }
                    }
                });
                polled.ok_or(StreamEnd::TimedOut)??;
            }
        }
        body.send_data(data, end).map_err(|_| StreamEnd::Gone)?;
        if end {
            self.body = None;
        }
        Ok(())
    }

    /// Queues a piece of the body without waiting: `h2` holds it until the peer's window
    /// takes it (the HTTP/2 thread writes it). For bodies already in memory (a list result):
    /// the worker is free at once, whatever the peer's pace.
    pub fn send_now(&mut self, data: Bytes, end: bool) -> Result<(), StreamEnd> {
        let Some(body) = self.body.as_mut() else {
            return Err(StreamEnd::Gone);
        };
        body.send_data(data, end).map_err(|_| StreamEnd::Gone)?;
        if end {
            self.body = None;
        }
        Ok(())
    }

    /// An error the server answers itself (a plain-text body, as for HTTP/1.1), without
    /// waiting; `head_only`: a HEAD request's answer, without the body.
    pub fn answer(&mut self, err: HttpError, head_only: bool) {
        let head = http::Response::builder()
            .status(err.code())
            .header(http::header::CONTENT_TYPE, "text/plain")
            .header(http::header::CONTENT_LENGTH, err.body.len())
            .body(());
        let Ok(head) = head else {
            return;
        };
        let empty = err.body.is_empty() || head_only;
        if self.send_head(head, empty).is_ok() && !empty {
            let _ = self.send_now(Bytes::from_static(err.body.as_bytes()), true);
        }
    }

    /// Ends the stream with RST_STREAM (the response cannot be completed).
    pub fn reset(&mut self, reason: h2::Reason) {
        match &mut self.body {
            Some(body) => body.send_reset(reason),
            None => self.respond.send_reset(reason),
        }
        self.body = None;
    }

    /// The body is still open (the head went out without END_STREAM).
    pub fn is_open(&self) -> bool {
        self.body.is_some()
    }

    /// The open body, for another thread to send (http2/file_body.rs).
    pub fn into_body(self) -> Option<SendStream<Bytes>> {
        self.body
    }
}

/// A response head as `h2` sends it: `app`'s status and fields, `Content-Length` when given,
/// then `Date` and `Server` (`server_name`, unless empty or no valid field value) unless `app`
/// has them. No connection-specific field: `AppHead` holds none. Built into the response's
/// own `HeaderMap` (`http::response::Builder` moves the whole head through every call).
pub fn response_head(
    app: &AppHead,
    content_length: Option<u64>,
    server_name: &[u8],
) -> Result<http::Response<()>, http::Error> {
    let mut head = http::Response::new(());
    *head.status_mut() = http::StatusCode::from_u16(app.code)?;
    let fields = head.headers_mut();
    for (name, value) in app.fields() {
        let name = http::HeaderName::from_bytes(name)?;
        fields.append(name, HeaderValue::from_bytes(value)?);
    }
    if let Some(len) = content_length {
        fields.insert(http::header::CONTENT_LENGTH, len.into());
    }
    if !app.has_date {
        fields.insert(http::header::DATE, date_value());
    }
    if !app.has_server && !server_name.is_empty() {
        if let Some(server) = server_value(server_name) {
            fields.insert(http::header::SERVER, server);
        }
    }
    Ok(head)
}

thread_local! {
    /// The last Date and Server values built on this thread (a clone shares the bytes).
    static DATE_VALUE: RefCell<([u8; 29], Option<HeaderValue>)> =
        const { RefCell::new(([0; 29], None)) };
    static SERVER_VALUE: RefCell<Option<(Vec<u8>, Option<HeaderValue>)>> =
        const { RefCell::new(None) };
}

/// The Date field's value, made once per second per thread.
fn date_value() -> HeaderValue {
    let now = date::now();
    DATE_VALUE.with(|cell| {
        let mut cached = cell.borrow_mut();
        match &cached.1 {
            Some(value) if cached.0 == now => value.clone(),
            _ => {
                // An IMF-fixdate is visible ASCII.
                let value =
                    HeaderValue::from_bytes(&now).unwrap_or_else(|_| HeaderValue::from_static(""));
                *cached = (now, Some(value.clone()));
                value
            }
        }
    })
}

/// The Server field's value: the server's name, or none when it is no valid field value
/// (HTTP/1.1 writes it as it is; HTTP/2's encoder refuses control characters).
fn server_value(name: &[u8]) -> Option<HeaderValue> {
    SERVER_VALUE.with(|cell| {
        let mut cached = cell.borrow_mut();
        match &*cached {
            Some((bytes, value)) if bytes.as_slice() == name => value.clone(),
            _ => {
                let value = HeaderValue::from_bytes(name).ok();
                *cached = Some((name.to_vec(), value.clone()));
                value
            }
        }
    })
}
