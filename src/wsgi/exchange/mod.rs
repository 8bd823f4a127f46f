//! One request/response exchange: the `start_response` callable, the `write()` callable and
//! the response's way out. It owns the connection while the application runs, so that
//! `wsgi.input` and `write()` reach the socket; the worker takes it back afterwards.
//!
//! Its state is three enums with named transitions: `Reading` (the request body),
//! `Writing` (the response: idle, started, body, or a server error), and `Fate` (what becomes
//! of the connection, decided once when the head is committed). Every body byte is framed by
//! `http::encode::BodyEncoder`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyConnectionResetError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::conn::{Body, Conn, Held, HIGH_WATER};
use crate::context::Context;
use crate::http::encode::{BodyEncoder, Ending, Piece};
use crate::http::error::HttpError;
use crate::http::request::{RequestHead, Version};
use crate::http::response::{self, AppHead, BodyFrame, ConnHeader};
use crate::outbox::{Outbox, Unsent, HOLD_ONE, STREAM_BATCH};
use crate::wsgi::file_wrapper::SendableFile;
use crate::wsgi::Placement;

mod reading;

pub use reading::InputFailure;
use reading::Reading;

/// At most this many stream chunks are queued before they are written.
const STREAM_PIECES: usize = 32;

/// Facts about the request that decide how the response is framed.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    pub keep_alive: bool,
    pub is_head: bool,
    /// The response may use chunked framing (HTTP/1.1 on both sides).
    pub chunked_ok: bool,
    /// HTTP/1.0 keep-alive needs an explicit `Connection: Keep-Alive`.
    pub http10: bool,
}

impl RequestInfo {
    pub fn of(head: &RequestHead, buf: &[u8], server_http10: bool) -> RequestInfo {
        let http10 = head.version == Version::Http10 || server_http10;
        RequestInfo {
            keep_alive: head.keep_alive,
            is_head: head.method_is(buf, b"HEAD"),
            chunked_ok: !http10,
            http10,
        }
    }
}

/// The response's side of the exchange.
enum Writing {
    /// `start_response` not called yet.
    Idle,
    /// `start_response` called; nothing committed, so a call with `exc_info` may replace it.
    Started(AppHead),
    /// The head is committed (staged in `out` or sent); body bytes go through the encoder.
    Body(BodyEncoder),
    /// A server-generated error response (its body length) replaced the application's.
    ServerError(u64),
}

/// What becomes of the connection after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not decided until the head is committed.
    Undecided,
    KeepAlive,
    /// Close after the complete response.
    Close,
    /// The application sent more than its declared Content-Length.
    Overflowed,
    /// A write failed or the body was cut short: close without finishing.
    Broken,
}

#[pyclass(module = "stogie._core", name = "StartResponse")]
pub struct Exchange {
    pub(crate) conn: Option<Box<Conn>>,
    reading: Reading,
    writing: Writing,
    fate: Fate,
    /// The status sent (for the access log and counters).
    status_code: u16,
    req: RequestInfo,
    context: Arc<Context>,
    /// Bytes not yet written (the head, small bodies); the worker flushes what is left.
    pub(crate) out: Vec<u8>,
    token: u64,
    /// The worker running this exchange: its outbox queues bytes (see outbox.rs).
    slot: usize,
    /// The worker allows holding this response's bytes instead of writing them now.
    hold: bool,
    /// Stream chunks queued in the outbox without a copy; kept alive until it is flushed.
    pinned: Vec<Py<PyBytes>>,
    pinned_bytes: usize,
}

/// The stream chunks an exchange pinned, kept alive by the backlog pieces that point into them.
struct PinnedSet {
    _objects: Vec<Py<PyBytes>>,
}

