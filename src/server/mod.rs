//! The server: threads, connections and the order in which things happen.
//!
//! The request path, from accept to the application and back:
//!
//! ```text
//!  epoll (net/poller.rs), one instance shared by every worker
//!    │ listener readable
//!    ├──► accept.rs      accept4 in bursts → Conn (conn/) → table.rs (parked, in epoll)
//!    │ connection readable
//!    └──► worker.rs      table.checkout → Conn::next_request (http/request.rs parses the head;
//!                          │ conn/intake.rs collects a body still arriving, parking meanwhile)
//!                          │ a complete request (under a --static prefix: static_files::serve
//!                          │ answers it here, without the GIL, and it goes on to finish)
//!                          ▼
//!                        wsgi::serve (wsgi/): environ, app(environ, start_response),
//!                          the result framed by http/body.rs, written through
//!                          conn/transport.rs or held in the worker's outbox (outbox.rs)
//!                          │ response done
//!                          ▼
//!                        worker.rs: what a slow reader did not take waits in the
//!                          connection's backlog (conn/backlog.rs), written from epoll's
//!                          writability events; then keep-alive → next pipelined request, or
//!                          park the drained connection in the table (back to epoll); else close
//! ```
//!
//! The thread that takes an event runs the whole request itself: no hand-off between
//! threads on the common path. Only as many workers poll as are needed (pool.rs parks the
//! rest); monitor.rs wakes or starts one when every active worker is stuck in a slow
//! application, writes out the held responses of a stuck worker, and closes connections
//! that stay silent too long. The GIL is taken only to run the application.

mod accept;
mod http2;
mod monitor;
mod pool;
mod table;
mod worker;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::access_log;
use crate::config::Config;
use crate::conn::{self, Conn, Linger, LingerPermit, Next};
use crate::context::Context;
use crate::counters::Gauges;
use crate::http::error::{self, HttpError};
use crate::http::response;
use crate::net::io as netio;
use crate::net::listener;
use crate::net::poller::{self, Interest, Poller, Waker};
use pool::Pool;
use table::{SharedTable, TableGuard};

const LISTENER_TOKEN: u64 = u64::MAX;
const STOP_TOKEN: u64 = u64::MAX - 1;
const KICK_TOKEN: u64 = u64::MAX - 2;
const EVENTS_PER_WAIT: usize = 64;
/// At most this many connections linger after an error response at once; beyond it a
/// connection closes right after its response.
const MAX_LINGERING: usize = 1024;

impl table::Socket for Box<Conn> {
    fn fd(&self) -> RawFd {
        Conn::fd(self)
    }
}

/// A readiness event waiting for a worker.
struct Ready {
    token: u64,
    /// The peer closed its side (see `Conn::note_peer_closed`).
    hup: bool,
    since: Instant,
}

impl Ready {
    fn of(ev: &poller::Event, since: Instant) -> Ready {
        let (token, hup) = poller::ready_of(ev);
        Ready { token, hup, since }
    }
}

/// Events taken from epoll by one thread and left for the others.
#[derive(Default)]
struct ReadyQueue {
    queue: Mutex<VecDeque<Ready>>,
    /// How many were taken: the monitor sees whether the queue moves.
    pops: AtomicU64,
}

