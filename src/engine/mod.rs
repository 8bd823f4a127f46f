//! The engine object Python holds: configuration, start, serve, stop and counters.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::{Config, PyState};
use crate::server::Server;
use crate::static_files::Mounts;
use crate::wsgi::environ;

mod settings;

use settings::{AccessLogSettings, EngineSettings, TlsSettings};

/// How often `serve()` looks at Python's signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Builds a TLS configuration to check certificate, key and password, raising ValueError.
#[pyfunction]
#[pyo3(signature = (settings))]
pub fn check_tls(settings: TlsSettings) -> PyResult<()> {
    settings.build().map(drop)
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
        py: Python<'_>,
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
            base_environ: environ::template(base_environ.bind(py))?.unbind(),
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

    /// Applies `_settings.EngineSettings` (every scalar setting at once).
    fn configure(&self, settings: EngineSettings) -> PyResult<()> {
        settings.apply(self.server.config())
    }

    /// The application and what it is called with: the base environ, and whether PATH_INFO
    /// is decoded as UTF-8 (`Gateway_u0`).
    fn set_application(
        &self,
        py: Python<'_>,
        app: Py<PyAny>,
        base_environ: Py<PyDict>,
        unicode_paths: bool,
    ) -> PyResult<()> {
        let base_environ = environ::template(base_environ.bind(py))?.unbind();
        self.server.config().update_py_state(py, |state| {
            state.app = app;
            state.base_environ = base_environ;
            state.unicode_paths = unicode_paths;
        });
        Ok(())
    }

    /// HTTPS for new connections (`_settings.TlsSettings`), or plain HTTP with None.
    fn set_tls(&self, settings: Option<TlsSettings>) -> PyResult<()> {
        let tls = settings.map(TlsSettings::build).transpose()?;
        self.server.config().set_tls(tls);
        Ok(())
    }

    /// The access log (`_settings.AccessLogSettings`); a path of None turns it off.
    fn set_access_log(&self, settings: AccessLogSettings) -> PyResult<()> {
        self.server.config().set_access_log(settings.open()?);
        Ok(())
    }

    /// Static-file mounts as (URL prefix, directory) pairs; an empty list turns them off.
    /// Returns the mounts as applied: (prefix ending in '/', canonical directory).
    fn set_static(&self, mounts: Vec<(String, String)>) -> PyResult<Vec<(String, String)>> {
        if mounts.is_empty() {
            self.server.config().set_static_mounts(None);
            return Ok(Vec::new());
        }
        let mounts = Mounts::new(&mounts).map_err(PyValueError::new_err)?;
        let applied = mounts.describe();
        self.server.config().set_static_mounts(Some(mounts));
        Ok(applied)
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