/// Part of a pinned stream chunk, in a connection's backlog.
struct PinnedSlice {
    _keeper: Arc<PinnedSet>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: as for `PinnedBytes`: `_keeper` keeps the immutable bytes objects alive.
unsafe impl Send for PinnedSlice {}
unsafe impl Sync for PinnedSlice {}

impl Held for PinnedSlice {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the memory belongs to an object `_keeper` holds; bytes never change.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// An application's bytes object kept alive until it is written: in a connection's backlog,
/// or held by `h2` for an HTTP/2 stream (as `AsRef<[u8]>` behind a `Bytes`).
pub(crate) struct PinnedBytes {
    /// Keeps the object (and so `ptr`) alive; dropped on whichever thread finishes the write
    /// (without the GIL, pyo3 defers the reference count decrement to the next holder).
    _object: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a bytes object's buffer never changes or moves while a reference to it is held, so
// reading it from any thread without the GIL is sound.
unsafe impl Send for PinnedBytes {}
unsafe impl Sync for PinnedBytes {}

impl PinnedBytes {
    /// The bytes of `chunk` from offset `from` on.
    pub(crate) fn new(chunk: &Bound<'_, PyBytes>, from: usize) -> PinnedBytes {
        let data = &chunk.as_bytes()[from..];
        PinnedBytes {
            _object: chunk.clone().unbind(),
            ptr: data.as_ptr(),
            len: data.len(),
        }
    }
}

impl Held for PinnedBytes {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: the object outlives `self` and never changes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl AsRef<[u8]> for PinnedBytes {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A response body that ended before its declared Content-Length.
#[derive(Debug, Clone, Copy)]
pub struct ShortBody {
    pub sent: u64,
    pub declared: u64,
}

/// The exchange's outcome, for the worker.
pub struct Outcome {
    pub conn: Option<Box<Conn>>,
    /// The connection may carry another request.
    pub keep_alive: bool,
    /// The request body's state (to skip what the application left unread).
    pub body: Body,
    pub hold: bool,
    pub status_code: u16,
    pub body_bytes: u64,
}

impl Exchange {
    pub fn new(
        context: Arc<Context>,
        conn: Box<Conn>,
        token: u64,
        head: &RequestHead,
        out: Vec<u8>,
        place: Placement,
    ) -> Exchange {
        let req = RequestInfo::of(head, conn.head_bytes(), context.config.http10());
        let mut conn = conn;
        let reading = match conn.take_collected() {
            Some(buffered) => Reading::Buffered(buffered),
            None if head.expect_continue => Reading::AwaitingContinue(Body::for_framing(head.body)),
            None => Reading::Body(Body::for_framing(head.body)),
        };
        Exchange {
            conn: Some(conn),
            reading,
            writing: Writing::Idle,
            fate: Fate::Undecided,
            status_code: 0,
            req,
            context,
            out,
            token,
            slot: place.slot,
            hold: place.hold,
            pinned: Vec::new(),
            pinned_bytes: 0,
        }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    pub fn started(&self) -> bool {
        !matches!(self.writing, Writing::Idle)
    }

    pub fn headers_sent(&self) -> bool {
        matches!(self.writing, Writing::Body(_) | Writing::ServerError(_))
    }

    pub fn input_failure(&self) -> Option<InputFailure> {
        match self.reading {
            Reading::Failed(failure, _) => Some(failure),
            _ => None,
        }
    }

    pub fn overflowed(&self) -> bool {
        self.fate == Fate::Overflowed
    }

    pub fn broken(&self) -> bool {
        self.fate == Fate::Broken
    }

    /// The connection must close after this response (the application failed).
    pub fn close_after(&mut self) {
        if matches!(self.fate, Fate::Undecided | Fate::KeepAlive) {
            self.fate = Fate::Close;
        }
    }

    /// The response cannot be completed: drop what is unwritten and close.
    pub fn abandon(&mut self) {
        self.out.clear();
        self.fate = Fate::Broken;
    }

    /// The application went past its declared Content-Length.
    fn overflow(&mut self) -> PyErr {
        self.fate = Fate::Overflowed;
        overflow_error()
    }

    fn gone(&mut self) -> PyErr {
        self.fate = Fate::Broken;
        gone_error()
    }

    /// Ends the exchange: the worker gets the connection and the verdict on reusing it.
    pub fn conclude(&mut self) -> Outcome {
        // Read before `reading` is taken apart below.
        let failed_input = self.input_failure().is_some();
        let body = match std::mem::replace(&mut self.reading, Reading::Body(Body::Done)) {
            Reading::AwaitingContinue(body) | Reading::Body(body) => body,
            Reading::Buffered(mut body) => body.take_unread_rest().unwrap_or(Body::Done),
            Reading::Failed(_, rest) => rest,
        };
        Outcome {
            conn: self.conn.take(),
            keep_alive: self.fate == Fate::KeepAlive && !failed_input,
            body,
            hold: self.hold,
            status_code: self.status_code,
            body_bytes: match &self.writing {
                Writing::Body(encoder) => encoder.sent(),
                Writing::ServerError(len) => *len,
                _ => 0,
            },
        }
    }

    /// Commits the head unless it already is: checks the first piece against a declared
    /// length first (a 500 can still replace the response then). `known_len` is the whole
    /// body's length when the server knows it (list results).
    pub fn commit_for(&mut self, first: usize, known_len: Option<u64>) -> PyResult<()> {
        match &self.writing {
            Writing::Started(head) if head.content_length.is_some_and(|cl| first as u64 > cl) => {
                Err(self.overflow())
            }
            Writing::Started(_) => self.commit_head(known_len),
            Writing::Idle => Err(PyRuntimeError::new_err(
                "the application returned without calling start_response()",
            )),
            Writing::Body(_) | Writing::ServerError(_) => Ok(()),
        }
    }

    /// Decides the framing and the connection's fate, and stages the head in `out`.
    fn commit_head(&mut self, known_len: Option<u64>) -> PyResult<()> {
        let head = match std::mem::replace(&mut self.writing, Writing::Idle) {
            Writing::Started(head) => head,
            other => {
                self.writing = other;
                return Ok(());
            }
        };
        let frame = if head.forbids_body() {
            BodyFrame::Empty
        } else if let Some(len) = head.content_length {
            BodyFrame::Length {
                len,
                add_header: false,
            }
        } else if let Some(len) = known_len.filter(|&n| n > 0 || !self.req.is_head) {
            // For HEAD, a length is only said when the application produced the body GET would
            // (RFC 9110 §8.6: never a Content-Length other than GET's); an empty HEAD body
            // says nothing of GET's length.
            BodyFrame::Length {
                len,
                add_header: true,
            }
        } else if self.req.is_head {
            BodyFrame::Empty
        } else if self.req.chunked_ok {
            BodyFrame::Chunked
        } else {
            BodyFrame::UntilClose
        };
        let keep_alive = self.req.keep_alive
            && !head.wants_close
            && self.body_allows_keep_alive()
            && frame != BodyFrame::UntilClose
            && !self.context.is_stopping()
            && self.context.keep_alive_allowed();
        if self.fate == Fate::Undecided {
            self.fate = if keep_alive {
                Fate::KeepAlive
            } else {
                Fate::Close
            };
        }
        let config = &self.context.config;
        let strings = config.strings();
        let conn = ConnHeader {
            keep_alive: self.fate == Fate::KeepAlive,
            http10: self.req.http10,
            timeout_secs: config.timeout().as_secs().max(1),
        };
        response::encode_head(&mut self.out, &strings.0, &head, frame, conn, &strings.1);
        self.status_code = head.code;
        let suppress = self.req.is_head || head.forbids_body();
        self.writing = Writing::Body(BodyEncoder::new(frame, suppress));
        Ok(())
    }

    fn encoder(&mut self) -> PyResult<&mut BodyEncoder> {
        match &mut self.writing {
            Writing::Body(encoder) => Ok(encoder),
            _ => Err(PyRuntimeError::new_err(
                "the response head was not committed",
            )),
        }
    }

    /// Frames a piece of `len` body bytes (only the part under a declared length).
    fn encode(&mut self, len: usize) -> PyResult<Piece> {
        Ok(self.encoder()?.encode(len))
    }

    /// Sends one body chunk (committing the head first if needed) and flushes.
    pub fn send(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.commit_for(data.len(), None)?;
        let piece = self.encode(data.len())?;
        let part = &data[..piece.take];
        if part.is_empty() {
            self.flush(py, &[])?;
        } else {
            self.flush(py, &[piece.framing.prefix(), part, piece.framing.suffix])?;
        }
        if piece.overflow {
            return Err(self.overflow());
        }
        Ok(())
    }

    /// Sends one body chunk of a list result (committing the head first if needed) without
    /// copying it: the bytes object is kept alive in the connection's backlog and written as
    /// the client reads (over TLS, encrypted as the socket takes the records), so a large
    /// response does not wait on this thread. With `more` (a stream), first waits until the
    /// client is at most `HIGH_WATER` behind.
    pub fn send_pinned(
        &mut self,
        py: Python<'_>,
        chunk: &Bound<'_, PyBytes>,
        more: bool,
    ) -> PyResult<()> {
        let data = chunk.as_bytes();
        self.commit_for(data.len(), None)?;
        let encoder = self.encoder()?;
        if encoder.is_suppressed() || encoder.would_overflow(data.len()) {
            return self.send(py, data);
        }
        let piece = self.encode(data.len())?;
        // Written in order from here on: nothing of this response may be held in the outbox.
        self.hold = false;
        self.take_queued(py)?;
        let deadline = Instant::now() + self.context.config.timeout();
        let head_len = self.out.len() + piece.framing.prefix().len();
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(self.gone());
        };
        if more
            && py
                .detach(|| conn.wait_backlog_below(HIGH_WATER, deadline))
                .is_err()
        {
            return Err(self.gone());
        }
        // What is staged, the framing and the chunk go out in one writev when the socket
        // takes them; the rest waits in the backlog, the chunk kept alive, not copied.
        let sent = conn.send_keeping_tail(&[&self.out, piece.framing.prefix()], data, |from| {
            Box::new(PinnedBytes::new(chunk, from))
        });
        if sent.is_err() {
            return Err(self.gone());
        }
        self.out.clear();
        self.context
            .counters
            .bytes_out
            .fetch_add((head_len + data.len()) as u64, Ordering::Relaxed);
        self.out.extend_from_slice(piece.framing.suffix);
        Ok(())
    }

