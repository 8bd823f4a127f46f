//! `Range: bytes=...` (RFC 9110 §14.2): one range is served as asked; several are answered
//! with the whole file (allowed: a server may ignore `Range`), as is anything malformed or in
//! another unit.

/// Bytes `start..=end` of a file, within its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Ignore the header: send the whole file.
    Whole,
    Part(ByteRange),
    /// A well-formed single range with no byte inside the file (416).
    Unsatisfiable,
}

/// What a `Range` value asks of a file of `size` bytes.
pub fn parse(value: &[u8], size: u64) -> Requested {
    let value = crate::http::request::trim_ows(value);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return Requested::Whole;
    };
    let (unit, spec) = (
        &value[..eq],
        crate::http::request::trim_ows(&value[eq + 1..]),
    );
    if !unit.eq_ignore_ascii_case(b"bytes") || spec.contains(&b',') {
        return Requested::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Requested::Whole;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (number(first), number(last)) {
        // `-N`: the last N bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                return Requested::Unsatisfiable;
            }
            Requested::Part(ByteRange {
                start: size - n.min(size),
                end: size - 1,
            })
        }
        // `A-` or `A-B`.
        (Some(start), end) if last.is_empty() || end.is_some() => {
            let end = end.unwrap_or(u64::MAX);
            if end < start {
                return Requested::Whole;
            }
            if start >= size {
                return Requested::Unsatisfiable;
            }
            Requested::Part(ByteRange {
                start,
                end: end.min(size - 1),
            })
        }
        _ => Requested::Whole,
    }
}

/// Decimal digits (saturating: a position beyond any file is still a position); `None` for
/// anything else, including nothing.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> Requested {
        Requested::Part(ByteRange { start, end })
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse(b"bytes=0-99", 1000), part(0, 99));
        assert_eq!(parse(b"bytes=500-", 1000), part(500, 999));
        assert_eq!(parse(b"bytes=900-5000", 1000), part(900, 999));
        assert_eq!(parse(b"bytes=-100", 1000), part(900, 999));
        assert_eq!(parse(b"bytes=-5000", 1000), part(0, 999));
        assert_eq!(parse(b"Bytes=1-1", 1000), part(1, 1));
        assert_eq!(parse(b" bytes= 1-1 ", 1000), part(1, 1));
        assert_eq!(ByteRange { start: 5, end: 9 }.len(), 5);
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse(b"bytes=1000-", 1000), Requested::Unsatisfiable);
        assert_eq!(parse(b"bytes=1000-2000", 1000), Requested::Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 1000), Requested::Unsatisfiable);
        assert_eq!(parse(b"bytes=0-", 0), Requested::Unsatisfiable);
        assert_eq!(parse(b"bytes=-1", 0), Requested::Unsatisfiable);
        assert_eq!(
            parse(b"bytes=99999999999999999999999-", 10),
            Requested::Unsatisfiable
        );
    }

    #[test]
    fn ignored_ranges_mean_the_whole_file() {
        for value in [
            &b"bytes=0-1,5-6"[..],
            b"items=0-1",
            b"bytes=5-1",
            b"bytes=",
            b"bytes=-",
            b"bytes=a-b",
            b"bytes=1-b",
            b"bytes=+1-2",
            b"bytes 0-1",
            b"",
        ] {
            assert_eq!(parse(value, 1000), Requested::Whole, "{value:?}");
        }
    }
}
