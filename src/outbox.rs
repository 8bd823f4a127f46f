//! Response write-behind. A worker that finishes a small response while other requests are
//! already waiting for it queues the response's bytes here instead of writing them at once,
//! and writes the whole batch just before it would next wait for the network. The client is
//! then woken once per batch instead of once per response; on this machine each wake-up of a
//! sleeping client costs the writer ~10 µs of kernel time (an inter-processor interrupt), more
//! than the rest of a hello-world request.
//!
//! Holding must never delay a response for long: the monitor calls `write_ready` for a worker
//! that has been stuck in one request for a tick, which sends whatever the sockets accept
//! without waiting. Only plain TCP responses are held (TLS records need the connection's
//! rustls state, which the worker owns).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::net::io as netio;

/// At most this many bytes are held per worker; beyond it the batch is written.
pub const HOLD_BYTES: usize = 256 * 1024;
/// At most this many responses are held per worker.
pub const HOLD_RESPONSES: usize = 32;
/// A batch older than this is written at the next opportunity.
pub const HOLD_AGE: Duration = Duration::from_millis(1);

/// The bytes of one held response (or several consecutive ones on the same connection).
#[derive(Debug)]
struct Segment {
    fd: RawFd,
    token: u64,
    start: usize,
    end: usize,
    failed: bool,
}

#[derive(Debug, Default)]
struct Queue {
    buf: Vec<u8>,
    segments: VecDeque<Segment>,
    /// When the oldest unwritten byte was queued.
    since: Option<Instant>,
    /// Connections whose write failed since the last `take_failed`.
    failed: Vec<u64>,
}

/// One worker's held responses, shared with the monitor.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Mutex<Queue>,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Outbox {
    /// Queues `parts` for the connection `token` (socket `fd`), after what is already queued.
    pub fn push(&self, fd: RawFd, token: u64, parts: &[&[u8]]) {
        let mut q = lock(&self.queue);
        let start = q.buf.len();
        for part in parts {
            q.buf.extend_from_slice(part);
        }
        let end = q.buf.len();
        if end == start {
            return;
        }
        q.since.get_or_insert_with(Instant::now);
        match q.segments.back_mut() {
            Some(last) if last.token == token && last.end == start && !last.failed => {
                last.end = end
            }
            _ => q.segments.push_back(Segment {
                fd,
                token,
                start,
                end,
                failed: false,
            }),
        }
    }

    /// Whether `len` more bytes may still be held (the batch is small and young enough).
    pub fn has_room(&self, len: usize) -> bool {
        let q = lock(&self.queue);
        q.buf.len() + len <= HOLD_BYTES && q.since.is_none_or(|t| t.elapsed() < HOLD_AGE)
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.queue).segments.is_empty()
    }

    /// Writes everything queued, waiting for each socket up to `timeout`. Connections whose
    /// write failed are remembered for `take_failed`.
    pub fn flush(&self, timeout: Duration) {
        let mut q = lock(&self.queue);
        if q.segments.is_empty() {
            return;
        }
        let Queue {
            buf,
            segments,
            failed,
            ..
        } = &mut *q;
        for seg in segments.drain(..) {
            let ok = !seg.failed && {
                let deadline = Instant::now() + timeout;
                let mut slices = [IoSlice::new(&buf[seg.start..seg.end])];
                netio::write_all(seg.fd, &mut slices, deadline).is_ok()
            };
            if !ok && !failed.contains(&seg.token) {
                failed.push(seg.token);
            }
        }
        q.buf.clear();
        q.since = None;
    }

    /// The connections whose held bytes could not be written (they must be closed).
    pub fn take_failed(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.queue).failed)
    }

    /// Sends what the sockets accept now, without waiting (the monitor, for a stuck worker).
    /// Returns the bytes written.
    pub fn write_ready(&self) -> usize {
        let mut q = lock(&self.queue);
        let mut written = 0;
        let Queue { buf, segments, .. } = &mut *q;
        for seg in segments.iter_mut().filter(|s| !s.failed) {
            while seg.start < seg.end {
                match netio::write_some(seg.fd, &[IoSlice::new(&buf[seg.start..seg.end])]) {
                    Ok(0) => seg.failed = true,
                    Ok(n) => {
                        seg.start += n;
                        written += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => seg.failed = true,
                }
                break;
            }
        }
        // Written segments stay (empty) until the worker's flush, which reports failures.
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        (a, b)
    }

    fn read_now(s: &mut UnixStream) -> Vec<u8> {
        s.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn holds_until_flushed_then_writes_in_order() {
        let (a, mut b) = pair();
        let (c, mut d) = pair();
        let outbox = Outbox::default();
        outbox.push(a.as_raw_fd(), 1, &[b"HTTP/1.1 200 OK\r\n", b"\r\n"]);
        outbox.push(c.as_raw_fd(), 2, &[b"second"]);
        outbox.push(a.as_raw_fd(), 1, &[b"more"]);
        assert!(read_now(&mut b).is_empty());
        assert!(!outbox.is_empty());
        outbox.flush(Duration::from_secs(1));
        assert!(outbox.take_failed().is_empty());
        assert_eq!(read_now(&mut b), b"HTTP/1.1 200 OK\r\n\r\nmore");
        assert_eq!(read_now(&mut d), b"second");
        assert!(outbox.is_empty());
    }

    #[test]
    fn write_ready_sends_now_and_flush_sends_nothing_twice() {
        let (a, mut b) = pair();
        let outbox = Outbox::default();
        outbox.push(a.as_raw_fd(), 7, &[b"abc"]);
        assert_eq!(outbox.write_ready(), 3);
        assert_eq!(read_now(&mut b), b"abc");
        outbox.flush(Duration::from_secs(1));
        assert!(outbox.take_failed().is_empty());
        assert!(read_now(&mut b).is_empty());
    }

    #[test]
    fn a_closed_peer_is_reported_by_flush() {
        let (a, b) = pair();
        drop(b);
        let outbox = Outbox::default();
        outbox.push(a.as_raw_fd(), 9, &[b"lost"]);
        outbox.write_ready();
        outbox.flush(Duration::from_secs(1));
        assert_eq!(outbox.take_failed(), vec![9]);
        assert!(outbox.take_failed().is_empty());
    }

    #[test]
    fn room_is_bounded_by_bytes() {
        let outbox = Outbox::default();
        assert!(outbox.has_room(HOLD_BYTES));
        assert!(!outbox.has_room(HOLD_BYTES + 1));
        outbox.push(0, 1, &[&[0u8; 1000]]);
        assert!(!outbox.has_room(HOLD_BYTES - 999));
        assert!(outbox.has_room(HOLD_BYTES - 1000));
    }
}
