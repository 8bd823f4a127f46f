//! WSGI over an HTTP/2 stream (src/http2/): one application call per stream, on a worker
//! thread. The request head is checked and made an environ by the HTTP/1.1 code
//! (http2/head.rs says how); `start_response`, `write()` and `wsgi.input` behave as for
//! HTTP/1.1; the response goes out as the stream's flow control allows (http2/stream.rs),
//! the GIL released while a worker waits for the peer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionResetError, PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::environ::{self, Origin};
use super::exchange::{overflow_error, InputFailure, PinnedBytes};
use super::input::{Input, Source};
use super::{as_bytes, close_result, interrupt, is_interrupt, panic_error, report, start_response};
use crate::access_log;
use crate::config::PyState;
use crate::context::Context;
use crate::http::error::{self, HttpError};

use crate::http::response::AppHead;

use crate::http2::head::Checked;
use crate::http2::session::Client;
use crate::http2::stream::{self, Incoming, NewStream, Response, StreamEnd, StreamJob};

/// SERVER_PROTOCOL of a request received over HTTP/2.
const PROTOCOL: &str = "HTTP/2";
/// Chunks larger than this are handed to `h2` as the application's bytes object itself
/// (pinned), smaller ones copied.
const PIN_ABOVE: usize = 16 * 1024;

/// How a piece of the body is sent.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Queued at once: the whole body is already in memory (a list or tuple result).
    Now,
    /// Waiting while the stream's send buffer is full (generators, `write()`).
    Window,
}

/// `start_response` for one stream, and the state of its response.
#[pyclass(module = "stogie._core", name = "StreamStartResponse")]
pub struct StreamCall {
    context: Arc<Context>,
    response: Response,
    body: Incoming,
    /// `Expect: 100-continue` not yet answered: the first read sends `100 Continue`.
    awaiting_continue: bool,
    head: Option<AppHead>,
    headers_sent: bool,
    /// A HEAD request: the body is counted, never sent.
    head_request: bool,
    /// Body bytes the application produced.
    produced: u64,
    /// The request body could not be read.
    input_failure: Option<InputFailure>,
    /// The stream is gone (reset by the peer, or the peer stopped reading).
    broken: bool,
    /// The status code sent (or to be sent).
    status: u16,
}

impl StreamCall {
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// Reads up to `max` request-body bytes into `out`; 0 at its end.
    pub fn read_body(
        &mut self,
        py: Python<'_>,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, InputFailure> {
        if let Some(failure) = self.input_failure {
            return Err(failure);
        }
        if max == 0 {
            return Ok(0);
        }
        if std::mem::take(&mut self.awaiting_continue) && self.response.send_continue().is_err() {
            return Err(self.fail_input(InputFailure::Gone));
        }
        let read = match &mut self.body {
            Incoming::Collected(body) => py
                .detach(|| body.read(out, max))
                .map_err(|_| InputFailure::Respond(error::SPOOL_FAILED)),
            Incoming::Streamed(body) => {
                let deadline = Instant::now() + self.context.config.timeout();
                let max_body = self.context.config.max_body();
                match py.detach(|| body.read(out, max, deadline)) {
                    Ok(_) if max_body > 0 && body.received > max_body => {
                        Err(InputFailure::Respond(error::BODY_TOO_LARGE))
                    }
                    Ok(n) => Ok(n),
                    Err(StreamEnd::Gone) => Err(InputFailure::Gone),
                    Err(StreamEnd::TimedOut) => Err(InputFailure::Respond(error::HEAD_TIMEOUT)),
                }
            }
        };
        read.map_err(|failure| self.fail_input(failure))
    }

    fn fail_input(&mut self, failure: InputFailure) -> InputFailure {
        self.input_failure = Some(failure);
        failure
    }

    fn no_body(&self) -> bool {
        self.head_request || self.head.as_ref().is_some_and(AppHead::forbids_body)
    }

    /// The response head as `h2` sends it: the application's fields, then Date and Server
    /// unless it set them. No connection-specific field: AppHead dropped them.
    fn response_head(&self, app: &AppHead) -> PyResult<http::Response<()>> {
        let strings = self.context.config.strings();
        stream::response_head(app, None, &strings.1)
            .map_err(|e| PyRuntimeError::new_err(format!("invalid HTTP/2 response head: {e}")))
    }

    /// Sends the head; `end`: no body follows.
    fn commit(&mut self, end: bool) -> PyResult<()> {
        let Some(app) = &self.head else {
            return Err(PyRuntimeError::new_err(
                "WSGI write called before start_response.",
            ));
        };
        let head = self.response_head(app)?;
        self.status = app.code;
        self.headers_sent = true;
        let end = end || self.no_body();
        self.response.send_head(head, end).map_err(|_| self.gone())
    }

