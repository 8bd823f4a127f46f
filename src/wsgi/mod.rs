//! The WSGI gateway (PEP 3333), built natively: environ, `start_response`, `wsgi.input`, the
//! application call and the iteration of its result.

pub mod environ;
pub mod exchange;
pub mod file_wrapper;
pub mod http2;
pub mod input;
mod start_response;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit, PyTypeError};
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::access_log::{self, AccessLog};
use crate::config::PyState;
use crate::conn::{Body, Conn};
use crate::context::Context;
use crate::http::error;
use crate::http::request::RequestHead;
use exchange::{Exchange, InputFailure, ShortBody};
use file_wrapper::FileWrapper;
use input::Input;

/// Small bodies are copied behind the head so the whole response is one write.
const COALESCE_LIMIT: usize = 64 * 1024;
const LOG_ERROR: i32 = 40;
const LOG_WARNING: i32 = 30;

/// A request whose response is complete except for the bytes left in the worker's buffer.
pub struct Finished {
    pub conn: Option<Box<Conn>>,
    pub token: u64,
    pub keep_alive: bool,
    pub body: Body,
    /// The worker allowed holding this response for a batch write.
    pub hold: bool,
    /// How long the application took, in microseconds.
    pub micros: u64,
}

/// Where a request runs: its worker's slot (whose outbox may queue the response) and whether
/// the worker allows holding the response for a batch write.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub slot: usize,
    pub hold: bool,
}

/// What the access log needs from a request, copied before the body may overwrite it.
struct LogContext {
    log: Arc<AccessLog>,
    /// The client for `%h`: the peer, replaced by REMOTE_ADDR once trusted proxy headers
    /// have been applied to the environ.
    remote: String,
    peer: String,
    head_bytes: Vec<u8>,
}

impl LogContext {
    fn capture(log: Arc<AccessLog>, conn: &Conn, head: &RequestHead) -> LogContext {
        LogContext {
            log,
            remote: conn.peer.addr.clone(),
            peer: conn.peer.addr.clone(),
            head_bytes: conn.head_bytes()[..head.head_len].to_vec(),
        }
    }

    fn record(&self, head: &RequestHead, status: u16, body_bytes: u64, micros: u64) {
        let buf = &self.head_bytes;
        let header = |name: &str| head.field(buf, name);
        self.log.record(&access_log::Entry {
            remote: &self.remote,
            peer: &self.peer,
            method: head.method.get(buf),
            target: head.target.get(buf),
            protocol: head.protocol.get(buf),
            status,
            body_bytes,
            micros,
            header: &header,
        });
    }
}

/// Runs the application for one request. Whatever happens, the connection comes back with a
/// verdict on whether it may be reused; bytes still to be written are left in `out`.
pub fn serve(
    py: Python<'_>,
    context: &Arc<Context>,
    conn: Box<Conn>,
    token: u64,
    head: RequestHead,
    out: &mut Vec<u8>,
    place: Placement,
) -> Finished {
    let started = Instant::now();
    let state = context.config.py_state();
    let mut log = context
        .config
        .access_log()
        .map(|log| LogContext::capture(log, &conn, &head));
    let exchange = Exchange::new(
        Arc::clone(context),
        conn,
        token,
        &head,
        std::mem::take(out),
        place,
    );
    let exchange = match Bound::new(py, exchange) {
        Ok(ex) => ex,
        Err(err) => {
            report(py, &state, &err);
            return Finished {
                conn: None,
                token,
                keep_alive: false,
                body: Body::Done,
                hold: false,
                micros: 0,
            };
        }
    };
    // A panic in the engine must not cross into Python nor kill the worker: it becomes an
    // error like any other (500 if nothing was sent yet, logged).
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_app(py, &state, &exchange, &head, log.as_mut())
    }))
    .unwrap_or_else(|payload| Err(panic_error(payload)));
    let mut ex = loop {
        // Only a thread misusing this request's objects could hold a borrow now.
        match exchange.try_borrow_mut() {
            Ok(ex) => break ex,
            Err(_) => py.detach(|| std::thread::sleep(std::time::Duration::from_millis(1))),
        }
    };
    // Queued stream chunks borrow Python objects of this exchange: out before it ends.
    let result = result.and(ex.write_queued(py));
    if let Err(err) = result {
        handle_app_error(py, &state, &mut ex, &err);
    }
    *out = std::mem::take(&mut ex.out);
    let outcome = ex.conclude();
    let micros = started.elapsed().as_micros() as u64;
    context
        .counters
        .record_response(outcome.status_code, micros);
    if let Some(log) = log {
        log.record(&head, outcome.status_code, outcome.body_bytes, micros);
    }
    Finished {
        conn: outcome.conn,
        token,
        keep_alive: outcome.keep_alive,
        body: outcome.body,
        hold: outcome.hold,
        micros,
    }
}

