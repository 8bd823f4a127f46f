//! Response write-behind. A worker that finishes a small response while other requests are
//! already waiting for it queues the response's bytes here instead of writing them at once,
//! and writes the whole batch just before it would next wait for the network. The client is
//! then woken once per batch instead of once per response; on this machine each wake-up of a
//! sleeping client costs the writer ~10 µs of kernel time (an inter-processor interrupt), more
//! than the rest of a hello-world request.
//!
//! Large chunks of a streamed response are queued the same way without being copied: the
//! outbox borrows the Python bytes (the exchange keeps them alive) and writes up to
//! `STREAM_BATCH` of them with one writev, so a 1 MiB stream of 64 KiB pieces costs one write
//! and wakes the client once instead of 16 times (loopback and most LAN sockets take a
//! megabyte at once; what a socket does not take goes to the connection's backlog).
//!
//! Holding must never delay a response for long: the monitor calls `write_ready` for a worker
//! that has been stuck in one request for a tick, which sends whatever the sockets accept
//! without waiting (PEP 3333: transmission continues while the application produces its next
//! block). Only plain TCP is queued (TLS records need the connection's rustls state).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crate::net::io as netio;

/// At most this many bytes are copied into one worker's outbox; beyond it the batch is written.
pub const HOLD_BYTES: usize = 256 * 1024;
/// A response (or write) larger than this is not copied to be held.
pub const HOLD_ONE: usize = 16 * 1024;
/// At most this many responses are held per worker.
pub const HOLD_RESPONSES: usize = 32;
/// A batch older than this is written at the next opportunity.
pub const HOLD_AGE: Duration = Duration::from_millis(1);
/// Borrowed stream chunks are written once this many bytes are queued. (Each writev costs
/// the kernel's send set-up and a wake-up of the client: 256 KiB batches made a 1 MiB
/// stream 10-20 % dearer than one write.)
pub const STREAM_BATCH: usize = 1024 * 1024;
/// At most this many slices go into one writev.
const WRITEV_SLICES: usize = 64;

/// Memory the outbox reads without owning it: a Python bytes object kept alive by the
/// exchange until the outbox has been flushed.
#[derive(Debug)]
struct Borrowed {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointed-to bytes are immutable and outlive the segment (see `push_borrowed`);
// only the thread holding the queue's lock reads them.
unsafe impl Send for Borrowed {}

/// Bytes of one connection the outbox hands over unwritten (`Outbox::hand_over`).
#[derive(Debug)]
pub enum Unsent {
    Copied(Vec<u8>),
    /// Memory queued with `push_borrowed`: valid as long as its owner keeps it.
    Borrowed {
        ptr: *const u8,
        len: usize,
    },
}

// SAFETY: `Borrowed` points into immutable bytes objects its receiver keeps alive; the value
// only moves out of the detached section back to the thread that queued it.
unsafe impl Send for Unsent {}

#[derive(Debug)]
enum Piece {
    /// `buf[start..end]`.
    Owned {
        start: usize,
        end: usize,
    },
    Borrowed(Borrowed),
}

/// Bytes queued for one connection; `written` of them are already out.
#[derive(Debug)]
struct Segment {
    fd: RawFd,
    token: u64,
    piece: Piece,
    written: usize,
    failed: bool,
}

impl Segment {
    /// The bytes still to write.
    fn rest<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        let all = match &self.piece {
            Piece::Owned { start, end } => &buf[*start..*end],
            // SAFETY: `push_borrowed`'s caller keeps the memory valid and unchanged until the
            // outbox is flushed, which cannot happen while this borrow of the queue lives.
            Piece::Borrowed(b) => unsafe { std::slice::from_raw_parts(b.ptr, b.len) },
        };
        &all[self.written.min(all.len())..]
    }
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

impl Queue {
    fn mark(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    fn failed_write(&mut self, token: u64) {
        if !self.failed.contains(&token) {
            self.failed.push(token);
        }
    }
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
    /// Queues a copy of `parts` for the connection `token` (socket `fd`).
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
        q.mark();
        if let Some(Segment {
            token: t,
            piece: Piece::Owned { end: last_end, .. },
            failed: false,
            ..
        }) = q.segments.back_mut()
        {
            if *t == token && *last_end == start {
                *last_end = end;
                return;
            }
        }
        q.segments.push_back(Segment {
            fd,
            token,
            piece: Piece::Owned { start, end },
            written: 0,
            failed: false,
        });
    }

    /// Queues `data` without copying it.
    ///
    /// # Safety
    /// `data` must stay valid and unchanged until `flush` has returned.
    pub unsafe fn push_borrowed(&self, fd: RawFd, token: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut q = lock(&self.queue);
        q.mark();
        q.segments.push_back(Segment {
            fd,
            token,
            piece: Piece::Borrowed(Borrowed {
                ptr: data.as_ptr(),
                len: data.len(),
            }),
            written: 0,
            failed: false,
        });
    }

