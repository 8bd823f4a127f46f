//! The `Content-Type` of a file by its extension, and which precompressed sibling
//! (`name.br`, `name.gz`) the client's `Accept-Encoding` allows.

/// A content coding stogie serves from a precompressed sibling file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The sibling file's suffix.
    pub fn suffix(self) -> &'static [u8] {
        match self {
            Coding::Brotli => b".br",
            Coding::Gzip => b".gz",
        }
    }
}

/// The codings `Accept-Encoding` allows, preferred first (brotli is smaller than gzip).
/// A coding is allowed when it is listed with a q-value above 0, or when it is not listed and
/// `*` is, with a q-value above 0 (RFC 9110 §12.5.3).
pub fn accepted(accept_encoding: Option<&[u8]>) -> impl Iterator<Item = Coding> {
    let mut allowed = [None, None];
    if let Some(value) = accept_encoding {
        let (mut br, mut gzip, mut any) = (None, None, None);
        for item in crate::http::request::list_items(value) {
            let (name, q) = coding_and_weight(item);
            if name.eq_ignore_ascii_case(b"br") {
                br = Some(q);
            } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
                gzip = Some(q);
            } else if name == b"*" {
                any = Some(q);
            }
        }
        let ok = |q: Option<bool>| q.or(any).unwrap_or(false);
        allowed = [
            ok(br).then_some(Coding::Brotli),
            ok(gzip).then_some(Coding::Gzip),
        ];
    }
    allowed.into_iter().flatten()
}

/// A list item's coding and whether its weight is above 0 (`gzip;q=0.5` → (gzip, true)).
fn coding_and_weight(item: &[u8]) -> (&[u8], bool) {
    let mut parts = item.split(|&b| b == b';');
    let name = crate::http::request::trim_ows(parts.next().unwrap_or_default());
    let mut positive = true;
    for param in parts {
        let param = crate::http::request::trim_ows(param);
        if let Some(q) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        {
            // q=0, q=0.0, q=0.000 are "not acceptable"; anything else is some preference.
            positive = !q.iter().all(|&b| b == b'0' || b == b'.') || q.is_empty();
        }
    }
    (name, positive)
}

/// The `Content-Type` for a file name: by extension (the `mime_guess` table), UTF-8 for text
/// and JavaScript, `application/octet-stream` when the extension is unknown.
pub fn content_type(name: &[u8]) -> String {
    let guessed = std::str::from_utf8(name)
        .ok()
        .and_then(|name| mime_guess::from_path(name).first_raw());
    match guessed {
        Some(mime) if mime.starts_with("text/") || mime == "application/javascript" => {
            format!("{mime}; charset=utf-8")
        }
        Some(mime) => mime.to_string(),
        None => "application/octet-stream".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codings(value: &str) -> Vec<Coding> {
        accepted(Some(value.as_bytes())).collect()
    }

    #[test]
    fn accept_encoding() {
        use Coding::*;
        assert_eq!(codings("gzip, deflate, br"), [Brotli, Gzip]);
        assert_eq!(codings("gzip"), [Gzip]);
        assert_eq!(codings("x-gzip"), [Gzip]);
        assert_eq!(codings("BR;q=0.5"), [Brotli]);
        assert_eq!(codings("br;q=0, gzip"), [Gzip]);
        assert_eq!(codings("br;q=0.000, gzip;q=0.001"), [Gzip]);
        assert_eq!(codings("*"), [Brotli, Gzip]);
        assert_eq!(codings("*;q=0, gzip"), [Gzip]);
        assert_eq!(codings("*, gzip;q=0"), [Brotli]);
        assert_eq!(codings("identity"), []);
        assert_eq!(codings("deflate"), []);
        assert_eq!(codings(""), []);
        assert_eq!(accepted(None).count(), 0);
        assert_eq!((Brotli.token(), Gzip.suffix()), ("br", &b".gz"[..]));
    }

    #[test]
    fn content_types() {
        for (name, expected) in [
            ("base.css", "text/css; charset=utf-8"),
            ("app.JS", "text/javascript; charset=utf-8"),
            ("mod.mjs", "application/javascript; charset=utf-8"),
            ("logo.svg", "image/svg+xml"),
            ("font.woff2", "font/woff2"),
            ("data.json", "application/json"),
            ("dir/photo.jpeg", "image/jpeg"),
            ("noext", "application/octet-stream"),
            ("archive.unknownext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(name.as_bytes()), expected, "{name}");
        }
    }
}
