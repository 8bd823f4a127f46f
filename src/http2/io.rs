//! The socket under an HTTP/2 connection, as the `h2` crate reads and writes it: tokio's
//! `AsyncRead`/`AsyncWrite` traits (the traits only: no runtime) over stogie's transport,
//! plain or TLS. Nothing here waits. A socket that would block answers `Pending`, and the
//! connection is polled again when epoll reports the socket ready (its registration is
//! edge-triggered for reading and writing, and `Pending` is only answered after a system call
//! found the socket empty or full, so the next edge is sure to come) or when a stream's
//! waker fires (server/http2.rs).

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Transport;
use crate::net::io as netio;

pub struct H2Io {
    transport: Transport,
    /// Bytes read before the connection was known to be HTTP/2: the preface, maybe more.
    early: Vec<u8>,
    early_pos: usize,
    /// What went through the socket (the session reads it: `h2` does not give its socket
    /// back).
    traffic: Arc<Traffic>,
    readiness: Arc<Readiness>,
}

/// What epoll last said about the socket. A read or write that finds the socket empty or full
/// clears its flag, and only the socket's next edge sets it again (`Readiness::note`, from
/// server/http2.rs): a connection polled for another reason (a worker's stream woke it) makes
/// no system call that is bound to fail.
#[derive(Debug)]
pub struct Readiness {
    readable: AtomicBool,
    writable: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness {
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
        }
    }
}

impl Readiness {
    /// An epoll event's bits: a hang-up or error makes both ready, so the next call sees it.
    pub fn note(&self, events: u32) {
        let failed = events & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32 != 0;
        if failed || events & libc::EPOLLIN as u32 != 0 {
            self.readable.store(true, Ordering::Relaxed);
        }
        if failed || events & libc::EPOLLOUT as u32 != 0 {
            self.writable.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs `io` if `ready` allows; `WouldBlock` (from `io` or without calling it) clears it.
fn gated<T>(ready: &AtomicBool, io: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    if !ready.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let result = io();
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        ready.store(false, Ordering::Relaxed);
    }
    result
}

/// Bytes received and sent over a connection's life.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Traffic {
    /// Both directions together: it moves while the connection makes progress.
    pub fn total(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed) + self.bytes_out.load(Ordering::Relaxed)
    }
}

impl H2Io {
    pub fn new(
        transport: Transport,
        early: Vec<u8>,
        traffic: Arc<Traffic>,
        readiness: Arc<Readiness>,
    ) -> H2Io {
        H2Io {
            transport,
            early,
            early_pos: 0,
            traffic,
            readiness,
        }
    }

    fn count_in(&self, n: usize) {
        self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn count_out(&self, result: io::Result<usize>) -> io::Result<usize> {
        if let Ok(n) = result {
            self.traffic
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn read_early(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let rest = &self.early[self.early_pos..];
        if rest.is_empty() {
            return false;
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.early_pos += n;
        if self.early_pos == self.early.len() {
            self.early = Vec::new();
            self.early_pos = 0;
        }
        true
    }

    fn read_plain(&mut self, fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        // SAFETY: read(2) only writes into the unfilled part, and `assume_init` covers only
        // the bytes it wrote.
        let n = gated(&self.readiness.readable, || unsafe {
            let dst = buf.unfilled_mut();
            let n = libc::read(fd, dst.as_mut_ptr() as *mut libc::c_void, dst.len());
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        })?;
        // SAFETY: see above.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        self.count_in(n);
        Ok(())
    }

    /// Decrypts records until plaintext is available; `Ok` with nothing added is end of
    /// stream.
    fn read_tls(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let ready = &self.readiness;
        let (session, fd) = self
            .transport
            .session_mut()
            .ok_or(io::ErrorKind::NotConnected)?;
        loop {
            let dst = buf.initialize_unfilled();
            match session.reader().read(dst) {
                Ok(n) => {
                    buf.advance(n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            match gated(&ready.readable, || session.read_tls(&mut netio::FdIo(fd))) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = session.process_new_packets() {
                // The alert rustls prepared goes out if the socket takes it now.
                let _ = flush_tls(session, fd, &ready.writable);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if session.wants_write() {
                match flush_tls(session, fd, &ready.writable) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
        }
    }

    fn write_tls(&mut self, data: &[u8]) -> io::Result<usize> {
        let writable = &self.readiness.writable;
        let (session, fd) = self
            .transport
            .session_mut()
            .ok_or(io::ErrorKind::NotConnected)?;
        loop {
            let flushed = flush_tls(session, fd, writable);
            // rustls takes plaintext up to its buffer limit (64 KiB of records not yet sent).
            let n = session.writer().write(data)?;
            if n > 0 || data.is_empty() {
                let _ = flush_tls(session, fd, writable);
                return Ok(n);
            }
            flushed?;
        }
    }
}

/// Sends the TLS records rustls holds; `WouldBlock` when the socket is full.
fn flush_tls(
    session: &mut rustls::ServerConnection,
    fd: RawFd,
    writable: &AtomicBool,
) -> io::Result<()> {
    while session.wants_write() {
        gated(writable, || session.write_tls(&mut netio::FdIo(fd)))?;
    }
    Ok(())
}

/// `WouldBlock` becomes `Pending`: the socket's next edge will poll again.
fn ready<T>(result: io::Result<T>) -> Poll<io::Result<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_early(buf) {
            return Poll::Ready(Ok(()));
        }
        let result = match this.transport.plain_fd().map(|fd| fd.as_raw_fd()) {
            Some(fd) => this.read_plain(fd, buf),
            None => this.read_tls(buf),
        };
        ready(result)
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = match this.transport.plain_fd().map(|fd| fd.as_raw_fd()) {
            Some(fd) => gated(&this.readiness.writable, || {
                netio::write_some(fd, &[IoSlice::new(data)])
            }),
            None => this.write_tls(data),
        };
        ready(this.count_out(result))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = match this.transport.plain_fd().map(|fd| fd.as_raw_fd()) {
            Some(fd) => gated(&this.readiness.writable, || netio::write_some(fd, bufs)),
            None => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                this.write_tls(first)
            }
        };
        ready(this.count_out(result))
    }

    fn is_write_vectored(&self) -> bool {
        self.transport.plain_fd().is_some()
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let writable = &this.readiness.writable;
        match this.transport.session_mut() {
            Some((session, fd)) => ready(flush_tls(session, fd, writable)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let writable = &this.readiness.writable;
        if let Some((session, fd)) = this.transport.session_mut() {
            session.send_close_notify();
            if ready(flush_tls(session, fd, writable)).is_pending() {
                return Poll::Pending;
            }
        }
        netio::shutdown_write(this.transport.fd());
        Poll::Ready(Ok(()))
    }
}
