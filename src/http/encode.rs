//! The response body encoder: every byte of a response body goes through here, whichever
//! path sends it (staged small bodies, streamed chunks, `write()`, files by sendfile). It
//! frames each piece for the wire (nothing, a chunk-size line and CRLF, or nothing but a count
//! against the declared `Content-Length`), ends the body (the last chunk), and detects a body
//! longer (overflow) or shorter (short body) than declared. Pure: no socket, no Python.

use super::response::BodyFrame;

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
const CRLF: &[u8] = b"\r\n";

/// The framing around one piece of body: `prefix`, then the piece's bytes, then `suffix`.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    prefix: [u8; 18],
    prefix_len: u8,
    pub suffix: &'static [u8],
}

impl Framing {
    const NONE: Framing = Framing {
        prefix: [0; 18],
        prefix_len: 0,
        suffix: b"",
    };

    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len as usize]
    }

    fn chunk(len: usize) -> Framing {
        let mut prefix = [0u8; 18];
        let digits = format_hex(len, &mut prefix);
        prefix[digits] = b'\r';
        prefix[digits + 1] = b'\n';
        Framing {
            prefix,
            prefix_len: (digits + 2) as u8,
            suffix: CRLF,
        }
    }
}

/// What the encoder made of a piece of `len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    pub framing: Framing,
    /// How many of the piece's bytes go on the wire (0 when the body is suppressed).
    pub take: usize,
    /// The piece went past the declared `Content-Length`: only what fitted was taken.
    pub overflow: bool,
}

/// How the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Complete: write these bytes last (the last chunk, or nothing).
    Complete(&'static [u8]),
    /// Fewer bytes than the declared `Content-Length` were sent: the client would wait for
    /// the rest, so the connection must close.
    Short,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEncoder {
    frame: BodyFrame,
    /// HEAD, or a status that has no body: pieces are counted, never written.
    suppress: bool,
    /// Body bytes accepted so far (counted even when suppressed, for the access log).
    sent: u64,
}

impl BodyEncoder {
    pub fn new(frame: BodyFrame, suppress: bool) -> BodyEncoder {
        BodyEncoder {
            frame,
            suppress,
            sent: 0,
        }
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppress
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The declared body length, if the body is framed by one.
    pub fn declared_len(&self) -> Option<u64> {
        match self.frame {
            BodyFrame::Length { len, .. } => Some(len),
            _ => None,
        }
    }

    /// How many of `len` more bytes the declared length still allows.
    fn allowed(&self, len: u64) -> u64 {
        match self.frame {
            BodyFrame::Length { len: total, .. } => len.min(total.saturating_sub(self.sent)),
            _ => len,
        }
    }

    /// Whether a piece of `len` bytes would go past the declared length.
    pub fn would_overflow(&self, len: usize) -> bool {
        self.allowed(len as u64) < len as u64
    }

    /// Frames a piece of `len` bytes and counts it. An empty piece (or an empty remainder
    /// under the declared length) gets no framing: a zero-size chunk would end the body.
    pub fn encode(&mut self, len: usize) -> Piece {
        let allowed = self.allowed(len as u64) as usize;
        self.sent += allowed as u64;
        let overflow = allowed < len;
        if self.suppress || allowed == 0 {
            return Piece {
                framing: Framing::NONE,
                take: 0,
                overflow,
            };
        }
        let framing = match self.frame {
            BodyFrame::Chunked => Framing::chunk(allowed),
            _ => Framing::NONE,
        };
        Piece {
            framing,
            take: allowed,
            overflow,
        }
    }

    /// Ends the body.
    pub fn finish(&self) -> Ending {
        match self.frame {
            BodyFrame::Chunked if !self.suppress => Ending::Complete(LAST_CHUNK),
            BodyFrame::Length { len, .. } if !self.suppress && self.sent < len => Ending::Short,
            _ => Ending::Complete(b""),
        }
    }
}

fn format_hex(mut n: usize, out: &mut [u8; 18]) -> usize {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(enc: &mut BodyEncoder, data: &[u8]) -> Vec<u8> {
        let piece = enc.encode(data.len());
        let mut out = piece.framing.prefix().to_vec();
        out.extend_from_slice(&data[..piece.take]);
        if piece.take > 0 {
            out.extend_from_slice(piece.framing.suffix);
        }
        out
    }

    #[test]
    fn chunked_pieces_and_the_last_chunk() {
        let mut enc = BodyEncoder::new(BodyFrame::Chunked, false);
        assert_eq!(wire(&mut enc, b"hello"), b"5\r\nhello\r\n");
        assert_eq!(
            wire(&mut enc, &[b'x'; 26]),
            [b"1a\r\n" as &[u8], &[b'x'; 26], b"\r\n"].concat()
        );
        assert_eq!(wire(&mut enc, b""), b"", "no zero-size chunk mid-body");
        assert_eq!(enc.finish(), Ending::Complete(b"0\r\n\r\n"));
        assert_eq!(enc.sent(), 31);
    }

    #[test]
    fn declared_length_is_enforced() {
        let frame = BodyFrame::Length {
            len: 8,
            add_header: false,
        };
        let mut enc = BodyEncoder::new(frame, false);
        assert!(!enc.would_overflow(8));
        assert!(enc.would_overflow(9));
        assert_eq!(wire(&mut enc, b"hello"), b"hello");
        assert_eq!(enc.finish(), Ending::Short);
        let piece = enc.encode(5);
        assert!(piece.overflow);
        assert_eq!(piece.take, 3);
        assert_eq!(enc.finish(), Ending::Complete(b""));
        let piece = enc.encode(1);
        assert!(piece.overflow);
        assert_eq!(piece.take, 0);
    }

    #[test]
    fn suppressed_bodies_are_counted_not_written() {
        let mut enc = BodyEncoder::new(BodyFrame::Chunked, true);
        let piece = enc.encode(100);
        assert_eq!((piece.take, piece.framing.prefix().len()), (0, 0));
        assert_eq!(enc.sent(), 100);
        assert_eq!(enc.finish(), Ending::Complete(b""));
        let frame = BodyFrame::Length {
            len: 10,
            add_header: true,
        };
        assert_eq!(
            BodyEncoder::new(frame, true).finish(),
            Ending::Complete(b"")
        );
    }

    #[test]
    fn until_close_and_empty_frames_pass_bytes_through() {
        let mut enc = BodyEncoder::new(BodyFrame::UntilClose, false);
        assert_eq!(wire(&mut enc, b"abc"), b"abc");
        assert_eq!(enc.finish(), Ending::Complete(b""));
    }

    #[test]
    fn hex_sizes() {
        for (len, text) in [
            (0, "0"),
            (15, "f"),
            (16, "10"),
            (usize::MAX, "ffffffffffffffff"),
        ] {
            let framing = Framing::chunk(len);
            assert_eq!(framing.prefix(), format!("{text}\r\n").as_bytes());
        }
    }
}
