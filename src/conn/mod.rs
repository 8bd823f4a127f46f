//! One client connection: its read buffer, the request-head state machine, request-body
//! reading and the skipping of bodies the application left unread. No Python here.
//!
//! - `transport.rs`: the socket, plain or TLS, which this module reads and writes through;
//! - `backlog.rs`: response bytes the client has not read yet, written as the socket takes them;
//! - `body.rs`: a request body's framing state, decoded from the buffer;
//! - `intake.rs`: bodies collected before the application runs (in memory or spooled).
//!
//! Edge-triggered polling reports only new data, so a connection may wait for an event only
//! once its socket is drained (`drained`): `next_request` reads until the socket would block
//! before it answers `Next::Wait`. The connection table (server/table.rs) keeps the other half
//! of that rule: an event that arrives while a worker holds the connection is not lost.

mod backlog;
mod body;
mod intake;
mod transport;

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backlog::Backlog;
pub use backlog::{Held, HIGH_WATER};
pub use body::{Body, BodyError};
use intake::Collecting;
pub use intake::{Arriving, BodyGauges, BufferedBody, IntakeError, IntakeRules};
pub use transport::Transport;
use transport::{PlainHttp, READ_CHUNK};

use crate::http::error::{self, HttpError};
use crate::http::proxy;
use crate::http::request::{self, BodyFraming, Limits, RequestHead};
use crate::net::io as netio;
use crate::net::listener::Peer;
use crate::tls::{self, Tls};

/// Unread request bodies up to this size are drained so the connection can be kept.
pub const DRAIN_LIMIT: u64 = 256 * 1024;

/// The server's settings a connection needs to find its next request.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub limits: Limits,
    /// `max_request_body_size` (0: none).
    pub max_body: u64,
    /// Collect request bodies before the application runs; `None`: the application reads
    /// them from the socket as they arrive.
    pub intake: Option<(IntakeRules, &'a Arc<BodyGauges>)>,
    /// A connection that opens with the HTTP/2 preface is handed to HTTP/2 (src/http2/).
    pub http2: bool,
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4); no HTTP/1 request starts this way.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the connection needs next, decided without the GIL.
#[derive(Debug)]
pub enum Next {
    /// A complete request head; the body (if any) follows in the buffer and on the socket.
    Request(RequestHead),
    /// Wait for the socket to become readable.
    Wait,
    /// The peer went away; close silently.
    Close,
    /// Answer with this error and close.
    Error(HttpError),
    /// The response is out; close after a lingering close (the client may still be sending).
    Linger(Linger),
    /// The connection speaks HTTP/2: hand it over (`Conn::into_h2`).
    Http2,
}

/// What becomes of the connection once its backlog of response bytes is written.
#[derive(Debug)]
pub enum AfterSend {
    /// On to the next request; the body's unread rest is skipped first.
    Next(Body),
    Close,
    Linger(Linger),
}

/// How long a lingering close waits for the client to close, and how many bytes it discards
/// meanwhile (docs/http-policy.md, "6. Connection management").
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    pub time: Duration,
    pub budget: usize,
}

/// After an error response to a request whose bytes the client may still be sending.
pub const AFTER_ERROR: Linger = Linger {
    time: Duration::from_millis(200),
    budget: 64 * 1024,
};

/// After a response that left a request body unread (an early answer, or a 413): long enough
/// for a client that writes its whole upload before reading the answer (urllib, http.client)
/// to get to the answer instead of a reset.
pub const UNREAD_BODY: Linger = Linger {
    time: Duration::from_secs(3),
    budget: 16 * 1024 * 1024,
};

/// A connection given up to HTTP/2 (src/http2/).
pub struct Handover {
    pub transport: Transport,
    /// Bytes read and not consumed: the HTTP/2 preface first.
    pub early: Vec<u8>,
    pub peer: Peer,
    pub tls_env: Option<Vec<(String, String)>>,
}

/// Where the connection is between requests.
#[derive(Debug)]
enum Phase {
    /// A PROXY protocol header must come first.
    ProxyHeader,
    /// Reading the next request head.
    Head,
    /// The head is complete; its body is arriving and is collected before the application
    /// runs. Waits in epoll between arrivals: no thread waits for a slow body.
    Collecting(Box<Collecting>),
    /// The response's last bytes wait in the backlog for the client to read them. Waits in
    /// epoll for writability: no thread waits for a slow reader.
    Sending { after: AfterSend, progress: Instant },
    /// Skipping the unread remainder of the previous request's body first.
    Skipping { body: Body, skipped: u64 },
    /// The last response is out and the write side shut down: discarding what the client
    /// still sends until it closes, `budget` runs out or `until` passes (lingering close, so
    /// unread bytes do not make the kernel reset the connection before the client has read
    /// the response). Waits in epoll like any idle connection: no thread waits for it.
    Lingering {
        until: Instant,
        budget: usize,
        _permit: LingerPermit,
    },
}

