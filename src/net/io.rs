//! Non-blocking socket I/O. Reads and writes that must complete (request bodies, responses)
//! wait with poll(2) up to a deadline, with the GIL already released by the caller.
//!
//! Every descriptor here is a socket, so the calls are recv(2) and sendmsg(2) rather than
//! read(2) and writev(2): they enter the socket layer directly instead of through the VFS
//! (file position locks, fsnotify), a few percent of the kernel time of a small response.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// One read into `buf`. `Ok(0)` is end of stream; `WouldBlock` means no data yet.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// recv(2) of up to `len` bytes at `ptr`, retried on EINTR.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        let n = libc::recv(fd, ptr as *mut libc::c_void, len, 0);
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One read of at most `max` bytes into the spare capacity of `buf` (no zero-filling first),
/// growing its length by what was read.
pub fn read_into_spare(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: the pointer and `len` lie within `buf`'s spare capacity; recv(2) writes at most
    // `len` bytes, which are then initialized.
    let n = unsafe { recv_raw(fd, spare.as_mut_ptr() as *mut u8, len)? };
    // SAFETY: the first `n` spare bytes were just written by recv(2).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Reads into the spare capacity of `buf`, waiting up to the deadline. `Ok(0)` is end of stream.
pub fn read_spare_blocking(
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> io::Result<usize> {
    loop {
        match read_into_spare(fd, buf, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(fd, false, deadline)?,
            other => return other,
        }
    }
}

/// Waits until `fd` is readable (or writable) or the deadline passes.
pub fn wait_ready(fd: RawFd, writable: bool, deadline: Instant) -> io::Result<()> {
    let events = if writable {
        libc::POLLOUT
    } else {
        libc::POLLIN
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return Ok(());
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// One sendmsg(2) without waiting; `WouldBlock` when the socket is full. A peer that has
/// gone gives `EPIPE` (MSG_NOSIGNAL: never SIGPIPE, whatever the process's disposition).
pub fn write_some(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let count = bufs.len().min(512);
    // SAFETY: zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec; sendmsg only reads the entries.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = count as _;
    loop {
        // SAFETY: `msg` points at `count` valid iovecs for the duration of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Writes every byte of `bufs`, waiting for the socket up to the deadline.
pub fn write_all(fd: RawFd, bufs: &mut [IoSlice<'_>], deadline: Instant) -> io::Result<()> {
    write_all_by(fd, bufs, || deadline)
}

/// `write_all` with a deadline `timeout` from the first wait: the clock is read only when the
/// socket does not take everything at once (most responses), not for every write.
pub fn write_all_within(fd: RawFd, bufs: &mut [IoSlice<'_>], timeout: Duration) -> io::Result<()> {
    write_all_by(fd, bufs, || Instant::now() + timeout)
}

/// The write loop of both: `deadline` is asked for once, when the socket is first full.
fn write_all_by(
    fd: RawFd,
    bufs: &mut [IoSlice<'_>],
    deadline: impl Fn() -> Instant,
) -> io::Result<()> {
    let mut bufs = bufs;
    let mut waiting_until = None;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match write_some(fd, bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_ready(fd, true, *waiting_until.get_or_insert_with(&deadline))?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts down the sending side: the peer reads what was sent, then end of stream.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on a descriptor the caller owns; errors are irrelevant here.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

pub fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall on a descriptor we own; errors are irrelevant here.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe { libc::close(fd) };
}

/// One sendfile(2) of up to `len` bytes of `file_fd` from `offset`, without waiting:
/// `WouldBlock` when the socket is full, `Ok(0)` when the file has no more bytes there.
pub fn send_file_now(sock: RawFd, file_fd: RawFd, offset: u64, len: u64) -> io::Result<u64> {
    let mut off = offset as libc::off_t;
    let count = len.min(1 << 30) as usize;
    loop {
        // SAFETY: plain syscall; `off` is a valid off_t the kernel advances.
        let n = unsafe { libc::sendfile(sock, file_fd, &mut off, count) };
        if n >= 0 {
            return Ok(n as u64);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A socket as `Read`/`Write` for rustls's record I/O (non-blocking: `WouldBlock` passes up).
pub struct FdIo(pub RawFd);

impl io::Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read(self.0, buf)
    }
}

impl io::Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_some(self.0, &[IoSlice::new(buf)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The next byte waiting on `fd`, left in the socket, without waiting: `Ok(None)` is end of
/// stream, `WouldBlock` means nothing has arrived.
fn peek_byte(fd: RawFd) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    // SAFETY: peeks at most one byte into a valid buffer without blocking.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Ok(None),
        1 => Ok(Some(byte[0])),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether bytes (or end of stream) are waiting to be read on `fd`.
pub fn has_input(fd: RawFd) -> bool {
    peek_byte(fd).is_ok()
}

/// Whether the first bytes waiting on a TLS port look like an HTTP request line (a TLS
/// record starts with a content-type byte, 0x14 to 0x17).
pub fn peek_is_plain_http(fd: RawFd) -> bool {
    matches!(peek_byte(fd), Ok(Some(b)) if b.is_ascii_uppercase())
}