fn run_app(
    py: Python<'_>,
    state: &PyState,
    exchange: &Bound<'_, Exchange>,
    head: &RequestHead,
    log: Option<&mut LogContext>,
) -> PyResult<()> {
    let input = Bound::new(
        py,
        Input::new(input::Source::Exchange(exchange.clone().unbind())),
    )?;
    let environ = {
        let mut ex = exchange.borrow_mut();
        let context = Arc::clone(ex.context());
        if let (Some(path), Some(conn)) = (&context.config.panic_test_path, ex.conn.as_deref()) {
            if head.path.get(conn.head_bytes()) == path.as_slice() {
                panic!("fault injected for {}", String::from_utf8_lossy(path));
            }
        }
        // Only TLS connections look at the TLS settings (a lock): plain requests skip it.
        if let Some(conn) = ex.conn.as_deref_mut().filter(|c| c.is_tls()) {
            if let Some(tls) = context.config.tls() {
                conn.prepare_tls_env(&tls.server_env);
            }
        }
        let conn = ex
            .conn
            .as_deref()
            .ok_or_else(|| PyTypeError::new_err("no connection"))?;
        let base = state.base_environ.bind(py);
        let trusted = context.config.trusted();
        let environ = environ::build(
            py,
            base,
            state.unicode_paths,
            &environ::Origin::of(conn),
            head,
            input.into_any(),
            trusted.as_deref(),
        )?;
        if let (Some(log), Some(_)) = (log, trusted) {
            // Trusted proxy headers may have named the client: `%h` logs it.
            if let Ok(Some(addr)) = environ.get_item(intern!(py, "REMOTE_ADDR")) {
                log.remote = addr.extract().unwrap_or_default();
            }
        }
        environ
    };
    let result = state.app.bind(py).call1((environ.clone(), exchange))?;
    let responded = respond(py, exchange, &result);
    let closed = close_result(&result);
    responded?;
    closed?;
    let short = exchange.try_borrow_mut()?.finish()?;
    if let Some(short) = short {
        warn_short_body(py, state, &environ, short);
    }
    Ok(())
}

/// A body shorter than its Content-Length is an application bug the client only sees as a
/// closed connection: say so once, with the request.
fn warn_short_body(py: Python<'_>, state: &PyState, environ: &Bound<'_, PyAny>, short: ShortBody) {
    let item = |key: &str| -> String {
        environ
            .get_item(key)
            .ok()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let message = format!(
        "{} {}: the application sent {} of the {} bytes its Content-Length declared; the \
         connection was closed after the short body",
        item("REQUEST_METHOD"),
        item("REQUEST_URI"),
        short.sent,
        short.declared
    );
    if let Err(e) = state
        .server
        .bind(py)
        .call_method1(pyo3::intern!(py, "error_log"), (message, LOG_WARNING))
    {
        e.print(py);
    }
}

fn respond(
    py: Python<'_>,
    exchange: &Bound<'_, Exchange>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Ok(list) = result.cast::<PyList>() {
        if list.len() == 1 {
            // The usual `[body]`, without collecting it.
            return respond_known(py, exchange, &[list.get_item(0)?]);
        }
        let items: Vec<Bound<'_, PyAny>> = list.iter().collect();
        return respond_known(py, exchange, &items);
    }
    let plain_tcp = exchange.borrow().conn.as_ref().is_some_and(|c| !c.is_tls());
    if let (Ok(wrapper), true) = (result.cast::<FileWrapper>(), plain_tcp) {
        let file = wrapper.borrow().sendable(py);
        if let Some(file) = file {
            return exchange.try_borrow_mut()?.send_file(py, file);
        }
    }
    if result.is_instance_of::<PyBytes>() {
        // Iterating bytes yields ints: the usual mistake is `return body` for `return [body]`.
        return Err(PyTypeError::new_err(
            "the WSGI application returned bytes; return an iterable of bytes, e.g. [body]",
        ));
    }
    if let Ok(tuple) = result.cast::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = tuple.iter().collect();
        return respond_known(py, exchange, &items);
    }
    for item in result.try_iter()? {
        let item = item?;
        let chunk = as_bytes(&item)?;
        if !chunk.as_bytes().is_empty() {
            exchange.try_borrow_mut()?.send_chunk(py, chunk)?;
        }
    }
    Ok(())
}

