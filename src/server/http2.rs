//! The HTTP/2 thread. Connections that open with the HTTP/2 preface (cleartext prior
//! knowledge, or TLS with ALPN `h2`) leave the connection table and the shared epoll for
//! this thread, which owns them and polls each (http2/session.rs) when its socket is ready (an
//! epoll instance of its own) or when a worker's stream operation woke it. Each stream a peer
//! opens becomes a `StreamJob`, which the workers take before new events (worker.rs) and run
//! as one application call (wsgi/http2.rs).
//!
//! One thread does the framing, HPACK and TLS records of every HTTP/2 connection, so no lock
//! is held across connections and no worker ever waits for a socket of another stream; the
//! cost is that this work does not spread over cores (docs/http2.md).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use super::{lock, Server};
use crate::conn::Conn;
use crate::http2::file_body::Handoff;
use crate::http2::session::{Expiry, Polled, Session};
use crate::http2::stream::{InProgress, StreamJob};
use crate::net::poller::{self, Interest, Poller};

const WAKE_TOKEN: u64 = u64::MAX;
/// How often expired connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the HTTP/2 thread shares with the workers.
pub struct H2 {
    poller: Poller,
    wake: poller::Waker,
    /// Connections handed over by workers, for the thread to take.
    inbox: Mutex<Vec<Session>>,
    /// Connections whose waker fired, by id.
    woken: Mutex<Vec<u64>>,
    jobs: Mutex<VecDeque<StreamJob>>,
    /// How many wait in `jobs`: the workers look here on every turn, without the lock.
    queued: AtomicUsize,
    /// The HTTP/2 thread is about to wait (or waits) in epoll: wakers must write the
    /// eventfd. While it runs, they only queue (it looks at `woken` before waiting).
    asleep: AtomicBool,
    running: AtomicBool,
    /// HTTP/2 connections open.
    connections: AtomicUsize,
    /// Streams queued or running.
    streams: Arc<AtomicUsize>,
}

impl H2 {
    pub fn new() -> std::io::Result<H2> {
        let poller = Poller::new()?;
        let wake = poller::Waker::new()?;
        poller.add_level(wake.fd(), WAKE_TOKEN)?;
        Ok(H2 {
            poller,
            wake,
            inbox: Mutex::default(),
            woken: Mutex::default(),
            jobs: Mutex::default(),
            queued: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            running: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            streams: Arc::default(),
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Makes the HTTP/2 thread look around now (stop() was called).
    pub fn wake_up(&self) {
        self.wake.wake();
    }

    pub fn has_jobs(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// The next stream waiting for a worker.
    pub fn take_job(&self) -> Option<StreamJob> {
        let mut jobs = lock(&self.jobs);
        let job = jobs.pop_front()?;
        self.queued.store(jobs.len(), Ordering::Release);
        Some(job)
    }

    /// Queues streams for the workers; true when the queue was empty (no worker is on its
    /// way to it yet).
    fn add_jobs(&self, new: Vec<StreamJob>) -> bool {
        let mut jobs = lock(&self.jobs);
        let was_empty = jobs.is_empty();
        jobs.extend(new);
        self.queued.store(jobs.len(), Ordering::Release);
        was_empty
    }

    /// Wakes the HTTP/2 thread if it waits in epoll (it looks at `woken` before waiting).
    fn wake_thread(&self) {
        if self.asleep.load(Ordering::SeqCst) {
            self.wake.wake();
        }
    }
}

/// A connection's waker: `h2` calls it when a stream operation (on a worker) has something
/// for the connection to do; it queues the connection for the thread, once until polled.
struct ConnWaker {
    id: u64,
    h2: Arc<H2>,
    queued: AtomicBool,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.h2.woken).push(self.id);
            self.h2.wake_thread();
        }
    }
}

struct Entry {
    session: Session,
    waker: Arc<ConnWaker>,
}

impl Server {
    /// Starts the HTTP/2 thread (HTTP/2 on).
    pub(super) fn start_h2(self: &Arc<Self>) -> std::io::Result<()> {
        self.h2.running.store(true, Ordering::Release);
        let server = Arc::clone(self);
        self.pool
            .spawn_helper("stogie-h2", move || server.run_h2())
            .inspect_err(|_| self.h2.running.store(false, Ordering::Release))
    }

    /// Hands a connection that sent the HTTP/2 preface to the HTTP/2 thread.
    pub(super) fn hand_to_h2(&self, token: u64, mut conn: Box<Conn>) {
        self.poller.delete(conn.fd());
        self.context
            .counters
            .bytes_in
            .fetch_add(conn.take_bytes_in(), Ordering::Relaxed);
        self.table().release(token);
        if !self.h2.running.load(Ordering::Acquire) {
            // Stopping: the thread is gone.
            return;
        }
        if conn.is_tls() {
            if let Some(tls) = self.config().tls() {
                conn.prepare_tls_env(&tls.server_env);
            }
        }
        let session = Session::new(conn.into_h2(), self.config().limits());
        self.h2.connections.fetch_add(1, Ordering::AcqRel);
        lock(&self.h2.inbox).push(session);
        self.h2.wake.wake();
    }