    /// Whether `len` more bytes fit in the staging buffer under `limit`.
    pub fn can_stage(&self, len: usize, limit: usize) -> bool {
        self.out.len() + len <= limit
    }

    /// Appends a body chunk to the staging buffer (framed as the head decided), unwritten.
    /// A chunk past the declared length is cut there; `finish` then reports the overflow.
    pub fn stage(&mut self, data: &[u8]) -> PyResult<()> {
        let piece = self.encode(data.len())?;
        if piece.take > 0 {
            self.out.extend_from_slice(piece.framing.prefix());
            self.out.extend_from_slice(&data[..piece.take]);
            self.out.extend_from_slice(piece.framing.suffix);
        }
        if piece.overflow {
            self.fate = Fate::Overflowed;
        }
        Ok(())
    }

    /// Sends a regular file with sendfile(2) (headers first); a declared Content-Length shorter
    /// than the file limits what is sent. Plain TCP only: TLS has no socket to sendfile to.
    pub fn send_file(&mut self, py: Python<'_>, file: SendableFile) -> PyResult<()> {
        // sendfile(2) writes directly: nothing of this response may stay held before it.
        self.hold = false;
        self.commit_for(0, Some(file.len))?;
        let piece = self.encoder()?.encode(file.len as usize);
        self.flush(py, &[piece.framing.prefix()])?;
        if piece.take == 0 {
            return Ok(());
        }
        // A descriptor of our own: the application closes its file object when the response
        // ends, possibly before a slow client has read it all.
        // SAFETY: `file.fd` is the open descriptor of the wrapper's file object, alive now.
        let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(file.fd) }.try_clone_to_owned();
        let file_fd = dup.map_err(|e| PyOSError::new_err(format!("duplicating the file: {e}")))?;
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(self.gone());
        };
        let len = piece.take as u64;
        // Sent as far as the socket takes it now; the rest from the event loop, after which
        // the framing's end (kept in `out`) follows.
        match py.detach(|| conn.send_file_now(file_fd, file.offset, len)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                // The file ended early: the body is short of what was framed.
                self.fate = Fate::Broken;
                return Ok(());
            }
            Err(_) => return Err(self.gone()),
        }
        self.context
            .counters
            .bytes_out
            .fetch_add(len, Ordering::Relaxed);
        self.out.extend_from_slice(piece.framing.suffix);
        Ok(())
    }

