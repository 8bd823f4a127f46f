//! The request-head parser on arbitrary bytes: never panics, and its verdict does not depend
//! on how much of the stream has arrived (a complete head's every prefix is "incomplete", and
//! bytes after the head never change it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stogie_fuzz::http::request::{parse_head, BodyFraming, Limits};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a header-size limit: 0 (the 64 KiB hard cap) or a small one.
    let (limits, input) = match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (
            Limits {
                max_head: 64 + usize::from(b) * 4,
            },
            rest,
        ),
        Some((_, rest)) => (Limits { max_head: 0 }, rest),
        None => return,
    };
    let result = parse_head(input, limits);
    let Ok(Some(head)) = result else {
        return;
    };
    let len = head.head_len;
    assert!(
        len > 0 && len <= input.len(),
        "head_len {len} of {}",
        input.len()
    );
    assert_eq!(
        &input[len - 4..len],
        b"\r\n\r\n",
        "a head ends with CRLF CRLF"
    );
    for span in [
        head.method,
        head.target,
        head.path,
        head.query,
        head.protocol,
    ] {
        assert!(
            (span.start + span.len) as usize <= len,
            "span outside the head"
        );
    }
    for field in &head.fields {
        assert!((field.value.start + field.value.len) as usize <= len);
        let name = field.name.get(input);
        assert!(!name.is_empty());
        let value = field.value.get(input);
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
        assert!(
            !value.starts_with(b" ") && !value.ends_with(b" "),
            "untrimmed value"
        );
    }
    match head.body {
        BodyFraming::Length(n) => assert_eq!(head.content_length, Some(n)),
        BodyFraming::Chunked => assert_eq!(head.content_length, None),
        BodyFraming::None => assert!(matches!(head.content_length, None | Some(0))),
    }
    // The same head alone parses the same (trailing bytes are the next request's business).
    let alone = parse_head(&input[..len], limits)
        .expect("the head alone is valid")
        .expect("the head alone is complete");
    assert_eq!(alone.head_len, len);
    assert_eq!(alone.body, head.body);
    assert_eq!(alone.fields.len(), head.fields.len());
    // Every strict prefix is incomplete: no early verdict, whatever the split.
    let cuts: Vec<usize> = if len <= 600 {
        (0..len).collect()
    } else {
        (0..32).map(|i| i * len / 32).chain(len - 8..len).collect()
    };
    for cut in cuts {
        match parse_head(&input[..cut], limits) {
            Ok(None) => {}
            other => panic!("prefix of {cut}/{len} bytes gave {other:?}"),
        }
    }
});
