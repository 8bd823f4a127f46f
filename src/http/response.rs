//! Response encoding: status and header validation, the head the server writes, chunk framing,
//! and the plain-text error responses.

use super::date;
use super::error::HttpError;

/// The application's status and headers, validated and pre-encoded as `Name: value\r\n` lines.
/// Hop-by-hop fields (`Connection`, `Keep-Alive`, `Transfer-Encoding`, ...) are the server's:
/// they are noted, not copied.
#[derive(Debug, Default, Clone)]
pub struct AppHead {
    pub status: Vec<u8>,
    pub code: u16,
    pub lines: Vec<u8>,
    pub content_length: Option<u64>,
    pub has_date: bool,
    pub has_server: bool,
    pub wants_close: bool,
    /// The first hop-by-hop field the application sent that was dropped (for a log line).
    pub dropped: Option<String>,
}

/// Room for a typical application's header lines, reserved at once.
const TYPICAL_LINES: usize = 256;

impl AppHead {
    pub fn new() -> AppHead {
        AppHead {
            lines: Vec::with_capacity(TYPICAL_LINES),
            ..AppHead::default()
        }
    }

    /// `DDD reason`: three digits 100-599, a space, then a reason without CR, LF or NUL.
    /// The three digits alone (`"204"`, as cheroot, gunicorn and waitress accept) get the
    /// standard reason phrase for the code, or an empty one for a code without one.
    pub fn set_status(&mut self, status: &[u8]) -> Result<(), String> {
        let code_ok = status.len() >= 3
            && status[..3].iter().all(u8::is_ascii_digit)
            && (b'1'..=b'5').contains(&status[0])
            && (status.len() == 3 || status[3] == b' ');
        if !code_ok || status.iter().skip(4).any(|&b| is_forbidden_in_value(b)) {
            return Err(format!(
                "invalid WSGI status {:?}: it must be a three-digit code, a space and a reason \
                 phrase, e.g. '200 OK'",
                String::from_utf8_lossy(status)
            ));
        }
        self.code = u16::from(status[0] - b'0') * 100
            + u16::from(status[1] - b'0') * 10
            + u16::from(status[2] - b'0');
        self.status.clear();
        self.status.extend_from_slice(status);
        if status.len() == 3 {
            self.status.push(b' ');
            self.status
                .extend_from_slice(reason_phrase(self.code).as_bytes());
        }
        Ok(())
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection: the server's, not the
    /// application's. `Upgrade` stays on a 426 and `Proxy-Authenticate` on a 407, where they
    /// are the response's meaning. (`Connection` is handled apart: its `close` is honoured.)
    fn is_hop_by_hop(&self, name: &[u8]) -> bool {
        let is = |field: &[u8]| name.eq_ignore_ascii_case(field);
        is(b"transfer-encoding")
            || is(b"keep-alive")
            || is(b"te")
            || is(b"proxy-connection")
            || (is(b"upgrade") && self.code != 426)
            || (is(b"proxy-authenticate") && self.code != 407)
    }

    pub fn push_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), String> {
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!(
                "invalid response header name {:?}: it must be a non-empty HTTP token",
                String::from_utf8_lossy(name)
            ));
        }
        if value.iter().any(|&b| is_forbidden_in_value(b)) {
            return Err(format!(
                "invalid value for response header {:?}: CR, LF and NUL are not allowed",
                String::from_utf8_lossy(name)
            ));
        }
        if name.eq_ignore_ascii_case(b"connection") {
            self.wants_close |=
                super::request::list_items(value).any(|token| token.eq_ignore_ascii_case(b"close"));
            return Ok(());
        }
        if self.is_hop_by_hop(name) {
            self.dropped
                .get_or_insert_with(|| String::from_utf8_lossy(name).into_owned());
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let text = super::request::trim_ows(value);
            let n = super::request::parse_content_length(text).ok_or_else(|| {
                format!(
                    "invalid Content-Length response header {:?}: it must be a decimal number",
                    String::from_utf8_lossy(value)
                )
            })?;
            if self.content_length.is_some_and(|prev| prev != n) {
                return Err("conflicting Content-Length response headers".to_string());
            }
            if self.content_length.is_some() {
                return Ok(());
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"date") {
            self.has_date = true;
        } else if name.eq_ignore_ascii_case(b"server") {
            self.has_server = true;
        }
        self.lines.extend_from_slice(name);
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The application's fields as (name, value), in order (HTTP/2 sends them as fields,
    /// not lines).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((&line[..colon], &line[colon + 2..]))
            })
    }

    /// 1xx, 204 and 304 responses never carry a body.
    pub fn forbids_body(&self) -> bool {
        self.code < 200 || self.code == 204 || self.code == 304
    }
}