    /// Writes `out` followed by `parts`, with the GIL released; or, when holding is allowed
    /// and they are small, queues a copy in the worker's outbox.
    pub fn flush(&mut self, py: Python<'_>, parts: &[&[u8]]) -> PyResult<()> {
        if self.out.is_empty() && parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let total = self.out.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        self.context
            .counters
            .bytes_out
            .fetch_add(total as u64, Ordering::Relaxed);
        // Held only while nothing of the response waits in the connection's backlog.
        let plain = self
            .conn
            .as_deref()
            .is_some_and(|c| !c.is_tls() && !c.has_backlog());
        let outbox = self.context.outbox(self.slot);
        if self.hold && plain && outbox.has_room(total) {
            let Some(conn) = self.conn.as_deref() else {
                return Err(self.gone());
            };
            let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
            all.push(&self.out);
            all.extend_from_slice(parts);
            outbox.push(conn.fd(), self.token, &all);
            self.out.clear();
            return Ok(());
        }
        // Written directly from here on, after whatever the outbox holds (it may hold this
        // response's first bytes).
        self.hold = false;
        let context = Arc::clone(&self.context);
        let (outbox, timeout, token) = (
            context.outbox(self.slot),
            context.config.timeout(),
            self.token,
        );
        let (out, pinned) = (&self.out, &mut self.pinned);
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(self.gone());
        };
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(out);
        all.extend_from_slice(parts);
        let result = py.detach(|| {
            if !hand_over_queued(outbox, token, timeout, conn, pinned) {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            conn.send(&all, Instant::now() + timeout, HIGH_WATER)
        });
        drop(all);
        self.out.clear();
        self.release_pinned(py);
        if result.is_err() {
            return Err(self.gone());
        }
        Ok(())
    }

