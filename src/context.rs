//! What a request may ask of the server while its application runs: the settings, the
//! counters, its worker's outbox, whether the server is stopping and whether another idle
//! keep-alive connection may be kept. `wsgi/` depends on this module, never on `server/`, so
//! the dependencies point one way: server -> wsgi -> context.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::prelude::*;

use crate::config::Config;
use crate::counters::Counters;
use crate::outbox::Outbox;

pub struct Context {
    pub config: Config,
    pub counters: Counters,
    /// One per worker slot: the responses that worker holds for a batch write.
    outboxes: Box<[Outbox]>,
    stopping: AtomicBool,
    /// Connections waiting in epoll between requests, as the connection table last counted
    /// them (published by `server::table::TableGuard`).
    idle_connections: AtomicUsize,
}

impl Context {
    pub fn new(config: Config, workers: usize) -> Context {
        Context {
            config,
            counters: Counters::default(),
            outboxes: (0..workers).map(|_| Outbox::default()).collect(),
            stopping: AtomicBool::new(false),
            idle_connections: AtomicUsize::new(0),
        }
    }

    /// The held responses of worker `slot`.
    pub fn outbox(&self, slot: usize) -> &Outbox {
        &self.outboxes[slot]
    }

    pub fn outboxes(&self) -> &[Outbox] {
        &self.outboxes
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Marks the server as stopping; true if it already was.
    pub fn begin_stopping(&self) -> bool {
        self.stopping.swap(true, Ordering::AcqRel)
    }

    /// Whether another idle keep-alive connection may be kept (`keep_alive_conn_limit`).
    pub fn keep_alive_allowed(&self) -> bool {
        let limit = self.config.keep_alive_limit();
        limit == usize::MAX || self.idle_connections.load(Ordering::Relaxed) < limit
    }

    /// Writes one line to the server's `error_log` (the `stogie` logger) at a `logging` level
    /// (20 INFO, 30 WARNING). Takes the GIL: for rare events only.
    pub fn log(&self, level: i32, message: &str) {
        Python::attach(|py| {
            let state = self.config.py_state();
            let server = state.server.bind(py);
            if let Err(e) = server.call_method1(pyo3::intern!(py, "error_log"), (message, level)) {
                e.print(py);
            }
        });
    }

    pub fn publish_idle_connections(&self, idle: usize) {
        self.idle_connections.store(idle, Ordering::Relaxed);
    }
}