/// One of a bounded number of places for lingering connections, given back when the
/// connection is dropped.
#[derive(Debug)]
pub struct LingerPermit(Arc<AtomicUsize>);

impl LingerPermit {
    /// A place if fewer than `max` are taken from `count`.
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<LingerPermit> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| LingerPermit(Arc::clone(count)))
    }
}

impl Drop for LingerPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Conn {
    transport: Transport,
    pub peer: Peer,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// Where the current request's head starts in `buf` (its spans are relative to this).
    head_base: usize,
    phase: Phase,
    pub requests_seen: u64,
    /// When the connection started waiting for its next request head.
    pub waiting_since: Instant,
    /// The socket held no more bytes at the last read. While false, data may be waiting that
    /// no edge-triggered event will announce again.
    drained: bool,
    peer_closed: bool,
    tls_env: Option<Vec<(String, String)>>,
    /// Bytes received and not yet added to the server's counters.
    bytes_in: u64,
    /// The body collected for the current request, until the exchange takes it.
    collected: Option<BufferedBody>,
    /// Response bytes written as the socket takes them (over TLS, fed to rustls as it does).
    backlog: Backlog,
    /// The epoll registration already reports writability (see `wants_write_events`).
    write_events: bool,
}

impl Conn {
    /// A connection over plain TCP (or a UNIX socket).
    pub fn plain(fd: OwnedFd, peer: Peer) -> Conn {
        Conn::new(Transport::Plain(fd), peer)
    }

    /// A connection that speaks TLS with these settings (its handshake is still to come);
    /// `http2`: `h2` is offered in ALPN.
    pub fn tls(fd: OwnedFd, tls: Arc<Tls>, peer: Peer, http2: bool) -> Conn {
        Conn::new(Transport::tls(fd, tls, http2), peer)
    }

