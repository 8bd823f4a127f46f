//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//! Input may arrive split anywhere; every violation is an error, never a guess.

use super::error::{self, HttpError};

const MAX_SIZE_DIGITS: u8 = 16;
/// Total chunk-extension bytes allowed per body.
const MAX_EXTENSION_BYTES: usize = 4096;
/// Total trailer-section bytes allowed per body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Spaces or tabs after the size; only `;` or CR may follow.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// `len` body bytes starting at `start` of the given input.
    Data { start: usize, len: usize },
    /// All input consumed without reaching data or the end.
    NeedMore,
    /// The last chunk and trailers were consumed; the body is complete.
    End,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size_digits: u8,
    remaining: u64,
    extension_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size_digits: 0,
            remaining: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the current chunk still to come (its declared size, once the size line is in).
    pub fn pending_data(&self) -> u64 {
        if self.state == State::Data {
            self.remaining
        } else {
            0
        }
    }

    /// Decodes from the start of `input`, returning at most `max_data` body bytes. Returns the
    /// number of bytes consumed and what was found; data bytes are included in the count.
    pub fn decode(&mut self, input: &[u8], max_data: usize) -> Result<(usize, Decoded), HttpError> {
        let mut pos = 0;
        while pos < input.len() {
            if self.state == State::Data {
                if max_data == 0 {
                    return Ok((pos, Decoded::NeedMore));
                }
                let len = (input.len() - pos)
                    .min(self.remaining as usize)
                    .min(max_data);
                self.remaining -= len as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok((pos + len, Decoded::Data { start: pos, len }));
            }
            let byte = input[pos];
            pos += 1;
            self.step(byte)?;
            if self.state == State::Done {
                return Ok((pos, Decoded::End));
            }
        }
        if self.state == State::Done {
            return Ok((pos, Decoded::End));
        }
        Ok((pos, Decoded::NeedMore))
    }

    fn step(&mut self, byte: u8) -> Result<(), HttpError> {
        let bad = error::BAD_CHUNKED_BODY;
        self.state = match self.state {
            State::Size => match hex_value(byte) {
                Some(v) => {
                    if self.size_digits == MAX_SIZE_DIGITS {
                        return Err(bad);
                    }
                    self.size_digits += 1;
                    self.remaining = (self.remaining << 4) | u64::from(v);
                    State::Size
                }
                None if self.size_digits == 0 => return Err(bad),
                None => match byte {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(bad),
                },
            },
            State::SizeSpace => match byte {
                b' ' | b'\t' => State::SizeSpace,
                b';' => State::Extension,
                _ => return Err(bad),
            },
            State::Extension => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err(bad);
                }
                match byte {
                    b'\r' => State::SizeLf,
                    b'\t' => State::Extension,
                    0..=0x1f | 0x7f => return Err(bad),
                    _ => State::Extension,
                }
            }
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(bad);
                }
                self.size_digits = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size,
            State::DataCr | State::DataLf => return Err(bad),
            State::TrailerStart => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::EndLf,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(bad),
                }
            }
            State::TrailerName => {
                self.count_trailer()?;
                match byte {
                    b':' => State::TrailerValue,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(bad),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match byte {
                    b'\r' => State::TrailerLf,
                    b'\t' => State::TrailerValue,
                    0..=0x1f | 0x7f => return Err(bad),
                    _ => State::TrailerValue,
                }
            }
            State::TrailerLf if byte == b'\n' => State::TrailerStart,
            State::EndLf if byte == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return Err(bad),
            State::Data | State::Done => return Err(bad),
        };
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(error::BAD_CHUNKED_BODY);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `split` bytes; returns the body or the error.
    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut fed = 0;
        let mut pending: Vec<u8> = Vec::new();
        while fed < input.len() || !pending.is_empty() {
            let take = split.min(input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + take]);
            fed += take;
            loop {
                let (used, got) = dec.decode(&pending, 3)?;
                match got {
                    Decoded::Data { start, len } => {
                        body.extend_from_slice(&pending[start..start + len])
                    }
                    Decoded::End => {
                        let rest = pending.len() - used;
                        return Ok((body, rest + (input.len() - fed)));
                    }
                    Decoded::NeedMore => {}
                }
                pending.drain(..used);
                if got == Decoded::NeedMore || pending.is_empty() {
                    break;
                }
            }
            if take == 0 {
                break;
            }
        }
        Err(HttpError {
            status: "incomplete",
            body: "",
        })
    }

    #[test]
    fn decodes_in_any_split() {
        let raw = b"5\r\nhello\r\n1;name=val\r\n \r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 1..raw.len() {
            let (body, rest) = decode_split(raw, split).unwrap();
            assert_eq!(body, b"hello ");
            assert_eq!(rest, 4, "split {split}");
        }
    }

    #[test]
    fn whitespace_before_extension_only() {
        assert_eq!(
            decode_split(b"3 \t;x\r\nabc\r\n0\r\n\r\n", 100).unwrap().0,
            b"abc"
        );
        assert!(decode_split(b"3 \r\nabc\r\n0\r\n\r\n", 100).is_err());
    }

    #[test]
    fn rejects_malformed() {
        let bad: &[&[u8]] = &[
            b"\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"1;a\nb\r\nx\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\nX: a\x00\r\n\r\n",
            b"0\r\n\n",
        ];
        for raw in bad {
            assert!(
                decode_split(raw, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn sixteen_hex_digits_allowed() {
        let mut dec = ChunkedDecoder::new();
        let (_, got) = dec.decode(b"000000000000000a\r\n", 100).unwrap();
        assert_eq!(got, Decoded::NeedMore);
        assert_eq!(dec.remaining, 10);
    }

    #[test]
    fn bounded_extensions_and_trailers() {
        let long_ext = format!(
            "1;{}\r\nx\r\n0\r\n\r\n",
            "a".repeat(MAX_EXTENSION_BYTES + 1)
        );
        assert!(decode_split(long_ext.as_bytes(), 1000).is_err());
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILER_BYTES));
        assert_eq!(
            decode_split(long_trailer.as_bytes(), 1000).unwrap_err(),
            error::BAD_CHUNKED_BODY
        );
    }
}