    /// Takes this response's bytes out of the worker's outbox: what the socket accepts now is
    /// written, the rest goes to the connection's backlog in order (queued stream chunks stay
    /// pinned, owned by the backlog from now on, instead of being copied).
    fn take_queued(&mut self, py: Python<'_>) -> PyResult<()> {
        let context = Arc::clone(&self.context);
        let (outbox, timeout, token) = (
            context.outbox(self.slot),
            context.config.timeout(),
            self.token,
        );
        let pinned = &mut self.pinned;
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(self.gone());
        };
        let handed = py.detach(|| hand_over_queued(outbox, token, timeout, conn, pinned));
        self.release_pinned(py);
        if !handed {
            return Err(self.gone());
        }
        Ok(())
    }

    /// Sends one chunk of a streamed response. Large chunks on plain TCP are queued in the
    /// outbox without a copy and written `STREAM_BATCH` bytes at a time (the monitor sends
    /// them meanwhile if the application stalls); over TLS, or once the client is behind,
    /// they go to the connection's backlog without a copy (`send_pinned`); small ones go
    /// through `send`.
    pub fn send_chunk(&mut self, py: Python<'_>, chunk: &Bound<'_, PyBytes>) -> PyResult<()> {
        let data = chunk.as_bytes();
        let Some(conn) = self.conn.as_deref() else {
            return Err(self.gone());
        };
        if data.len() <= HOLD_ONE {
            return self.send(py, data);
        }
        if conn.is_tls() || conn.has_backlog() {
            // Queued after what waits, never written around it; the thread waits only while
            // the client is more than `HIGH_WATER` behind.
            return self.send_pinned(py, chunk, true);
        }
        self.commit_for(data.len(), None)?;
        let encoder = self.encoder()?;
        if encoder.is_suppressed() || encoder.would_overflow(data.len()) {
            return self.send(py, data);
        }
        let piece = self.encode(data.len())?;
        let (fd, outbox) = match self.conn.as_deref() {
            Some(conn) => (conn.fd(), self.context.outbox(self.slot)),
            None => return Err(self.gone()),
        };
        let framing = self.out.len() + piece.framing.prefix().len() + piece.framing.suffix.len();
        self.out.extend_from_slice(piece.framing.prefix());
        outbox.push(fd, self.token, &[&self.out]);
        self.out.clear();
        // SAFETY: `chunk` is an immutable bytes object; `pinned` keeps it alive until
        // `release_pinned`, which runs only after the outbox has been flushed.
        unsafe { outbox.push_borrowed(fd, self.token, data) };
        outbox.push(fd, self.token, &[piece.framing.suffix]);
        self.pinned.push(chunk.clone().unbind());
        self.pinned_bytes += data.len();
        self.context
            .counters
            .bytes_out
            .fetch_add((framing + data.len()) as u64, Ordering::Relaxed);
        if self.pinned_bytes >= STREAM_BATCH || self.pinned.len() >= STREAM_PIECES {
            self.write_queued(py)?;
        }
        Ok(())
    }

