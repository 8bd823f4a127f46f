//! One client connection: its read buffer, the request-head state machine, request-body
//! decoding and the draining of bodies the application left unread. No Python here.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::http::chunked::{ChunkedDecoder, Decoded};
use crate::http::error::{self, HttpError};
use crate::http::proxy;
use crate::http::request::{self, BodyFraming, Limits, RequestHead};
use crate::net::io as netio;
use crate::net::listener::Peer;
use crate::tls;

const READ_CHUNK: usize = 16 * 1024;
/// Unread request bodies up to this size are drained so the connection can be kept.
pub const DRAIN_LIMIT: u64 = 256 * 1024;

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
}

/// The state of a request body as it is read.
#[derive(Debug, Clone)]
pub enum Body {
    Length { remaining: u64 },
    Chunked { decoder: ChunkedDecoder, total: u64 },
    Done,
}

impl Body {
    pub fn for_framing(framing: BodyFraming) -> Body {
        match framing {
            BodyFraming::None => Body::Done,
            BodyFraming::Length(n) => Body::Length { remaining: n },
            BodyFraming::Chunked => Body::Chunked {
                decoder: ChunkedDecoder::new(),
                total: 0,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Body::Done)
    }
}

/// Why a body read failed.
#[derive(Debug)]
pub enum BodyError {
    /// The client closed the connection before the body was complete.
    Incomplete,
    TimedOut,
    Io(io::Error),
    /// Malformed chunked framing.
    Framing(HttpError),
    /// A chunked body grew past `max_request_body_size`.
    TooLarge,
}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => BodyError::TimedOut,
            _ => BodyError::Io(e),
        }
    }
}

pub struct Conn {
    pub fd: RawFd,
    pub peer: Peer,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// Where the current request's head starts in `buf` (its spans are relative to this).
    head_base: usize,
    pub requests_seen: u64,
    /// When the connection started waiting for its next request head.
    pub waiting_since: Instant,
    /// The unread remainder of the previous request's body, to skip before the next head.
    discard: Option<Body>,
    discarded: u64,
    /// The socket held no more bytes at the last read. While false, data may be waiting that
    /// no edge-triggered event will announce again.
    drained: bool,
    peer_closed: bool,
    /// A PROXY protocol header must come first.
    expect_proxy: bool,
    tls: Option<Box<rustls::ServerConnection>>,
    /// No byte has been read yet: check for plain HTTP sent to the TLS port.
    tls_fresh: bool,
    tls_env: Option<Vec<(String, String)>>,
    /// Bytes received and not yet added to the server's counters.
    bytes_in: u64,
}

/// Plain HTTP arrived on a TLS port.
#[derive(Debug)]
pub struct PlainHttp;

impl std::fmt::Display for PlainHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain HTTP request on a TLS port")
    }
}

impl std::error::Error for PlainHttp {}

