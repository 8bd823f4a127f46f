//! Server settings that Python may change while serving (cheroot's live attributes).
//! Scalars are atomics read on the request path; Python objects sit behind one swap-able Arc.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::access_log::AccessLog;
use crate::conn::{BodyGauges, IntakeRules, Rules};
use crate::http::forwarded::Trusted;
use crate::http::request::Limits;
use crate::static_files::Mounts;
use crate::tls::Tls;

/// The Python objects a request needs, replaced as a whole when one changes.
pub struct PyState {
    pub app: Py<PyAny>,
    pub base_environ: Py<PyDict>,
    /// The Python server object (for `error_log` and `interrupt`).
    pub server: Py<PyAny>,
    /// `report(server, msg, level, exc)`: logs through `server.error_log` with the traceback.
    pub reporter: Py<PyAny>,
    /// `interrupt(server, exc)`: hands KeyboardInterrupt/SystemExit to the server.
    pub interrupter: Py<PyAny>,
    /// Decode PATH_INFO as UTF-8 (`Gateway_u0`).
    pub unicode_paths: bool,
}

pub struct Config {
    timeout_ms: AtomicU64,
    max_head: AtomicUsize,
    max_body: AtomicU64,
    http10: AtomicBool,
    peercreds: AtomicBool,
    peercreds_resolve: AtomicBool,
    /// Fault injection for the tests: a request for exactly this path panics in the engine
    /// (`STOGIE_PANIC_TEST_PATH`, read when the engine is created).
    pub panic_test_path: Option<Vec<u8>>,
    /// Threads above `numthreads` exit after this long without work.
    thread_idle_ms: AtomicU64,
    /// `accepted_queue_size` (0: no 503s) and `accepted_queue_timeout` in milliseconds.
    queue_size: AtomicUsize,
    queue_timeout_ms: AtomicU64,
    proxy_protocol: AtomicBool,
    tls: Mutex<Option<Arc<Tls>>>,
    has_access_log: AtomicBool,
    access_log: Mutex<Option<Arc<AccessLog>>>,
    has_trusted: AtomicBool,
    trusted: Mutex<Arc<Trusted>>,
    /// `--static` mounts; the flag lets requests skip the lock when there are none.
    has_static: AtomicBool,
    static_mounts: Mutex<Option<Arc<Mounts>>>,
    /// Idle keep-alive connections allowed; `usize::MAX` for no limit.
    keep_alive_limit: AtomicUsize,
    /// The status-line protocol (`server.protocol`) and the `Server` header value.
    strings: Mutex<Arc<(Vec<u8>, Vec<u8>)>>,
    py: Mutex<Arc<PyState>>,
    /// Collect request bodies before the application runs (conn/intake.rs), with its bounds.
    buffer_bodies: AtomicBool,
    /// Serve HTTP/2 (src/http2/).
    http2: AtomicBool,
    body_memory_limit: AtomicUsize,
    body_spool_limit: AtomicU64,
    body_min_rate: AtomicU64,
    /// The figures of collected bodies across the server.
    pub body_gauges: Arc<BodyGauges>,
}

/// Defaults of the request-body settings (docs/configuration.md).
pub const BODY_MEMORY_LIMIT: usize = 1024 * 1024;
pub const BODY_SPOOL_LIMIT: u64 = 1024 * 1024 * 1024;
pub const BODY_MIN_RATE: u64 = 500;

impl Config {
    pub fn new(py_state: PyState) -> Config {
        Config {
            timeout_ms: AtomicU64::new(10_000),
            max_head: AtomicUsize::new(0),
            max_body: AtomicU64::new(0),
            http10: AtomicBool::new(false),
            peercreds: AtomicBool::new(false),
            peercreds_resolve: AtomicBool::new(false),
            keep_alive_limit: AtomicUsize::new(usize::MAX),
            proxy_protocol: AtomicBool::new(false),
            tls: Mutex::new(None),
            has_access_log: AtomicBool::new(false),
            access_log: Mutex::new(None),
            has_trusted: AtomicBool::new(false),
            trusted: Mutex::new(Arc::new(Trusted::default())),
            has_static: AtomicBool::new(false),
            static_mounts: Mutex::new(None),
            queue_size: AtomicUsize::new(0),
            thread_idle_ms: AtomicU64::new(30_000),
            panic_test_path: std::env::var_os("STOGIE_PANIC_TEST_PATH")
                .map(|p| p.into_encoded_bytes()),
            queue_timeout_ms: AtomicU64::new(10_000),
            strings: Mutex::new(Arc::new((b"HTTP/1.1".to_vec(), Vec::new()))),
            py: Mutex::new(Arc::new(py_state)),
            buffer_bodies: AtomicBool::new(true),
            http2: AtomicBool::new(true),
            body_memory_limit: AtomicUsize::new(BODY_MEMORY_LIMIT),
            body_spool_limit: AtomicU64::new(BODY_SPOOL_LIMIT),
            body_min_rate: AtomicU64::new(BODY_MIN_RATE),
            body_gauges: Arc::default(),
        }
    }

