//! The bytes under a connection: a plain socket or a TLS session over one. The connection's
//! HTTP state (conn/mod.rs) reads and writes through this type only, so what depends on the
//! transport is decided by its variant: `sendfile` needs `Transport::plain_fd`, which a TLS
//! connection does not have.
//!
//! Responses are written without waiting (`write_now`, `write_backlog`): over TLS, plaintext
//! goes into rustls only as far as its buffer of encrypted records has room (rustls' default
//! limit, 64 KiB), and the records go out as the socket takes them; the rest stays with the
//! caller (the connection's backlog) until the socket is writable again.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backlog::Backlog;
use crate::net::io as netio;
use crate::tls::Tls;

/// Bytes read from the socket per refill.
pub const READ_CHUNK: usize = 16 * 1024;

pub enum Transport {
    Plain(OwnedFd),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    fd: OwnedFd,
    state: TlsState,
    /// No byte has been read yet: check for plain HTTP sent to the TLS port.
    fresh: bool,
}

enum TlsState {
    /// Reading the ClientHello: the configuration is chosen once its ALPN offer is known.
    Hello {
        acceptor: Box<rustls::server::Acceptor>,
        tls: Arc<Tls>,
        /// Offer `h2` in ALPN.
        http2: bool,
    },
    Session(Box<rustls::ServerConnection>),
}

/// What one read produced.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    /// Plaintext bytes appended to the buffer; 0 is end of stream.
    pub bytes: usize,
    /// The socket held no more bytes at that moment.
    pub drained: bool,
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