    fn new(transport: Transport, peer: Peer) -> Conn {
        Conn {
            transport,
            peer,
            buf: Vec::new(),
            pos: 0,
            head_base: 0,
            phase: Phase::Head,
            requests_seen: 0,
            waiting_since: Instant::now(),
            // Registration reports data that arrived before it.
            drained: true,
            peer_closed: false,
            tls_env: None,
            bytes_in: 0,
            collected: None,
            backlog: Backlog::default(),
            write_events: false,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.transport.fd()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    /// The connection comes from a load balancer speaking the PROXY protocol.
    pub fn expect_proxy_header(&mut self) {
        self.phase = Phase::ProxyHeader;
    }

    /// The peer shut down its side: after the data already sent, the socket will read EOF,
    /// which no further edge-triggered event announces.
    pub fn note_peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// The bytes of the current request head (valid until the body is read).
    pub fn head_bytes(&self) -> &[u8] {
        &self.buf[self.head_base..]
    }

    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Whether some bytes of a next request (or of a body to skip or collect) have arrived.
    pub fn is_mid_request(&self) -> bool {
        self.has_buffered() || matches!(self.phase, Phase::Skipping { .. } | Phase::Collecting(_))
    }

    /// The body collected before the application runs, if it was.
    pub fn take_collected(&mut self) -> Option<BufferedBody> {
        self.collected.take()
    }

    /// Bytes received since the last call.
    pub fn take_bytes_in(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_in)
    }

    /// Advances towards the next request head. `event` says the socket signalled new data;
    /// the socket is read only while it may hold unread bytes, so that a connection is parked
    /// only once it is drained (edge-triggered polling reports nothing older).
    pub fn next_request(&mut self, rules: &Rules<'_>, event: bool) -> Next {
        if event {
            self.drained = false;
        }
        match self.phase {
            Phase::Lingering { .. } => return self.discard_until_closed(),
            Phase::Collecting(_) => return self.collect_body(rules.max_body),
            Phase::Sending { .. } => {
                if let Some(next) = self.continue_sending() {
                    return next;
                }
            }
            _ => {}
        }
        loop {
            if matches!(self.phase, Phase::Skipping { .. }) {
                match self.skip_unread_body() {
                    Ok(true) => {}
                    Ok(false) => return Next::Wait,
                    Err(next) => return next,
                }
            }
            if self.has_buffered() {
                let h2 = (rules.http2 && self.may_open_h2())
                    .then(|| self.h2_preface())
                    .flatten();
                match (h2, &self.phase) {
                    (Some(true), _) => return Next::Http2,
                    // The beginning of the preface: read the rest.
                    (Some(false), _) => {}
                    (None, Phase::ProxyHeader) => match self.take_proxy_header() {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => return Next::Error(e),
                    },
                    (None, _) => match request::parse_head(&self.buf[self.pos..], rules.limits) {
                        Ok(Some(head)) => return self.start_request(head, rules),
                        Ok(None) => {}
                        Err(e) => return Next::Error(e),
                    },
                }
            }
            if self.drained && !self.peer_closed {
                return Next::Wait;
            }
            match self.fill() {
                Ok(0) if self.has_buffered() => return Next::Error(error::BAD_HEADER),
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.get_ref().is_some_and(|inner| inner.is::<PlainHttp>()) => {
                    self.transport.downgrade();
                    return Next::Error(error::PLAIN_HTTP_ON_TLS);
                }
                Err(_) => return Next::Close,
            }
        }
    }

    /// Only a connection's first bytes may be the HTTP/2 preface, and not on a TLS
    /// connection whose ALPN chose HTTP/1.
    fn may_open_h2(&self) -> bool {
        self.requests_seen == 0
            && matches!(self.phase, Phase::Head)
            && self
                .transport
                .session()
                .and_then(|s| s.alpn_protocol())
                .is_none_or(|alpn| alpn == tls::ALPN_H2)
    }

    /// Whether the buffer holds the HTTP/2 preface: `Some(true)` all of it, `Some(false)` a
    /// beginning of it (read more), `None` not it.
    fn h2_preface(&self) -> Option<bool> {
        let start = &self.buf[self.pos..];
        let n = start.len().min(H2_PREFACE.len());
        (start[..n] == H2_PREFACE[..n]).then_some(n == H2_PREFACE.len())
    }

    /// Gives the connection up to HTTP/2.
    pub fn into_h2(mut self) -> Handover {
        let early = self.buf.split_off(self.pos);
        Handover {
            transport: self.transport,
            early,
            peer: self.peer,
            tls_env: self.tls_env,
        }
    }

    /// Consumes the PROXY header; the peer becomes the client it announces.
    /// `Ok(false)`: incomplete.
    fn take_proxy_header(&mut self) -> Result<bool, HttpError> {
        match proxy::parse(&self.buf[self.pos..])? {
            None => Ok(false),
            Some((len, client)) => {
                self.pos += len;
                self.phase = Phase::Head;
                if let Some((ip, port)) = client {
                    self.peer.addr = ip.to_string();
                    self.peer.port = port.to_string();
                }
                Ok(true)
            }
        }
    }

    fn start_request(&mut self, head: RequestHead, rules: &Rules<'_>) -> Next {
        if let BodyFraming::Length(n) = head.body {
            if rules.max_body > 0 && n > rules.max_body {
                return Next::Error(error::BODY_TOO_LARGE);
            }
        }
        self.head_base = self.pos;
        self.pos += head.head_len;
        self.requests_seen += 1;
        match rules.intake {
            Some((intake, gauges)) if self.body_still_arriving(&head) => {
                let head_bytes = self.buf[self.head_base..self.pos].to_vec();
                let body = Body::for_framing(head.body);
                let collecting = Collecting::new(head, head_bytes, body, intake, gauges);
                self.phase = Phase::Collecting(Box::new(collecting));
                self.collect_body(rules.max_body)
            }
            _ => Next::Request(head),
        }
    }

    /// Whether the body must be collected before the application runs: not all of it is in
    /// the buffer yet. A client that sent `Expect: 100-continue` waits for the application's
    /// decision, so its body is read when the application asks for it.
    fn body_still_arriving(&self, head: &RequestHead) -> bool {
        if head.expect_continue {
            return false;
        }
        match head.body {
            BodyFraming::None => false,
            BodyFraming::Length(n) => ((self.buf.len() - self.pos) as u64) < n,
            BodyFraming::Chunked => true,
        }
    }

    /// Takes the body that has arrived into the collection, reading until the socket is
    /// drained. A complete body restores the head to the buffer and makes the request ready.
    fn collect_body(&mut self, max_body: u64) -> Next {
        let Phase::Collecting(mut collecting) = std::mem::replace(&mut self.phase, Phase::Head)
        else {
            return Next::Close;
        };
        loop {
            match collecting.take(&self.buf[self.pos..], max_body) {
                Ok(used) => self.pos += used,
                // As when streamed: the application reads up to the limit, then fails.
                Err(IntakeError::Body(BodyError::TooLarge)) => {
                    let (head, bytes, body) = collecting.finish_over_limit();
                    return Next::Request(self.restore_head(head, bytes, body));
                }
                Err(e) => return refusal(e),
            }
            if collecting.is_complete() {
                return Next::Request(self.finish_collecting(*collecting));
            }
            if self.drained && !self.peer_closed {
                self.phase = Phase::Collecting(collecting);
                return Next::Wait;
            }
            let read = if self.has_buffered() {
                None
            } else {
                self.read_into_collection(&mut collecting)
            };
            let read = read.unwrap_or_else(|| self.fill());
            match read {
                Ok(0) => return Next::Close,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.phase = Phase::Collecting(collecting);
                    return Next::Wait;
                }
                Err(_) => return Next::Close,
            }
        }
    }

