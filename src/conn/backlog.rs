//! Response bytes the client has not read yet, written as the socket takes them. A worker
//! queues what does not fit in the socket and moves on; the connection then waits in epoll
//! for writability (`Phase::Sending`), holding no thread, until the backlog is out. Over TLS
//! the pieces are plaintext, handed to rustls (`feed`) as its buffer of records empties
//! (conn/transport.rs); files (sendfile) are plain TCP only.
//!
//! Two kinds of pieces: bytes copied here (response heads, framing, small bodies; bounded by
//! the caller's high-water mark) and `Held` buffers the backlog keeps alive without a copy
//! (the application's own bytes objects, pinned by the WSGI layer). No Python here: a held
//! buffer is only something that shows its bytes and can be dropped on any thread.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::net::io as netio;

/// A buffer kept alive by the backlog until it is written (see `wsgi::exchange`'s pinned
/// bytes objects). Its bytes must not change while it is held.
pub trait Held: Send + Sync {
    fn bytes(&self) -> &[u8];
}

enum Piece {
    Copied(Vec<u8>),
    Held(Box<dyn Held>),
    /// `left` bytes of a file from `offset`, sent with sendfile(2) (a descriptor of its own:
    /// the application may close its file object meanwhile).
    File {
        file: OwnedFd,
        offset: u64,
        left: u64,
    },
}

impl Piece {
    /// The bytes of a memory piece (empty for a file).
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied(bytes) => bytes,
            Piece::Held(held) => held.bytes(),
            Piece::File { .. } => &[],
        }
    }
}

/// Copied bytes a connection's backlog may hold before the writer waits for the client: what
/// a slow reader costs in memory at most (held buffers are the application's own and are not
/// copied).
pub const HIGH_WATER: usize = 256 * 1024;

/// At most this many pieces go into one writev(2).
const IOVECS: usize = 64;

#[derive(Default)]
pub struct Backlog {
    /// Pieces in order, with how much of the first has been written.
    pieces: VecDeque<Piece>,
    written_of_first: usize,
    /// Unwritten bytes in copied pieces (what the high-water mark bounds).
    copied: usize,
    /// Unwritten bytes in all pieces.
    len: usize,
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog")
            .field("pieces", &self.pieces.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Unwritten bytes this backlog copied (as opposed to held).
    pub fn copied(&self) -> usize {
        self.copied
    }

    pub fn push_copy(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.copied += bytes.len();
        self.len += bytes.len();
        match self.pieces.back_mut() {
            // Small pieces join the last copied one: fewer iovecs.
            Some(Piece::Copied(last)) if bytes.len() < 4096 => last.extend_from_slice(bytes),
            _ => self.pieces.push_back(Piece::Copied(bytes.to_vec())),
        }
    }

    pub fn push_held(&mut self, held: Box<dyn Held>) {
        let n = held.bytes().len();
        if n == 0 {
            return;
        }
        self.len += n;
        self.pieces.push_back(Piece::Held(held));
    }

    /// Queues `left` bytes of `file` from `offset`, sent with sendfile(2).
    pub fn push_file(&mut self, file: OwnedFd, offset: u64, left: u64) {
        if left == 0 {
            return;
        }
        self.len += left as usize;
        self.pieces.push_back(Piece::File { file, offset, left });
    }

    /// Writes as much as the socket takes now. `Ok(true)`: the backlog is empty. A file that
    /// ends before its announced length is an `UnexpectedEof` error (the response is broken).
    pub fn write_now(&mut self, fd: RawFd) -> io::Result<bool> {
        while !self.is_empty() {
            if let Some(Piece::File { file, offset, left }) = self.pieces.front_mut() {
                match netio::send_file_now(fd, file.as_raw_fd(), *offset, *left) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        *offset += n;
                        *left -= n;
                        self.len -= n as usize;
                        if *left == 0 {
                            self.pieces.pop_front();
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            match self.feed(|slices| netio::write_some(fd, slices)) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Offers the bytes at the front (memory pieces, up to the next file) to `take`, which
    /// answers how many it took; those are dropped from the backlog. Used for the socket's
    /// writev above, and over TLS to hand plaintext to rustls as its record buffer has room.
    pub fn feed(
        &mut self,
        take: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); IOVECS];
        let mut count = 0;
        for (i, piece) in self.pieces.iter().take(IOVECS).enumerate() {
            if matches!(piece, Piece::File { .. }) {
                break; // memory pieces only, up to the next file
            }
            let bytes = piece.bytes();
            let from = if i == 0 { self.written_of_first } else { 0 };
            slices[i] = IoSlice::new(&bytes[from..]);
            count += 1;
        }
        if count == 0 && !self.is_empty() {
            // A file first: only sendfile(2) (`write_now`, plain TCP) can send it.
            return Err(io::ErrorKind::Unsupported.into());
        }
        let n = take(&slices[..count])?;
        self.consume(n);
        Ok(n)
    }

    /// Drops `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(first) = self.pieces.front() else {
                return;
            };
            let left = first.bytes().len() - self.written_of_first;
            let copied = matches!(first, Piece::Copied(_));
            let step = n.min(left);
            if copied {
                self.copied -= step;
            }
            n -= step;
            if step == left {
                self.pieces.pop_front();
                self.written_of_first = 0;
            } else {
                self.written_of_first += step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    struct Shared(Vec<u8>);

    impl Held for Shared {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    #[test]
    fn pieces_come_out_in_order_across_partial_writes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut backlog = Backlog::default();
        backlog.push_copy(b"HEAD\r\n\r\n");
        backlog.push_held(Box::new(Shared(big.clone())));
        backlog.push_copy(b"\r\n0\r\n\r\n");
        assert_eq!(backlog.copied(), 15);
        assert!(
            !backlog.write_now(a.as_raw_fd()).unwrap(),
            "the socket fills up"
        );
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            b.read_to_end(&mut all).unwrap();
            all
        });
        while !backlog.write_now(a.as_raw_fd()).unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!((backlog.len(), backlog.copied()), (0, 0));
        drop(a);
        let mut want = b"HEAD\r\n\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(reader.join().unwrap(), want);
    }
}