/// Sends what rustls has queued, waiting for the socket up to `deadline`.
fn tls_flush(tls: &mut rustls::ServerConnection, fd: RawFd, deadline: Instant) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut netio::FdIo(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                netio::wait_ready(fd, true, deadline)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Conn {
    pub fn new(fd: RawFd, peer: Peer) -> Conn {
        Conn {
            fd,
            peer,
            buf: Vec::new(),
            pos: 0,
            head_base: 0,
            requests_seen: 0,
            waiting_since: Instant::now(),
            discard: None,
            discarded: 0,
            // Registration reports data that arrived before it.
            drained: true,
            peer_closed: false,
            expect_proxy: false,
            tls: None,
            tls_fresh: false,
            tls_env: None,
            bytes_in: 0,
        }
    }

    /// The connection comes from a load balancer speaking the PROXY protocol.
    pub fn expect_proxy_header(&mut self) {
        self.expect_proxy = true;
    }

    /// Consumes the PROXY header; the peer becomes the client it announces.
    /// `Ok(false)`: incomplete.
    fn take_proxy_header(&mut self) -> Result<bool, HttpError> {
        match proxy::parse(&self.buf[self.pos..])? {
            None => Ok(false),
            Some((len, client)) => {
                self.pos += len;
                self.expect_proxy = false;
                if let Some((ip, port)) = client {
                    self.peer.addr = ip.to_string();
                    self.peer.port = port.to_string();
                }
                Ok(true)
            }
        }
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

    /// Whether some bytes of a next request (or of a body to skip) have arrived.
    pub fn is_mid_request(&self) -> bool {
        self.has_buffered() || self.discard.is_some()
    }

    /// Advances towards the next request head. `event` says the socket signalled new data;
    /// the socket is read only while it may hold unread bytes, so that a connection is parked
    /// only once it is drained (edge-triggered polling reports nothing older).
    pub fn next_request(&mut self, limits: Limits, max_body: u64, event: bool) -> Next {
        if event {
            self.drained = false;
        }
        loop {
            if self.discard.is_some() {
                match self.skip_unread_body() {
                    Ok(true) => {}
                    Ok(false) => return Next::Wait,
                    Err(next) => return next,
                }
            }
            if self.has_buffered() && self.expect_proxy {
                match self.take_proxy_header() {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return Next::Error(e),
                }
            } else if self.has_buffered() {
                match request::parse_head(&self.buf[self.pos..], limits) {
                    Ok(Some(head)) => return self.start_request(head, max_body),
                    Ok(None) => {}
                    Err(e) => return Next::Error(e),
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
                    self.tls = None;
                    return Next::Error(error::PLAIN_HTTP_ON_TLS);
                }
                Err(_) => return Next::Close,
            }
        }
    }

    fn start_request(&mut self, head: RequestHead, max_body: u64) -> Next {
        if let BodyFraming::Length(n) = head.body {
            if max_body > 0 && n > max_body {
                return Next::Error(error::BODY_TOO_LARGE);
            }
        }
        self.head_base = self.pos;
        self.pos += head.head_len;
        self.requests_seen += 1;
        Next::Request(head)
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
        if self.tls.is_some() {
            return self.fill_tls();
        }
        self.buf.reserve(READ_CHUNK);
        let room = self.buf.capacity() - self.buf.len();
        let result = netio::read_into_spare(self.fd, &mut self.buf, room);
        if let Ok(n) = result {
            self.bytes_in += n as u64;
        }
        // A short read (or none) means the socket's queue was empty at that moment.
        match &result {
            Ok(n) => self.drained = *n < room,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
            Err(_) => {}
        }
        result
    }

    /// `fill()` for TLS: reads records until plaintext is available, sending what the
    /// handshake needs. `WouldBlock` once the socket is empty.
    fn fill_tls(&mut self) -> io::Result<usize> {
        let fd = self.fd;
        if self.tls_fresh {
            self.tls_fresh = false;
            if netio::peek_is_plain_http(fd) {
                return Err(io::Error::other(PlainHttp));
            }
        }
        let Some(tls) = self.tls.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        loop {
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Send the alert rustls prepared, then fail.
                    let _ = tls_flush(tls, fd, Instant::now() + Duration::from_millis(200));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let available = state.plaintext_bytes_to_read();
            let closed = state.peer_has_closed();
            if tls.wants_write() {
                tls_flush(tls, fd, Instant::now() + Duration::from_secs(1))?;
            }
            if available > 0 {
                self.buf.reserve(available);
                let start = self.buf.len();
                self.buf.resize(start + available, 0);
                let n = io::Read::read(&mut tls.reader(), &mut self.buf[start..])?;
                self.buf.truncate(start + n);
                return Ok(n);
            }
            if closed {
                return Ok(0);
            }
            match tls.read_tls(&mut netio::FdIo(fd)) {
                Ok(0) => return Ok(0),
                Ok(n) => self.bytes_in += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `parts` (through TLS when the connection has it), waiting for the socket
    /// up to `deadline`.
    pub fn write_all(&mut self, parts: &[&[u8]], deadline: Instant) -> io::Result<()> {
        match self.tls.as_mut() {
            None if parts.len() <= 4 => {
                // The common case: no allocation for the iovec array.
                let mut slices = [IoSlice::new(&[]); 4];
                for (slot, part) in slices.iter_mut().zip(parts) {
                    *slot = IoSlice::new(part);
                }
                netio::write_all(self.fd, &mut slices[..parts.len()], deadline)
            }
            None => {
                let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                netio::write_all(self.fd, &mut slices, deadline)
            }
            Some(tls) => {
                for part in parts {
                    let mut rest = *part;
                    while !rest.is_empty() {
                        let n = io::Write::write(&mut tls.writer(), rest)?;
                        rest = &rest[n..];
                        tls_flush(tls, self.fd, deadline)?;
                    }
                }
                tls_flush(tls, self.fd, deadline)
            }
        }
    }

    /// Bytes received since the last call.
    pub fn take_bytes_in(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_in)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The connection speaks TLS with this session.
    pub fn start_tls(&mut self, session: rustls::ServerConnection) {
        self.tls = Some(Box::new(session));
        self.tls_fresh = true;
    }

    /// Computes the `SSL_*` environ entries once per connection, after the handshake.
    pub fn prepare_tls_env(&mut self, server_env: &[(String, String)]) {
        if self.tls_env.is_none() {
            if let Some(tls) = self.tls.as_deref() {
                self.tls_env = Some(tls::connection_env(tls, server_env));
            }
        }
    }

    pub fn tls_env(&self) -> Option<&[(String, String)]> {
        self.tls_env.as_deref()
    }

    /// Called when a request is over: leftover body bytes are skipped before the next head.
    pub fn finish_request(&mut self, body: Body) {
        self.waiting_since = Instant::now();
        if !body.is_done() {
            self.discard = Some(body);
            self.discarded = 0;
        }
        if self.pos == self.buf.len() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
            self.pos = 0;
            self.head_base = 0;
        }
    }

    /// `Ok(true)`: the unread body is gone. `Ok(false)`: wait for more bytes.
    fn skip_unread_body(&mut self) -> Result<bool, Next> {
        let Some(mut body) = self.discard.take() else {
            return Ok(true);
        };
        loop {
            match self.pump_body(&mut body, None, usize::MAX, 0) {
                Ok(n) => {
                    self.discarded += n as u64;
                    if self.discarded > DRAIN_LIMIT {
                        return Err(Next::Close);
                    }
                }
                Err(_) => return Err(Next::Close),
            }
            if body.is_done() {
                return Ok(true);
            }
            if self.drained && !self.peer_closed {
                self.discard = Some(body);
                return Ok(false);
            }
            match self.fill() {
                Ok(0) => return Err(Next::Close),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.discard = Some(body);
                    return Ok(false);
                }
                Err(_) => return Err(Next::Close),
            }
        }
    }

    /// Decodes body bytes already in the buffer, up to `max`, appending them to `out` (or
    /// dropping them when `out` is None). Returns the number of body bytes produced.
    fn pump_body(
        &mut self,
        body: &mut Body,
        mut out: Option<&mut Vec<u8>>,
        max: usize,
        max_body: u64,
    ) -> Result<usize, BodyError> {
        let mut produced = 0;
        while produced < max && self.has_buffered() {
            let avail = &self.buf[self.pos..];
            match body {
                Body::Done => break,
                Body::Length { remaining } => {
                    let take = avail.len().min(*remaining as usize).min(max - produced);
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&avail[..take]);
                    }
                    self.pos += take;
                    produced += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *body = Body::Done;
                    }
                }
                Body::Chunked { decoder, total } => {
                    let (used, found) = decoder
                        .decode(avail, max - produced)
                        .map_err(BodyError::Framing)?;
                    if let Decoded::Data { start, len } = found {
                        *total += len as u64;
                        if max_body > 0 && *total > max_body {
                            return Err(BodyError::TooLarge);
                        }
                        if let Some(out) = out.as_deref_mut() {
                            out.extend_from_slice(&avail[start..start + len]);
                        }
                        produced += len;
                    }
                    self.pos += used;
                    if max_body > 0 && *total + decoder.pending_data() > max_body {
                        return Err(BodyError::TooLarge);
                    }
                    if found == Decoded::End {
                        *body = Body::Done;
                    }
                }
            }
        }
        Ok(produced)
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
            let n = self.pump_body(body, Some(out), max, max_body)?;
            if n > 0 {
                return Ok(n);
            }
            if body.is_done() {
                return Ok(0);
            }
            // Large Content-Length reads go straight from the socket into `out`.
            if let Body::Length { remaining } = body {
                let want = max.min(*remaining as usize);
                if want >= READ_CHUNK && !self.has_buffered() && self.tls.is_none() {
                    let got = self.read_direct(out, want, timeout)?;
                    *remaining -= got as u64;
                    if *remaining == 0 {
                        *body = Body::Done;
                    }
                    return Ok(got);
                }
            }
            self.fill_blocking(timeout)?;
        }
    }

    fn read_direct(
        &mut self,
        out: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> Result<usize, BodyError> {
        out.reserve(want);
        let deadline = Instant::now() + timeout;
        let result = netio::read_spare_blocking(self.fd, out, want, deadline);
        self.drained = matches!(result, Ok(n) if n < want);
        if let Ok(n) = result {
            self.bytes_in += n as u64;
        }
        match result {
            Ok(0) => Err(BodyError::Incomplete),
            Ok(n) => Ok(n),
            Err(e) => Err(e.into()),
        }
    }

    fn fill_blocking(&mut self, timeout: Duration) -> Result<(), BodyError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill() {
                Ok(0) => return Err(BodyError::Incomplete),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    netio::wait_ready(self.fd, false, deadline)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        netio::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;

    const LIMITS: Limits = Limits { max_head: 0 };

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(a.into_raw_fd(), Peer::default()), b)
    }

    #[test]
    fn pipelined_requests_and_unread_bodies() {
        let (mut conn, mut client) = pair();
        assert!(matches!(conn.next_request(LIMITS, 0, true), Next::Wait));
        client
            .write_all(
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .unwrap();
        let head = match conn.next_request(LIMITS, 0, true) {
            Next::Request(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(head.path.get(conn.head_bytes()), b"/a");
        // The application reads nothing: the body must be skipped, not parsed.
        conn.finish_request(Body::for_framing(head.body));
        let head = match conn.next_request(LIMITS, 0, false) {
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
        let head = match conn.next_request(LIMITS, 0, true) {
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
        assert!(matches!(conn.next_request(LIMITS, 0, true), Next::Close));
    }

    #[test]
    fn chunked_body_over_limit() {
        let (mut conn, mut client) = pair();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
            .unwrap();
        let Next::Request(head) = conn.next_request(LIMITS, 5, true) else {
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
        let Next::Request(head) = conn.next_request(LIMITS, 0, true) else {
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
            matches!(conn.next_request(LIMITS, 5, true), Next::Error(e) if e == error::BODY_TOO_LARGE)
        );
    }
}