/// A list or tuple: every chunk is already there, so small ones go out in one write.
fn respond_known(
    py: Python<'_>,
    exchange: &Bound<'_, Exchange>,
    items: &[Bound<'_, PyAny>],
) -> PyResult<()> {
    let (mut total, mut first) = (0usize, 0usize);
    for item in items {
        let len = as_bytes(item)?.as_bytes().len();
        total += len;
        if first == 0 {
            first = len;
        }
    }
    let mut ex = exchange.try_borrow_mut()?;
    if ex.started() {
        // PEP 3333: with at most one chunk the length is known; longer lists are framed like
        // a stream (as cheroot does), though still coalesced into one write when small.
        let known = (items.len() <= 1).then_some(total as u64);
        ex.commit_for(first, known)?;
    }
    for item in items {
        let chunk = as_bytes(item)?;
        let data = chunk.as_bytes();
        if data.is_empty() {
            continue;
        }
        if ex.can_stage(data.len(), COALESCE_LIMIT) {
            ex.stage(data)?;
        } else {
            ex.send_pinned(py, chunk, false)?;
        }
    }
    if ex.overflowed() {
        return Err(exchange::overflow_error());
    }
    Ok(())
}

/// A result item as bytes, or the TypeError PEP 3333 calls for.
pub(crate) fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "WSGI applications must yield bytes, not {}",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// PEP 3333: `close()` is called on the result, whatever happened.
pub(crate) fn close_result(result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(pyo3::intern!(result.py(), "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

fn handle_app_error(py: Python<'_>, state: &PyState, ex: &mut Exchange, err: &PyErr) {
    ex.close_after();
    if is_interrupt(py, err) {
        ex.abandon();
        return interrupt(py, state, err);
    }
    match ex.input_failure() {
        Some(InputFailure::Respond(status)) if !ex.headers_sent() => return ex.stage_error(status),
        Some(_) => return ex.abandon(),
        None => {}
    }
    if ex.overflowed() {
        report(py, state, err);
        // Once the head is out, the body went out cut at the declared length; the connection
        // closes after it (an overflowed exchange is never kept alive).
        if !ex.headers_sent() {
            ex.stage_error(error::CONTENT_LENGTH_OVERFLOW);
        }
        return;
    }
    if ex.broken() {
        // The client went away while we wrote: nothing to answer, nothing to log.
        ex.abandon();
        return;
    }
    report(py, state, err);
    if ex.headers_sent() {
        // Too late for a status: cut the connection so the client sees a broken body.
        ex.abandon();
    } else {
        ex.stage_error(error::INTERNAL_ERROR);
    }
}

/// Ctrl-C or `sys.exit()` inside the application: the server's to handle, not a 500.
fn is_interrupt(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// Hands KeyboardInterrupt or SystemExit to the server (`interrupt(server, exc)`).
fn interrupt(py: Python<'_>, state: &PyState, err: &PyErr) {
    if let Err(e) = state
        .interrupter
        .bind(py)
        .call1((state.server.bind(py), err.value(py)))
    {
        report(py, state, &e);
    }
}

/// A Rust panic as a Python exception (pyo3's PanicException), with the panic message.
pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    PanicException::new_err(format!("internal error in stogie: {msg}"))
}

/// Logs an exception through the server's `error_log`, with its traceback.
pub fn report(py: Python<'_>, state: &PyState, err: &PyErr) {
    let msg = err
        .value(py)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_default();
    // `into_value` attaches the traceback to the exception object.
    let exc = err.clone_ref(py).into_value(py);
    let reporter = state.reporter.bind(py);
    if let Err(e) = reporter.call1((state.server.bind(py), msg, LOG_ERROR, exc)) {
        e.print(py);
    }
}
