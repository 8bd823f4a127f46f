//! Which file a request path names under a static mount. The rest of the path after the
//! mount's prefix is percent-decoded and split into segments; anything that could leave the
//! directory or that names no plain file is refused (the caller answers 404).

/// The path of the file under the mount's directory, relative (`css/site.css`), for the rest
/// of a request path after the prefix, as sent. `None` for:
/// - a `.` or `..` segment, sent plainly or percent-encoded (`%2e%2e`);
/// - an encoded slash (`%2f`): `..%2fx` must not become `../x`;
/// - a NUL byte (sent or encoded), or a malformed `%` escape;
/// - the directory itself, or any path ending in `/` (directories are not listed).
///
/// Empty segments (`a//b`) are dropped. Symlinks are the opener's concern.
pub fn relative(rest: &[u8]) -> Option<Vec<u8>> {
    if rest.is_empty() || rest.ends_with(b"/") {
        return None;
    }
    let mut out = Vec::with_capacity(rest.len());
    for raw in rest.split(|&b| b == b'/') {
        if raw.is_empty() {
            continue;
        }
        let segment = decode_segment(raw)?;
        if segment == b"." || segment == b".." {
            return None;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&segment);
    }
    (!out.is_empty()).then_some(out)
}

/// Percent-decodes one segment; `None` if it hides a `/` or a NUL or has a bad escape.
fn decode_segment(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' => {
                let hi = hex(*raw.get(i + 1)?)?;
                let lo = hex(*raw.get(i + 2)?)?;
                i += 3;
                hi << 4 | lo
            }
            b => {
                i += 1;
                b
            }
        };
        if byte == b'/' || byte == 0 {
            return None;
        }
        out.push(byte);
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::relative;

    fn ok(rest: &str) -> String {
        String::from_utf8(relative(rest.as_bytes()).expect(rest)).unwrap()
    }

    #[test]
    fn plain_and_encoded_names() {
        assert_eq!(ok("css/base.css"), "css/base.css");
        assert_eq!(ok("a%20b.txt"), "a b.txt");
        assert_eq!(ok("caf%C3%A9.css"), "café.css");
        assert_eq!(ok("a//b"), "a/b");
        assert_eq!(ok("/x"), "x");
        assert_eq!(ok("..x/y.."), "..x/y..");
        assert_eq!(ok("%2e%2e%2ex"), "...x");
    }

    #[test]
    fn traversal_and_odd_paths_are_refused() {
        for bad in [
            "",
            "/",
            "css/",
            "..",
            "../x",
            "a/../../x",
            "./x",
            "a/.",
            "%2e%2e/x",
            "%2E%2E/x",
            ".%2e/x",
            "..%2fx",
            "..%2Fx",
            "a%2fb",
            "a%00b",
            "a\0b",
            "a%zzb",
            "a%2",
            "a%",
        ] {
            assert_eq!(relative(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