    /// One piece of the body, after the head if it is not out yet. `Pace::Now` queues it
    /// without waiting for the peer (the whole body is in memory anyway); `Pace::Window`
    /// waits while the stream holds more than its send buffer (a generator, `write()`).
    fn send(&mut self, py: Python<'_>, chunk: &Bound<'_, PyBytes>, pace: Pace) -> PyResult<()> {
        if self.broken {
            return Err(gone_error());
        }
        if !self.headers_sent {
            self.commit(false)?;
        }
        let data = chunk.as_bytes();
        let declared = self.head.as_ref().and_then(|h| h.content_length);
        let allowed = match declared {
            Some(limit) => data.len().min(limit.saturating_sub(self.produced) as usize),
            None => data.len(),
        };
        self.produced += data.len() as u64;
        if allowed > 0 && self.response.is_open() {
            let bytes = if allowed > PIN_ABOVE {
                Bytes::from_owner(PinnedBytes::new(chunk, 0)).slice(..allowed)
            } else {
                Bytes::copy_from_slice(&data[..allowed])
            };
            let sent = match pace {
                Pace::Now => self.response.send_now(bytes, false),
                Pace::Window => {
                    let deadline = Instant::now() + self.context.config.timeout();
                    let response = &mut self.response;
                    py.detach(|| response.send(bytes, false, deadline))
                }
            };
            if sent.is_err() {
                return Err(self.gone());
            }
        }
        if allowed < data.len() && !self.no_body() {
            return Err(overflow_error());
        }
        Ok(())
    }

    fn gone(&mut self) -> PyErr {
        self.broken = true;
        gone_error()
    }

    /// Ends the response: the head if it is still to go, then END_STREAM. A body shorter
    /// than its Content-Length ends with RST_STREAM instead, as HTTP/1.1 closes the
    /// connection.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.broken {
            return Ok(());
        }
        if !self.headers_sent {
            if self.head.is_none() {
                return Err(PyRuntimeError::new_err(
                    "the WSGI application returned without calling start_response",
                ));
            }
            return self.commit(true);
        }
        if !self.response.is_open() {
            return Ok(());
        }
        let declared = self.head.as_ref().and_then(|h| h.content_length);
        if declared.is_some_and(|n| n > self.produced) {
            self.response.reset(h2::Reason::INTERNAL_ERROR);
            return Ok(());
        }
        let deadline = Instant::now() + self.context.config.timeout();
        let response = &mut self.response;
        if py
            .detach(|| response.send(Bytes::new(), true, deadline))
            .is_err()
        {
            self.broken = true;
        }
        Ok(())
    }

    /// An error the server answers itself, when no header went out yet; else the stream
    /// is reset.
    fn answer_error(&mut self, err: HttpError) {
        if self.headers_sent {
            self.response.reset(h2::Reason::INTERNAL_ERROR);
            return;
        }
        self.status = err.code();
        self.headers_sent = true;
        self.response.answer(err, self.head_request);
    }
}

fn gone_error() -> PyErr {
    PyConnectionResetError::new_err("the client reset the HTTP/2 stream")
}

#[pymethods]
impl StreamCall {
    /// `start_response(status, headers, exc_info=None)` as PEP 3333 defines it.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        slf: Bound<'_, Self>,
        status: Bound<'_, PyAny>,
        headers: Bound<'_, PyAny>,
        exc_info: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let mut this = slf.try_borrow_mut()?;
            start_response::may_start(exc_info.as_ref(), this.headers_sent, this.head.is_some())?;
            let head = start_response::app_head(&this.context, &status, &headers)?;
            this.head = Some(head);
        }
        Ok(slf.getattr("write")?.unbind())
    }

    /// The `write()` callable returned by `start_response`.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("WSGI write() takes bytes"))?;
        if self.head.is_none() {
            return Err(PyRuntimeError::new_err(
                "WSGI write called before start_response.",
            ));
        }
        self.send(py, data, Pace::Window)
    }
}