    /// Reads a Content-Length body straight from the socket into the collection's memory
    /// (plain TCP; `None` when that is not possible). Room for the whole announced rest is
    /// reserved at once (one allocation, reads as large as the socket allows): address space
    /// only, since pages become resident as data arrives; the memory limits count bytes
    /// received.
    fn read_into_collection(&mut self, collecting: &mut Collecting) -> Option<io::Result<usize>> {
        let (memory, step) = collecting.direct_target()?;
        let result = self.transport.read_direct_now(memory, step)?;
        match &result {
            Ok(n) => {
                self.drained = *n < step;
                self.bytes_in += *n as u64;
                collecting.took_direct(*n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
            Err(_) => {}
        }
        Some(result)
    }

    /// The body is complete: the head goes back to the start of the buffer (followed by
    /// whatever the client pipelined), the body waits for the exchange.
    fn finish_collecting(&mut self, collecting: Collecting) -> RequestHead {
        let (head, bytes, body) = collecting.finish();
        self.restore_head(head, bytes, body)
    }

    fn restore_head(
        &mut self,
        head: RequestHead,
        mut bytes: Vec<u8>,
        body: BufferedBody,
    ) -> RequestHead {
        bytes.extend_from_slice(&self.buf[self.pos..]);
        self.buf = bytes;
        self.head_base = 0;
        self.pos = head.head_len;
        self.collected = Some(body);
        head
    }

    /// Reads once into the buffer (compacting it first). `Ok(0)` is end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.head_base = 0;
            self.buf.clear();
        } else if self.pos > 0 && self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.drain(..self.pos);
            self.head_base = 0;
            self.pos = 0;
        }
        match self.transport.read(&mut self.buf, &mut self.bytes_in) {
            Ok(filled) => {
                self.drained = filled.drained;
                Ok(filled.bytes)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                Err(e)
            }
        }
    }

    /// Writes all of `parts` (through TLS when the connection has it), waiting for the socket
    /// up to `deadline`.
    pub fn write_all(&mut self, parts: &[&[u8]], deadline: Instant) -> io::Result<()> {
        self.transport.write_all(parts, deadline)
    }

    /// Writes `parts` after whatever the backlog holds (through TLS when the connection has
    /// it). What the socket does not take at once is copied into the backlog, and this waits
    /// (up to `deadline`) only while the copied bytes would pass `high_water`.
    pub fn send(
        &mut self,
        parts: &[&[u8]],
        deadline: Instant,
        high_water: usize,
    ) -> io::Result<()> {
        let mut written = 0;
        if !self.has_backlog() || self.write_backlog()? {
            written = self.transport.write_now(parts)?;
        }
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            self.queue(&part[skip..], deadline, high_water)?;
        }
        Ok(())
    }

    /// Puts `part` in the backlog, first writing (and waiting) until the copy fits under
    /// `high_water`.
    fn queue(&mut self, mut part: &[u8], deadline: Instant, high_water: usize) -> io::Result<()> {
        while part.len() > high_water.saturating_sub(self.backlog.copied()) {
            if !self.has_backlog() {
                let n = self.transport.write_now(&[part])?;
                if n > 0 {
                    part = &part[n..];
                    continue;
                }
            } else if self.write_backlog()? {
                continue;
            }
            netio::wait_ready(self.fd(), true, deadline)?;
        }
        self.backlog.push_copy(part);
        Ok(())
    }

    /// Writes `parts` and then `tail` now, as far as the socket takes them, never waiting.
    /// What is left of `parts` is copied into the backlog; what is left of `tail` is queued as
    /// `keep(offset)`, a buffer kept alive from that offset instead of a copy. With bytes
    /// already in the backlog, everything is queued behind them.
    pub fn send_keeping_tail(
        &mut self,
        parts: &[&[u8]],
        tail: &[u8],
        keep: impl FnOnce(usize) -> Box<dyn Held>,
    ) -> io::Result<()> {
        let mut written = 0;
        if !self.has_backlog() && parts.len() <= 3 {
            let mut all = [&[][..]; 4];
            all[..parts.len()].copy_from_slice(parts);
            all[parts.len()] = tail;
            written = self.transport.write_now(&all[..=parts.len()])?;
        }
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            self.backlog.push_copy(&part[skip..]);
        }
        if written < tail.len() {
            self.backlog.push_held(keep(written));
        }
        self.write_backlog().map(drop)
    }

    /// Sends `len` bytes of `file` from `offset` with sendfile(2) after what the backlog
    /// holds, as far as the socket takes them now; the rest waits in the backlog (plain TCP).
    pub fn send_file_now(&mut self, file: OwnedFd, offset: u64, len: u64) -> io::Result<()> {
        let Some(fd) = self.plain_fd() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        self.backlog.push_file(file, offset, len);
        self.backlog.write_now(fd).map(drop)
    }

    /// Appends bytes to the backlog (a copy), after what it holds; nothing is written.
    pub fn queue_copy(&mut self, bytes: &[u8]) {
        self.backlog.push_copy(bytes);
    }

    /// Appends a kept-alive buffer to the backlog; nothing is written.
    pub fn queue_held(&mut self, held: Box<dyn Held>) {
        self.backlog.push_held(held);
    }

    /// Writes until at most `limit` bytes wait in the backlog, waiting up to `deadline`.
    pub fn wait_backlog_below(&mut self, limit: usize, deadline: Instant) -> io::Result<()> {
        while self.backlog.len() > limit {
            if !self.write_backlog()? {
                netio::wait_ready(self.fd(), true, deadline)?;
            }
        }
        Ok(())
    }

    /// Writes the whole backlog, waiting up to `deadline` (before a write that bypasses it).
    pub fn drain_backlog(&mut self, deadline: Instant) -> io::Result<()> {
        while !self.write_backlog()? {
            netio::wait_ready(self.fd(), true, deadline)?;
        }
        Ok(())
    }

    /// Bytes of a response wait to be written: in the backlog, or (TLS) encrypted in rustls.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty() || self.transport.has_pending_records()
    }

    /// Writes what the socket takes now; `Ok(true)`: nothing waits any more.
    fn write_backlog(&mut self) -> io::Result<bool> {
        self.transport.write_backlog(&mut self.backlog, &mut 0)
    }

    fn plain_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        self.transport.plain_fd().map(|fd| fd.as_raw_fd())
    }

    /// The response is complete but part of it waits in the backlog: the connection goes on
    /// writing it from epoll's writability events, then does `after`. `Err(after)` when the
    /// backlog is already empty (nothing to wait for).
    pub fn start_sending(&mut self, after: AfterSend) -> Result<(), AfterSend> {
        if !self.has_backlog() {
            return Err(after);
        }
        self.phase = Phase::Sending {
            after,
            progress: Instant::now(),
        };
        Ok(())
    }

    /// Whether the epoll registration must be changed to report writability (once per
    /// connection: edge-triggered, an idle writable socket raises no events).
    pub fn wants_write_events(&mut self) -> bool {
        !std::mem::replace(&mut self.write_events, true)
    }

    pub fn is_sending(&self) -> bool {
        matches!(self.phase, Phase::Sending { .. })
    }

    /// Writes more of the backlog. `None`: it is out and the connection is ready for its
    /// next request; otherwise what to do now.
    fn continue_sending(&mut self) -> Option<Next> {
        let mut wrote = 0;
        match self.transport.write_backlog(&mut self.backlog, &mut wrote) {
            Ok(true) => {}
            Ok(false) => {
                if let Phase::Sending { progress, .. } = &mut self.phase {
                    if wrote > 0 {
                        *progress = Instant::now();
                    }
                }
                return Some(Next::Wait);
            }
            Err(_) => return Some(Next::Close),
        }
        match std::mem::replace(&mut self.phase, Phase::Head) {
            Phase::Sending {
                after: AfterSend::Next(body),
                ..
            } => {
                self.finish_request(body);
                None
            }
            Phase::Sending {
                after: AfterSend::Linger(linger),
                ..
            } => Some(Next::Linger(linger)),
            _ => Some(Next::Close),
        }
    }

    /// Starts the lingering close: shuts down the write side (the client reads the response,
    /// then end of stream) and from now on only discards input; `next_request` answers
    /// `Close` once the client closes or the budget is spent, `Wait` until then.
    pub fn start_lingering(&mut self, linger: Linger, permit: LingerPermit, now: Instant) {
        netio::shutdown_write(self.fd());
        self.buf = Vec::new();
        self.pos = 0;
        self.head_base = 0;
        self.phase = Phase::Lingering {
            until: now + linger.time,
            budget: linger.budget,
            _permit: permit,
        };
    }

    pub fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. })
    }

    /// Whether the connection waits for its first request (not lingering after a refusal).
    pub fn awaits_first_request(&self) -> bool {
        self.requests_seen == 0 && !self.is_lingering()
    }

    /// Whether the connection has waited longer than `timeout` for a request, or its
    /// lingering close is over.
    pub fn is_expired(&self, now: Instant, timeout: Duration) -> bool {
        match &self.phase {
            Phase::Lingering { until, .. } => now >= *until,
            Phase::Collecting(collecting) => now >= collecting.deadline(),
            Phase::Sending { progress, .. } => now.duration_since(*progress) >= timeout,
            _ => now.duration_since(self.waiting_since) >= timeout,
        }
    }

    /// Reads and drops what the client sends while lingering, without waiting.
    fn discard_until_closed(&mut self) -> Next {
        let mut sink = [0u8; 4096];
        let fd = self.fd();
        loop {
            let Phase::Lingering { budget, .. } = &mut self.phase else {
                return Next::Close;
            };
            if *budget == 0 {
                return Next::Close;
            }
            let want = sink.len().min(*budget);
            match netio::read(fd, &mut sink[..want]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    *budget -= n;
                    self.bytes_in += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(_) => return Next::Close,
            }
        }
    }

    /// Computes the `SSL_*` environ entries once per connection, after the handshake.
    pub fn prepare_tls_env(&mut self, server_env: &[(String, String)]) {
        if self.tls_env.is_none() {
            if let Some(session) = self.transport.session() {
                self.tls_env = Some(tls::connection_env(session, server_env));
            }
        }
    }

    pub fn tls_env(&self) -> Option<&[(String, String)]> {
        self.tls_env.as_deref()
    }

    /// Whether the part of `body` already buffered shows it to be longer than `limit` (decoded
    /// on a copy: nothing is consumed). A malformed body counts as too long.
    pub fn unread_body_exceeds(&self, body: &Body, limit: u64) -> bool {
        let mut look = body.clone();
        match look.pump(&self.buf[self.pos..], None, usize::MAX, 0) {
            Ok(pumped) => pumped.produced as u64 + look.announced_remaining() > limit,
            Err(_) => true,
        }
    }

    /// Called when a request is over: leftover body bytes are skipped before the next head.
    pub fn finish_request(&mut self, body: Body) {
        debug_assert!(
            !self.has_backlog(),
            "a response's bytes still wait: the connection is Sending, not done"
        );
        self.waiting_since = Instant::now();
        self.collected = None;
        if !body.is_done() {
            self.phase = Phase::Skipping { body, skipped: 0 };
        }
        if self.pos == self.buf.len() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
            self.pos = 0;
            self.head_base = 0;
        }
    }

    /// `Ok(true)`: the unread body is gone. `Ok(false)`: wait for more bytes.
    fn skip_unread_body(&mut self) -> Result<bool, Next> {
        let Phase::Skipping {
            mut body,
            mut skipped,
        } = std::mem::replace(&mut self.phase, Phase::Head)
        else {
            return Ok(true);
        };
        loop {
            match body.pump(&self.buf[self.pos..], None, usize::MAX, 0) {
                Ok(pumped) => {
                    self.pos += pumped.consumed;
                    skipped += pumped.produced as u64;
                    if skipped > DRAIN_LIMIT {
                        return Err(Next::Close);
                    }
                }
                Err(_) => return Err(Next::Close),
            }
            if body.is_done() {
                return Ok(true);
            }
            if self.drained && !self.peer_closed {
                self.phase = Phase::Skipping { body, skipped };
                return Ok(false);
            }
            match self.fill() {
                Ok(0) => return Err(Next::Close),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.phase = Phase::Skipping { body, skipped };
                    return Ok(false);
                }
                Err(_) => return Err(Next::Close),
            }
        }
    }

    /// Decodes body bytes already in the buffer into `out` (see `Body::pump`).
    fn pump_body(
        &mut self,
        body: &mut Body,
        out: &mut Vec<u8>,
        max: usize,
        max_body: u64,
    ) -> Result<usize, BodyError> {
        let pumped = body.pump(&self.buf[self.pos..], Some(out), max, max_body)?;
        self.pos += pumped.consumed;
        Ok(pumped.produced)
    }

    /// Reads up to `max` body bytes into `out`, waiting for the client up to `timeout` per
    /// wait. Returns 0 only at the end of the body.
    pub fn read_body(
        &mut self,
        body: &mut Body,
        out: &mut Vec<u8>,
        max: usize,
        max_body: u64,
        timeout: Duration,
    ) -> Result<usize, BodyError> {
        loop {
            if body.is_done() || max == 0 {
                return Ok(0);
            }
            let n = self.pump_body(body, out, max, max_body)?;
            if n > 0 {
                return Ok(n);
            }
            if body.is_done() {
                return Ok(0);
            }
            // Large Content-Length reads go straight from the socket into `out`.
            if let Body::Length { remaining } = body {
                let want = max.min(*remaining as usize);
                if want >= READ_CHUNK && !self.has_buffered() {
                    if let Some(got) = self.read_direct(out, want, timeout) {
                        let got = got?;
                        *remaining -= got as u64;
                        if *remaining == 0 {
                            *body = Body::Done;
                        }
                        return Ok(got);
                    }
                }
            }
            self.fill_blocking(timeout)?;
        }
    }

    /// Reads straight into `out` (plain TCP only: `None` on TLS).
    fn read_direct(
        &mut self,
        out: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> Option<Result<usize, BodyError>> {
        let result = self.transport.read_direct(out, want, timeout)?;
        self.drained = matches!(result, Ok(n) if n < want);
        if let Ok(n) = result {
            self.bytes_in += n as u64;
        }
        Some(match result {
            Ok(0) => Err(BodyError::Incomplete),
            Ok(n) => Ok(n),
            Err(e) => Err(e.into()),
        })
    }

    fn fill_blocking(&mut self, timeout: Duration) -> Result<(), BodyError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill() {
                Ok(0) => return Err(BodyError::Incomplete),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    netio::wait_ready(self.fd(), false, deadline)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The answer to a body that could not be collected.
fn refusal(e: IntakeError) -> Next {
    match e {
        IntakeError::Body(BodyError::Framing(err)) => Next::Error(err),
        IntakeError::Body(_) => Next::Close,
        IntakeError::TooLargeToSpool => Next::Error(error::BODY_TOO_LARGE_TO_BUFFER),
        IntakeError::SpoolFull => Next::Error(error::SPOOL_FULL),
        IntakeError::Spool => Next::Error(error::SPOOL_FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    const LIMITS: Limits = Limits { max_head: 0 };

    /// Bodies read by the application as they arrive.
    fn streaming(max_body: u64) -> Rules<'static> {
        Rules {
            limits: LIMITS,
            max_body,
            intake: None,
            http2: true,
        }
    }

    fn collecting<'a>(gauges: &'a Arc<BodyGauges>, memory_limit: usize) -> Rules<'a> {
        let intake = IntakeRules {
            memory_limit,
            spool_limit: 1 << 30,
            min_rate: 500,
            grace: Duration::from_secs(10),
        };
        Rules {
            limits: LIMITS,
            max_body: 0,
            intake: Some((intake, gauges)),
            http2: true,
        }
    }

    fn read_collected(conn: &mut Conn) -> Vec<u8> {
        let mut body = conn.take_collected().expect("a collected body");
        let mut out = Vec::new();
        while body.read(&mut out, 1000).unwrap() > 0 {}
        out
    }

    #[test]
    fn a_trickled_body_is_collected_before_the_request_is_ready() {
        let gauges = Arc::new(BodyGauges::default());
        let rules = collecting(&gauges, 1 << 20);
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Wait));
        assert!(conn.is_mid_request());
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 1);
        client.write_all(b"defg").unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Wait));
        client
            .write_all(b"hijGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let Next::Request(head) = conn.next_request(&rules, true) else {
            panic!("the body is complete")
        };
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 0);
        assert_eq!(head.path.get(conn.head_bytes()), b"/up");
        assert_eq!(read_collected(&mut conn), b"abcdefghij");
        conn.finish_request(Body::Done);
        assert_eq!(gauges.in_memory.load(Ordering::Relaxed), 0);
        let Next::Request(head) = conn.next_request(&rules, false) else {
            panic!("the pipelined request follows")
        };
        assert_eq!(head.path.get(conn.head_bytes()), b"/next");
    }

    #[test]
    fn a_chunked_body_larger_than_memory_is_spooled() {
        let gauges = Arc::new(BodyGauges::default());
        let rules = collecting(&gauges, 8);
        let (mut conn, mut client) = pair();
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n",
            )
            .unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Wait));
        client.write_all(b"6\r\nghijkl\r\n0\r\n\r\n").unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Request(_)));
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 12);
        assert_eq!(read_collected(&mut conn), b"abcdefghijkl");
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_body_complete_with_its_head_is_not_copied() {
        let gauges = Arc::new(BodyGauges::default());
        let rules = collecting(&gauges, 1 << 20);
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Request(_)));
        assert!(conn.take_collected().is_none());
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_body_cut_short_closes_and_frees_everything() {
        let gauges = Arc::new(BodyGauges::default());
        let rules = collecting(&gauges, 4);
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Wait));
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 10);
        drop(client);
        assert!(matches!(conn.next_request(&rules, true), Next::Close));
        drop(conn);
        assert_eq!(gauges.spooled.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.collecting.load(Ordering::Relaxed), 0);
    }

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::plain(a.into(), Peer::default()), b)
    }

    #[test]
    fn the_preface_hands_a_fresh_connection_to_http2() {
        let (mut conn, mut client) = pair();
        let rules = streaming(0);
        // A beginning of the preface: wait for the rest (not a 400 for "PRI * HTTP/2.0").
        client.write_all(&H2_PREFACE[..16]).unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Wait));
        client.write_all(&H2_PREFACE[16..]).unwrap();
        client.write_all(b"\x00\x00\x00\x04\x00").unwrap();
        assert!(matches!(conn.next_request(&rules, true), Next::Http2));
        let handover = conn.into_h2();
        assert_eq!(handover.early[..H2_PREFACE.len()], *H2_PREFACE);
        assert_eq!(&handover.early[H2_PREFACE.len()..], b"\x00\x00\x00\x04\x00");
    }

    #[test]
    fn the_preface_is_http1_garbage_when_http2_is_off_or_late() {
        let (mut conn, mut client) = pair();
        let off = Rules {
            http2: false,
            ..streaming(0)
        };
        client.write_all(H2_PREFACE).unwrap();
        assert!(matches!(conn.next_request(&off, true), Next::Error(_)));
        // After a first request, the preface is no longer a way in.
        let (mut conn, mut client) = pair();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(matches!(
            conn.next_request(&streaming(0), true),
            Next::Request(_)
        ));
        conn.finish_request(Body::Done);
        client.write_all(H2_PREFACE).unwrap();
        assert!(matches!(
            conn.next_request(&streaming(0), true),
            Next::Error(_)
        ));
    }

    #[test]
    fn pipelined_requests_and_unread_bodies() {
        let (mut conn, mut client) = pair();
        assert!(matches!(conn.next_request(&streaming(0), true), Next::Wait));
        client
            .write_all(
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .unwrap();
        let head = match conn.next_request(&streaming(0), true) {
            Next::Request(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(head.path.get(conn.head_bytes()), b"/a");
        // The application reads nothing: the body must be skipped, not parsed.
        conn.finish_request(Body::for_framing(head.body));
        let head = match conn.next_request(&streaming(0), false) {
            Next::Request(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(head.path.get(conn.head_bytes()), b"/b");
    }

    #[test]
    fn chunked_body_read() {
        let (mut conn, mut client) = pair();
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            )
            .unwrap();
        let head = match conn.next_request(&streaming(0), true) {
            Next::Request(h) => h,
            other => panic!("{other:?}"),
        };
        let mut body = Body::for_framing(head.body);
        let mut out = Vec::new();
        let t = Duration::from_secs(2);
        assert_eq!(conn.read_body(&mut body, &mut out, 100, 0, t).unwrap(), 3);
        client.write_all(b"2\r\nde\r\n0\r\nT: 1\r\n\r\n").unwrap();
        while conn.read_body(&mut body, &mut out, 100, 0, t).unwrap() > 0 {}
        assert_eq!(out, b"abcde");
        assert!(body.is_done());
        drop(client);
        assert!(matches!(
            conn.next_request(&streaming(0), true),
            Next::Close
        ));
    }

    #[test]
    fn chunked_body_over_limit() {
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
            .unwrap();
        let Next::Request(head) = conn.next_request(&streaming(5), true) else {
            panic!()
        };
        let mut body = Body::for_framing(head.body);
        let mut out = Vec::new();
        let err = conn.read_body(&mut body, &mut out, 100, 5, Duration::from_secs(1));
        assert!(matches!(err, Err(BodyError::TooLarge)));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        let Next::Request(head) = conn.next_request(&streaming(0), true) else {
            panic!()
        };
        drop(client);
        let mut body = Body::for_framing(head.body);
        let mut out = Vec::new();
        let t = Duration::from_secs(1);
        assert_eq!(conn.read_body(&mut body, &mut out, 100, 0, t).unwrap(), 3);
        assert!(matches!(
            conn.read_body(&mut body, &mut out, 100, 0, t),
            Err(BodyError::Incomplete)
        ));
    }

    #[test]
    fn content_length_over_limit_is_413() {
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            .unwrap();
        assert!(
            matches!(conn.next_request(&streaming(5), true), Next::Error(e) if e == error::BODY_TOO_LARGE)
        );
    }

    fn lingering(conn: &mut Conn, now: Instant) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let permit = LingerPermit::take(&count, 1).unwrap();
        assert!(LingerPermit::take(&count, 1).is_none(), "the bound holds");
        conn.start_lingering(AFTER_ERROR, permit, now);
        count
    }

    #[test]
    fn lingering_discards_until_the_client_closes() {
        let (mut conn, mut client) = pair();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let count = lingering(&mut conn, Instant::now());
        client
            .write_all(b"more bytes the server will never parse")
            .unwrap();
        assert!(matches!(conn.next_request(&streaming(0), true), Next::Wait));
        assert!(!conn.is_mid_request() && !conn.awaits_first_request());
        // The write side is shut down: the client reads end of stream.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut rest).unwrap();
        drop(client);
        assert!(matches!(
            conn.next_request(&streaming(0), true),
            Next::Close
        ));
        drop(conn);
        assert_eq!(count.load(Ordering::Relaxed), 0, "the place is given back");
    }

    #[test]
    fn lingering_stops_at_the_budget_and_the_deadline() {
        let (mut conn, client) = pair();
        let start = Instant::now();
        let _count = lingering(&mut conn, start);
        assert!(!conn.is_expired(start, Duration::ZERO));
        assert!(conn.is_expired(start + AFTER_ERROR.time, Duration::from_secs(99)));
        let writer = std::thread::spawn(move || {
            let mut client = client;
            let junk = [b'j'; 8192];
            while client.write_all(&junk).is_ok() {}
        });
        let verdict = loop {
            match conn.next_request(&streaming(0), true) {
                Next::Wait => std::thread::yield_now(),
                other => break other,
            }
        };
        assert!(matches!(verdict, Next::Close));
        assert_eq!(conn.take_bytes_in(), AFTER_ERROR.budget as u64);
        drop(conn);
        writer.join().unwrap();
    }
}
