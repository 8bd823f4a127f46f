//! A request body as it is read: how much is left and how it is framed. `pump` decodes what
//! is already buffered; it is pure (no socket), so the framing rules are tested on bytes.

use std::io;

use crate::http::chunked::{ChunkedDecoder, Decoded};
use crate::http::error::HttpError;
use crate::http::request::BodyFraming;

/// The state of a request body as it is read.
#[derive(Debug, Clone)]
pub enum Body {
    Length { remaining: u64 },
    Chunked { decoder: ChunkedDecoder, total: u64 },
    Done,
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

/// What `pump` did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Input bytes used (framing included).
    pub consumed: usize,
    /// Body bytes produced.
    pub produced: usize,
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

    /// Body bytes still to come that the framing has announced: the rest of a Content-Length,
    /// or of the current chunk.
    pub fn announced_remaining(&self) -> u64 {
        match self {
            Body::Length { remaining } => *remaining,
            Body::Chunked { decoder, .. } => decoder.pending_data(),
            Body::Done => 0,
        }
    }

    /// Decodes body bytes from `input`, up to `max`, appending them to `out` (or dropping them
    /// when `out` is None). `max_body` (0: none) bounds a chunked body's decoded size.
    pub fn pump(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
        max: usize,
        max_body: u64,
    ) -> Result<Pumped, BodyError> {
        let mut done = Pumped {
            consumed: 0,
            produced: 0,
        };
        while done.produced < max && done.consumed < input.len() {
            let avail = &input[done.consumed..];
            match self {
                Body::Done => break,
                Body::Length { remaining } => {
                    let take = avail
                        .len()
                        .min(*remaining as usize)
                        .min(max - done.produced);
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&avail[..take]);
                    }
                    done.consumed += take;
                    done.produced += take;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *self = Body::Done;
                    }
                }
                Body::Chunked { decoder, total } => {
                    if max_body > 0 {
                        decoder.limit_chunk_size(max_body.saturating_sub(*total));
                    }
                    let (used, found) = decoder
                        .decode(avail, max - done.produced)
                        .map_err(BodyError::Framing)?;
                    if let Decoded::Data { start, len } = found {
                        *total += len as u64;
                        if max_body > 0 && *total > max_body {
                            return Err(BodyError::TooLarge);
                        }
                        if let Some(out) = out.as_deref_mut() {
                            out.extend_from_slice(&avail[start..start + len]);
                        }
                        done.produced += len;
                    }
                    done.consumed += used;
                    if max_body > 0 && *total + decoder.pending_data() > max_body {
                        return Err(BodyError::TooLarge);
                    }
                    if found == Decoded::End {
                        *self = Body::Done;
                    }
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_body_stops_at_its_end() {
        let mut body = Body::for_framing(BodyFraming::Length(5));
        let mut out = Vec::new();
        let got = body.pump(b"helloGET /", Some(&mut out), 100, 0).unwrap();
        assert_eq!(
            got,
            Pumped {
                consumed: 5,
                produced: 5
            }
        );
        assert_eq!(out, b"hello");
        assert!(body.is_done());
    }

    #[test]
    fn reads_are_bounded_by_max() {
        let mut body = Body::for_framing(BodyFraming::Length(5));
        let got = body.pump(b"hello", None, 2, 0).unwrap();
        assert_eq!(
            got,
            Pumped {
                consumed: 2,
                produced: 2
            }
        );
        assert!(matches!(body, Body::Length { remaining: 3 }));
    }

    #[test]
    fn chunked_body_decodes_and_ends() {
        let mut body = Body::for_framing(BodyFraming::Chunked);
        let mut out = Vec::new();
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        let mut used = 0;
        while !body.is_done() {
            used += body
                .pump(&input[used..], Some(&mut out), 100, 0)
                .unwrap()
                .consumed;
        }
        assert_eq!(out, b"abcde");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn chunked_body_over_the_limit_fails_before_its_data_arrives() {
        let mut body = Body::for_framing(BodyFraming::Chunked);
        let err = body.pump(b"a\r\n0123", None, 100, 5).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge));
    }

    #[test]
    fn a_chunk_size_over_the_limit_wins_over_a_later_framing_error_however_split() {
        // "20" passes a limit of 2 at its second digit; the bare LF after it comes later.
        let wire = b"20\nhello";
        let mut whole = Body::for_framing(BodyFraming::Chunked);
        let err = whole.pump(wire, None, 100, 2).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge), "{err:?}");
        let mut split = Body::for_framing(BodyFraming::Chunked);
        let mut used = 0;
        let err = loop {
            match split.pump(&wire[used..used + 1], None, 100, 2) {
                Ok(pumped) => used += pumped.consumed,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, BodyError::TooLarge), "{err:?}");
    }

    #[test]
    fn announced_remaining_of_a_chunk() {
        let mut body = Body::for_framing(BodyFraming::Chunked);
        let got = body.pump(b"100000\r\nabc", None, usize::MAX, 0).unwrap();
        assert_eq!(got.produced, 3);
        assert_eq!(body.announced_remaining(), 0x100000 - 3);
    }
}
