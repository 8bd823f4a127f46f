//! One request/response exchange: the `start_response` callable, the `write()` callable and
//! the response framing. It owns the connection while the application runs, so that
//! `wsgi.input` and `write()` reach the socket; the worker takes it back afterwards.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyConnectionResetError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::conn::{Body, Conn, DRAIN_LIMIT};
use crate::http::error::HttpError;
use crate::http::request::{RequestHead, Version};
use crate::http::response::{self, AppHead, BodyFrame, ConnHeader};
use crate::net::io as netio;
use crate::outbox::{HOLD_ONE, STREAM_BATCH};
use crate::workers::Shared;
use crate::wsgi::file_wrapper::SendableFile;
use crate::wsgi::Placement;

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

/// What went wrong while the application read `wsgi.input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFailure {
    /// Answer with this status (413, 408, 400) if nothing was sent yet.
    Respond(HttpError),
    /// The client is gone: close without answering.
    Gone,
}

#[pyclass(module = "stogie._core", name = "StartResponse")]
pub struct Exchange {
    pub(crate) conn: Option<Box<Conn>>,
    pub(crate) body: Body,
    pub(crate) continue_pending: bool,
    pub(crate) input_failure: Option<InputFailure>,
    head: Option<AppHead>,
    pub(crate) headers_sent: bool,
    frame: BodyFrame,
    suppress_body: bool,
    pub(crate) sent: u64,
    pub(crate) keep_alive: bool,
    /// The connection cannot be reused (a write failed or the body was cut short).
    pub(crate) broken: bool,
    /// The application sent more than its declared Content-Length.
    pub(crate) overflowed: bool,
    /// The status sent (for the access log); body bytes sent are in `sent`.
    pub(crate) status_code: u16,
    req: RequestInfo,
    pub(crate) shared: Arc<Shared>,
    /// Bytes not yet written (the head, small bodies); the worker flushes what is left.
    pub(crate) out: Vec<u8>,
    token: u64,
    /// The worker running this exchange: its outbox queues bytes (see outbox.rs).
    slot: usize,
    /// The worker allows holding this response's bytes instead of writing them now.
    pub(crate) hold: bool,
    /// Stream chunks queued in the outbox without a copy; kept alive until it is flushed.
    pinned: Vec<Py<PyBytes>>,
    pinned_bytes: usize,
}

impl Exchange {
    pub fn new(
        shared: Arc<Shared>,
        conn: Box<Conn>,
        token: u64,
        head: &RequestHead,
        out: Vec<u8>,
        place: Placement,
    ) -> Exchange {
        let req = RequestInfo::of(head, conn.head_bytes(), shared.config.http10());
        Exchange {
            conn: Some(conn),
            body: Body::for_framing(head.body),
            continue_pending: head.expect_continue,
            input_failure: None,
            head: None,
            headers_sent: false,
            frame: BodyFrame::Empty,
            suppress_body: false,
            sent: 0,
            keep_alive: false,
            broken: false,
            overflowed: false,
            status_code: 0,
            req,
            shared,
            out,
            token,
            slot: place.slot,
            hold: place.hold,
            pinned: Vec::new(),
            pinned_bytes: 0,
        }
    }

    pub fn started(&self) -> bool {
        self.head.is_some()
    }