    /// Whether a response of `len` bytes may be copied in (small, and the batch is small
    /// and young enough).
    pub fn has_room(&self, len: usize) -> bool {
        let q = lock(&self.queue);
        len <= HOLD_ONE
            && q.buf.len() + len <= HOLD_BYTES
            && q.since.is_none_or(|t| t.elapsed() < HOLD_AGE)
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.queue).segments.is_empty()
    }

    /// Writes everything queued, consecutive pieces for one connection with one writev,
    /// waiting for each socket up to `timeout`. Failed connections are remembered.
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
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(WRITEV_SLICES.min(segments.len()));
        let mut i = 0;
        while i < segments.len() {
            let (fd, token) = (segments[i].fd, segments[i].token);
            let mut ok = true;
            slices.clear();
            while i < segments.len() && segments[i].token == token && slices.len() < WRITEV_SLICES {
                ok &= !segments[i].failed;
                let rest = segments[i].rest(buf);
                if !rest.is_empty() {
                    slices.push(IoSlice::new(rest));
                }
                i += 1;
            }
            if ok && !slices.is_empty() {
                ok = netio::write_all_within(fd, &mut slices, timeout).is_ok();
            }
            if !ok && !failed.contains(&token) {
                failed.push(token);
            }
        }
        drop(slices);
        q.segments.clear();
        q.buf.clear();
        q.since = None;
    }

    /// Flushes (see `flush`) before a direct write for connection `token`; false when that
    /// connection's queued bytes could not be written.
    pub fn flush_before(&self, token: u64, timeout: Duration) -> bool {
        self.flush(timeout);
        !lock(&self.queue).failed.contains(&token)
    }

    /// Before connection `token` writes through its own backlog (conn/backlog.rs): writes
    /// everything queued for the other connections (waiting, as `flush`), writes what the
    /// socket of `token` takes now without waiting, and returns the rest of `token`'s bytes
    /// in order, copied or as the borrowed memory `push_borrowed` queued (still valid while
    /// the caller keeps those objects). `None` when `token`'s write failed.
    pub fn hand_over(&self, token: u64, timeout: Duration) -> Option<Vec<Unsent>> {
        let mut q = lock(&self.queue);
        if q.segments.is_empty() {
            return Some(Vec::new());
        }
        let Queue {
            buf,
            segments,
            failed,
            ..
        } = &mut *q;
        for seg in segments.iter().filter(|seg| seg.token != token) {
            let mut slice = [IoSlice::new(seg.rest(buf))];
            let written =
                !seg.failed && netio::write_all_within(seg.fd, &mut slice, timeout).is_ok();
            if !written && !failed.contains(&seg.token) {
                failed.push(seg.token);
            }
        }
        // (Pieces the monitor already wrote whole are left out.)
        let mine: Vec<usize> = (0..segments.len())
            .filter(|&i| segments[i].token == token && !segments[i].rest(buf).is_empty())
            .collect();
        let ok = !mine.iter().any(|&i| segments[i].failed)
            && write_now_in_order(buf, segments, &mine).is_ok();
        let unsent = mine
            .iter()
            .map(|&i| (&segments[i].piece, segments[i].rest(buf)))
            .filter(|(_, rest)| !rest.is_empty())
            .map(|(piece, rest)| match piece {
                Piece::Owned { .. } => Unsent::Copied(rest.to_vec()),
                Piece::Borrowed(_) => Unsent::Borrowed {
                    ptr: rest.as_ptr(),
                    len: rest.len(),
                },
            })
            .collect();
        q.segments.clear();
        q.buf.clear();
        q.since = None;
        if !ok {
            q.failed_write(token);
            return None;
        }
        Some(unsent)
    }

    /// The connections whose queued bytes could not be written (they must be closed).
    pub fn take_failed(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.queue).failed)
    }

    /// Sends what the sockets accept now, without waiting (the monitor, for a stuck worker).
    /// Returns the bytes written. If the worker is writing the queue itself (it holds the
    /// lock, possibly waiting for a slow client), transmission is under way: nothing to do,
    /// and the monitor must not wait for it.
    pub fn write_ready(&self) -> usize {
        let mut q = match self.queue.try_lock() {
            Ok(q) => q,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return 0,
        };
        let mut written = 0;
        let mut newly_failed = Vec::new();
        let Queue { buf, segments, .. } = &mut *q;
        // Once a connection's piece cannot be written whole, its later pieces must wait.
        let mut blocked: Vec<u64> = Vec::new();
        for seg in segments.iter_mut() {
            if seg.failed || blocked.contains(&seg.token) {
                continue;
            }
            loop {
                let rest = seg.rest(buf);
                if rest.is_empty() {
                    break;
                }
                match netio::write_some(seg.fd, &[IoSlice::new(rest)]) {
                    Ok(n) if n > 0 => {
                        seg.written += n;
                        written += n;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => {
                        seg.failed = true;
                        newly_failed.push(seg.token);
                    }
                }
                blocked.push(seg.token);
                break;
            }
        }
        for token in newly_failed {
            q.failed_write(token);
        }
        // Written pieces stay (empty) until the worker's flush releases what they borrow.
        written
    }
}

