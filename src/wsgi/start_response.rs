//! The `start_response` callable and the `write()` callable it returns (PEP 3333), over
//! the exchange: they check what the application passes and hand it to exchange.rs.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use super::exchange::Exchange;
use crate::context::Context;
use crate::http::response::AppHead;

impl Exchange {
    fn set_head(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let head = app_head(self.context(), status, headers)?;
        self.set_started(head);
        Ok(())
    }
}

/// Whether `start_response` may be called now (PEP 3333): a second call needs `exc_info`,
/// and once the head is out, `exc_info`'s exception is raised instead.
pub(super) fn may_start(
    exc_info: Option<&Bound<'_, PyAny>>,
    headers_sent: bool,
    started: bool,
) -> PyResult<()> {
    match exc_info {
        Some(info) if headers_sent => Err(PyErr::from_value(info.get_item(1)?)),
        None if started => Err(PyRuntimeError::new_err(
            "WSGI start_response called a second time with no exc_info.",
        )),
        _ => Ok(()),
    }
}

/// The status and headers an application passes to `start_response`, checked (HTTP/1.1 and
/// HTTP/2 alike).
pub(super) fn app_head(
    context: &Context,
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<AppHead> {
    let status = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("WSGI response status is not of type str."))?;
    let mut head = AppHead::new();
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
    if let Some(name) = &head.dropped {
        warn_hop_by_hop_once(context, name);
    }
    Ok(head)
}

/// Says once per process that an application header was dropped as hop-by-hop.
fn warn_hop_by_hop_once(context: &Context, name: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        context.log(
            LOG_WARNING,
            &format!(
                "the application's {name:?} response header was dropped: hop-by-hop fields \
                 belong to the server's connection (said once; see docs/http-policy.md)"
            ),
        );
    }
}

const LOG_WARNING: i32 = 30;

pub(super) fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into())
}

/// A str as ISO-8859-1 bytes (borrowed from the str when it is ASCII, as nearly every status
/// and header is); anything outside latin-1 is a ValueError.
fn latin1_bytes<'a>(s: &'a Bound<'_, PyString>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    let text = s.to_cow()?;
    if text.is_ascii() {
        return Ok(match text {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        });
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
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
            may_start(exc_info.as_ref(), this.headers_sent(), this.started())?;
            this.set_head(&status, &headers)?;
        }
        Ok(slf.getattr(pyo3::intern!(slf.py(), "write"))?.unbind())
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
