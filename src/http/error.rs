//! The responses stogie sends by itself, with cheroot's texts where cheroot has one.

/// An error response the server generates itself: a status line and a short plain-text body.
/// Every such response is followed by closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: &'static str,
    pub body: &'static str,
}

impl HttpError {
    /// The numeric status code.
    pub fn code(&self) -> u16 {
        self.status
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(500)
    }
}

const fn err(status: &'static str, body: &'static str) -> HttpError {
    HttpError { status, body }
}

pub const CRLF_REQUIRED: HttpError = err("400 Bad Request", "HTTP requires CRLF terminators");
pub const MALFORMED_REQUEST_LINE: HttpError = err("400 Bad Request", "Malformed Request-Line");
pub const BAD_PROTOCOL: HttpError = err("400 Bad Request", "Malformed Request-Line: bad protocol");
pub const BAD_VERSION: HttpError = err("400 Bad Request", "Malformed Request-Line: bad version");
pub const BAD_METHOD_CASE: HttpError = err(
    "400 Bad Request",
    "Malformed method name: According to RFC 2616 (section 5.1.1) and its successors \
     RFC 7230 (section 3.1.1) and RFC 7231 (section 4.1) method names are case-sensitive \
     and uppercase.",
);
pub const MALFORMED_URI: HttpError = err("400 Bad Request", "Malformed Request-URI");
pub const FRAGMENT: HttpError = err("400 Bad Request", "Illegal #fragment in Request-URI.");
pub const INVALID_PATH: HttpError = err(
    "400 Bad Request",
    "Invalid path in Request-URI: request-target must contain origin-form which starts with \
     absolute-path (URI starting with a slash \"/\").",
);
pub const BAD_HEADER: HttpError = err("400 Bad Request", "Illegal header line.");
pub const BAD_CONTENT_LENGTH: HttpError =
    err("400 Bad Request", "Malformed Content-Length Header.");
pub const BAD_TRANSFER_ENCODING: HttpError =
    err("400 Bad Request", "Malformed Transfer-Encoding Header.");
pub const TE_IN_HTTP10: HttpError = err(
    "400 Bad Request",
    "Transfer-Encoding is not allowed in HTTP/1.0 requests.",
);
pub const TE_WITH_CL: HttpError = err(
    "400 Bad Request",
    "Transfer-Encoding and Content-Length must not be sent together.",
);
pub const MISSING_HOST: HttpError = err("400 Bad Request", "Missing Host header.");
pub const MULTIPLE_HOST: HttpError = err("400 Bad Request", "Multiple Host headers.");
pub const INVALID_HOST: HttpError = err("400 Bad Request", "Invalid Host header.");
pub const BAD_PROXY_HEADER: HttpError = err("400 Bad Request", "Invalid PROXY protocol header.");
pub const PLAIN_HTTP_ON_TLS: HttpError = err(
    "400 Bad Request",
    "The client sent a plain HTTP request, but this server only speaks HTTPS on this port.",
);
pub const BAD_CHUNKED_BODY: HttpError = err("400 Bad Request", "Malformed chunked request body.");
pub const CONNECT_NOT_ALLOWED: HttpError = err("405 Method Not Allowed", "");
pub const HEAD_TIMEOUT: HttpError = err("408 Request Timeout", "");
pub const BODY_TOO_LARGE: HttpError = err(
    "413 Request Entity Too Large",
    "The entity sent with the request exceeds the maximum allowed bytes.",
);
/// A body beyond the memory bound when `request_body_spool_limit` cannot hold it at all.
pub const BODY_TOO_LARGE_TO_BUFFER: HttpError = err(
    "413 Request Entity Too Large",
    "The request body is larger than this server buffers (request_body_spool_limit).",
);
pub const URI_TOO_LONG: HttpError = err(
    "414 Request-URI Too Long",
    "The Request-URI sent with the request exceeds the maximum allowed bytes.",
);
pub const EXPECTATION_FAILED: HttpError = err("417 Expectation Failed", "");
pub const HEADERS_TOO_LARGE: HttpError = err(
    "431 Request Header Fields Too Large",
    "The headers sent with the request exceed the maximum allowed bytes.",
);
pub const INTERNAL_ERROR: HttpError = err(
    "500 Internal Server Error",
    "The server encountered an unexpected condition which prevented it from fulfilling the \
     request.",
);
pub const CONTENT_LENGTH_OVERFLOW: HttpError = err(
    "500 Internal Server Error",
    "The requested resource returned more bytes than the declared Content-Length.",
);
pub const UNSUPPORTED_CODING: HttpError = err("501 Unimplemented", "");
pub const METHOD_TOO_LONG: HttpError = err(
    "501 Unimplemented",
    "The request method is longer than any method this server implements.",
);
pub const OVERLOADED: HttpError = err("503 Service Unavailable", "");
/// The temporary files holding request bodies are full (`request_body_spool_limit`).
pub const SPOOL_FULL: HttpError = err(
    "503 Service Unavailable",
    "The server is holding too many large request bodies; try again later.",
);
/// A temporary file for a request body could not be created or written.
pub const SPOOL_FAILED: HttpError = err(
    "500 Internal Server Error",
    "The server could not store the request body (temporary file error).",
);
pub const VERSION_NOT_SUPPORTED: HttpError =
    err("505 HTTP Version Not Supported", "Cannot fulfill request");