/// Writes the segments `which` (one connection's, in order) with as few writev(2) calls as
/// the socket allows, without waiting; stops when it is full.
fn write_now_in_order(
    buf: &[u8],
    segments: &mut VecDeque<Segment>,
    which: &[usize],
) -> io::Result<()> {
    let Some(&first) = which.first() else {
        return Ok(());
    };
    let fd = segments[first].fd;
    let mut next = 0;
    while next < which.len() {
        let batch = &which[next..which.len().min(next + WRITEV_SLICES)];
        let slices: Vec<IoSlice<'_>> = batch
            .iter()
            .map(|&i| IoSlice::new(segments[i].rest(buf)))
            .collect();
        let mut n = match netio::write_some(fd, &slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        for &i in batch {
            let left = segments[i].rest(buf).len();
            let step = n.min(left);
            segments[i].written += step;
            n -= step;
            if step < left {
                return Ok(()); // the socket took less than offered: it is full
            }
            next += 1;
        }
    }
    Ok(())
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
    fn write_ready_does_not_wait_for_a_flush_in_progress() {
        let (a, mut b) = pair();
        let outbox = Outbox::default();
        outbox.push(a.as_raw_fd(), 3, &[b"xyz"]);
        let held = lock(&outbox.queue);
        assert_eq!(outbox.write_ready(), 0);
        drop(held);
        assert_eq!(outbox.write_ready(), 3);
        assert_eq!(read_now(&mut b), b"xyz");
    }

    #[test]
    fn borrowed_pieces_are_written_in_order_with_owned_ones() {
        let (a, mut b) = pair();
        let outbox = Outbox::default();
        let body = vec![7u8; 100_000];
        outbox.push(a.as_raw_fd(), 4, &[b"head"]);
        // SAFETY: `body` outlives the flush below.
        unsafe { outbox.push_borrowed(a.as_raw_fd(), 4, &body) };
        outbox.push(a.as_raw_fd(), 4, &[b"tail"]);
        let reader = std::thread::spawn(move || {
            b.set_nonblocking(false).expect("blocking");
            let mut all = Vec::new();
            b.read_to_end(&mut all).expect("read");
            all
        });
        outbox.flush(Duration::from_secs(5));
        assert!(outbox.take_failed().is_empty());
        drop(a);
        let all = reader.join().expect("reader");
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..100_004], &body[..]);
        assert_eq!(&all[100_004..], b"tail");
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
    fn hand_over_writes_others_and_returns_what_the_socket_did_not_take() {
        let (mine, mut mine_peer) = pair();
        let (other, mut other_peer) = pair();
        let outbox = Outbox::default();
        outbox.push(mine.as_raw_fd(), 1, &[b"head "]);
        outbox.write_ready(); // the monitor already wrote the head
        outbox.push(other.as_raw_fd(), 2, &[b"other response"]);
        let big = vec![b'z'; 4 << 20];
        // SAFETY: `big` outlives the outbox's use of it (hand_over below).
        unsafe { outbox.push_borrowed(mine.as_raw_fd(), 1, &big) };
        outbox.push(mine.as_raw_fd(), 1, &[b" tail"]);
        let unsent = outbox
            .hand_over(1, Duration::from_secs(1))
            .expect("not failed");
        assert_eq!(read_now(&mut other_peer), b"other response");
        let written = read_now(&mut mine_peer);
        assert!(written.starts_with(b"head zzz"), "in order, the head first");
        let mut rest = Vec::new();
        for piece in &unsent {
            match piece {
                // SAFETY: points into `big`, still alive.
                Unsent::Borrowed { ptr, len } => {
                    rest.extend_from_slice(unsafe { std::slice::from_raw_parts(*ptr, *len) })
                }
                Unsent::Copied(bytes) => rest.extend_from_slice(bytes),
            }
        }
        assert_eq!(written.len() + rest.len(), 5 + big.len() + 5);
        assert!(rest.ends_with(b"zz tail"));
        assert!(outbox.is_empty());
    }

    #[test]
    fn room_is_bounded_by_bytes() {
        let outbox = Outbox::default();
        assert!(outbox.has_room(HOLD_ONE));
        assert!(!outbox.has_room(HOLD_ONE + 1));
        for _ in 0..HOLD_BYTES / HOLD_ONE - 1 {
            outbox.push(0, 1, &[&[0u8; HOLD_ONE]]);
        }
        // (Room within the byte limit is not asserted here: the 1 ms age limit may pass.)
        outbox.push(0, 1, &[&[0u8; 1]]);
        assert!(!outbox.has_room(HOLD_ONE));
    }
}
