//! Static files (`--static PREFIX=DIR`): the HTTP rules, as pure functions over bytes. Which
//! file a path names (`path.rs`), which part of it a `Range` asks for (`range.rs`), whether
//! the client's copy is still good (`conditional.rs`), and the `Content-Type` and content
//! coding (`negotiate.rs`). `decide` puts them together for one request; the files themselves
//! are opened and sent by `crate::static_files`.

pub mod conditional;
pub mod negotiate;
pub mod path;
pub mod range;

use conditional::Validators;
use range::ByteRange;

/// The request fields that decide a static response (values as sent, `None` when absent).
#[derive(Debug, Default, Clone, Copy)]
pub struct Preconditions<'a> {
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// What to answer for an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 304: the client's copy is current.
    NotModified,
    /// 200 with the whole file.
    Whole,
    /// 206 with these bytes.
    Partial(ByteRange),
    /// 416: no byte of the file is in the range asked for.
    Unsatisfiable,
}

/// RFC 9110 §13.2.2's order for GET and HEAD: `If-None-Match` (or, without it,
/// `If-Modified-Since`) first, then `Range`, which `If-Range` may veto.
pub fn decide(pre: &Preconditions<'_>, file: &Validators, size: u64) -> Decision {
    if conditional::not_modified(pre.if_none_match, pre.if_modified_since, file) {
        return Decision::NotModified;
    }
    let Some(range) = pre.range else {
        return Decision::Whole;
    };
    if pre
        .if_range
        .is_some_and(|v| !conditional::if_range_holds(v, file))
    {
        return Decision::Whole;
    }
    match range::parse(range, size) {
        range::Requested::Whole => Decision::Whole,
        range::Requested::Part(part) => Decision::Partial(part),
        range::Requested::Unsatisfiable => Decision::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Validators {
        Validators::new(1_700_000_000, 123_456_789, 1000)
    }

    #[test]
    fn conditions_come_before_ranges() {
        let v = file();
        let etag = v.etag().to_vec();
        let pre = Preconditions {
            if_none_match: Some(&etag),
            range: Some(b"bytes=0-9"),
            ..Default::default()
        };
        assert_eq!(decide(&pre, &v, 1000), Decision::NotModified);
        let pre = Preconditions {
            if_none_match: Some(b"\"other\""),
            range: Some(b"bytes=0-9"),
            ..Default::default()
        };
        assert_eq!(
            decide(&pre, &v, 1000),
            Decision::Partial(ByteRange { start: 0, end: 9 })
        );
    }

    #[test]
    fn if_range_vetoes_a_stale_range() {
        let v = file();
        let etag = v.etag().to_vec();
        let mut pre = Preconditions {
            range: Some(b"bytes=990-"),
            if_range: Some(b"\"stale\""),
            ..Default::default()
        };
        assert_eq!(decide(&pre, &v, 1000), Decision::Whole);
        pre.if_range = Some(&etag);
        assert_eq!(
            decide(&pre, &v, 1000),
            Decision::Partial(ByteRange {
                start: 990,
                end: 999
            })
        );
        pre.range = Some(b"bytes=1000-");
        assert_eq!(decide(&pre, &v, 1000), Decision::Unsatisfiable);
        pre.range = None;
        assert_eq!(decide(&pre, &v, 1000), Decision::Whole);
    }
}