impl ReadyQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Ready>> {
        lock(&self.queue)
    }

    fn pop(&self) -> Option<Ready> {
        let ready = self.lock().pop_front();
        if ready.is_some() {
            self.pops.fetch_add(1, Ordering::Relaxed);
        }
        ready
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The monitor's sleep: a worker that starts a request wakes it if it sleeps its long tick.
#[derive(Default)]
struct MonitorSignal {
    asleep: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl MonitorSignal {
    fn wake(&self) {
        let _guard = lock(&self.lock);
        self.asleep.store(false, Ordering::Relaxed);
        self.cv.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// State shared by the workers, the monitor and the Python-facing engine.
pub struct Server {
    pub context: Arc<Context>,
    pool: Arc<Pool>,
    poller: Poller,
    listen_fd: RawFd,
    stop_waker: Waker,
    kick_waker: Waker,
    table: SharedTable<Box<Conn>>,
    ready: ReadyQueue,
    monitor: MonitorSignal,
    /// Running out of file descriptors (accept.rs); the flag lets accepts skip the lock.
    shortage: Mutex<Option<accept::Shortage>>,
    short_of_descriptors: AtomicBool,
    /// When `stop()` gives up waiting for requests in flight.
    stop_deadline: Mutex<Option<Instant>>,
    /// Connections in their lingering close (see `Conn::start_lingering`).
    lingering: Arc<AtomicUsize>,
    /// The HTTP/2 thread's connections and the streams it hands to the workers.
    h2: Arc<http2::H2>,
}

impl Server {
    pub fn new(
        listen_fd: RawFd,
        config: Config,
        min: usize,
        max: usize,
    ) -> std::io::Result<Arc<Server>> {
        let poller = Poller::new()?;
        let stop_waker = Waker::new()?;
        let kick_waker = Waker::new()?;
        listener::set_nonblocking(listen_fd)?;
        poller.add(listen_fd, LISTENER_TOKEN, Interest::OneShotRead)?;
        poller.add_level(stop_waker.fd(), STOP_TOKEN)?;
        poller.add(kick_waker.fd(), KICK_TOKEN, Interest::OneShotRead)?;
        let pool = Arc::new(Pool::new(min, max));
        Ok(Arc::new(Server {
            context: Arc::new(Context::new(config, pool.capacity())),
            pool,
            poller,
            listen_fd,
            stop_waker,
            kick_waker,
            table: SharedTable::new(),
            ready: ReadyQueue::default(),
            monitor: MonitorSignal::default(),
            shortage: Mutex::new(None),
            short_of_descriptors: AtomicBool::new(false),
            stop_deadline: Mutex::new(None),
            lingering: Arc::new(AtomicUsize::new(0)),
            h2: Arc::new(http2::H2::new()?),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.context.config
    }

    fn table(&self) -> TableGuard<'_, Box<Conn>> {
        self.table.lock(&self.context)
    }

    pub fn is_stopping(&self) -> bool {
        self.context.is_stopping()
    }

    /// The counters with the server's gauges, by name.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let (threads, idle_threads) = self.pool.thread_counts();
        let (open_connections, responses_sending) = {
            let table = self.table();
            (
                table.open() + self.h2.connections(),
                table.count_parked(|c| c.is_sending()),
            )
        };
        let gauges = Gauges {
            open_connections,
            responses_sending,
            threads,
            idle_threads,
            bodies: Some(&self.config().body_gauges),
            http2_connections: self.h2.connections(),
            http2_streams: self.h2.streams(),
        };
        self.context.counters.snapshot(gauges)
    }

    /// Starts the monitor and the minimum number of workers (after capping glibc's malloc
    /// arenas, which must come first: memory.rs).
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        crate::memory::limit_arenas();
        let server = Arc::clone(self);
        self.pool
            .spawn_helper("stogie-monitor", move || server.monitor())?;
        if self.config().http2() {
            self.start_h2()?;
        }
        for _ in 0..self.pool.min() {
            self.spawn_worker()?;
        }
        Ok(())
    }

    fn spawn_worker(self: &Arc<Self>) -> std::io::Result<bool> {
        let server = Arc::clone(self);
        self.pool.spawn_worker(move |slot| server.work(slot))
    }

    /// Closes a connection: its slot in the table is freed, the socket closed.
    pub fn close(&self, token: u64, mut conn: Box<Conn>) {
        self.context
            .counters
            .bytes_in
            .fetch_add(conn.take_bytes_in(), Ordering::Relaxed);
        self.table().release(token);
        drop(conn);
    }

    /// Sends an error response the server generated itself, then closes (after a lingering
    /// close when the client may still be sending).
    fn fail(&self, token: u64, mut conn: Box<Conn>, err: HttpError) {
        let config = self.config();
        if let Some(log) = config.access_log() {
            log.record(&access_log::Entry {
                remote: &conn.peer.addr,
                peer: &conn.peer.addr,
                method: b"",
                target: b"",
                protocol: b"",
                status: err.code(),
                body_bytes: err.body.len() as u64,
                micros: 0,
                header: &|_| None,
            });
        }
        let mut out = Vec::with_capacity(256);
        response::encode_error(&mut out, &config.protocol(), err);
        let deadline = Instant::now() + Duration::from_secs(1).min(config.timeout());
        if conn.write_all(&[&out], deadline).is_err() {
            self.close(token, conn);
            return;
        }
        // A refused upload is still arriving: let the client finish sending it and read the
        // answer.
        if err == error::SPOOL_FAILED {
            let dir = std::env::temp_dir();
            let message = format!(
                "a request body could not be written to a temporary file in {} \
                 (is the disk full? TMPDIR chooses the directory)",
                dir.display()
            );
            self.context.log(30, &message);
        }
        let refused_mid_body = matches!(
            err,
            error::BODY_TOO_LARGE | error::BODY_TOO_LARGE_TO_BUFFER | error::SPOOL_FULL
        );
        let linger = if refused_mid_body {
            conn::UNREAD_BODY
        } else {
            conn::AFTER_ERROR
        };
        self.linger(token, conn, linger);
    }

    /// Closes a connection whose response is out but whose client may still be sending:
    /// parked in its lingering close (no thread waits for it) when a place is free, else at
    /// once.
    fn linger(&self, token: u64, mut conn: Box<Conn>, linger: Linger) {
        let Some(permit) = LingerPermit::take(&self.lingering, MAX_LINGERING) else {
            self.close(token, conn);
            return;
        };
        conn.start_lingering(linger, permit, Instant::now());
        let config = self.config();
        // Bytes may already wait that no edge-triggered event will announce: look first.
        while let Next::Wait = conn.next_request(&config.rules(), true) {
            match self.table().checkin(token, conn) {
                Some(back) => conn = back,
                None => return,
            }
        }
        self.close(token, conn);
    }

    /// Stops accepting, closes idle connections, lets busy workers finish for up to `grace`,
    /// then cuts their connections. Returns once the workers are gone or a little after
    /// `grace` (a worker stuck in application code cannot be interrupted).
    pub fn stop(&self, grace: Duration) {
        *lock(&self.stop_deadline) = Some(Instant::now() + grace);
        if self.context.begin_stopping() {
            self.pool.wait_for_threads(grace);
            return;
        }
        self.poller.delete(self.listen_fd);
        netio::close(self.listen_fd);
        self.stop_waker.wake();
        // HTTP/2 connections get GOAWAY now (server/http2.rs).
        self.h2.wake_up();
        self.pool.wake_all();
        self.monitor.wake();
        // Idle keep-alive connections close now; those whose request already arrived (or, for
        // fresh connections, arrives within the grace period) are served, and their responses
        // close them.
        let idle = self.table().take_parked(|c| {
            c.is_lingering()
                || (c.requests_seen > 0 && !c.is_mid_request() && !netio::has_input(c.fd()))
        });
        drop(idle);
        if !self.pool.wait_for_threads(grace) {
            for fd in self.table().busy_fds() {
                netio::shutdown(fd);
            }
            self.pool.wait_for_threads(Duration::from_millis(500));
        }
        drop(self.table().take_parked(|_| true));
    }

    /// Blocks until `stop()` has been called (or `limit` passes); true when stopped.
    pub fn wait_stopped(&self, limit: Duration) -> bool {
        self.pool.wait_until(limit, |_| self.is_stopping())
    }

    /// Wakes `wait_stopped` callers after `stopping` was set.
    pub fn notify_stopped(&self) {
        self.pool.notify_waiters();
    }
}
