//! One HTTP/2 connection: the handshake (the peer's preface and SETTINGS), then streams
//! accepted as they open, until the peer or the server ends it. Every limit `h2` offers is
//! set here explicitly, with the attack it bounds (SECURITY.md lists them).

use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::{Builder, Connection, Handshake};

use super::collect::{self, Admitted, Arrival, Progress};
use super::file_body::{self, FileBody};
use super::io::{H2Io, Readiness, Traffic};
use super::stream::NewStream;
use crate::conn::{Handover, Rules, HIGH_WATER};
use crate::http::request::Limits;
use crate::net::listener::Peer;

/// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS): each is an
/// application call, so this bounds what one connection can ask of the worker threads.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Request-body bytes a peer may send on one stream ahead of the application's reads.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The same for all streams of a connection together: four stalled uploads do not stop
/// the others.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// HPACK dynamic table (RFC 7541 §4.2), the protocol's default.
pub const HEADER_TABLE_SIZE: u32 = 4096;
/// Streams the peer resets before the server accepted them, at most, before the connection
/// is closed with ENHANCE_YOUR_CALM (Rapid Reset, CVE-2023-44487).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server had to reset for the peer's errors, at most, before the connection is
/// closed with ENHANCE_YOUR_CALM (MadeYouReset, CVE-2025-8671).
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Recently reset streams remembered (to ignore their late frames), and for how long.
pub const MAX_CONCURRENT_RESET_STREAMS: usize = 50;
pub const RESET_STREAM_DURATION: Duration = Duration::from_secs(1);
/// Response bytes one stream may hold in memory beyond the peer's window: the same
/// high-water mark as an HTTP/1.1 connection's backlog.
pub const MAX_SEND_BUFFER: usize = HIGH_WATER;
/// Framing overhead allowed for small DATA frames before the connection is closed with
/// ENHANCE_YOUR_CALM: half the connection window.
pub const DATA_FRAME_BUDGET: usize = CONNECTION_WINDOW as usize / 2;

/// The `h2` server settings for a server whose request heads are bounded by `limits`.
fn builder(limits: Limits) -> Builder {
    let mut builder = Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .header_table_size(HEADER_TABLE_SIZE)
        // The HTTP/1.1 head cap (64 KiB unless max_request_header_size is lower): it also
        // bounds CONTINUATION frames per head (the 2024 CONTINUATION flood).
        .max_header_list_size(u32::try_from(limits.head_cap()).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_concurrent_reset_streams(MAX_CONCURRENT_RESET_STREAMS)
        .reset_stream_duration(RESET_STREAM_DURATION)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .data_frame_budget(DATA_FRAME_BUDGET);
    builder
}

enum State {
    Handshaking(Box<Handshake<H2Io, Bytes>>),
    Serving(Box<Connection<H2Io, Bytes>>),
}

/// What a poll left the connection in.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    Open,
    /// Ended (by either side, or by an error): drop the session, which closes the socket.
    Closed,
}

/// The client of a connection, as every stream's environ names it.
pub struct Client {
    pub peer: Peer,
    pub tls_env: Option<Vec<(String, String)>>,
}

pub struct Session {
    state: State,
    pub client: Arc<Client>,
    fd: RawFd,
    traffic: Arc<Traffic>,
    readiness: Arc<Readiness>,
    /// What of `traffic` the server's counters already have: (in, out).
    reported: (u64, u64),
    /// Streams of this connection whose application call is queued or running.
    pub in_app: Arc<AtomicUsize>,
    /// `traffic.total()` at the last sweep, and when it last moved.
    progress: (u64, Instant),
    opened: Instant,
    /// When the connection last had a stream open.
    last_busy: Instant,
    shutting_down: bool,
    /// When GOAWAY was sent to an idle connection, closing it.
    closing_since: Option<Instant>,
    /// Streams whose body is being collected before the application runs.
    arrivals: Vec<Arrival>,
    /// File bodies left by the workers (file_body.rs), not yet taken into `files`.
    pub handed_over: Arc<Mutex<Vec<FileBody>>>,
    /// File bodies being sent.
    files: Vec<FileBody>,
}

/// What becomes of a connection at a sweep.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    Keep,
    /// Idle too long: GOAWAY now, then closed once it is out.
    Close,
    /// Gone beyond saving (handshake too slow, or GOAWAY not taken): drop it.
    Drop,
}