impl TlsStream {
    /// While the ClientHello is being read: reads it, then starts the session with the
    /// configuration its ALPN offer calls for. `Ok(true)`: the client closed first.
    /// `WouldBlock` while more of the hello is needed.
    fn read_hello(&mut self, raw: &mut u64) -> io::Result<bool> {
        let fd = self.fd.as_raw_fd();
        let TlsState::Hello {
            acceptor,
            tls,
            http2,
        } = &mut self.state
        else {
            return Ok(false);
        };
        loop {
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let config = tls.config_for(accepted.client_hello().alpn(), *http2);
                    match accepted.into_connection(config) {
                        Ok(session) => {
                            self.state = TlsState::Session(Box::new(session));
                            return Ok(false);
                        }
                        Err((e, alert)) => return Err(refuse(fd, e, alert)),
                    }
                }
                Ok(None) => {}
                Err((e, alert)) => return Err(refuse(fd, e, alert)),
            }
            match acceptor.read_tls(&mut netio::FdIo(fd)) {
                Ok(0) => return Ok(true),
                Ok(n) => *raw += n as u64,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends the alert rustls prepared for a handshake it refuses (without waiting), and the error.
fn refuse(fd: RawFd, error: rustls::Error, mut alert: rustls::server::AcceptedAlert) -> io::Error {
    let _ = alert.write_all(&mut netio::FdIo(fd));
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The socket as rustls' writer, with writev(2) for its queue of records (`FdIo` writes one
/// record per call).
struct Vectored(RawFd);

impl io::Write for Vectored {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        netio::write_some(self.0, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        netio::write_some(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends what rustls has queued as far as the socket takes it, never waiting; counts the
/// bytes written in `wrote`. `Ok(true)`: nothing is left in rustls.
fn tls_flush_now(
    tls: &mut rustls::ServerConnection,
    fd: RawFd,
    wrote: &mut u64,
) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut Vectored(fd)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *wrote += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Hands rustls as much of `parts` after their first `skip` bytes as its record buffer takes.
fn tls_feed(
    tls: &mut rustls::ServerConnection,
    parts: &[&[u8]],
    mut skip: usize,
) -> io::Result<usize> {
    const SLICES: usize = 8;
    let mut slices = [IoSlice::new(&[]); SLICES];
    let mut count = 0;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        slices[count] = IoSlice::new(&part[skip..]);
        skip = 0;
        count += 1;
        if count == SLICES {
            break; // the caller comes back for the rest
        }
    }
    io::Write::write_vectored(&mut tls.writer(), &slices[..count])
}

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

impl Transport {
    /// A TLS connection whose handshake is still to come; `http2`: offer `h2` in ALPN.
    pub fn tls(fd: OwnedFd, tls: Arc<Tls>, http2: bool) -> Transport {
        Transport::Tls(Box::new(TlsStream {
            fd,
            state: TlsState::Hello {
                acceptor: Box::default(),
                tls,
                http2,
            },
            fresh: true,
        }))
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Transport::Plain(fd) => fd.as_raw_fd(),
            Transport::Tls(tls) => tls.fd.as_raw_fd(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The socket, for writing to it directly (sendfile, the outbox): plain TCP only.
    pub fn plain_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Transport::Plain(fd) => Some(fd.as_fd()),
            Transport::Tls(_) => None,
        }
    }

    /// The TLS session and its socket, for a caller that drives TLS without ever waiting
    /// (HTTP/2, h2/io.rs). `None` on plain TCP or before the handshake started.
    pub fn session_mut(&mut self) -> Option<(&mut rustls::ServerConnection, RawFd)> {
        match self {
            Transport::Tls(tls) => match &mut tls.state {
                TlsState::Session(session) => Some((session, tls.fd.as_raw_fd())),
                TlsState::Hello { .. } => None,
            },
            Transport::Plain(_) => None,
        }
    }

    pub fn session(&self) -> Option<&rustls::ServerConnection> {
        match self {
            Transport::Tls(tls) => match &tls.state {
                TlsState::Session(session) => Some(session),
                TlsState::Hello { .. } => None,
            },
            Transport::Plain(_) => None,
        }
    }

    /// Gives up TLS for the rest of the connection, to answer a plain HTTP request in plain
    /// HTTP before closing. (The socket is duplicated to move it out of the TLS stream; the
    /// connection closes right after, so the epoll registration of the original goes with it.)
    pub fn downgrade(&mut self) {
        if let Transport::Tls(tls) = self {
            if let Ok(fd) = tls.fd.try_clone() {
                *self = Transport::Plain(fd);
            }
        }
    }

    /// Reads once into the spare room of `buf` (at least `READ_CHUNK` is reserved). Counts the
    /// bytes taken from the socket in `raw`. `WouldBlock` once the socket is empty; a TLS
    /// port that receives plain HTTP fails with `PlainHttp` inside an `io::Error`.
    pub fn read(&mut self, buf: &mut Vec<u8>, raw: &mut u64) -> io::Result<Filled> {
        match self {
            Transport::Plain(fd) => {
                buf.reserve(READ_CHUNK);
                let room = buf.capacity() - buf.len();
                let n = netio::read_into_spare(fd.as_raw_fd(), buf, room)?;
                *raw += n as u64;
                Ok(Filled {
                    bytes: n,
                    // A short read means the socket's queue was empty at that moment.
                    drained: n < room,
                })
            }
            Transport::Tls(tls) => tls.read(buf, raw),
        }
    }

    /// Reads up to `want` bytes straight into `out`, waiting up to `timeout` (plain TCP).
    pub fn read_direct(
        &mut self,
        out: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> Option<io::Result<usize>> {
        let Transport::Plain(fd) = self else {
            return None;
        };
        out.reserve(want);
        let deadline = Instant::now() + timeout;
        Some(netio::read_spare_blocking(
            fd.as_raw_fd(),
            out,
            want,
            deadline,
        ))
    }

    /// Reads up to `want` bytes straight into `out` without waiting (plain TCP; `None` on
    /// TLS). `WouldBlock` when the socket is empty.
    pub fn read_direct_now(&mut self, out: &mut Vec<u8>, want: usize) -> Option<io::Result<usize>> {
        let Transport::Plain(fd) = self else {
            return None;
        };
        out.reserve(want);
        Some(netio::read_into_spare(fd.as_raw_fd(), out, want))
    }

    /// Writes as much of `parts` as the socket takes now, never waiting; returns the bytes
    /// taken (0 when the socket is full). Over TLS, "taken" means handed to rustls: some of
    /// them may still wait in its records (`has_pending_records`).
    pub fn write_now(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        match self {
            Transport::Plain(fd) => write_parts_now(fd.as_raw_fd(), parts),
            Transport::Tls(tls) => tls.write_now(parts),
        }
    }

    /// Writes as much of `backlog` as the socket takes now, never waiting; counts the bytes
    /// written to the socket in `wrote`. `Ok(true)`: all of it is out (over TLS, rustls'
    /// records too).
    pub fn write_backlog(&mut self, backlog: &mut Backlog, wrote: &mut u64) -> io::Result<bool> {
        match self {
            Transport::Plain(fd) => {
                let before = backlog.len();
                let result = backlog.write_now(fd.as_raw_fd());
                *wrote += (before - backlog.len()) as u64;
                result
            }
            Transport::Tls(tls) => tls.write_backlog(backlog, wrote),
        }
    }

    /// Encrypted records rustls holds that the socket has not taken yet (TLS only).
    pub fn has_pending_records(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => match &tls.state {
                TlsState::Session(session) => session.wants_write(),
                TlsState::Hello { .. } => false,
            },
        }
    }

    /// Writes all of `parts`, waiting for the socket up to `deadline`.
    pub fn write_all(&mut self, parts: &[&[u8]], deadline: Instant) -> io::Result<()> {
        match self {
            Transport::Plain(fd) if parts.len() <= 4 => {
                // The common case: no allocation for the iovec array.
                let mut slices = [IoSlice::new(&[]); 4];
                for (slot, part) in slices.iter_mut().zip(parts) {
                    *slot = IoSlice::new(part);
                }
                netio::write_all(fd.as_raw_fd(), &mut slices[..parts.len()], deadline)
            }
            Transport::Plain(fd) => {
                let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                netio::write_all(fd.as_raw_fd(), &mut slices, deadline)
            }
            Transport::Tls(tls) => {
                let fd = tls.fd.as_raw_fd();
                let TlsState::Session(session) = &mut tls.state else {
                    return Err(io::ErrorKind::NotConnected.into());
                };
                for part in parts {
                    let mut rest = *part;
                    while !rest.is_empty() {
                        let n = io::Write::write(&mut session.writer(), rest)?;
                        rest = &rest[n..];
                        tls_flush(session, fd, deadline)?;
                    }
                }
                tls_flush(session, fd, deadline)
            }
        }
    }
}

/// One writev(2) of `parts` without waiting: the bytes the socket took, 0 when it is full
/// (no allocation for up to four parts: the common case, a response head and body).
fn write_parts_now(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
    let result = if parts.len() <= 4 {
        let mut slices = [IoSlice::new(&[]); 4];
        for (slot, part) in slices.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        netio::write_some(fd, &slices[..parts.len()])
    } else {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        netio::write_some(fd, &slices)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

impl TlsStream {
    fn session(&mut self) -> io::Result<(&mut rustls::ServerConnection, RawFd)> {
        let fd = self.fd.as_raw_fd();
        match &mut self.state {
            TlsState::Session(session) => Ok((session, fd)),
            TlsState::Hello { .. } => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// See `Transport::write_now`: feeds rustls and writes its records in turn until the
    /// socket is full or everything is out.
    fn write_now(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        let (session, fd) = self.session()?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut taken = 0;
        let mut wrote = 0;
        while tls_flush_now(session, fd, &mut wrote)? && taken < total {
            match tls_feed(session, parts, taken)? {
                0 => break,
                n => taken += n,
            }
        }
        Ok(taken)
    }

    /// See `Transport::write_backlog`: rustls' records first, then more of the backlog as
    /// its buffer empties.
    fn write_backlog(&mut self, backlog: &mut Backlog, wrote: &mut u64) -> io::Result<bool> {
        let (session, fd) = self.session()?;
        loop {
            if !tls_flush_now(session, fd, wrote)? {
                return Ok(false);
            }
            if backlog.is_empty() {
                return Ok(true);
            }
            let fed =
                backlog.feed(|slices| io::Write::write_vectored(&mut session.writer(), slices))?;
            if fed == 0 {
                // Its buffer was just emptied: a session that takes nothing is over.
                return Err(io::Error::other("the TLS session takes no more data"));
            }
        }
    }

    /// Reads records until plaintext is available, sending what the handshake needs.
    fn read(&mut self, buf: &mut Vec<u8>, raw: &mut u64) -> io::Result<Filled> {
        let fd = self.fd.as_raw_fd();
        if self.fresh {
            self.fresh = false;
            if netio::peek_is_plain_http(fd) {
                return Err(io::Error::other(PlainHttp));
            }
        }
        if self.read_hello(raw)? {
            return Ok(Filled {
                bytes: 0,
                drained: false,
            });
        }
        let TlsState::Session(tls) = &mut self.state else {
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
            if tls.is_handshaking() {
                if tls.wants_write() {
                    tls_flush(tls, fd, Instant::now() + Duration::from_secs(1))?;
                }
            } else {
                // Never waits once the session is up: records of a response the client is
                // slow to read may be queued here, and go out from the connection's
                // backlog as the socket takes them.
                tls_flush_now(tls, fd, &mut 0)?;
            }
            if available > 0 {
                buf.reserve(available);
                let start = buf.len();
                buf.resize(start + available, 0);
                let n = io::Read::read(&mut tls.reader(), &mut buf[start..])?;
                buf.truncate(start + n);
                // More records may wait behind this one: not known to be drained.
                return Ok(Filled {
                    bytes: n,
                    drained: false,
                });
            }
            if closed {
                return Ok(Filled {
                    bytes: 0,
                    drained: false,
                });
            }
            match tls.read_tls(&mut netio::FdIo(fd)) {
                Ok(0) => {
                    return Ok(Filled {
                        bytes: 0,
                        drained: false,
                    })
                }
                Ok(n) => *raw += n as u64,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Held;
    use crate::tls::{ClientAuth, TlsOptions};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    /// A self-signed test certificate for "localhost" (P-256, valid until 2126) and its key.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUeEL2fkqniAPn9ovXz3YukrQJaVowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjE0NDQxNFoYDzIxMjYxMTEy
MTQ0NDE0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAS4Hz4S0hCY9g4Z4HDtOLyFGEVIDdtWuQ3oUb/jpZJ38F12QHs1SuIx
sNkGBDSPWjcA+WdMT70rx4FeeCS+PpYTo2kwZzAdBgNVHQ4EFgQUO4xx3LKrIFpU
fusIpqFPP5X1/NkwHwYDVR0jBBgwFoAUO4xx3LKrIFpUfusIpqFPP5X1/NkwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SAAwRQIhAIC0mSqULiW+11kCS1hEmQeTPpRa93tmzsRCUyN3rUr3AiAdF6CChjXE
Ab/VpBDtqOoXBCmVwe+0f0JefELszSAkdQ==
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWm7sSP7JwTFMFqnT
Wdw7gwEjv179X77rvjLK7GDRw6ShRANCAAS4Hz4S0hCY9g4Z4HDtOLyFGEVIDdtW
uQ3oUb/jpZJ38F12QHs1SuIxsNkGBDSPWjcA+WdMT70rx4FeeCS+PpYT
-----END PRIVATE KEY-----
";

    /// The test client trusts any certificate: what is tested is the server's writing.
    #[derive(Debug)]
    struct TrustAnything;

    impl ServerCertVerifier for TrustAnything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ECDSA_NISTP256_SHA256]
        }
    }

    fn server_tls() -> Arc<Tls> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        let opts = TlsOptions {
            certificate: cert.display().to_string(),
            private_key: key.display().to_string(),
            chain: None,
            password: None,
            client_ca: None,
            client_auth: ClientAuth::None,
            min_version: None,
        };
        Arc::new(Tls::new(&opts).unwrap())
    }

    fn client_session() -> rustls::ClientConnection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnything))
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(Arc::new(config), name).unwrap()
    }

    struct Shared(Vec<u8>);

    impl Held for Shared {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    #[test]
    fn a_tls_backlog_goes_out_exactly_as_the_client_reads_without_waiting() {
        let (server_end, mut client_end) = UnixStream::pair().unwrap();
        server_end.set_nonblocking(true).unwrap();
        let mut transport = Transport::tls(server_end.into(), server_tls(), false);
        let (start_reading, may_read) = mpsc::channel::<()>();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let want_len = 5 + big.len() + 4;
        let client = std::thread::spawn(move || {
            let mut session = client_session();
            let mut stream = rustls::Stream::new(&mut session, &mut client_end);
            stream.write_all(b"hello").unwrap();
            may_read.recv().unwrap();
            let mut got = vec![0u8; want_len];
            stream.read_exact(&mut got).unwrap();
            got
        });
        // The handshake, then the request's plaintext, read without waiting.
        let mut request = Vec::new();
        while request.is_empty() {
            match transport.read(&mut request, &mut 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(request, b"hello");
        // The client reads nothing yet: the socket and rustls' buffer fill up, nothing waits.
        let taken = transport.write_now(&[b"head:", &big[..100]]).unwrap();
        assert_eq!(taken, 105, "a small write is all taken");
        let mut backlog = Backlog::default();
        backlog.push_held(Box::new(Shared(big[100..].to_vec())));
        backlog.push_copy(b":end");
        let mut wrote = 0;
        assert!(!transport.write_backlog(&mut backlog, &mut wrote).unwrap());
        assert!(
            transport.has_pending_records(),
            "rustls keeps the records not written"
        );
        assert!(!backlog.is_empty() && wrote > 0);
        assert_eq!(
            transport.write_now(&[b"more"]).unwrap(),
            0,
            "full: nothing taken"
        );
        start_reading.send(()).unwrap();
        while !transport.write_backlog(&mut backlog, &mut wrote).unwrap() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!transport.has_pending_records() && backlog.is_empty());
        let got = client.join().unwrap();
        assert_eq!(&got[..5], b"head:");
        assert!(
            got[5..5 + big.len()] == big[..],
            "the body arrives in order"
        );
        assert_eq!(&got[5 + big.len()..], b":end");
    }
}
