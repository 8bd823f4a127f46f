//! Property tests: a request parses the same however its bytes arrive, and no input panics.

use proptest::prelude::*;

use super::chunked::{ChunkedDecoder, Decoded};
use super::request::{parse_head, BodyFraming, Limits};

const LIMITS: Limits = Limits { max_head: 0 };

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^`|~-]{1,12}"
}

fn field_value() -> impl Strategy<Value = String> {
    "[ -~]{0,40}".prop_map(|v| v.trim().to_string())
}

prop_compose! {
    fn request_head()(
        method in "(GET|POST|PUT|DELETE|PATCH|OPTIONS|FOO)",
        path in "/[A-Za-z0-9._~%/-]{0,30}",
        query in proptest::option::of("[A-Za-z0-9=&%]{0,20}"),
        fields in proptest::collection::vec((token(), field_value()), 0..8),
    ) -> String {
        let mut raw = format!("{method} {path}");
        if let Some(q) = query {
            raw.push('?');
            raw.push_str(&q);
        }
        raw.push_str(" HTTP/1.1\r\nHost: example.com\r\n");
        for (name, value) in fields {
            let lower = name.to_ascii_lowercase();
            if ["host", "content-length", "transfer-encoding", "expect", "connection"]
                .contains(&lower.as_str())
            {
                continue;
            }
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        raw
    }
}

proptest! {
    /// RFC 9112 §2.2: a CR not followed by LF is refused (400) as soon as the byte after it
    /// arrives, wherever it is in the head, complete or not. Before that byte the head waits,
    /// unless a CR is already wrong where it stands (inside a field name, say).
    #[test]
    fn a_bare_cr_is_refused_at_the_next_byte(
        raw in request_head(),
        at in any::<proptest::sample::Index>(),
        next in any::<u8>().prop_filter("not LF", |&b| b != b'\n'),
    ) {
        let bytes = raw.as_bytes();
        let p = at.index(bytes.len());
        let mut input = bytes[..p].to_vec();
        input.push(b'\r');
        match parse_head(&input, LIMITS) {
            Ok(head) => prop_assert!(head.is_none(), "a head cannot end in a bare CR"),
            Err(err) => prop_assert_eq!(err.code(), 400),
        }
        if !bytes[..p].contains(&b'\n') && !bytes[..p].ends_with(b"\r") {
            // In the request line a lone CR could still start its CRLF: no verdict yet.
            prop_assert!(parse_head(&input, LIMITS).expect("waits").is_none());
        }
        input.push(next);
        let err = parse_head(&input, LIMITS).expect_err("bare CR");
        prop_assert_eq!(err.code(), 400, "{:?}", String::from_utf8_lossy(&input));
    }

    /// A request line's verdict (bare CR, bare LF, over the cap: 414 or 501) is the one the
    /// bytes give when they arrive one at a time: it does not depend on how they were split.
    #[test]
    fn a_request_line_verdict_does_not_depend_on_the_split(
        line in proptest::collection::vec(
            proptest::sample::select(b"GET /a\r HTP1.\x01".to_vec()), 0..90),
        end in proptest::sample::select(vec![&b""[..], b"\n", b"\r\n"]),
        max_head in 8usize..100,
    ) {
        let limits = Limits { max_head };
        let mut input = line;
        input.extend_from_slice(end);
        let verdict = |bytes: &[u8]| parse_head(bytes, limits).map(|h| h.map(|h| h.head_len));
        let first = (1..=input.len())
            .map(|n| verdict(&input[..n]))
            .find(|v| *v != Ok(None))
            .unwrap_or(Ok(None));
        prop_assert_eq!(verdict(&input), first, "{:?}", String::from_utf8_lossy(&input));
    }

    #[test]
    fn a_head_is_incomplete_until_its_last_byte(raw in request_head()) {
        let bytes = raw.as_bytes();
        for cut in 0..bytes.len() {
            prop_assert!(parse_head(&bytes[..cut], LIMITS).expect("prefix is valid").is_none());
        }
        let head = parse_head(bytes, LIMITS).expect("valid").expect("complete");
        prop_assert_eq!(head.head_len, bytes.len());
        prop_assert_eq!(head.body, BodyFraming::None);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_head(&bytes, LIMITS);
        let mut decoder = ChunkedDecoder::new();
        let _ = decoder.decode(&bytes, usize::MAX);
    }

    #[test]
    fn chunked_bodies_decode_the_same_in_any_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6),
        split in 1usize..40,
    ) {
        let mut wire = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let ext = if i % 2 == 0 { ";ext=1" } else { "" };
            wire.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut done = false;
        for piece in wire.chunks(split) {
            pending.extend_from_slice(piece);
            loop {
                let (used, found) = decoder.decode(&pending, usize::MAX).expect("valid framing");
                if let Decoded::Data { start, len } = found {
                    body.extend_from_slice(&pending[start..start + len]);
                }
                pending.drain(..used);
                match found {
                    Decoded::End => {
                        done = true;
                        break;
                    }
                    Decoded::NeedMore => break,
                    Decoded::Data { .. } if pending.is_empty() => break,
                    Decoded::Data { .. } => {}
                }
            }
        }
        prop_assert!(done);
        prop_assert_eq!(body, chunks.concat());
    }
}