/// How long a connection closing for idleness gets to take its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Session {
    /// Starts HTTP/2 on a connection whose first bytes (the preface first) are read.
    pub fn new(handover: Handover, limits: Limits) -> Session {
        let Handover {
            transport,
            early,
            peer,
            tls_env,
        } = handover;
        let fd = transport.fd();
        let traffic = Arc::new(Traffic::default());
        let readiness = Arc::new(Readiness::default());
        let io = H2Io::new(
            transport,
            early,
            Arc::clone(&traffic),
            Arc::clone(&readiness),
        );
        let now = Instant::now();
        Session {
            state: State::Handshaking(Box::new(builder(limits).handshake(io))),
            client: Arc::new(Client { peer, tls_env }),
            fd,
            traffic,
            readiness,
            reported: (0, 0),
            in_app: Arc::default(),
            progress: (0, now),
            opened: now,
            last_busy: now,
            shutting_down: false,
            closing_since: None,
            arrivals: Vec::new(),
            handed_over: Arc::default(),
            files: Vec::new(),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The socket's epoll event (its bits), before the poll it calls for.
    pub fn note_ready(&self, events: u32) {
        self.readiness.note(events);
    }

    /// Bytes (in, out) since the last call, for the server's counters.
    pub fn take_traffic(&mut self) -> (u64, u64) {
        let now = (
            self.traffic.bytes_in.load(Ordering::Relaxed),
            self.traffic.bytes_out.load(Ordering::Relaxed),
        );
        let delta = (now.0 - self.reported.0, now.1 - self.reported.1);
        self.reported = now;
        delta
    }

    /// Moves the connection on as far as it goes without waiting; every stream whose request
    /// is ready for the application (head checked, body collected) is given to `ready`.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        rules: &Rules<'_>,
        mut ready: impl FnMut(NewStream),
    ) -> Polled {
        if let State::Handshaking(handshake) = &mut self.state {
            match Pin::new(handshake.as_mut()).poll(cx) {
                Poll::Ready(Ok(conn)) => self.state = State::Serving(Box::new(conn)),
                Poll::Ready(Err(_)) => return Polled::Closed,
                Poll::Pending => return Polled::Open,
            }
            if self.shutting_down {
                self.shut_down_now();
            }
        }
        let State::Serving(conn) = &mut self.state else {
            return Polled::Open;
        };
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    match collect::admit(request, respond, rules) {
                        Admitted::Ready(stream) => ready(stream),
                        Admitted::Collecting(arrival) => self.arrivals.push(arrival),
                        Admitted::Answered => {}
                    }
                }
                // A connection error: `h2` has sent GOAWAY with its code.
                Poll::Ready(Some(Err(_)) | None) => return Polled::Closed,
                Poll::Pending => break,
            }
        }
        for arrival in std::mem::take(&mut self.arrivals) {
            match arrival.poll(cx, rules.max_body) {
                Progress::Waiting(arrival) => self.arrivals.push(arrival),
                Progress::Complete(stream) => ready(stream),
                Progress::Ended => {}
            }
        }
        self.files.append(&mut file_body::lock(&self.handed_over));
        self.files.retain_mut(|file| file.poll(cx).is_pending());
        if conn.has_streams() {
            self.last_busy = Instant::now();
        }
        // (Answers, window updates and DATA queued above wake the connection: `h2` calls the
        // waker of this poll, so it is polled again to send them.)
        Polled::Open
    }

    /// Bodies that did not arrive in time get 408 (answered at the next poll).
    pub fn cut_overdue_bodies(&mut self, now: Instant) -> bool {
        let before = self.arrivals.len();
        let (overdue, waiting) = std::mem::take(&mut self.arrivals)
            .into_iter()
            .partition(|a| a.is_overdue(now));
        self.arrivals = waiting;
        for arrival in overdue {
            arrival.refuse(crate::http::error::HEAD_TIMEOUT);
        }
        self.arrivals.len() != before
    }

    /// GOAWAY: no new streams; those open finish (SIGTERM, SIGHUP, idle timeout).
    pub fn shut_down(&mut self) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.shut_down_now();
        }
    }

    fn shut_down_now(&mut self) {
        if let State::Serving(conn) = &mut self.state {
            conn.graceful_shutdown();
        }
    }

    /// GOAWAY (NO_ERROR) at once to a connection idle too long; it closes once that is out.
    pub fn close_idle(&mut self, now: Instant) {
        if let State::Serving(conn) = &mut self.state {
            conn.abrupt_shutdown(h2::Reason::NO_ERROR);
        }
        self.closing_since = Some(now);
    }

    /// Whether the connection has waited too long: for its handshake, without a stream for
    /// `idle`, or with streams whose responses no longer move (the peer stopped reading) and
    /// no application call running for them.
    pub fn expiry(&mut self, now: Instant, idle: Duration) -> Expiry {
        let total = self.traffic.total();
        if total != self.progress.0 {
            self.progress = (total, now);
        }
        if let Some(since) = self.closing_since {
            if now.duration_since(since) > CLOSE_GRACE {
                return Expiry::Drop;
            }
            return Expiry::Keep;
        }
        match &self.state {
            State::Handshaking(_) if now.duration_since(self.opened) > idle => Expiry::Drop,
            State::Serving(conn)
                if !conn.has_streams() && now.duration_since(self.last_busy) > idle =>
            {
                Expiry::Close
            }
            State::Serving(_)
                if self.in_app.load(Ordering::Acquire) == 0
                    && now.duration_since(self.progress.1) > idle =>
            {
                Expiry::Close
            }
            _ => Expiry::Keep,
        }
    }
}