    fn run_h2(self: Arc<Self>) {
        let h2 = Arc::clone(&self.h2);
        let mut sessions: HashMap<u64, Entry> = HashMap::new();
        let mut next_id = 0;
        let mut events = poller::empty_events(64);
        let mut due = Vec::new();
        let mut last_sweep = Instant::now();
        let mut stopping = false;
        loop {
            // The other half of `wake_thread`: announce the wait, then look at `woken` once
            // more, so that a waker either sees `asleep` or its connection is seen here.
            h2.asleep.store(true, Ordering::SeqCst);
            let timeout = if lock(&h2.woken).is_empty() { 1000 } else { 0 };
            let n = h2.poller.wait(&mut events, timeout);
            h2.asleep.store(false, Ordering::SeqCst);
            due.clear();
            for ev in &events[..n] {
                match poller::ready_of(ev).0 {
                    WAKE_TOKEN => h2.wake.reset(),
                    id => {
                        if let Some(entry) = sessions.get(&id) {
                            entry.session.note_ready(ev.events);
                        }
                        due.push(id);
                    }
                }
            }
            due.append(&mut lock(&h2.woken));
            for session in std::mem::take(&mut *lock(&h2.inbox)) {
                let id = next_id;
                next_id += 1;
                if h2
                    .poller
                    .add(session.fd(), id, Interest::EdgeReadWrite)
                    .is_err()
                {
                    h2.connections.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let waker = Arc::new(ConnWaker {
                    id,
                    h2: Arc::clone(&h2),
                    queued: AtomicBool::new(false),
                });
                sessions.insert(id, Entry { session, waker });
                due.push(id);
            }
            if self.is_stopping() && !stopping {
                stopping = true;
                for (id, entry) in sessions.iter_mut() {
                    entry.session.shut_down();
                    due.push(*id);
                }
            }
            due.sort_unstable();
            due.dedup();
            for &id in &due {
                self.poll_h2(&mut sessions, id);
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                self.sweep_h2(&mut sessions, now);
            }
            if stopping && (sessions.is_empty() || self.past_stop_deadline(now)) {
                break;
            }
        }
        h2.running.store(false, Ordering::Release);
        h2.connections.fetch_sub(sessions.len(), Ordering::AcqRel);
        for (_, entry) in sessions.drain() {
            h2.poller.delete(entry.session.fd());
        }
        // Connections handed over while the thread was ending.
        let late = std::mem::take(&mut *lock(&h2.inbox));
        h2.connections.fetch_sub(late.len(), Ordering::AcqRel);
    }

    fn past_stop_deadline(&self, now: Instant) -> bool {
        (*lock(&self.stop_deadline)).is_none_or(|deadline| now >= deadline)
    }

    /// Polls one connection; its new streams go to the workers; a closed one is dropped.
    fn poll_h2(&self, sessions: &mut HashMap<u64, Entry>, id: u64) {
        let Some(entry) = sessions.get_mut(&id) else {
            return;
        };
        entry.waker.queued.store(false, Ordering::Release);
        let waker = Waker::from(Arc::clone(&entry.waker));
        let mut cx = Context::from_waker(&waker);
        let client = Arc::clone(&entry.session.client);
        let in_app = Arc::clone(&entry.session.in_app);
        let files = Handoff::new(Arc::clone(&entry.session.handed_over), waker.clone());
        let mut jobs = Vec::new();
        let rules = self.config().rules();
        let polled = entry.session.poll(&mut cx, &rules, |request| {
            jobs.push(StreamJob {
                request,
                client: Arc::clone(&client),
                in_progress: InProgress::count(&self.h2.streams),
                in_session: InProgress::count(&in_app),
                files: files.clone(),
            });
        });
        let (bytes_in, bytes_out) = entry.session.take_traffic();
        let counters = &self.context.counters;
        counters.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        counters.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if !jobs.is_empty() {
            self.submit_streams(jobs);
        }
        if polled == Polled::Closed {
            self.drop_h2(sessions, id);
        }
    }

    fn drop_h2(&self, sessions: &mut HashMap<u64, Entry>, id: u64) {
        if let Some(entry) = sessions.remove(&id) {
            self.h2.poller.delete(entry.session.fd());
            self.h2.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Streams for the workers. As with HTTP/1.1 requests, one worker takes them one after
    /// the other while it keeps up; the monitor brings in more when every active worker is
    /// stuck in a slow application (monitor.rs).
    fn submit_streams(&self, jobs: Vec<StreamJob>) {
        if self.h2.add_jobs(jobs) {
            self.kick_waker.wake();
        }
    }

    /// Connections idle (no stream) longer than `timeout` get GOAWAY and close; those still
    /// in their handshake, or not taking their GOAWAY, are dropped.
    fn sweep_h2(&self, sessions: &mut HashMap<u64, Entry>, now: Instant) {
        let idle = self.config().timeout();
        let mut verdicts = Vec::new();
        let mut answered = Vec::new();
        for (id, entry) in sessions.iter_mut() {
            if entry.session.cut_overdue_bodies(now) {
                answered.push(*id);
            }
            match entry.session.expiry(now, idle) {
                Expiry::Keep => {}
                verdict => verdicts.push((*id, verdict)),
            }
        }
        for id in answered {
            self.poll_h2(sessions, id);
        }
        for (id, verdict) in verdicts {
            if verdict == Expiry::Drop {
                self.drop_h2(sessions, id);
            } else if let Some(entry) = sessions.get_mut(&id) {
                entry.session.close_idle(now);
                self.poll_h2(sessions, id);
            }
        }
    }
}
