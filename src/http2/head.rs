//! A stream's request head laid out as an HTTP/1.1 head (`METHOD target HTTP/1.1`, then the
//! fields), so that src/http/request.rs checks it and src/wsgi/environ.rs builds its environ
//! exactly as for HTTP/1.1: one set of rules for both protocols (docs/http2.md, "Requests").
//!
//! Nothing can be smuggled through the layout: `h2` has already refused names that are not
//! lower-case tokens, values holding CR, LF or NUL, pseudo-fields out of place and
//! connection-specific fields (RFC 9113 §8.2, §8.3), and `http` refused a malformed method,
//! path or authority.

use http::request::Parts;

use crate::http::error::{self, HttpError};
use crate::http::request::{self, Limits, RequestHead};

/// The protocol named on the laid-out request line; SERVER_PROTOCOL says `HTTP/2` instead.
const PROTOCOL: &[u8] = b"HTTP/1.1";

/// A stream's request, checked: its head laid out and parsed as HTTP/1.1.
#[derive(Debug)]
pub struct Checked {
    pub head: RequestHead,
    /// The laid-out head, which `head`'s spans point into.
    pub bytes: Vec<u8>,
}

/// Checks a stream's head by the HTTP/1.1 rules, and its declared length against
/// `max_request_body_size` (0: none).
pub fn check(parts: &Parts, limits: Limits, max_body: u64) -> Result<Checked, HttpError> {
    let bytes = layout(parts);
    let head = match request::parse_head(&bytes, limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Err(error::BAD_HEADER),
        Err(e) => return Err(e),
    };
    if max_body > 0 && head.content_length.is_some_and(|n| n > max_body) {
        return Err(error::BODY_TOO_LARGE);
    }
    Ok(Checked { head, bytes })
}

/// The head of a request received on a stream, as HTTP/1.1 bytes.
pub fn layout(parts: &Parts) -> Vec<u8> {
    let target: &str = match parts.uri.path_and_query() {
        Some(path) => path.as_str(),
        // CONNECT names an authority instead of a path.
        None => parts.uri.authority().map_or("", |a| a.as_str()),
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(PROTOCOL);
    out.extend_from_slice(b"\r\n");
    // RFC 9113 §8.3.1: `:authority` stands for Host when the request has no Host field.
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            field(&mut out, b"host", authority.as_str().as_bytes());
        }
    }
    for (name, value) in &parts.headers {
        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::layout;
    use crate::http::request::{parse_head, Limits};

    fn parts(builder: http::request::Builder) -> http::request::Parts {
        builder.body(()).expect("a valid request").into_parts().0
    }

    #[test]
    fn authority_becomes_host_and_cookie_crumbs_stay_apart() {
        let req = parts(
            http::Request::builder()
                .method("GET")
                .uri("https://example.com:8443/a%20b?x=1")
                .header("cookie", "a=1")
                .header("cookie", "b=2"),
        );
        let head = layout(&req);
        assert_eq!(
            head,
            b"GET /a%20b?x=1 HTTP/1.1\r\nhost: example.com:8443\r\ncookie: a=1\r\n\
              cookie: b=2\r\n\r\n"
        );
        let parsed = parse_head(&head, Limits { max_head: 0 })
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed.fields.len(), 3);
    }

    #[test]
    fn a_host_field_wins_over_the_authority() {
        let req = parts(
            http::Request::builder()
                .uri("http://a.example/")
                .header("host", "b.example"),
        );
        assert_eq!(layout(&req), b"GET / HTTP/1.1\r\nhost: b.example\r\n\r\n");
    }

    #[test]
    fn the_head_limits_of_http1_apply() {
        let mut builder = http::Request::builder().uri("http://a.example/");
        for i in 0..101 {
            builder = builder.header(format!("x-f{i}"), "v");
        }
        let head = layout(&parts(builder));
        assert!(parse_head(&head, Limits { max_head: 0 }).is_err());
    }
}