    /// Decides the framing and the connection's fate, and stages the head in `out`.
    /// `known_len` is the whole body's length when the server knows it (list results).
    pub fn commit_head(&mut self, known_len: Option<u64>) -> PyResult<()> {
        let head = self.head.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err("the application returned without calling start_response()")
        })?;
        self.suppress_body = self.req.is_head || head.forbids_body();
        self.status_code = head.code;
        self.frame = if head.forbids_body() {
            BodyFrame::Empty
        } else if let Some(len) = head.content_length {
            BodyFrame::Length {
                len,
                add_header: false,
            }
        } else if let Some(len) = known_len {
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
        let body_ok = match &self.body {
            Body::Done => true,
            _ if self.continue_pending => false,
            Body::Length { remaining } => *remaining <= DRAIN_LIMIT,
            Body::Chunked { .. } => true,
        };
        self.keep_alive = self.req.keep_alive
            && !head.wants_close
            && body_ok
            && self.frame != BodyFrame::UntilClose
            && self.input_failure.is_none()
            && !self.shared.is_stopping()
            && self.shared.keep_alive_allowed();
        let strings = self.shared.config.strings();
        let conn = ConnHeader {
            keep_alive: self.keep_alive,
            http10: self.req.http10,
            timeout_secs: self.shared.config.timeout().as_secs().max(1),
        };
        response::encode_head(
            &mut self.out,
            &strings.0,
            head,
            self.frame,
            conn,
            &strings.1,
        );
        self.headers_sent = true;
        Ok(())
    }

    /// How many bytes of a chunk of `len` may still be sent under a declared length.
    fn allowed(&self, len: usize) -> usize {
        match self.frame {
            BodyFrame::Length { len: total, .. } => {
                len.min((total - self.sent.min(total)) as usize)
            }
            _ => len,
        }
    }

    /// Sends one body chunk (committing the head first if needed) and flushes.
    pub fn send(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        if !self.headers_sent {
            let declared = self.head.as_ref().and_then(|h| h.content_length);
            if declared.is_some_and(|cl| data.len() as u64 > cl) {
                self.overflowed = true;
                return Err(overflow_error());
            }
            self.commit_head(None)?;
        }
        let allowed = self.allowed(data.len());
        let part = &data[..allowed];
        if self.suppress_body || part.is_empty() {
            self.flush(py, &[])?;
        } else if self.frame == BodyFrame::Chunked {
            let (prefix, n) = response::chunk_prefix(part.len());
            self.flush(py, &[&prefix[..n], part, b"\r\n"])?;
        } else {
            self.flush(py, &[part])?;
        }
        self.sent += allowed as u64;
        if allowed < data.len() {
            self.overflowed = true;
            self.broken = true;
            return Err(overflow_error());
        }
        Ok(())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.head.as_ref().and_then(|h| h.content_length)
    }

    /// Whether `len` more bytes fit in the staging buffer under `limit`.
    pub fn can_stage(&self, len: usize, limit: usize) -> bool {
        self.out.len() + len <= limit
    }

    /// Appends a body chunk to the staging buffer (framed as the head decided), unwritten.
    pub fn stage(&mut self, data: &[u8]) {
        let allowed = self.allowed(data.len());
        if !self.suppress_body {
            let part = &data[..allowed];
            if self.frame == BodyFrame::Chunked {
                let (prefix, n) = response::chunk_prefix(part.len());
                self.out.extend_from_slice(&prefix[..n]);
                self.out.extend_from_slice(part);
                self.out.extend_from_slice(b"\r\n");
            } else {
                self.out.extend_from_slice(part);
            }
        }
        self.sent += allowed as u64;
        if allowed < data.len() {
            self.overflowed = true;
            self.broken = true;
        }
    }

    /// Sends a regular file with sendfile(2) (headers first); a declared Content-Length shorter
    /// than the file limits what is sent.
    pub fn send_file(&mut self, py: Python<'_>, file: SendableFile) -> PyResult<()> {
        // sendfile(2) writes directly: nothing of this response may stay held before it.
        self.hold = false;
        if !self.headers_sent {
            self.commit_head(Some(file.len))?;
        }
        let len = match self.frame {
            BodyFrame::Length { len, .. } => len.saturating_sub(self.sent).min(file.len),
            _ => file.len,
        };
        self.flush(py, &[])?;
        if self.suppress_body || len == 0 {
            return Ok(());
        }
        if self.frame == BodyFrame::Chunked {
            let (prefix, n) = response::chunk_prefix(len as usize);
            self.flush(py, &[&prefix[..n]])?;
        }
        let sock = self.conn.as_ref().map(|c| c.fd).ok_or_else(gone_error)?;
        let timeout = self.shared.config.timeout();
        let result = py.detach(|| netio::send_file(sock, file.fd, file.offset, len, timeout));
        match result {
            Ok(sent) => {
                self.sent += sent;
                self.shared
                    .counters
                    .bytes_out
                    .fetch_add(sent, Ordering::Relaxed);
                if self.frame == BodyFrame::Chunked {
                    self.flush(py, &[b"\r\n"])?;
                }
                Ok(())
            }
            Err(_) => {
                self.broken = true;
                Err(gone_error())
            }
        }
    }

    /// Writes `out` followed by `parts`, with the GIL released; or, when holding is allowed
    /// and they are small, queues a copy in the worker's outbox.
    pub fn flush(&mut self, py: Python<'_>, parts: &[&[u8]]) -> PyResult<()> {
        if self.broken && self.conn.is_none() {
            return Err(gone_error());
        }
        if self.out.is_empty() && parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let timeout = self.shared.config.timeout();
        let out = &self.out;
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(gone_error());
        };
        let total = out.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        self.shared
            .counters
            .bytes_out
            .fetch_add(total as u64, Ordering::Relaxed);
        let outbox = self.shared.outbox(self.slot);
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(out);
        all.extend_from_slice(parts);
        if self.hold && !conn.is_tls() && outbox.has_room(total) {
            outbox.push(conn.fd, self.token, &all);
            self.out.clear();
            return Ok(());
        }
        // Written directly from here on, after whatever the outbox holds (it may hold this
        // response's first bytes).
        self.hold = false;
        let result = py.detach(|| {
            if !outbox.flush_before(self.token, timeout) {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            conn.write_all(&all, Instant::now() + timeout)
        });
        drop(all);
        self.out.clear();
        if result.is_err() {
            self.broken = true;
            return Err(gone_error());
        }
        self.release_pinned(py);
        Ok(())
    }

    /// Sends one chunk of a streamed response. Large chunks on plain TCP are queued in the
    /// outbox without a copy and written `STREAM_BATCH` bytes at a time (the monitor sends
    /// them meanwhile if the application stalls); anything else goes through `send`.
    pub fn send_chunk(&mut self, py: Python<'_>, chunk: &Bound<'_, PyBytes>) -> PyResult<()> {
        let data = chunk.as_bytes();
        let plain = self.conn.as_deref().is_some_and(|c| !c.is_tls());
        if !plain || data.len() <= HOLD_ONE {
            return self.send(py, data);
        }
        if !self.headers_sent {
            if self
                .content_length()
                .is_some_and(|cl| data.len() as u64 > cl)
            {
                self.overflowed = true;
                return Err(overflow_error());
            }
            self.commit_head(None)?;
        }
        if self.suppress_body || self.allowed(data.len()) < data.len() {
            return self.send(py, data);
        }
        let (fd, outbox) = match self.conn.as_deref() {
            Some(conn) => (conn.fd, self.shared.outbox(self.slot)),
            None => return Err(gone_error()),
        };
        let (prefix, n) = response::chunk_prefix(data.len());
        let chunked = self.frame == BodyFrame::Chunked;
        let mut framing = self.out.len();
        if chunked {
            self.out.extend_from_slice(&prefix[..n]);
            framing += n + 2;
        }
        outbox.push(fd, self.token, &[&self.out]);
        self.out.clear();
        // SAFETY: `chunk` is an immutable bytes object; `pinned` keeps it alive until
        // `release_pinned`, which runs only after the outbox has been flushed.
        unsafe { outbox.push_borrowed(fd, self.token, data) };
        if chunked {
            outbox.push(fd, self.token, &[b"\r\n"]);
        }
        self.pinned.push(chunk.clone().unbind());
        self.pinned_bytes += data.len();
        self.sent += data.len() as u64;
        self.shared
            .counters
            .bytes_out
            .fetch_add((framing + data.len()) as u64, Ordering::Relaxed);
        if self.pinned_bytes >= STREAM_BATCH || self.pinned.len() >= STREAM_PIECES {
            self.write_queued(py)?;
        }
        Ok(())
    }

    /// Writes everything queued in the outbox (this response's pinned chunks included).
    pub fn write_queued(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.pinned.is_empty() {
            return Ok(());
        }
        let outbox = self.shared.outbox(self.slot);
        let timeout = self.shared.config.timeout();
        let written = py.detach(|| outbox.flush_before(self.token, timeout));
        self.release_pinned(py);
        if !written {
            self.broken = true;
            return Err(gone_error());
        }
        Ok(())
    }

    /// Drops the pinned chunks (with the GIL held, so they are released at once); the outbox
    /// must have been flushed since they were queued.
    fn release_pinned(&mut self, _py: Python<'_>) {
        self.pinned.clear();
        self.pinned_bytes = 0;
    }

    /// Ends the response: commits an empty body if nothing was sent, terminates chunked
    /// framing, and notes a body shorter than declared. The tail stays in `out`.
    pub fn finish(&mut self) -> PyResult<()> {
        if !self.headers_sent {
            self.commit_head(Some(0))?;
        }
        match self.frame {
            BodyFrame::Chunked if !self.suppress_body => {
                self.out.extend_from_slice(response::LAST_CHUNK)
            }
            BodyFrame::Length { len, .. } if !self.suppress_body && self.sent < len => {
                // The client would wait for bytes that will never come: close instead.
                self.broken = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Replaces any staged output with a server-generated error response.
    pub fn stage_error(&mut self, err: HttpError) {
        self.out.clear();
        response::encode_error(&mut self.out, &self.shared.config.protocol(), err);
        self.headers_sent = true;
        self.status_code = err.code();
        self.sent = err.body.len() as u64;
        self.keep_alive = false;
    }

    /// Sends `100 Continue` before the first read of a body the client is holding back.
    pub fn send_continue_if_pending(&mut self) -> bool {
        if !self.continue_pending {
            return true;
        }
        self.continue_pending = false;
        let mut line = Vec::with_capacity(32);
        response::encode_continue(&mut line, &self.shared.config.protocol());
        let timeout = self.shared.config.timeout();
        // A held earlier response of this connection (pipelining) must go out first.
        let outbox = self.shared.outbox(self.slot);
        if !outbox.flush_before(self.token, timeout) {
            return false;
        }
        let Some(conn) = self.conn.as_deref_mut() else {
            return false;
        };
        conn.write_all(&[&line], Instant::now() + timeout).is_ok()
    }

    fn set_head(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("WSGI response status is not of type str."))?;
        let mut head = AppHead::default();
        head.set_status(&latin1_bytes(status, "status")?)
            .map_err(PyValueError::new_err)?;
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item
                .cast::<PyTuple>()
                .ok()
                .filter(|t| t.len() == 2)
                .ok_or_else(|| {
                    PyTypeError::new_err(format!(
                        "WSGI response headers must be (name, value) tuples, got {}",
                        item.repr().map(|r| r.to_string()).unwrap_or_default()
                    ))
                })?;
            let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
            let name = name.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "WSGI response header key {} is not of type str.",
                    repr(&name)
                ))
            })?;
            let value = value.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "WSGI response header value {} is not of type str.",
                    repr(&value)
                ))
            })?;
            head.push_header(
                &latin1_bytes(name, "header name")?,
                &latin1_bytes(value, "header value")?,
            )
            .map_err(PyValueError::new_err)?;
        }
        self.head = Some(head);
        Ok(())
    }
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into())
}