/// Runs the application for one stream.
pub fn serve(py: Python<'_>, context: &Arc<Context>, job: StreamJob) {
    let started = Instant::now();
    let StreamJob {
        request,
        client,
        in_progress: _in_progress,
        in_session: _in_session,
        files: _,
    } = job;
    let NewStream {
        checked,
        body,
        respond,
    } = request;
    let mut response = Response::new(respond);
    // Reset before a worker got to it (Rapid Reset): no application call.
    if response.is_reset() {
        return;
    }
    let state = context.config.py_state();
    let head_request = checked.head.method_is(&checked.bytes, b"HEAD");
    let call = StreamCall {
        context: Arc::clone(context),
        response,
        awaiting_continue: checked.head.expect_continue && matches!(body, Incoming::Streamed(_)),
        body,
        head: None,
        headers_sent: false,
        head_request,
        produced: 0,
        input_failure: None,
        broken: false,
        status: 0,
    };
    let call = match Bound::new(py, call) {
        Ok(call) => call,
        Err(err) => return report(py, &state, &err),
    };
    let mut remote = client.peer.addr.clone();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_app(py, &state, &call, &checked, &client, &mut remote)
    }))
    .unwrap_or_else(|payload| Err(panic_error(payload)));
    let mut call = loop {
        // Only a thread misusing this request's objects could hold a borrow now.
        match call.try_borrow_mut() {
            Ok(call) => break call,
            Err(_) => py.detach(|| std::thread::sleep(std::time::Duration::from_millis(1))),
        }
    };
    if let Err(err) = result {
        handle_app_error(py, &state, &mut call, &err);
    }
    let micros = started.elapsed().as_micros() as u64;
    context.counters.record_response(call.status, micros);
    if let Some(log) = context.config.access_log() {
        let buf = &checked.bytes;
        let head = &checked.head;
        let header = |name: &str| head.field(buf, name);
        log.record(&access_log::Entry {
            remote: &remote,
            peer: &client.peer.addr,
            method: head.method.get(buf),
            target: head.target.get(buf),
            protocol: PROTOCOL.as_bytes(),
            status: call.status,
            body_bytes: call.produced,
            micros,
            header: &header,
        });
    }
}

fn run_app(
    py: Python<'_>,
    state: &PyState,
    call: &Bound<'_, StreamCall>,
    checked: &Checked,
    client: &Client,
    remote: &mut String,
) -> PyResult<()> {
    let input = Bound::new(py, Input::new(Source::Stream(call.clone().unbind())))?;
    let context = Arc::clone(call.borrow().context());
    let trusted = context.config.trusted();
    let origin = Origin {
        buf: &checked.bytes,
        peer: &client.peer,
        tls_env: client.tls_env.as_deref(),
    };
    let environ = environ::build(
        py,
        state.base_environ.bind(py),
        state.unicode_paths,
        &origin,
        &checked.head,
        input.into_any(),
        trusted.as_deref(),
    )?;
    environ.set_item(intern!(py, "SERVER_PROTOCOL"), PROTOCOL)?;
    if trusted.is_some() {
        // Trusted proxy headers may have named the client: `%h` logs it.
        if let Ok(Some(addr)) = environ.get_item(intern!(py, "REMOTE_ADDR")) {
            *remote = addr.extract().unwrap_or_default();
        }
    }
    let result = state.app.bind(py).call1((environ, call))?;
    let responded = respond(py, call, &result);
    let closed = close_result(&result);
    responded?;
    closed?;
    call.try_borrow_mut()?.finish(py)
}

/// Sends the application's result, chunk by chunk, until it ends or the stream does. A list
/// or tuple is queued whole (the worker does not wait for the peer); other iterables are
/// sent as the peer's window allows.
fn respond(
    py: Python<'_>,
    call: &Bound<'_, StreamCall>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if result.is_instance_of::<PyBytes>() {
        // Iterating bytes yields ints: the usual mistake is `return body` for `return [body]`.
        return Err(PyTypeError::new_err(
            "the WSGI application returned bytes; return an iterable of bytes, e.g. [body]",
        ));
    }
    let pace = if result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>() {
        Pace::Now
    } else {
        Pace::Window
    };
    for item in result.try_iter()? {
        let item = item?;
        let chunk = as_bytes(&item)?;
        let mut call = call.try_borrow_mut()?;
        if call.response.is_reset() {
            call.broken = true;
            return Err(gone_error());
        }
        if !chunk.as_bytes().is_empty() {
            call.send(py, chunk, pace)?;
        }
    }
    Ok(())
}

fn handle_app_error(py: Python<'_>, state: &PyState, call: &mut StreamCall, err: &PyErr) {
    if is_interrupt(py, err) {
        call.response.reset(h2::Reason::CANCEL);
        return interrupt(py, state, err);
    }
    if call.broken {
        // The peer went away: nothing to answer, nothing to log.
        call.response.reset(h2::Reason::CANCEL);
        return;
    }
    match call.input_failure {
        Some(InputFailure::Respond(status)) => return call.answer_error(status),
        Some(InputFailure::Gone) => return call.response.reset(h2::Reason::CANCEL),
        None => {}
    }
    report(py, state, err);
    call.answer_error(error::INTERNAL_ERROR);
}
