//! The engine object Python holds: configuration, start, serve, stop and counters.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::access_log::AccessLog;
use crate::config::{Config, PyState};
use crate::http::forwarded::Trusted;
use crate::server::Server;
use crate::tls::{ClientAuth, Tls, TlsOptions};

/// How often `serve()` looks at Python's signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

type TlsTuple = (
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    String,
    Option<String>,
);

/// (certificate, private_key, chain, password, client_ca, client_auth, min_version).
fn tls_from(value: &Bound<'_, PyAny>) -> PyResult<Tls> {
    let (certificate, private_key, chain, password, client_ca, auth, min_version): TlsTuple =
        value.extract()?;
    let client_auth = match auth.as_str() {
        "none" => ClientAuth::None,
        "optional" => ClientAuth::Optional,
        "required" => ClientAuth::Required,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown client_auth {other:?}"
            )))
        }
    };
    let options = TlsOptions {
        certificate,
        private_key,
        chain,
        password,
        client_ca,
        client_auth,
        min_version,
    };
    Tls::new(&options).map_err(PyValueError::new_err)
}

/// Builds a TLS configuration to check certificate, key and password, raising ValueError.
#[pyfunction]
#[pyo3(signature = (settings))]
pub fn check_tls(settings: &Bound<'_, PyAny>) -> PyResult<()> {
    tls_from(settings).map(drop)
}

#[pyclass(module = "stogie._core")]
pub struct Engine {
    server: Arc<Server>,
}

#[pymethods]
impl Engine {
    /// `listen_fd` is a listening socket the engine now owns (the caller passes a duplicate).
    #[new]
    #[pyo3(signature = (listen_fd, server, app, base_environ, reporter, interrupter, min_threads, max_threads))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        listen_fd: i32,
        server: Py<PyAny>,
        app: Py<PyAny>,
        base_environ: Py<PyDict>,
        reporter: Py<PyAny>,
        interrupter: Py<PyAny>,
        min_threads: usize,
        max_threads: usize,
    ) -> PyResult<Engine> {
        if min_threads == 0 {
            return Err(PyTypeError::new_err("min_threads must be at least 1"));
        }
        let state = PyState {
            app,
            base_environ,
            server,
            reporter,
            interrupter,
            unicode_paths: false,
        };
        let config = Config::new(state);
        let server = Server::new(listen_fd, config, min_threads, max_threads.max(min_threads))
            .map_err(|e| PyOSError::new_err(format!("cannot set up the event loop: {e}")))?;
        Ok(Engine { server })
    }

    /// Changes settings: app, base_environ, unicode_paths, timeout, max_request_header_size,
    /// max_request_body_size, protocol, server_name and the others listed in the match below.
    #[pyo3(signature = (**settings))]
    fn configure(&self, py: Python<'_>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(settings) = settings else {
            return Ok(());
        };
        let config = self.server.config();
        for (key, value) in settings.iter() {
            let key: String = key.extract()?;
            match key.as_str() {
                "timeout" => config.set_timeout(value.extract()?),
                "max_request_header_size" => {
                    config.set_max_head(value.extract::<i64>()?.max(0) as usize)
                }
                "max_request_body_size" => {
                    config.set_max_body(value.extract::<i64>()?.max(0) as u64)
                }
                "protocol" => config.set_protocol(&value.extract::<String>()?),
                "server_name" => config.set_server_name(&value.extract::<String>()?),
                "keep_alive_conn_limit" => config.set_keep_alive_limit(value.extract()?),
                "proxy_protocol" => config.set_proxy_protocol(value.is_truthy()?),
                "thread_idle_timeout" => config.set_thread_idle_timeout(value.extract()?),
                "tls" => config.set_tls(if value.is_none() {
                    None
                } else {
                    Some(tls_from(&value)?)
                }),
                "access_log" => {
                    let (path, format): (Option<String>, Option<String>) = value.extract()?;
                    let log = match path {
                        None => None,
                        Some(path) => Some(
                            AccessLog::open(Some(&path), format.as_deref())
                                .map_err(PyValueError::new_err)?,
                        ),
                    };
                    config.set_access_log(log);
                }
                "forwarded_allow_ips" => {
                    let items: Vec<String> = value.extract()?;
                    let trusted = Trusted::parse(&items)
                        .map_err(|e| PyValueError::new_err(format!("forwarded_allow_ips: {e}")))?;
                    config.set_trusted(trusted);
                }
                "accepted_queue" => {
                    let (size, timeout): (i64, f64) = value.extract()?;
                    config.set_accepted_queue(size, timeout);
                }
                "peercreds" => {
                    let (enabled, resolve): (bool, bool) = value.extract()?;
                    config.set_peercreds(enabled, resolve);
                }
                "app" => config.update_py_state(py, |s| s.app = value.clone().unbind()),
                "base_environ" => {
                    let dict = value.cast::<PyDict>()?.clone().unbind();
                    config.update_py_state(py, |s| s.base_environ = dict);
                }
                "unicode_paths" => {
                    let on = value.is_truthy()?;
                    config.update_py_state(py, |s| s.unicode_paths = on);
                }
                other => {
                    return Err(PyTypeError::new_err(format!(
                        "unknown engine setting {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn start(&self) -> PyResult<()> {
        self.server
            .start()
            .map_err(|e| PyOSError::new_err(format!("cannot start worker threads: {e}")))
    }

    /// Blocks until `stop()`, with the GIL released; Python signal handlers still run.
    fn serve(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            let stopped = py.detach(|| self.server.wait_stopped(SIGNAL_CHECK));
            if stopped {
                return Ok(());
            }
            py.check_signals()?;
        }
    }

    /// Stops serving; returns within about `timeout` seconds.
    fn stop(&self, py: Python<'_>, timeout: f64) {
        let grace = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
        py.detach(|| self.server.stop(grace));
        self.server.notify_stopped();
    }

    /// Writes out buffered access-log lines and reopens the file (log rotation).
    fn reopen_access_log(&self) -> PyResult<()> {
        if let Some(log) = self.server.config().access_log() {
            log.reopen()
                .map_err(|e| PyOSError::new_err(format!("cannot reopen the access log: {e}")))?;
        }
        Ok(())
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.server.is_stopping()
    }

    /// Counters and gauges by name (`STAT_KEYS`, in that order).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (key, value) in self.server.stats() {
            d.set_item(key, value)?;
        }
        Ok(d)
    }
}
