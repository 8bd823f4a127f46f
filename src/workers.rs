//! Worker threads, scheduling and the GIL.
//!
//! All workers share one epoll instance. The thread that takes a readiness event reads and
//! parses the request and runs the application itself, so the common path has no cross-thread
//! hand-off. Only as many threads poll as are needed: normally one, the others are parked. A
//! monitor thread notices when every active thread is stuck in a slow request and wakes a parked
//! one (or starts a new one, up to `max`), so a slow application never stalls other connections.
//! Each worker attaches to Python once for its whole life and releases the GIL around all I/O.

use std::cell::Cell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::access_log;
use crate::config::Config;
use crate::conn::{Body, Conn, Next};
use crate::http::error::{self, HttpError};
use crate::http::request::RequestHead;
use crate::http::response;
use crate::net::io as netio;
use crate::net::listener;
use crate::net::poller::{self, Interest, Poller, Waker};
use crate::outbox::{Outbox, HOLD_RESPONSES};
use crate::wsgi;

const LISTENER_TOKEN: u64 = u64::MAX;
const STOP_TOKEN: u64 = u64::MAX - 1;
const KICK_TOKEN: u64 = u64::MAX - 2;
const EVENTS_PER_WAIT: usize = 64;
const ACCEPTS_PER_EVENT: usize = 64;
const BUSY_TICK: Duration = Duration::from_millis(1);
const IDLE_TICK: Duration = Duration::from_millis(100);
/// The monitor keeps its busy tick this long after the last request it saw, so that under
/// steady load workers need not wake it (a futex call) each time a request starts.
const BUSY_LINGER: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Accepting pauses this long after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is one of the engine's workers.
pub fn on_worker_thread() -> bool {
    IS_WORKER.with(Cell::get)
}

const POLLING: u8 = 0;
const HANDLING: u8 = 1;
const PARKED: u8 = 2;
const EXITED: u8 = 3;

struct Slot {
    state: AtomicU8,
    /// Incremented each time the thread starts a request: the monitor sees progress.
    seq: AtomicU64,
    /// Responses this worker holds back to write as one batch (see outbox.rs).
    outbox: Outbox,
}

/// A connection whose response sits in its worker's outbox: it stays with the worker (not
/// parked, so no other worker can answer its next request first) until the batch is written.
struct HeldConn {
    token: u64,
    conn: Box<Conn>,
    body: Body,
}

/// A worker's batch in progress: held connections, and requests found while finishing them.
#[derive(Default)]
struct Batch {
    held: Vec<HeldConn>,
    later: VecDeque<Work>,
}

/// A response is held only if the application answered faster than this: a slow
/// application gains nothing from batching and would make the held responses wait.
const HOLD_APP_LIMIT_US: u64 = 500;

/// A connection's place in the table; the token carries the generation so that stale events
/// for a closed connection are ignored.
enum Entry {
    Vacant,
    /// Waiting in epoll; owned by the table.
    Parked(Box<Conn>),
    /// Checked out by a worker; the fd is kept so `stop()` can shut it down. `pending`: an
    /// event arrived meanwhile, so the worker must look at the socket again before parking it.
    Busy {
        fd: RawFd,
        pending: bool,
    },
}

struct Table {
    entries: Vec<(u32, Entry)>,
    free: Vec<u32>,
    open: usize,
    /// Connections checked out by workers; the others are idle in epoll.
    busy: usize,
}