/// The reason phrase of a registered status code (RFC 9110 §15 and the IANA HTTP Status Code
/// Registry); empty for an unregistered or unused code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

fn is_forbidden_in_value(b: u8) -> bool {
    b == b'\r' || b == b'\n' || b == 0
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How the body of a response is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFrame {
    /// No body follows (HEAD, 1xx, 204, 304); any Content-Length is the app's.
    Empty,
    /// `Content-Length` (written by the server when `add_header` is true).
    Length {
        len: u64,
        add_header: bool,
    },
    Chunked,
    /// Ends when the connection closes.
    UntilClose,
}

/// What the head says about the connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnHeader {
    pub keep_alive: bool,
    /// HTTP/1.0 keep-alive needs an explicit `Connection: Keep-Alive`.
    pub http10: bool,
    pub timeout_secs: u64,
}

/// Writes the status line, the application's headers and the server's own into `out`.
pub fn encode_head(
    out: &mut Vec<u8>,
    protocol: &[u8],
    app: &AppHead,
    frame: BodyFrame,
    conn: ConnHeader,
    server_name: &[u8],
) {
    out.extend_from_slice(protocol);
    out.push(b' ');
    out.extend_from_slice(&app.status);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&app.lines);
    match frame {
        BodyFrame::Length {
            len,
            add_header: true,
        } => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyFrame::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if !conn.keep_alive && !conn.http10 {
        // Closing is HTTP/1.0's default: only a 1.1 response needs to say so.
        out.extend_from_slice(b"Connection: close\r\n");
    } else if conn.keep_alive && conn.http10 {
        out.extend_from_slice(b"Connection: Keep-Alive\r\nKeep-Alive: timeout=");
        out.extend_from_slice(itoa::Buffer::new().format(conn.timeout_secs).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !app.has_date {
        out.extend_from_slice(b"Date: ");
        date::append_now(out);
        out.extend_from_slice(b"\r\n");
    }
    if !app.has_server && !server_name.is_empty() {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(server_name);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// cheroot's `simple_response` shape: status, length, type, close, then the text.
pub fn encode_error(out: &mut Vec<u8>, protocol: &[u8], err: HttpError) {
    out.extend_from_slice(protocol);
    out.push(b' ');
    out.extend_from_slice(err.status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(err.body.len()).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(err.body.as_bytes());
}

/// `100 Continue` interim response.
pub fn encode_continue(out: &mut Vec<u8>, protocol: &[u8]) {
    out.extend_from_slice(protocol);
    out.extend_from_slice(b" 100 Continue\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[(&str, &str)]) -> Result<AppHead, String> {
        let mut app = AppHead::default();
        app.set_status(status.as_bytes())?;
        for (n, v) in headers {
            app.push_header(n.as_bytes(), v.as_bytes())?;
        }
        Ok(app)
    }

    #[test]
    fn status_validation() {
        assert_eq!(head("200 OK", &[]).unwrap().code, 200);
        assert_eq!(head("404 ", &[]).unwrap().code, 404);
        for bad in [
            "20",
            "2000",
            "200\tOK",
            "600",
            "099",
            "abc",
            "20 OK",
            "200OK",
            "600 X",
            "200 OK\r\nX: y",
            "099 X",
        ] {
            assert!(head(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn three_digits_alone_get_the_standard_reason() {
        for (status, line) in [
            ("204", &b"204 No Content"[..]),
            ("304", b"304 Not Modified"),
            ("200", b"200 OK"),
            ("418", b"418 "),
            ("299", b"299 "),
            ("599", b"599 "),
        ] {
            let app = head(status, &[]).unwrap();
            assert_eq!(app.status, line, "{status}");
            assert_eq!(app.code.to_string(), status);
        }
        let mut out = Vec::new();
        let conn = ConnHeader {
            keep_alive: true,
            http10: false,
            timeout_secs: 10,
        };
        let app = head("299", &[("Date", "x")]).unwrap();
        encode_head(&mut out, b"HTTP/1.1", &app, BodyFrame::Empty, conn, b"");
        assert_eq!(out, b"HTTP/1.1 299 \r\nDate: x\r\n\r\n");
    }

    #[test]
    fn reason_phrases_are_clean_text() {
        for code in 100..600 {
            let reason = reason_phrase(code);
            assert!(
                reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{code}"
            );
        }
        assert_eq!(reason_phrase(306), "");
        assert_eq!(reason_phrase(413), "Content Too Large");
    }

    #[test]
    fn header_validation_and_hop_by_hop() {
        let app = head(
            "200 OK",
            &[
                ("Content-Type", "text/plain"),
                ("Connection", "Close"),
                ("Transfer-Encoding", "x"),
            ],
        )
        .unwrap();
        assert_eq!(app.lines, b"Content-Type: text/plain\r\n");
        assert!(app.wants_close);
        assert!(head("200 OK", &[("X", "a\r\nb")]).is_err());
        assert!(head("200 OK", &[("X Y", "a")]).is_err());
        assert!(head("200 OK", &[("Content-Length", "x")]).is_err());
        assert_eq!(
            head("200 OK", &[("Content-Length", "5")])
                .unwrap()
                .content_length,
            Some(5)
        );
    }

    #[test]
    fn encodes_head() {
        let app = head("200 OK", &[("Content-Type", "text/plain"), ("Date", "x")]).unwrap();
        let mut out = Vec::new();
        let conn = ConnHeader {
            keep_alive: true,
            http10: false,
            timeout_secs: 10,
        };
        let frame = BodyFrame::Length {
            len: 5,
            add_header: true,
        };
        encode_head(&mut out, b"HTTP/1.1", &app, frame, conn, b"stogie");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: x\r\nContent-Length: 5\r\n\
              Server: stogie\r\n\r\n"
        );
        out.clear();
        let conn = ConnHeader {
            keep_alive: true,
            http10: true,
            timeout_secs: 7,
        };
        encode_head(&mut out, b"HTTP/1.1", &app, BodyFrame::Chunked, conn, b"");
        assert!(out.ends_with(
            b"Transfer-Encoding: chunked\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=7\r\n\r\n"
        ));
    }

    #[test]
    fn error_shape() {
        let mut out = Vec::new();
        encode_error(&mut out, b"HTTP/1.1", crate::http::error::MALFORMED_URI);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 21\r\nContent-Type: text/plain\r\n\
              Connection: close\r\n\r\nMalformed Request-URI"
        );
    }

    #[test]
    fn hop_by_hop_fields_are_dropped() {
        let app = head(
            "200 OK",
            &[
                ("Upgrade", "h2c"),
                ("TE", "trailers"),
                ("X-Kept", "1"),
                ("Proxy-Authenticate", "Basic"),
            ],
        )
        .unwrap();
        assert_eq!(app.lines, b"X-Kept: 1\r\n");
        assert_eq!(app.dropped.as_deref(), Some("Upgrade"));
        let app = head("426 Upgrade Required", &[("Upgrade", "TLS/1.2")]).unwrap();
        assert_eq!(app.lines, b"Upgrade: TLS/1.2\r\n");
        assert!(app.dropped.is_none());
        let app = head(
            "407 Proxy Authentication Required",
            &[("Proxy-Authenticate", "Basic")],
        );
        assert_eq!(app.unwrap().lines, b"Proxy-Authenticate: Basic\r\n");
    }
}