    /// Moves this response's queued chunks on (see `take_queued`), without waiting: a
    /// stream's next chunk waits instead, in `send_pinned`, while the client is more than
    /// `HIGH_WATER` behind, so a fast generator cannot pile up memory for a slow reader.
    pub fn write_queued(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.pinned.is_empty() {
            return Ok(());
        }
        self.take_queued(py)
    }

    /// Drops the pinned chunks (with the GIL held, so they are released at once); the outbox
    /// must have been flushed since they were queued.
    fn release_pinned(&mut self, _py: Python<'_>) {
        self.pinned.clear();
        self.pinned_bytes = 0;
    }

    /// Ends the response: commits an empty body if nothing was sent, terminates chunked
    /// framing, and notes a body shorter than declared (returned, to be logged). The tail
    /// stays in `out`.
    pub fn finish(&mut self) -> PyResult<Option<ShortBody>> {
        self.commit_for(0, Some(0))?;
        let encoder = self.encoder()?;
        match encoder.finish() {
            Ending::Complete(tail) => {
                self.out.extend_from_slice(tail);
                Ok(None)
            }
            Ending::Short => {
                let short = ShortBody {
                    sent: encoder.sent(),
                    declared: encoder.declared_len().unwrap_or(0),
                };
                // The client would wait for bytes that will never come: close instead.
                self.fate = Fate::Broken;
                Ok(Some(short))
            }
        }
    }

    /// Replaces any staged output with a server-generated error response.
    pub fn stage_error(&mut self, err: HttpError) {
        self.out.clear();
        response::encode_error(&mut self.out, &self.context.config.protocol(), err);
        self.writing = Writing::ServerError(err.body.len() as u64);
        self.status_code = err.code();
        self.fate = Fate::Close;
    }

    /// `start_response` was called with this head (replacing an uncommitted one).
    pub(super) fn set_started(&mut self, head: AppHead) {
        self.writing = Writing::Started(head);
    }
}

/// Without the GIL: moves connection `token`'s bytes out of the worker's outbox (see
/// `Outbox::hand_over`); what the socket did not take goes to the connection's backlog, the
/// pinned chunks it points into kept alive there from now on. False when they could not be
/// written (the client is gone).
fn hand_over_queued(
    outbox: &Outbox,
    token: u64,
    timeout: std::time::Duration,
    conn: &mut Conn,
    pinned: &mut Vec<Py<PyBytes>>,
) -> bool {
    let Some(unsent) = outbox.hand_over(token, timeout) else {
        return false;
    };
    if !unsent.is_empty() {
        let keeper = Arc::new(PinnedSet {
            _objects: std::mem::take(pinned),
        });
        for piece in unsent {
            match piece {
                Unsent::Copied(bytes) => conn.queue_copy(&bytes),
                Unsent::Borrowed { ptr, len } => conn.queue_held(Box::new(PinnedSlice {
                    _keeper: Arc::clone(&keeper),
                    ptr,
                    len,
                })),
            }
        }
    }
    true
}

pub fn overflow_error() -> PyErr {
    PyValueError::new_err("Response body exceeds the declared Content-Length.")
}

fn gone_error() -> PyErr {
    PyConnectionResetError::new_err("the client closed the connection")
}
