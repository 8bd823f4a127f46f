//! `wsgi.input`: the request body, collected before the application ran (conn/intake.rs) or
//! streamed from the socket, Content-Length or chunked alike. Socket and file reads release
//! the GIL; a client that stops mid-body is an exception, never a short body.

use pyo3::exceptions::{
    PyConnectionResetError, PyOSError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::exchange::{Exchange, InputFailure};
use super::http2::StreamCall;
use crate::http::error;

/// Bytes read from the socket per refill when reading lines.
const LINE_CHUNK: usize = 64 * 1024;

pyo3::create_exception!(
    _core,
    MaxSizeExceeded,
    pyo3::exceptions::PyException,
    "The request body is larger than max_request_body_size."
);

/// Where the body comes from.
pub enum Source {
    /// An HTTP/1.1 request (collected, or read from the socket).
    Exchange(Py<Exchange>),
    /// An HTTP/2 stream.
    Stream(Py<StreamCall>),
}

#[pyclass(module = "stogie._core", name = "InputStream")]
pub struct Input {
    source: Source,
    /// Decoded bytes read ahead by `readline`, not yet returned.
    pending: Vec<u8>,
    pending_pos: usize,
    eof: bool,
}

impl Input {
    pub fn new(source: Source) -> Input {
        Input {
            source,
            pending: Vec::new(),
            pending_pos: 0,
            eof: false,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.pending[self.pending_pos..]
    }

    fn take_buffered(&mut self, max: usize, out: &mut Vec<u8>) {
        let n = self.buffered().len().min(max);
        out.extend_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
        self.pending_pos += n;
        if self.pending_pos == self.pending.len() {
            self.pending.clear();
            self.pending_pos = 0;
        }
    }

    /// Reads up to `max` body bytes from the connection into `out`; 0 means end of body.
    fn read_socket(&mut self, py: Python<'_>, out: &mut Vec<u8>, max: usize) -> PyResult<usize> {
        if self.eof || max == 0 {
            return Ok(0);
        }
        let (read, max_body) = match &self.source {
            Source::Exchange(exchange) => {
                let mut ex = exchange.bind(py).try_borrow_mut().map_err(|_| in_use())?;
                let max_body = ex.context().config.max_body();
                (ex.read_body(py, out, max), max_body)
            }
            Source::Stream(call) => {
                let mut call = call.bind(py).try_borrow_mut().map_err(|_| in_use())?;
                let max_body = call.context().config.max_body();
                (call.read_body(py, out, max), max_body)
            }
        };
        match read {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(failure) => Err(failure_error(failure, max_body)),
        }
    }

    /// `read(n)` of a body collected before the application ran: one copy, from the buffer
    /// (or its temporary file) straight into the bytes object. `None`: the body is streamed.
    fn read_collected<'py>(
        &mut self,
        py: Python<'py>,
        want: usize,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Source::Exchange(exchange) = &self.source else {
            return Ok(None);
        };
        let mut ex = exchange.bind(py).try_borrow_mut().map_err(|_| in_use())?;
        let Some(body) = ex.buffered_body() else {
            return Ok(None);
        };
        let n = usize::try_from(body.remaining()).map_or(want, |left| left.min(want));
        let bytes = match body.unread_in_memory() {
            Some(unread) => {
                let bytes = PyBytes::new(py, &unread[..n]);
                body.advance(n);
                bytes
            }
            None => PyBytes::new_with(py, n, |buf| {
                py.detach(|| body.read_into(buf)).map(|_| ()).map_err(|e| {
                    PyOSError::new_err(format!("reading the spooled request body: {e}"))
                })
            })?,
        };
        if n == 0 {
            self.eof = true;
        }
        Ok(Some(bytes))
    }

    /// Reads into `pending` until it holds a newline, `limit` bytes, or the body ends.
    fn fill_line(&mut self, py: Python<'_>, limit: usize) -> PyResult<()> {
        loop {
            let buffered = self.buffered();
            if memchr::memchr(b'\n', buffered).is_some() || buffered.len() >= limit || self.eof {
                return Ok(());
            }
            let mut more = std::mem::take(&mut self.pending);
            let got = self.read_socket(py, &mut more, LINE_CHUNK);
            self.pending = more;
            if got? == 0 {
                return Ok(());
            }
        }
    }

    fn line(&mut self, py: Python<'_>, limit: usize) -> PyResult<Vec<u8>> {
        self.fill_line(py, limit)?;
        let buffered = self.buffered();
        let end = memchr::memchr(b'\n', buffered)
            .map_or(buffered.len(), |i| i + 1)
            .min(limit);
        let mut line = Vec::with_capacity(end);
        self.take_buffered(end, &mut line);
        Ok(line)
    }
}

fn in_use() -> PyErr {
    PyRuntimeError::new_err("wsgi.input is in use by another thread")
}

/// The exception `wsgi.input` raises for `failure`. `MaxSizeExceeded` carries cheroot's
/// arguments, `('Request Entity Too Large', max_body)`: CherryPy reads the limit from `args[1]`
/// to answer 413.
fn failure_error(failure: InputFailure, max_body: u64) -> PyErr {
    match failure {
        InputFailure::Respond(e) if e == error::BODY_TOO_LARGE => {
            MaxSizeExceeded::new_err(("Request Entity Too Large", max_body))
        }
        InputFailure::Respond(e) if e == error::HEAD_TIMEOUT => {
            PyTimeoutError::new_err("timed out waiting for the request body")
        }
        InputFailure::Respond(_) => PyValueError::new_err("malformed chunked request body"),
        InputFailure::Gone => PyConnectionResetError::new_err(
            "the client closed the connection before sending the whole request body",
        ),
    }
}

/// `None` or a negative size means "all".
fn size_limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = size_limit(size);
        if self.buffered().is_empty() {
            if let Some(bytes) = self.read_collected(py, want)? {
                return Ok(bytes);
            }
        }
        let mut out = Vec::new();
        self.take_buffered(want, &mut out);
        while out.len() < want {
            let step = (want - out.len()).min(1 << 20);
            if self.read_socket(py, &mut out, step)? == 0 {
                break;
            }
        }
        Ok(PyBytes::new(py, &out))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.line(py, size_limit(size))?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let limit = match hint {
            Some(n) if n > 0 => n as usize,
            _ => usize::MAX,
        };
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.line(py, usize::MAX)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if total >= limit {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, usize::MAX)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    fn close(&self) {}

    fn readable(&self) -> bool {
        true
    }
}