    /// What a connection needs to find its next request (and collect its body).
    pub fn rules(&self) -> Rules<'_> {
        let intake = self.buffer_bodies.load(Ordering::Relaxed).then(|| {
            let rules = IntakeRules {
                memory_limit: self.body_memory_limit.load(Ordering::Relaxed),
                spool_limit: self.body_spool_limit.load(Ordering::Relaxed),
                min_rate: self.body_min_rate.load(Ordering::Relaxed),
                grace: self.timeout(),
            };
            (rules, &self.body_gauges)
        });
        Rules {
            limits: self.limits(),
            max_body: self.max_body(),
            intake,
            http2: self.http2(),
        }
    }

    /// HTTP/2 is served (ALPN `h2` on TLS, the preface on cleartext).
    pub fn http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    pub fn set_http2(&self, on: bool) {
        self.http2.store(on, Ordering::Relaxed);
    }

    /// The request-body settings: collect before the application runs or not, bytes kept in
    /// memory per body, bytes in temporary files across the server, minimum rate (bytes/s).
    pub fn set_intake(&self, enabled: bool, memory_limit: usize, spool_limit: u64, min_rate: u64) {
        self.buffer_bodies.store(enabled, Ordering::Relaxed);
        self.body_memory_limit
            .store(memory_limit, Ordering::Relaxed);
        self.body_spool_limit.store(spool_limit, Ordering::Relaxed);
        self.body_min_rate.store(min_rate, Ordering::Relaxed);
    }

    /// The minimum rate of a request body in bytes per second (0: none).
    pub fn body_min_rate(&self) -> u64 {
        self.body_min_rate.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_timeout(&self, secs: f64) {
        let ms = (secs.max(0.001) * 1000.0).min(u64::MAX as f64 / 2.0) as u64;
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_head: self.max_head.load(Ordering::Relaxed),
        }
    }

    pub fn set_max_head(&self, n: usize) {
        self.max_head.store(n, Ordering::Relaxed);
    }

    pub fn max_body(&self) -> u64 {
        self.max_body.load(Ordering::Relaxed)
    }

    pub fn set_max_body(&self, n: u64) {
        self.max_body.store(n, Ordering::Relaxed);
    }

    /// The server speaks HTTP/1.0 only (`server.protocol == 'HTTP/1.0'`).
    pub fn http10(&self) -> bool {
        self.http10.load(Ordering::Relaxed)
    }

    /// (read SO_PEERCRED on UNIX sockets, resolve user and group names).
    pub fn peercreds(&self) -> (bool, bool) {
        (
            self.peercreds.load(Ordering::Relaxed),
            self.peercreds_resolve.load(Ordering::Relaxed),
        )
    }

    pub fn set_peercreds(&self, enabled: bool, resolve: bool) {
        self.peercreds.store(enabled, Ordering::Relaxed);
        self.peercreds_resolve
            .store(enabled && resolve, Ordering::Relaxed);
    }

    pub fn thread_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.thread_idle_ms.load(Ordering::Relaxed))
    }

    pub fn set_thread_idle_timeout(&self, secs: f64) {
        let ms = (secs.max(0.01) * 1000.0).min(1e12) as u64;
        self.thread_idle_ms.store(ms, Ordering::Relaxed);
    }

    /// (places, wait) of the overload queue, when 503s are enabled.
    pub fn accepted_queue(&self) -> Option<(usize, Duration)> {
        let size = self.queue_size.load(Ordering::Relaxed);
        let wait = Duration::from_millis(self.queue_timeout_ms.load(Ordering::Relaxed));
        (size > 0).then_some((size, wait))
    }

    pub fn set_accepted_queue(&self, size: i64, timeout_secs: f64) {
        self.queue_size
            .store(size.max(0) as usize, Ordering::Relaxed);
        let ms = (timeout_secs.max(0.0) * 1000.0).min(1e12) as u64;
        self.queue_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Connections start with a PROXY protocol header.
    pub fn proxy_protocol(&self) -> bool {
        self.proxy_protocol.load(Ordering::Relaxed)
    }

    pub fn set_proxy_protocol(&self, on: bool) {
        self.proxy_protocol.store(on, Ordering::Relaxed);
    }

    /// TLS settings for new connections, when the server speaks HTTPS.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_tls(&self, tls: Option<Tls>) {
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls.map(Arc::new);
    }

    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        if !self.has_access_log.load(Ordering::Relaxed) {
            return None;
        }
        self.access_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the access log (flushing the previous one).
    pub fn set_access_log(&self, log: Option<AccessLog>) {
        let previous = {
            let mut slot = self.access_log.lock().unwrap_or_else(|p| p.into_inner());
            self.has_access_log.store(log.is_some(), Ordering::Relaxed);
            std::mem::replace(&mut *slot, log.map(Arc::new))
        };
        if let Some(previous) = previous {
            previous.flush();
        }
    }

    /// The peers whose proxy headers are believed, if any.
    pub fn trusted(&self) -> Option<Arc<Trusted>> {
        if !self.has_trusted.load(Ordering::Relaxed) {
            return None;
        }
        Some(Arc::clone(
            &self.trusted.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    pub fn set_trusted(&self, trusted: Trusted) {
        self.has_trusted
            .store(!trusted.is_empty(), Ordering::Relaxed);
        *self.trusted.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(trusted);
    }

    /// The static-file mounts, if any (one relaxed load when there are none).
    pub fn static_mounts(&self) -> Option<Arc<Mounts>> {
        if !self.has_static.load(Ordering::Relaxed) {
            return None;
        }
        self.static_mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_static_mounts(&self, mounts: Option<Mounts>) {
        let mut slot = self.static_mounts.lock().unwrap_or_else(|p| p.into_inner());
        self.has_static.store(mounts.is_some(), Ordering::Relaxed);
        *slot = mounts.map(Arc::new);
    }

    pub fn keep_alive_limit(&self) -> usize {
        self.keep_alive_limit.load(Ordering::Relaxed)
    }

    pub fn set_keep_alive_limit(&self, limit: Option<usize>) {
        self.keep_alive_limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    pub fn set_protocol(&self, protocol: &str) {
        self.http10.store(protocol == "HTTP/1.0", Ordering::Relaxed);
        let mut strings = self.strings.lock().unwrap_or_else(|p| p.into_inner());
        *strings = Arc::new((protocol.as_bytes().to_vec(), strings.1.clone()));
    }

    pub fn set_server_name(&self, name: &str) {
        let mut strings = self.strings.lock().unwrap_or_else(|p| p.into_inner());
        *strings = Arc::new((strings.0.clone(), name.as_bytes().to_vec()));
    }

    /// (status-line protocol, Server header value).
    pub fn strings(&self) -> Arc<(Vec<u8>, Vec<u8>)> {
        Arc::clone(&self.strings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn protocol(&self) -> Vec<u8> {
        self.strings().0.clone()
    }

    pub fn py_state(&self) -> Arc<PyState> {
        Arc::clone(&self.py.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the Python state with `update` applied to a copy of the current one.
    pub fn update_py_state(&self, py: Python<'_>, update: impl FnOnce(&mut PyState)) {
        let mut guard = self.py.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = PyState {
            app: guard.app.clone_ref(py),
            base_environ: guard.base_environ.clone_ref(py),
            server: guard.server.clone_ref(py),
            reporter: guard.reporter.clone_ref(py),
            interrupter: guard.interrupter.clone_ref(py),
            unicode_paths: guard.unicode_paths,
        };
        update(&mut next);
        *guard = Arc::new(next);
    }
}
