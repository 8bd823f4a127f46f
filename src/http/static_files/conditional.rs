//! Validators and conditional requests (RFC 9110 §8.8 and §13): a file's `ETag` and
//! `Last-Modified`, `If-None-Match` / `If-Modified-Since` (304) and `If-Range`.

use std::time::{Duration, UNIX_EPOCH};

/// A file's validators, from its modification time and size.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Whole seconds of the modification time (`Last-Modified` has no finer resolution).
    mtime_secs: u64,
    /// `"<mtime in ns, hex>-<size, hex>"`: a strong tag that changes whenever the file is
    /// rewritten (a change within the same second included) or changes size.
    etag: Vec<u8>,
    /// `Last-Modified` as an IMF-fixdate.
    last_modified: String,
}

impl Validators {
    pub fn new(mtime_secs: u64, mtime_nanos: u32, size: u64) -> Validators {
        let nanos = u128::from(mtime_secs) * 1_000_000_000 + u128::from(mtime_nanos);
        Validators {
            mtime_secs,
            etag: format!("\"{nanos:x}-{size:x}\"").into_bytes(),
            last_modified: httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime_secs)),
        }
    }

    pub fn etag(&self) -> &[u8] {
        &self.etag
    }

    pub fn last_modified(&self) -> &str {
        &self.last_modified
    }
}

/// Whether a GET or HEAD gets a 304: `If-None-Match` lists the file's tag (weak comparison)
/// or is `*`; without `If-None-Match`, `If-Modified-Since` is a valid date not older than the
/// file's modification time.
pub fn not_modified(
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    file: &Validators,
) -> bool {
    if let Some(list) = if_none_match {
        let list = crate::http::request::trim_ows(list);
        return list == b"*" || tags(list).any(|tag| opaque(tag) == opaque(&file.etag));
    }
    if_modified_since
        .and_then(http_date_secs)
        .is_some_and(|since| file.mtime_secs <= since)
}

/// Whether `If-Range` lets a `Range` apply: the file's tag (strong comparison: a weak tag
/// never matches) or its exact `Last-Modified` date.
pub fn if_range_holds(value: &[u8], file: &Validators) -> bool {
    let value = crate::http::request::trim_ows(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return value == file.etag.as_slice();
    }
    http_date_secs(value) == Some(file.mtime_secs)
}

/// The entity tags of a comma-separated list (commas inside quotes are part of a tag).
fn tags(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = trim_list_separators(rest);
        if rest.is_empty() {
            return None;
        }
        let open = rest.iter().position(|&b| b == b'"')?;
        let close = open + 1 + rest[open + 1..].iter().position(|&b| b == b'"')?;
        let tag = &rest[..=close];
        rest = &rest[close + 1..];
        Some(tag)
    })
}

fn trim_list_separators(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b',', tail @ ..] = s {
        s = tail;
    }
    s
}

/// The tag without its weakness indicator: weak comparison compares these.
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

fn http_date_secs(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(crate::http::request::trim_ows(value)).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTIME: u64 = 1_700_000_000; // Tue, 14 Nov 2023 22:13:20 GMT

    fn file() -> Validators {
        Validators::new(MTIME, 5, 4096)
    }

    #[test]
    fn validators() {
        let v = file();
        assert_eq!(v.etag(), b"\"17979cfe362a0005-1000\"");
        assert_eq!(v.last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_ne!(Validators::new(MTIME, 6, 4096).etag(), v.etag());
        assert_ne!(Validators::new(MTIME, 5, 4097).etag(), v.etag());
    }

    #[test]
    fn if_none_match() {
        let v = file();
        let tag = String::from_utf8(v.etag().to_vec()).unwrap();
        for list in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"a\", {tag}"),
            format!("\"x,y\",{tag} ,"),
            "*".to_string(),
        ] {
            assert!(not_modified(Some(list.as_bytes()), None, &v), "{list}");
        }
        for list in ["\"a\"", "\"x,y\"", "", "garbage", "\"17979cfe362a0005-1000"] {
            assert!(!not_modified(Some(list.as_bytes()), None, &v), "{list}");
        }
        // If-None-Match decides alone when present.
        let since = b"Tue, 14 Nov 2023 22:13:20 GMT";
        assert!(!not_modified(Some(b"\"a\""), Some(since), &v));
    }

    #[test]
    fn if_modified_since() {
        let v = file();
        for (since, expected) in [
            ("Tue, 14 Nov 2023 22:13:20 GMT", true),
            ("Tue, 14 Nov 2023 22:13:21 GMT", true),
            ("Tue, 14 Nov 2023 22:13:19 GMT", false),
            ("Tuesday, 14-Nov-23 22:13:20 GMT", true),
            ("not a date", false),
        ] {
            assert_eq!(
                not_modified(None, Some(since.as_bytes()), &v),
                expected,
                "{since}"
            );
        }
        assert!(!not_modified(None, None, &v));
    }

    #[test]
    fn if_range() {
        let v = file();
        assert!(if_range_holds(v.etag(), &v));
        assert!(if_range_holds(b"Tue, 14 Nov 2023 22:13:20 GMT", &v));
        assert!(!if_range_holds(b"Tue, 14 Nov 2023 22:13:21 GMT", &v));
        let weak = [b"W/" as &[u8], v.etag()].concat();
        assert!(!if_range_holds(&weak, &v));
        assert!(!if_range_holds(b"\"other\"", &v));
        assert!(!if_range_holds(b"junk", &v));
    }
}