pub fn overflow_error() -> PyErr {
    PyValueError::new_err("Response body exceeds the declared Content-Length.")
}

fn gone_error() -> PyErr {
    PyConnectionResetError::new_err("the client closed the connection")
}

/// A str as ISO-8859-1 bytes; anything outside latin-1 is a ValueError.
fn latin1_bytes(s: &Bound<'_, PyString>, what: &str) -> PyResult<Vec<u8>> {
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(text.as_bytes().to_vec());
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| {
            PyValueError::new_err(format!("WSGI response {what} {text:?} is not latin-1"))
        })
}

#[pymethods]
impl Exchange {
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
            match &exc_info {
                Some(info) if this.headers_sent => {
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
                None if this.started() => {
                    return Err(PyRuntimeError::new_err(
                        "WSGI start_response called a second time with no exc_info.",
                    ));
                }
                _ => {}
            }
            this.set_head(&status, &headers)?;
        }
        Ok(slf.getattr("write")?.unbind())
    }

    /// The `write()` callable returned by `start_response`.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("WSGI write() takes bytes"))?;
        if !self.started() {
            return Err(PyRuntimeError::new_err(
                "WSGI write called before start_response.",
            ));
        }
        if self.conn.is_none() {
            return Err(PyRuntimeError::new_err(
                "WSGI write() called after the response ended",
            ));
        }
        self.send(py, data.as_bytes())
    }
}
