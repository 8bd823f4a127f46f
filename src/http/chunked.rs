//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//! Input may arrive split anywhere; every violation is an error, never a guess.

use super::error::{self, HttpError};

const MAX_SIZE_DIGITS: u8 = 16;
/// The largest chunk accepted: 1 TiB (2^40 bytes). A size above it (so any size with more than
/// 11 hex digits after its leading zeros) is refused as soon as the digit that makes it too
/// large arrives, whatever follows.
pub const MAX_CHUNK_SIZE: u64 = 1 << 40;
/// Total chunk-extension bytes allowed per body.
const MAX_EXTENSION_BYTES: usize = 4096;
/// Total trailer-section bytes allowed per body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Spaces or tabs (BWS) after the size or after an extension; only more of them or `;`
    /// may follow.
    ExtSpace,
    /// After `;`: optional BWS, then an extension name (a token).
    ExtBeforeName,
    ExtName,
    /// BWS after an extension name: `=` or `;` must follow.
    ExtNameSpace,
    /// After `=`: optional BWS, then a token or a quoted-string.
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    /// After a backslash inside a quoted-string.
    ExtQuotedPair,
    /// After the closing quote of a quoted-string.
    ExtQuotedEnd,
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
    // The two states that end a `decode` call early are last, next to each other.
    /// A size digit made the chunk larger than [`MAX_CHUNK_SIZE`]; the next call fails.
    Oversized,
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
    /// A chunk size larger than [`MAX_CHUNK_SIZE`]: the digit that made it so is not consumed
    /// (so bytes are always left), [`ChunkedDecoder::pending_data`] reports the size announced
    /// so far (already above the bound) for a caller that answers 413 when it exceeds its body
    /// limit, and the next call fails with 400.
    Oversized,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size_digits: u8,
    remaining: u64,
    /// A chunk size above this is `Oversized` (at its digit, whatever follows).
    size_cap: u64,
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
            size_cap: MAX_CHUNK_SIZE,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Chunk sizes above `cap` (at most [`MAX_CHUNK_SIZE`]) stop decoding at the digit that
    /// passes it (`Decoded::Oversized`): a caller with a body limit learns of a chunk too large
    /// for it at that digit, before any byte after it, however the input was split.
    pub fn limit_chunk_size(&mut self, cap: u64) {
        self.size_cap = cap.min(MAX_CHUNK_SIZE);
    }

    /// Bytes of the current chunk still to come: its declared size once the size line is in,
    /// the size announced so far while its digits arrive (0 between chunks and in trailers).
    pub fn pending_data(&self) -> u64 {
        self.remaining
    }

    /// Decodes from the start of `input`, returning at most `max_data` body bytes. Returns the
    /// number of bytes consumed and what was found; data bytes are included in the count.
    pub fn decode(&mut self, input: &[u8], max_data: usize) -> Result<(usize, Decoded), HttpError> {
        if self.state == State::Oversized {
            return Err(error::BAD_CHUNKED_BODY);
        }
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
            self.step(byte)?;
            if matches!(self.state, State::Oversized | State::Done) {
                if self.state == State::Oversized {
                    return Ok((pos, Decoded::Oversized));
                }
                return Ok((pos + 1, Decoded::End));
            }
            pos += 1;
        }
        if self.state == State::Done {
            return Ok((pos, Decoded::End));
        }
        Ok((pos, Decoded::NeedMore))
    }

    fn step(&mut self, byte: u8) -> Result<(), HttpError> {
        let bad = error::BAD_CHUNKED_BODY;
        // chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
        // chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
        // chunk-ext-val = token / quoted-string                      (RFC 9112 §7.1.1)
        self.state = match self.state {
            State::Size => match hex_value(byte) {
                Some(v) => {
                    if self.size_digits == MAX_SIZE_DIGITS {
                        return Err(bad);
                    }
                    self.size_digits += 1;
                    // At most 2^40 before the shift, so no overflow.
                    self.remaining = (self.remaining << 4) | u64::from(v);
                    if self.remaining > self.size_cap {
                        State::Oversized
                    } else {
                        State::Size
                    }
                }
                None if self.size_digits == 0 => return Err(bad),
                None => match byte {
                    b' ' | b'\t' => State::ExtSpace,
                    b';' => State::ExtBeforeName,
                    b'\r' => State::SizeLf,
                    _ => return Err(bad),
                },
            },
            State::ExtSpace => match self.count_extension(byte)? {
                b' ' | b'\t' => State::ExtSpace,
                b';' => State::ExtBeforeName,
                _ => return Err(bad),
            },
            State::ExtBeforeName => match self.count_extension(byte)? {
                b' ' | b'\t' => State::ExtBeforeName,
                b if is_tchar(b) => State::ExtName,
                _ => return Err(bad),
            },
            State::ExtName => match self.count_extension(byte)? {
                b if is_tchar(b) => State::ExtName,
                b' ' | b'\t' => State::ExtNameSpace,
                b'=' => State::ExtBeforeValue,
                b';' => State::ExtBeforeName,
                b'\r' => State::SizeLf,
                _ => return Err(bad),
            },
            State::ExtNameSpace => match self.count_extension(byte)? {
                b' ' | b'\t' => State::ExtNameSpace,
                b'=' => State::ExtBeforeValue,
                b';' => State::ExtBeforeName,
                _ => return Err(bad),
            },
            State::ExtBeforeValue => match self.count_extension(byte)? {
                b' ' | b'\t' => State::ExtBeforeValue,
                b'"' => State::ExtQuoted,
                b if is_tchar(b) => State::ExtToken,
                _ => return Err(bad),
            },
            State::ExtToken => match self.count_extension(byte)? {
                b if is_tchar(b) => State::ExtToken,
                b' ' | b'\t' => State::ExtSpace,
                b';' => State::ExtBeforeName,
                b'\r' => State::SizeLf,
                _ => return Err(bad),
            },
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            State::ExtQuoted => match self.count_extension(byte)? {
                b'"' => State::ExtQuotedEnd,
                b'\\' => State::ExtQuotedPair,
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::ExtQuoted,
                _ => return Err(bad),
            },
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            State::ExtQuotedPair => match self.count_extension(byte)? {
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::ExtQuoted,
                _ => return Err(bad),
            },
            State::ExtQuotedEnd => match self.count_extension(byte)? {
                b' ' | b'\t' => State::ExtSpace,
                b';' => State::ExtBeforeName,
                b'\r' => State::SizeLf,
                _ => return Err(bad),
            },
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
            State::Oversized | State::Data | State::Done => return Err(bad),
        };
        Ok(())
    }

    /// Counts one extension byte (whitespace included) against the per-body cap.
    fn count_extension(&mut self, byte: u8) -> Result<u8, HttpError> {
        self.extension_bytes += 1;
        if self.extension_bytes > MAX_EXTENSION_BYTES {
            return Err(error::BAD_CHUNKED_BODY);
        }
        Ok(byte)
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

/// RFC 9110 tchar, as a table: extension and trailer bytes are checked one by one.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
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
                    // The byte that proved it stays pending: the next call fails.
                    Decoded::NeedMore | Decoded::Oversized => {}
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
    fn well_formed_extensions() {
        for ext in [
            &b";name"[..],
            b";name=value",
            b";a;b=1;c",
            b";a=\"b c;d\"",
            b" ; name = \"quoted \\\" value\"",
            b"\t;\tname\t=\ttoken\t;\tx",
            b";a=\"\"",
            b";a=\"caf\xe9\\\xff\\\t\"",
            b";a=\"x\" ;b",
            b";!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~",
        ] {
            let mut raw = b"3".to_vec();
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\nabc\r\n0");
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\n\r\n");
            for split in [1, 2, 100] {
                let got = decode_split(&raw, split);
                assert_eq!(
                    got,
                    Ok((b"abc".to_vec(), 0)),
                    "{:?} split {split}",
                    String::from_utf8_lossy(&raw)
                );
            }
        }
    }

    #[test]
    fn malformed_extensions() {
        for ext in [
            &b";"[..],
            b"; ",
            b";;a",
            b";bad[=x",
            b";=",
            b";=x",
            b";a b",
            b";a =",
            b";a=",
            b";a= ",
            b";a=b c",
            b";a=b ",
            b";a=\"unterminated",
            b";a=\"x\"y",
            b";a=\"x\" ",
            b";a=\"\x01\"",
            b";a=\"\\\x7f\"",
            b";a=\"\x7f\"",
            b";a ",
            b";a\x80",
            b";a=b\x00",
            b";a=(b)",
            b";a=b;",
            b" ",
            b" x",
        ] {
            let mut raw = b"3".to_vec();
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
            assert_eq!(
                decode_split(&raw, 100),
                Err(error::BAD_CHUNKED_BODY),
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
        }
    }

    #[test]
    fn a_malformed_extension_fails_at_its_byte() {
        // `5;` then CR: refused when the CR arrives, before any LF or data.
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"5;", 100), Ok((2, Decoded::NeedMore)));
        assert_eq!(dec.decode(b"\r", 100), Err(error::BAD_CHUNKED_BODY));
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"5;bad", 100), Ok((5, Decoded::NeedMore)));
        assert_eq!(dec.decode(b"[", 100), Err(error::BAD_CHUNKED_BODY));
    }

    #[test]
    fn chunk_sizes_up_to_one_tib() {
        for size in [&b"10000000000"[..], b"00000010000000000", b"ffffffffff"] {
            let mut dec = ChunkedDecoder::new();
            let mut raw = size.to_vec();
            raw.extend_from_slice(b"\r\n");
            if size.len() > 16 {
                // 17 digits: still the 16-digit guard, leading zeros or not.
                assert!(dec.decode(&raw, 100).is_err());
                continue;
            }
            assert_eq!(dec.decode(&raw, 100), Ok((raw.len(), Decoded::NeedMore)));
            assert!(dec.pending_data() <= MAX_CHUNK_SIZE);
        }
        let mut dec = ChunkedDecoder::new();
        assert_eq!(
            dec.decode(b"0000010000000000\r\n", 100),
            Ok((18, Decoded::NeedMore))
        );
        assert_eq!(dec.pending_data(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn chunk_sizes_over_one_tib_fail_at_the_digit() {
        for (raw, at) in [
            (&b"10000000001\r\n"[..], 10),
            (b"100000000000", 11),
            (b"ffffffffffffffff\r\n", 10),
            (b"0000ffffffffffff", 14),
            (b"20000000000;x\r\n", 10),
        ] {
            let mut dec = ChunkedDecoder::new();
            assert_eq!(
                dec.decode(raw, 100),
                Ok((at, Decoded::Oversized)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            // The size announced so far, for a caller's 413 check.
            assert!(dec.pending_data() > MAX_CHUNK_SIZE);
            assert_eq!(dec.decode(&raw[at..], 100), Err(error::BAD_CHUNKED_BODY));
            // Fed one byte at a time, the same byte is refused.
            let mut dec = ChunkedDecoder::new();
            for (i, byte) in raw.iter().enumerate() {
                let got = dec.decode(std::slice::from_ref(byte), 100);
                if i < at {
                    assert_eq!(got, Ok((1, Decoded::NeedMore)));
                } else {
                    assert_eq!(got, Ok((0, Decoded::Oversized)));
                    assert!(dec.decode(&raw[i..], 100).is_err());
                    break;
                }
            }
        }
    }

    #[test]
    fn pending_data_reports_the_size_as_it_arrives() {
        let mut dec = ChunkedDecoder::new();
        dec.decode(b"1", 100).unwrap();
        assert_eq!(dec.pending_data(), 1);
        dec.decode(b"00", 100).unwrap();
        assert_eq!(dec.pending_data(), 0x100);
        dec.decode(b";x\r\n", 100).unwrap();
        assert_eq!(dec.pending_data(), 0x100);
        dec.decode(&[b'a'; 0x100], usize::MAX).unwrap();
        assert_eq!(dec.pending_data(), 0);
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