impl Table {
    fn insert(&mut self, conn: Box<Conn>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push((0, Entry::Vacant));
                (self.entries.len() - 1) as u32
            }
        };
        let slot = &mut self.entries[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Entry::Parked(conn);
        self.open += 1;
        (u64::from(index) << 32) | u64::from(slot.0)
    }

    /// Takes a parked connection for a worker. An event for a connection another worker holds
    /// is recorded on it instead.
    fn checkout(&mut self, token: u64) -> Option<Box<Conn>> {
        let (index, gen) = ((token >> 32) as usize, token as u32);
        let slot = self.entries.get_mut(index)?;
        if slot.0 != gen {
            return None;
        }
        let fd = match &mut slot.1 {
            Entry::Parked(conn) => conn.fd,
            Entry::Busy { pending, .. } => {
                *pending = true;
                return None;
            }
            Entry::Vacant => return None,
        };
        self.busy += 1;
        match std::mem::replace(&mut slot.1, Entry::Busy { fd, pending: false }) {
            Entry::Parked(conn) => Some(conn),
            _ => None,
        }
    }

    /// Puts a connection back, unless an event arrived while it was out: then the worker keeps
    /// it (and gets it back) to look at the socket again.
    fn checkin(&mut self, token: u64, conn: Box<Conn>) -> Option<Box<Conn>> {
        let index = (token >> 32) as usize;
        let entry = &mut self.entries[index].1;
        if let Entry::Busy {
            pending: pending @ true,
            ..
        } = entry
        {
            *pending = false;
            return Some(conn);
        }
        *entry = Entry::Parked(conn);
        self.busy -= 1;
        None
    }

    fn release(&mut self, token: u64) {
        let index = (token >> 32) as usize;
        if let Some(slot) = self.entries.get_mut(index) {
            if slot.0 == token as u32 && !matches!(slot.1, Entry::Vacant) {
                if matches!(slot.1, Entry::Busy { .. }) {
                    self.busy -= 1;
                }
                slot.1 = Entry::Vacant;
                self.free.push(index as u32);
                self.open -= 1;
            }
        }
    }

    /// Removes parked connections for which `expired` holds.
    fn take_parked(&mut self, mut expired: impl FnMut(&Conn) -> bool) -> Vec<Conn> {
        let mut taken = Vec::new();
        for (index, slot) in self.entries.iter_mut().enumerate() {
            if let Entry::Parked(conn) = &slot.1 {
                if expired(conn) {
                    if let Entry::Parked(conn) = std::mem::replace(&mut slot.1, Entry::Vacant) {
                        taken.push(*conn);
                    }
                    self.free.push(index as u32);
                    self.open -= 1;
                }
            }
        }
        taken
    }

    /// Whether a parked connection has not sent a complete request yet.
    fn has_fresh(&self) -> bool {
        self.entries
            .iter()
            .any(|(_, e)| matches!(e, Entry::Parked(conn) if conn.requests_seen == 0))
    }

    fn busy_fds(&self) -> Vec<RawFd> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Busy { fd, .. } => Some(*fd),
                _ => None,
            })
            .collect()
    }
}

#[derive(Default)]
struct ParkLot {
    parked: usize,
    wakeups: usize,
}

/// Counters shown by `server.stats` and the tests.
#[derive(Default)]
pub struct Counters {
    pub accepts: AtomicU64,
    pub requests: AtomicU64,
    pub socket_errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    pub responses: [AtomicU64; 5],
    /// Request durations, one count per bucket of `LATENCY_BOUNDS_US` (the last is +Inf).
    pub latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// Responses held for a batch write (outbox.rs), and bytes of them the monitor wrote
    /// because their worker was stuck in a slow request.
    pub held_responses: AtomicU64,
    pub held_bytes_rescued: AtomicU64,
}

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

