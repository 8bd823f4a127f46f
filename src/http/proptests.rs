//! Property tests: a request parses the same however its bytes arrive, and no input panics.

use proptest::prelude::*;

use super::chunked::{ChunkedDecoder, Decoded, MAX_CHUNK_SIZE};
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

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A reference recogniser for RFC 9112 §7.1.1, written apart from the decoder's state machine:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn is_chunk_ext(ext: &[u8]) -> bool {
    let bws = |i: &mut usize| {
        while *i < ext.len() && (ext[*i] == b' ' || ext[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < ext.len() && is_tchar(ext[*i]) {
            *i += 1;
        }
        *i > start
    };
    let quoted = |i: &mut usize| {
        if ext.get(*i) != Some(&b'"') {
            return false;
        }
        *i += 1;
        let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
        loop {
            match ext.get(*i) {
                Some(b'"') => {
                    *i += 1;
                    return true;
                }
                Some(b'\\') => match ext.get(*i + 1) {
                    Some(&b) if text(b) => *i += 2,
                    _ => return false,
                },
                Some(&b) if text(b) => *i += 1,
                _ => return false,
            }
        }
    };
    let mut i = 0;
    while i < ext.len() {
        bws(&mut i);
        if ext.get(i) != Some(&b';') {
            return false;
        }
        i += 1;
        bws(&mut i);
        if !token(&mut i) {
            return false;
        }
        let mark = i;
        bws(&mut i);
        if ext.get(i) == Some(&b'=') {
            i += 1;
            bws(&mut i);
            if !token(&mut i) && !quoted(&mut i) {
                return false;
            }
        } else {
            i = mark;
        }
    }
    true
}

/// Decodes `wire` fed in pieces of `split` bytes, as a connection would: (body, ended) or the
/// error. Bytes left after `Oversized` stay pending and are decoded again at once.
fn decode_in_pieces(wire: &[u8], split: usize) -> Result<(Vec<u8>, bool), u16> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in wire.chunks(split.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            let (used, found) = decoder.decode(&pending, usize::MAX).map_err(|e| e.code())?;
            if let Decoded::Data { start, len } = found {
                body.extend_from_slice(&pending[start..start + len]);
            }
            pending.drain(..used);
            match found {
                Decoded::End => return Ok((body, true)),
                Decoded::NeedMore => break,
                Decoded::Data { .. } | Decoded::Oversized if pending.is_empty() => break,
                Decoded::Data { .. } | Decoded::Oversized => {}
            }
        }
    }
    Ok((body, false))
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

    /// The decoder accepts a chunk extension exactly when the RFC 9112 §7.1.1 grammar does,
    /// however the bytes arrive.
    #[test]
    fn chunk_extensions_follow_the_grammar(
        ext in proptest::collection::vec(
            proptest::sample::select(b"; ;=\t\"\\xy!~[(\x01\x7f\x80\xff".to_vec()), 0..16),
        split in 1usize..8,
    ) {
        let mut wire = b"3".to_vec();
        wire.extend_from_slice(&ext);
        wire.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        let got = decode_in_pieces(&wire, split);
        if is_chunk_ext(&ext) {
            prop_assert_eq!(got, Ok((b"abc".to_vec(), true)), "{:?}", String::from_utf8_lossy(&ext));
        } else {
            prop_assert_eq!(got, Err(400), "{:?}", String::from_utf8_lossy(&ext));
        }
    }

    /// Generated well-formed extensions (tokens, quoted-strings with escapes, BWS) decode.
    #[test]
    fn well_formed_chunk_extensions_decode(
        exts in proptest::collection::vec((
            "[ \t]{0,2}", token(), proptest::option::of((
                "[ \t]{0,2}",
                "[ \t]{0,2}",
                prop_oneof![
                    token(),
                    "([ !#-\\[\\]-~]|\\\\[ -~]){0,12}".prop_map(|q| format!("\"{q}\"")),
                ],
            )),
        ), 1..4),
        split in 1usize..8,
    ) {
        let mut ext = String::new();
        for (space, name, value) in exts {
            ext.push_str(&format!("{space};{space}{name}"));
            if let Some((before, after, value)) = value {
                ext.push_str(&format!("{before}={after}{value}"));
            }
        }
        prop_assert!(is_chunk_ext(ext.as_bytes()), "{:?}", ext);
        let wire = format!("3{ext}\r\nabc\r\n0{ext}\r\n\r\n");
        prop_assert_eq!(decode_in_pieces(wire.as_bytes(), split), Ok((b"abc".to_vec(), true)));
    }

    /// Chunk sizes: at most 16 hex digits and at most 2^40; a larger one is refused at the
    /// digit that makes it so (`Oversized`, then 400), and never yields data.
    #[test]
    fn chunk_sizes_are_bounded_at_the_digit(
        zeros in 0usize..8,
        digits in "[0-9a-fA-F]{1,14}",
        split in 1usize..6,
    ) {
        let text = format!("{}{digits}", "0".repeat(zeros));
        let mut expect_fail_at = None;
        let mut value: u128 = 0;
        for (i, c) in text.chars().enumerate() {
            value = value * 16 + u128::from(c.to_digit(16).expect("hex"));
            if i >= 16 || value > u128::from(MAX_CHUNK_SIZE) {
                expect_fail_at = Some(i);
                break;
            }
        }
        let wire = format!("{text}\r\n");
        // One byte at a time, to see which byte is refused.
        let mut decoder = ChunkedDecoder::new();
        let mut failed_at = None;
        let mut i = 0;
        while i < wire.len() {
            match decoder.decode(&wire.as_bytes()[i..=i], usize::MAX) {
                Err(e) => {
                    prop_assert_eq!(e.code(), 400);
                    failed_at = Some(i);
                    break;
                }
                Ok((used, found)) => {
                    let body_or_end = matches!(found, Decoded::Data { .. } | Decoded::End);
                    prop_assert!(!body_or_end);
                    if found == Decoded::Oversized {
                        prop_assert_eq!(used, 0);
                        prop_assert!(decoder.pending_data() > MAX_CHUNK_SIZE);
                    } else {
                        prop_assert!(decoder.pending_data() <= MAX_CHUNK_SIZE);
                    }
                    i += used;
                }
            }
        }
        // In larger pieces, the same verdict.
        let in_pieces = decode_in_pieces(wire.as_bytes(), split);
        prop_assert_eq!(in_pieces.is_err(), expect_fail_at.is_some());
        prop_assert_eq!(failed_at, expect_fail_at, "{}", text);
        if expect_fail_at.is_none() {
            prop_assert_eq!(u128::from(decoder.pending_data()), value);
        }
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
                    Decoded::Oversized => prop_assert!(false, "small chunks are not oversized"),
                }
            }
        }
        prop_assert!(done);
        prop_assert_eq!(body, chunks.concat());
    }
}