impl Counters {
    /// Counts one response: its status class and how long the request took.
    pub fn record_response(&self, status: u16, micros: u64) {
        if let Some(class) = self.responses.get((status / 100).wrapping_sub(1) as usize) {
            class.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

/// State shared by the workers, the monitor and the Python-facing engine.
pub struct Shared {
    pub config: Config,
    pub counters: Counters,
    poller: Poller,
    listen_fd: RawFd,
    stop_waker: Waker,
    kick_waker: Waker,
    table: Mutex<Table>,
    ready: Mutex<VecDeque<Ready>>,
    ready_pops: AtomicU64,
    slots: Vec<Slot>,
    min_threads: usize,
    threads: AtomicUsize,
    active: AtomicUsize,
    stuck: AtomicUsize,
    lot: Mutex<ParkLot>,
    lot_cv: Condvar,
    monitor_asleep: AtomicBool,
    monitor_lock: Mutex<()>,
    monitor_cv: Condvar,
    accept_paused_until: Mutex<Option<Instant>>,
    stopping: AtomicBool,
    /// When `stop()` gives up waiting for requests in flight.
    stop_deadline: Mutex<Option<Instant>>,
    alive: Mutex<usize>,
    alive_cv: Condvar,
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

/// What a worker does next.
pub enum Work {
    Request(Box<Conn>, u64, RequestHead),
    Stop,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn new(
        listen_fd: RawFd,
        config: Config,
        min: usize,
        max: usize,
    ) -> std::io::Result<Arc<Shared>> {
        let poller = Poller::new()?;
        let stop_waker = Waker::new()?;
        let kick_waker = Waker::new()?;
        listener::set_nonblocking(listen_fd)?;
        poller.add(listen_fd, LISTENER_TOKEN, Interest::ReadOnce)?;
        poller.add_level(stop_waker.fd(), STOP_TOKEN)?;
        poller.add(kick_waker.fd(), KICK_TOKEN, Interest::ReadOnce)?;
        let slots = (0..max)
            .map(|_| Slot {
                state: AtomicU8::new(EXITED),
                seq: AtomicU64::new(0),
                outbox: Outbox::default(),
            })
            .collect();
        Ok(Arc::new(Shared {
            config,
            counters: Counters::default(),
            poller,
            listen_fd,
            stop_waker,
            kick_waker,
            table: Mutex::new(Table {
                entries: Vec::new(),
                free: Vec::new(),
                open: 0,
                busy: 0,
            }),
            ready: Mutex::new(VecDeque::new()),
            ready_pops: AtomicU64::new(0),
            slots,
            min_threads: min,
            threads: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            stuck: AtomicUsize::new(0),
            lot: Mutex::new(ParkLot::default()),
            lot_cv: Condvar::new(),
            monitor_asleep: AtomicBool::new(false),
            monitor_lock: Mutex::new(()),
            monitor_cv: Condvar::new(),
            accept_paused_until: Mutex::new(None),
            stopping: AtomicBool::new(false),
            stop_deadline: Mutex::new(None),
            alive: Mutex::new(0),
            alive_cv: Condvar::new(),
        }))
    }

    /// The held responses of worker `slot`.
    pub fn outbox(&self, slot: usize) -> &Outbox {
        &self.slots[slot].outbox
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn open_connections(&self) -> usize {
        lock(&self.table).open
    }

    /// Whether another idle keep-alive connection may be kept (`keep_alive_conn_limit`).
    pub fn keep_alive_allowed(&self) -> bool {
        let limit = self.config.keep_alive_limit();
        if limit == usize::MAX {
            return true;
        }
        let table = lock(&self.table);
        table.open - table.busy < limit
    }

    pub fn thread_counts(&self) -> (usize, usize) {
        let total = self.threads.load(Ordering::Relaxed);
        let busy = self
            .slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == HANDLING)
            .count();
        (total, total.saturating_sub(busy))
    }

    /// Starts the monitor and `min` workers.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        *lock(&self.alive) += 1;
        let shared = Arc::clone(self);
        std::thread::Builder::new()
            .name("stogie-monitor".into())
            .spawn(move || shared.monitor())?;
        for _ in 0..self.min_threads {
            self.spawn_worker()?;
        }
        Ok(())
    }

    fn spawn_worker(self: &Arc<Self>) -> std::io::Result<bool> {
        let index = match self.slots.iter().position(|s| {
            s.state
                .compare_exchange(EXITED, POLLING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) {
            Some(i) => i,
            None => return Ok(false),
        };
        self.threads.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        *lock(&self.alive) += 1;
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("stogie-worker-{index}"))
            .spawn(move || shared.worker_main(index));
        if let Err(e) = spawned {
            self.slots[index].state.store(EXITED, Ordering::Release);
            self.threads.fetch_sub(1, Ordering::AcqRel);
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.thread_exited();
            return Err(e);
        }
        Ok(true)
    }

    fn thread_exited(&self) {
        let mut alive = lock(&self.alive);
        *alive -= 1;
        self.alive_cv.notify_all();
    }

    fn worker_main(self: Arc<Self>, slot: usize) {
        IS_WORKER.with(|w| w.set(true));
        Python::attach(|py| {
            let mut out = Vec::with_capacity(4096);
            let mut events = poller::empty_events(EVENTS_PER_WAIT);
            let mut carry: Option<wsgi::Finished> = None;
            let mut batch = Batch::default();
            let mut app_fast = true;
            loop {
                let work = py.detach(|| {
                    // A panic here loses only the connections this worker holds (dropped, so
                    // closed); the worker goes on.
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        if let Some(done) = carry.take() {
                            app_fast = done.micros < HOLD_APP_LIMIT_US;
                            if let Some(work) = self.finish(slot, done, &out, &mut batch) {
                                return work;
                            }
                        }
                        self.next_work(slot, &mut events, &mut batch)
                    }))
                });
                out.clear();
                let work = match work {
                    Ok(work) => work,
                    Err(payload) => {
                        let state = self.config.py_state();
                        wsgi::report(py, &state, &wsgi::panic_error(payload));
                        self.drop_batch(slot, &mut batch);
                        continue;
                    }
                };
                match work {
                    Work::Stop => break,
                    Work::Request(conn, token, head) => {
                        let place = wsgi::Placement {
                            slot,
                            hold: app_fast && self.may_hold(&conn, &head, &batch),
                        };
                        carry = Some(wsgi::serve(py, &self, conn, token, head, &mut out, place));
                    }
                }
            }
        });
        self.slots[slot].state.store(EXITED, Ordering::Release);
        self.threads.fetch_sub(1, Ordering::AcqRel);
        self.thread_exited();
    }

    /// Whether the response to this request may be held for a batch write: other requests
    /// (or more pipelined ones on this connection) are already waiting for this worker, and
    /// the response is plain HTTP on a connection that stays open.
    fn may_hold(&self, conn: &Conn, head: &RequestHead, batch: &Batch) -> bool {
        head.keep_alive
            && !conn.is_tls()
            && batch.held.len() < HOLD_RESPONSES
            && (conn.has_buffered() || !batch.later.is_empty() || !lock(&self.ready).is_empty())
            && !self.is_stopping()
    }

    /// Writes what the request left in `out` (or holds it for the batch), then keeps the
    /// connection going: a pipelined request already buffered is returned as the next work;
    /// otherwise it is parked.
    fn finish(
        &self,
        slot: usize,
        done: wsgi::Finished,
        out: &[u8],
        batch: &mut Batch,
    ) -> Option<Work> {
        let wsgi::Finished {
            conn,
            token,
            keep_alive,
            body,
            hold,
            ..
        } = done;
        let Some(mut conn) = conn else {
            lock(&self.table).release(token);
            return None;
        };
        self.counters
            .bytes_in
            .fetch_add(conn.take_bytes_in(), Ordering::Relaxed);
        let outbox = &self.slots[slot].outbox;
        if hold && keep_alive && outbox.has_room(out.len()) {
            self.counters
                .bytes_out
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            outbox.push(conn.fd, token, &[out]);
            self.counters.held_responses.fetch_add(1, Ordering::Relaxed);
            if conn.has_buffered() {
                // Pipelined: the next request is answered at once, its response queued after.
                conn.finish_request(body);
                return self.advance_pipelined(slot, conn, token, batch);
            }
            batch.held.push(HeldConn { token, conn, body });
            return None;
        }
        // Whatever is held goes first: it may include this connection's own bytes.
        self.write_batch(slot, batch);
        if !out.is_empty() {
            self.counters
                .bytes_out
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            let deadline = Instant::now() + self.config.timeout();
            if conn.write_all(&[out], deadline).is_err() {
                self.counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                self.close(token, conn);
                return None;
            }
        }
        if !keep_alive || self.is_stopping() {
            if !body.is_done() || conn.has_buffered() {
                lingering_close(&conn);
            }
            self.close(token, conn);
            return None;
        }
        conn.finish_request(body);
        self.advance(slot, conn, token, false)
    }

    /// Writes the held responses and sends their connections on towards their next request;
    /// requests that arrived meanwhile are kept in `batch.later`.
    fn write_batch(&self, slot: usize, batch: &mut Batch) {
        let outbox = &self.slots[slot].outbox;
        outbox.flush(self.config.timeout());
        let failed = outbox.take_failed();
        for HeldConn {
            token,
            mut conn,
            body,
        } in std::mem::take(&mut batch.held)
        {
            if failed.contains(&token) {
                self.counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                self.close(token, conn);
                continue;
            }
            if self.is_stopping() {
                // As in `finish`: once stopping, a connection closes after its response.
                self.close(token, conn);
                continue;
            }
            conn.finish_request(body);
            if let Some(work) = self.advance(slot, conn, token, false) {
                batch.later.push_back(work);
            }
        }
    }

    /// After a panic: whatever the worker held is lost (the connections are closed).
    fn drop_batch(&self, slot: usize, batch: &mut Batch) {
        self.slots[slot].outbox.flush(Duration::ZERO);
        self.slots[slot].outbox.take_failed();
        for held in std::mem::take(&mut batch.held) {
            self.close(held.token, held.conn);
        }
        for work in std::mem::take(&mut batch.later) {
            if let Work::Request(conn, token, _) = work {
                self.close(token, conn);
            }
        }
    }

    /// Marks the worker busy with a request (the monitor watches its progress).
    fn start_request(&self, slot: usize, conn: Box<Conn>, token: u64, head: RequestHead) -> Work {
        let s = &self.slots[slot];
        s.seq.fetch_add(1, Ordering::Relaxed);
        s.state.store(HANDLING, Ordering::Relaxed);
        if self.monitor_asleep.load(Ordering::Relaxed) {
            self.wake_monitor();
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Work::Request(conn, token, head)
    }

    /// Moves on to the next pipelined request of a connection whose response is held. The
    /// connection must not be parked while its bytes wait in the outbox (another worker could
    /// answer its next request first), so an incomplete request makes it join the batch.
    fn advance_pipelined(
        &self,
        slot: usize,
        mut conn: Box<Conn>,
        token: u64,
        batch: &mut Batch,
    ) -> Option<Work> {
        match conn.next_request(self.config.limits(), self.config.max_body(), false) {
            Next::Request(head) => Some(self.start_request(slot, conn, token, head)),
            Next::Wait => {
                batch.held.push(HeldConn {
                    token,
                    conn,
                    body: Body::Done,
                });
                None
            }
            Next::Close => {
                self.write_batch(slot, batch);
                self.close(token, conn);
                None
            }
            Next::Error(err) => {
                self.write_batch(slot, batch);
                self.fail(token, conn, err);
                None
            }
        }
    }

    /// Takes the connection one step towards its next request; `event`: the socket signalled.
    fn advance(&self, slot: usize, conn: Box<Conn>, token: u64, event: bool) -> Option<Work> {
        let limits = self.config.limits();
        let mut conn = conn;
        let mut event = event;
        loop {
            match conn.next_request(limits, self.config.max_body(), event) {
                Next::Request(head) => return Some(self.start_request(slot, conn, token, head)),
                Next::Wait => match self.park(token, conn) {
                    Some(back) => {
                        conn = back;
                        event = true;
                    }
                    None => return None,
                },
                Next::Close => {
                    self.close(token, conn);
                    return None;
                }
                Next::Error(err) => {
                    self.fail(token, conn, err);
                    return None;
                }
            }
        }
    }

    /// Parks a drained connection in the table; returns it when an event arrived meanwhile.
    fn park(&self, token: u64, conn: Box<Conn>) -> Option<Box<Conn>> {
        lock(&self.table).checkin(token, conn)
    }

    pub fn close(&self, token: u64, mut conn: Box<Conn>) {
        self.counters
            .bytes_in
            .fetch_add(conn.take_bytes_in(), Ordering::Relaxed);
        lock(&self.table).release(token);
        drop(conn);
    }

    /// Sends an error response the server generated itself and closes.
    pub fn fail(&self, token: u64, mut conn: Box<Conn>, err: HttpError) {
        if let Some(log) = self.config.access_log() {
            log.record(&access_log::Entry {
                remote: &conn.peer.addr,
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
        response::encode_error(&mut out, &self.config.protocol(), err);
        let deadline = Instant::now() + Duration::from_secs(1).min(self.config.timeout());
        let _ = conn.write_all(&[&out], deadline);
        lingering_close(&conn);
        self.close(token, conn);
    }

    fn next_work(&self, slot: usize, events: &mut [poller::Event], batch: &mut Batch) -> Work {
        loop {
            if let Some(work) = batch.later.pop_front() {
                return work;
            }
            self.slots[slot].state.store(POLLING, Ordering::Relaxed);
            let ready = self.pop_ready();
            if ready.is_none() && !batch.held.is_empty() {
                // Nothing else to do now: the held responses go out before any waiting.
                self.write_batch(slot, batch);
                continue;
            }
            let (token, hup) = match ready {
                Some(ready) => (ready.token, ready.hup),
                // Stopping: serve the requests that already arrived, then exit.
                None if self.is_stopping() => match self.pending_after_stop(events) {
                    Some(ready) => ready,
                    None => return Work::Stop,
                },
                None => {
                    match self.try_park(slot) {
                        ParkResult::Resumed => continue,
                        ParkResult::Exit => return Work::Stop,
                        ParkResult::NotParked => {}
                    }
                    let n = self.poller.wait(events, 1000);
                    if n == 0 {
                        continue;
                    }
                    if n > 1 {
                        let now = Instant::now();
                        lock(&self.ready).extend(events[1..n].iter().map(|e| Ready::of(e, now)));
                    }
                    poller::ready_of(&events[0])
                }
            };
            match token {
                LISTENER_TOKEN => self.accept_burst(),
                STOP_TOKEN => {}
                KICK_TOKEN => {
                    self.kick_waker.reset();
                    let _ = self
                        .poller
                        .rearm(self.kick_waker.fd(), KICK_TOKEN, Interest::ReadOnce);
                }
                token => {
                    let conn = lock(&self.table).checkout(token);
                    if let Some(mut conn) = conn {
                        if hup {
                            conn.note_peer_closed();
                        }
                        if let Some(work) = self.advance(slot, conn, token, true) {
                            return work;
                        }
                    }
                }
            }
        }
    }

    /// After stop(): the next connection event still waiting in epoll, if any.
    /// After stop(): the next connection event still waiting, if any. A fresh connection
    /// (accepted, no request yet) may still be sending its first request: until the stop
    /// deadline, keep looking. (epoll answers at once here: the stop waker stays readable.)
    fn pending_after_stop(&self, events: &mut [poller::Event]) -> Option<(u64, bool)> {
        loop {
            let n = self.poller.wait(events, 0);
            let now = Instant::now();
            let mut pending = events[..n]
                .iter()
                .filter(|e| {
                    !matches!(
                        poller::ready_of(e).0,
                        LISTENER_TOKEN | STOP_TOKEN | KICK_TOKEN
                    )
                })
                .map(|e| Ready::of(e, now));
            if let Some(first) = pending.next() {
                lock(&self.ready).extend(pending);
                return Some((first.token, first.hup));
            }
            let in_grace = (*lock(&self.stop_deadline)).is_some_and(|deadline| now < deadline);
            if !in_grace || !lock(&self.table).has_fresh() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pop_ready(&self) -> Option<Ready> {
        let token = lock(&self.ready).pop_front();
        if token.is_some() {
            self.ready_pops.fetch_add(1, Ordering::Relaxed);
        }
        token
    }

    fn accept_burst(&self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match listener::accept(self.listen_fd) {
                Ok(Some(accepted)) => {
                    self.counters.accepts.fetch_add(1, Ordering::Relaxed);
                    let fd = accepted.fd;
                    let mut peer = accepted.peer;
                    let (creds, resolve) = self.config.peercreds();
                    if creds && accepted.is_unix {
                        peer.creds = listener::peer_creds(fd, resolve);
                    }
                    let mut conn = Box::new(Conn::new(fd, peer));
                    if self.config.proxy_protocol() {
                        conn.expect_proxy_header();
                    }
                    if let Some(tls) = self.config.tls() {
                        match tls.accept() {
                            Some(session) => conn.start_tls(session),
                            None => continue,
                        }
                    }
                    let token = lock(&self.table).insert(conn);
                    if self.poller.add(fd, token, Interest::ReadEdge).is_err() {
                        if let Some(conn) = lock(&self.table).checkout(token) {
                            self.close(token, conn);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        // Out of descriptors: leave the listener disarmed for a moment; the
                        // monitor re-arms it. Pending clients wait in the backlog.
                        *lock(&self.accept_paused_until) = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                    break;
                }
            }
        }
        let _ = self
            .poller
            .rearm(self.listen_fd, LISTENER_TOKEN, Interest::ReadOnce);
    }

    fn try_park(&self, slot: usize) -> ParkResult {
        let stuck = self.stuck.load(Ordering::Relaxed);
        let parked = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |a| {
                (a > stuck + 1).then(|| a - 1)
            })
            .is_ok();
        if !parked {
            return ParkResult::NotParked;
        }
        self.slots[slot].state.store(PARKED, Ordering::Relaxed);
        let mut lot = lock(&self.lot);
        lot.parked += 1;
        let since = Instant::now();
        loop {
            if lot.wakeups > 0 {
                lot.wakeups -= 1;
                lot.parked -= 1;
                return ParkResult::Resumed;
            }
            if self.is_stopping() {
                // Help drain the requests that arrived before stop().
                lot.parked -= 1;
                self.active.fetch_add(1, Ordering::AcqRel);
                return ParkResult::Resumed;
            }
            let surplus = self.threads.load(Ordering::Relaxed) > self.min_threads;
            let idle_limit = self.config.thread_idle_timeout();
            if surplus && since.elapsed() >= idle_limit {
                lot.parked -= 1;
                self.active.fetch_add(1, Ordering::AcqRel);
                return ParkResult::Exit;
            }
            lot = self
                .lot_cv
                .wait_timeout(lot, idle_limit)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Wakes one parked worker; false when none is parked.
    fn unpark_one(&self) -> bool {
        let mut lot = lock(&self.lot);
        if lot.parked > lot.wakeups {
            lot.wakeups += 1;
            self.active.fetch_add(1, Ordering::AcqRel);
            self.lot_cv.notify_one();
            return true;
        }
        false
    }

    fn wake_monitor(&self) {
        let _guard = lock(&self.monitor_lock);
        self.monitor_asleep.store(false, Ordering::Relaxed);
        self.monitor_cv.notify_one();
    }

    fn monitor(self: Arc<Self>) {
        let mut events = poller::empty_events(EVENTS_PER_WAIT);
        let mut last_seq = vec![0u64; self.slots.len()];
        let mut last_pops = 0u64;
        let mut last_sweep = Instant::now();
        let mut last_busy = Instant::now();
        let mut last_requests = 0u64;
        while !self.is_stopping() {
            let mut stuck = 0;
            let mut handling = 0;
            for (i, slot) in self.slots.iter().enumerate() {
                let seq = slot.seq.load(Ordering::Relaxed);
                if slot.state.load(Ordering::Relaxed) == HANDLING {
                    handling += 1;
                    if seq == last_seq[i] {
                        stuck += 1;
                        // Its held responses must not wait for the slow request.
                        let rescued = slot.outbox.write_ready();
                        self.counters
                            .held_bytes_rescued
                            .fetch_add(rescued as u64, Ordering::Relaxed);
                    }
                }
                last_seq[i] = seq;
            }
            self.stuck.store(stuck, Ordering::Relaxed);
            let pops = self.ready_pops.load(Ordering::Relaxed);
            let queue_stalled = pops == last_pops && !lock(&self.ready).is_empty();
            last_pops = pops;
            let active = self.active.load(Ordering::Relaxed);
            let mut saturated = false;
            if active <= stuck && !self.unpark_one() {
                saturated = !matches!(self.spawn_worker(), Ok(true));
            } else if queue_stalled {
                self.kick_waker.wake();
            }
            if saturated {
                self.queue_while_saturated(&mut events);
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep();
                if let Some(log) = self.config.access_log() {
                    log.flush();
                }
            }
            let seen = self.counters.requests.load(Ordering::Relaxed);
            if handling > 0 || seen != last_requests {
                last_busy = Instant::now();
            }
            last_requests = seen;
            let idle = last_busy.elapsed() >= BUSY_LINGER;
            let tick = if idle { IDLE_TICK } else { BUSY_TICK };
            let guard = lock(&self.monitor_lock);
            if idle {
                self.monitor_asleep.store(true, Ordering::Relaxed);
            }
            let _ = self.monitor_cv.wait_timeout(guard, tick);
            self.monitor_asleep.store(false, Ordering::Relaxed);
        }
        if let Some(log) = self.config.access_log() {
            log.flush();
        }
        self.thread_exited();
    }

    /// Every thread is busy and the pool cannot grow. With `accepted_queue_size` set, the
    /// monitor keeps accepting and queues what becomes ready; requests waiting beyond the
    /// first `accepted_queue_size` places for `accepted_queue_timeout` get a 503.
    fn queue_while_saturated(&self, events: &mut [poller::Event]) {
        let Some((size, timeout)) = self.config.accepted_queue() else {
            return;
        };
        let n = self.poller.wait(events, 0);
        let now = Instant::now();
        let mut accept = false;
        for ev in &events[..n] {
            match poller::ready_of(ev).0 {
                LISTENER_TOKEN => accept = true,
                STOP_TOKEN => {}
                KICK_TOKEN => {
                    self.kick_waker.reset();
                    let _ = self
                        .poller
                        .rearm(self.kick_waker.fd(), KICK_TOKEN, Interest::ReadOnce);
                }
                _ => lock(&self.ready).push_back(Ready::of(ev, now)),
            }
        }
        if accept {
            self.accept_burst();
        }
        let overdue: Vec<u64> = {
            let mut ready = lock(&self.ready);
            if ready.len() <= size {
                return;
            }
            let mut kept = VecDeque::with_capacity(ready.len());
            let mut overdue = Vec::new();
            for (place, item) in ready.drain(..).enumerate() {
                if place >= size && now.duration_since(item.since) >= timeout {
                    overdue.push(item.token);
                } else {
                    kept.push_back(item);
                }
            }
            *ready = kept;
            overdue
        };
        for token in overdue {
            let conn = lock(&self.table).checkout(token);
            if let Some(mut conn) = conn {
                let mut out = Vec::with_capacity(128);
                response::encode_error(&mut out, &self.config.protocol(), error::OVERLOADED);
                let deadline = Instant::now() + Duration::from_millis(50);
                let _ = conn.write_all(&[&out], deadline);
                self.close(token, conn);
            }
        }
    }

    /// Closes connections that waited too long for a request head: 408 when part of a head
    /// arrived or no request was ever made, silently for idle keep-alive connections.
    fn sweep(&self) {
        let timeout = self.config.timeout();
        let now = Instant::now();
        let expired =
            lock(&self.table).take_parked(|c| now.duration_since(c.waiting_since) >= timeout);
        for mut conn in expired {
            self.poller.delete(conn.fd);
            if conn.is_mid_request() || conn.requests_seen == 0 {
                let mut out = Vec::new();
                response::encode_error(&mut out, &self.config.protocol(), error::HEAD_TIMEOUT);
                let deadline = Instant::now() + Duration::from_millis(100);
                let _ = conn.write_all(&[&out], deadline);
            }
        }
        let resume = {
            let mut paused = lock(&self.accept_paused_until);
            match *paused {
                Some(until) if until <= now => {
                    *paused = None;
                    true
                }
                _ => false,
            }
        };
        if resume {
            let _ = self
                .poller
                .rearm(self.listen_fd, LISTENER_TOKEN, Interest::ReadOnce);
        }
    }

    /// Stops accepting, closes idle connections, lets busy workers finish for up to `grace`,
    /// then cuts their connections. Returns once the workers are gone or a little after
    /// `grace` (a worker stuck in application code cannot be interrupted).
    pub fn stop(&self, grace: Duration) {
        *lock(&self.stop_deadline) = Some(Instant::now() + grace);
        if self.stopping.swap(true, Ordering::AcqRel) {
            self.wait_for_threads(grace);
            return;
        }
        self.poller.delete(self.listen_fd);
        netio::close(self.listen_fd);
        self.stop_waker.wake();
        {
            let _lot = lock(&self.lot);
            self.lot_cv.notify_all();
        }
        self.wake_monitor();
        // Idle keep-alive connections close now; those whose request already arrived (or, for
        // fresh connections, arrives within the grace period) are served, and their responses
        // close them.
        let idle = lock(&self.table)
            .take_parked(|c| c.requests_seen > 0 && !c.is_mid_request() && !netio::has_input(c.fd));
        drop(idle);
        if !self.wait_for_threads(grace) {
            for fd in lock(&self.table).busy_fds() {
                netio::shutdown(fd);
            }
            self.wait_for_threads(Duration::from_millis(500));
        }
        drop(lock(&self.table).take_parked(|_| true));
    }

    /// Waits until only the calling thread (if it is a worker) is left.
    fn wait_for_threads(&self, limit: Duration) -> bool {
        let own = usize::from(on_worker_thread());
        self.wait_until(limit, |alive| alive <= own)
    }

    /// Blocks until `stop()` has been called (or `limit` passes); true when stopped.
    pub fn wait_stopped(&self, limit: Duration) -> bool {
        self.wait_until(limit, |_| self.is_stopping())
    }

    /// Waits on the thread-count condition variable until `done(alive threads)` or `limit`.
    fn wait_until(&self, limit: Duration, done: impl Fn(usize) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut alive = lock(&self.alive);
        while !done(*alive) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            alive = self
                .alive_cv
                .wait_timeout(alive, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Wakes `wait_stopped` callers after `stopping` was set.
    pub fn notify_stopped(&self) {
        let _alive = lock(&self.alive);
        self.alive_cv.notify_all();
    }
}

enum ParkResult {
    NotParked,
    Resumed,
    Exit,
}

/// Half-closes and drains briefly before closing, so an error response is not lost to a reset
/// caused by unread request bytes.
fn lingering_close(conn: &Conn) {
    // SAFETY: plain syscall on a descriptor the connection owns.
    unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut budget = 64 * 1024;
    while budget > 0 {
        match netio::read_blocking(conn.fd, &mut sink, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget -= n.min(budget),
        }
    }
}
