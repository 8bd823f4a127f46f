"""Request smuggling: one rule of docs/http-policy.md per row, on raw sockets.

Every row is a raw first request, the status(es) its response may have, and whether the
connection must be closed right after it. The test appends a pipelined follow-up:

* rows that must close get `GET /SMUGGLED`: nothing after an error (or after
  `Connection: close`) may ever be served;
* rows that must keep the connection get `GET /NEXT` with `Connection: close`, which must be
  answered as the second response (so the first request's framing ended exactly where the
  client meant it to).

Many first requests also carry `/SMUGGLED` inside a body (CL.TE / TE.CL payloads, unread
bodies). The recording application notes every PATH_INFO it is called with: no row may ever
make it see `/SMUGGLED`. One server serves the whole module.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from _http import (
    Response,
    Talk,
    parse_responses,
    read_body,
    read_until_close,
    send_lenient,
    talk,
)
from conftest import Running, start_server

HOST = b"Host: example.test\r\n"
SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\n" + HOST + b"\r\n"
NEXT = b"GET /NEXT HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
BIG = 300 * 1024  # above the 256 KiB drain limit for unread bodies


# ---------------------------------------------------------------------------
# the application and the server
# ---------------------------------------------------------------------------

class PathRecorder:
    """Records every PATH_INFO; reads the body of POST/PUT unless the path starts /noread."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        with self.lock:
            self.paths.append(path)
        body = b""
        if method in ("POST", "PUT") and not path.startswith("/noread"):
            body = read_body(environ)
        out = f"{method} {path} {len(body)}".encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out)))])
        return [out]


@pytest.fixture(scope="module")
def recorder() -> PathRecorder:
    return PathRecorder()


@pytest.fixture(scope="module")
def running(recorder: PathRecorder) -> Iterator[Running]:
    server = start_server(recorder, timeout=5)
    yield server
    server.stop()


# ---------------------------------------------------------------------------
# request builders
# ---------------------------------------------------------------------------

def req(line: bytes = b"GET /r HTTP/1.1", fields: bytes = HOST, body: bytes = b"") -> bytes:
    """A raw request: the request line, raw field lines (each ending CRLF), a blank line."""
    return line + b"\r\n" + fields + b"\r\n" + body


def post(body: bytes, fields: bytes = b"", path: bytes = b"/r",
         version: bytes = b"HTTP/1.1") -> bytes:
    """POST with a correct Content-Length plus raw `fields`."""
    cl = b"Content-Length: %d\r\n" % len(body)
    return req(b"POST " + path + b" " + version, HOST + fields + cl, body)


def te(value: bytes, body: bytes, fields: bytes = b"", path: bytes = b"/r",
       version: bytes = b"HTTP/1.1", name: bytes = b"Transfer-Encoding") -> bytes:
    """POST with the raw Transfer-Encoding line `name: value`."""
    return req(b"POST " + path + b" " + version,
               HOST + fields + name + b": " + value + b"\r\n", body)


def chunked(raw: bytes, fields: bytes = b"", path: bytes = b"/r") -> bytes:
    """POST with `Transfer-Encoding: chunked` and the raw chunked body `raw`."""
    return te(b"chunked", raw, fields, path)


def field(name: bytes, value: bytes) -> bytes:
    """GET with one extra raw field."""
    return req(b"GET /r HTTP/1.1", HOST + name + b": " + value + b"\r\n")


def line(request_line: bytes) -> bytes:
    return req(request_line)


GOOD_CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    raw: bytes
    status: tuple[int, ...]   # acceptable statuses of the first response; 0: none, just close
    close: bool | None        # must the server close right after it? None: either is fine
    rule: str                 # the http-policy.md rule
    body: bytes | None = None  # expected start of the first response's body
    # A 2xx that is followed by a close must say `Connection: close` (False where the server
    # cannot know yet: an unread chunked body turns out too big or malformed only afterwards).
    announce_close: bool = True
    # (status, close, announce_close) when bodies are streamed (buffer_request_body=False),
    # where that differs.
    streamed: tuple[tuple[int, ...], bool | None, bool] | None = None


def bad(id: str, raw: bytes, rule: str, status: int = 400) -> Row:
    return Row(id, raw, (status,), True, rule)


def ok(id: str, raw: bytes, rule: str, body: bytes | None = None) -> Row:
    return Row(id, raw, (200,), False, rule, body)


ROWS: list[Row] = [
    # -- request line ------------------------------------------------------------------------
    bad("method-lower", line(b"get /r HTTP/1.1"), "method is case-sensitive: lower-case is 400"),
    bad("method-mixed", line(b"Get /r HTTP/1.1"), "method is case-sensitive: mixed-case is 400"),
    ok("method-unknown-upper", line(b"FOO /r HTTP/1.1"), "unknown upper-case methods reach the app",
       b"FOO /r"),
    bad("method-empty", line(b" /r HTTP/1.1"), "method is a non-empty token"),
    bad("method-slash", line(b"GE/T /r HTTP/1.1"), "method is a token"),
    bad("method-paren", line(b"GET() /r HTTP/1.1"), "method is a token"),
    bad("method-at", line(b"G@T /r HTTP/1.1"), "method is a token"),
    bad("method-colon", line(b"GET: /r HTTP/1.1"), "method is a token"),
    bad("sp-double-before-target", line(b"GET  /r HTTP/1.1"), "single spaces in the request line"),
    bad("sp-double-before-version", line(b"GET /r  HTTP/1.1"), "single spaces in the request line"),
    bad("sp-trailing", line(b"GET /r HTTP/1.1 "), "single spaces in the request line"),
    bad("sp-leading", line(b" GET /r HTTP/1.1"), "single spaces in the request line"),
    bad("tab-separator", line(b"GET\t/r HTTP/1.1"), "request-line separators are single spaces"),
    bad("tab-before-version", line(b"GET /r\tHTTP/1.1"), "request-line separators are single SP"),
    bad("extra-word", line(b"GET /r HTTP/1.1 junk"), "exactly three request-line parts"),
    bad("missing-version", line(b"GET /r"), "HTTP/0.9-style request lines are malformed"),
    bad("missing-target", line(b"GET HTTP/1.1"), "exactly three request-line parts"),
    ok("one-leading-crlf", b"\r\n" + line(b"GET /r HTTP/1.1"),
       "one empty line before the request line is ignored", b"GET /r"),
    bad("two-leading-crlf", b"\r\n\r\n" + line(b"GET /r HTTP/1.1"),
        "a second empty line before the request line is 400"),
    bad("leading-bare-lf", b"\n" + line(b"GET /r HTTP/1.1"), "bare LF anywhere in the head"),
    bad("request-line-bare-lf", b"GET /r HTTP/1.1\n" + HOST + b"\r\n",
        "request line must end in CRLF"),
    bad("request-line-bare-cr", b"GET /r HTTP/1.1\r" + HOST + b"\r\n",
        "bare CR in the head"),
    bad("all-lf", b"GET /r HTTP/1.1\nHost: example.test\n\n", "every line ends in CRLF"),
    bad("target-fragment", line(b"GET /r#frag HTTP/1.1"), "a #fragment in the target is 400"),
    bad("target-star-get", line(b"GET * HTTP/1.1"), "asterisk-form only with OPTIONS"),
    ok("target-star-options", line(b"OPTIONS * HTTP/1.1"), "asterisk-form with OPTIONS is served"),
    bad("target-authority-get", line(b"GET example.test:80 HTTP/1.1"),
        "authority-form only with CONNECT"),
    bad("target-relative", line(b"GET r HTTP/1.1"), "target must be origin- or absolute-form"),
    bad("connect", line(b"CONNECT example.test:443 HTTP/1.1"), "CONNECT is 405", 405),
    ok("absolute-form", line(b"GET http://example.test/abs?q=1 HTTP/1.1"),
       "absolute-form is accepted; PATH_INFO comes from it", b"GET /abs"),
    bad("absolute-form-bad-scheme", line(b"GET ftp://example.test/abs HTTP/1.1"),
        "absolute-form needs an http(s) scheme"),
    bad("absolute-form-bad-authority", line(b"GET http://exa mple/abs HTTP/1.1"),
        "space in the target"),
    bad("absolute-form-userinfo", line(b"GET http://user@example.test/abs HTTP/1.1"),
        "absolute-form authority is a valid Host (no userinfo)"),
    ok("absolute-form-no-path", line(b"GET http://example.test HTTP/1.1"),
       "absolute-form without a path is /", b"GET /"),
    bad("absolute-form-empty-authority", line(b"GET http:///abs HTTP/1.1"),
        "absolute-form with an empty authority"),
    bad("version-no-minor", line(b"GET /r HTTP/1"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-two-digit-major", line(b"GET /r HTTP/01.1"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-two-digit-minor", line(b"GET /r HTTP/1.10"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-lower", line(b"GET /r http/1.1"), "version is case-sensitive"),
    bad("version-space", line(b"GET /r HTTP/ 1.1"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-suffix", line(b"GET /r HTTP/1.1x"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-comma", line(b"GET /r HTTP/1,1"), "version is HTTP/DIGIT.DIGIT"),
    bad("version-shttp", line(b"GET /r SHTTP/1.1"), "version is HTTP/DIGIT.DIGIT"),
    Row("version-2", line(b"GET /r HTTP/2.0"), (505,), True, "another major version is 505"),
    Row("version-3", line(b"GET /r HTTP/3.1"), (505,), True, "another major version is 505"),
    Row("version-0.9", line(b"GET /r HTTP/0.9"), (505,), True, "another major version is 505"),
    ok("version-1.2", line(b"GET /r HTTP/1.2"), "a higher 1.x is served as 1.1", b"GET /r"),
    # (The HTTP/2 preface opens HTTP/2 now: tests/test_http2.py, and test_http_requests.py
    # for its HTTP/1 verdict with HTTP/2 off.)
    Row("uri-too-long", line(b"GET /" + b"a" * 9000 + b" HTTP/1.1"), (414,), True,
        "a request line beyond 8 KiB is 414"),
    Row("uri-too-long-unterminated", b"GET /" + b"a" * 9000, (414,), True,
        "an unterminated request line beyond 8 KiB is 414 without waiting"),
    # -- header fields -----------------------------------------------------------------------
    bad("field-bare-lf", req(fields=HOST + b"X-A: 1\nX-B: 2\r\n"), "bare LF in the head"),
    bad("field-bare-cr", req(fields=HOST + b"X-A: 1\rX-B: 2\r\n"), "bare CR in the head"),
    bad("field-end-lf-lf", b"GET /r HTTP/1.1\r\nHost: example.test\r\n\n",
        "the head ends in CRLF CRLF"),
    bad("field-end-lf-crlf", b"GET /r HTTP/1.1\r\nHost: example.test\n\r\n",
        "every field line ends in CRLF"),
    bad("field-space-before-colon", field(b"X-A ", b"1"), "whitespace before the colon"),
    bad("field-tab-before-colon", field(b"X-A\t", b"1"), "whitespace before the colon"),
    bad("field-no-colon", req(fields=HOST + b"X-A 1\r\n"), "a field line without a colon"),
    bad("field-empty-name", req(fields=HOST + b": 1\r\n"), "the field name is non-empty"),
    bad("field-space-in-name", field(b"X A", b"1"), "the field name is a token"),
    bad("obs-fold-space", req(fields=HOST + b"X-A: 1\r\n continued\r\n"), "obs-fold is 400"),
    bad("obs-fold-tab", req(fields=HOST + b"X-A: 1\r\n\tcontinued\r\n"), "obs-fold is 400"),
    bad("obs-fold-first-line", req(fields=b" X-A: 1\r\n" + HOST),
        "a first field line starting with whitespace is 400"),
    bad("obs-fold-te", te(b"gzip\r\n chunked", GOOD_CHUNKS), "obs-fold in Transfer-Encoding"),
    bad("obs-fold-cl", req(b"POST /r HTTP/1.1", HOST + b"Content-Length:\r\n 5\r\n", b"hello"),
        "obs-fold in Content-Length"),
    ok("field-value-htab", field(b"X-A", b"a\tb"), "HTAB is allowed in values"),
    ok("field-value-obs-text", field(b"X-A", b"caf\xe9 \xff"), "bytes >= 0x80 are allowed"),
    ok("field-value-ows", field(b"X-A", b" \t padded \t "), "leading/trailing OWS is trimmed"),
    ok("field-value-empty", field(b"X-A", b""), "an empty value is allowed"),
    ok("field-underscore", field(b"X_Forwarded_For", b"1.2.3.4"),
       "underscore names are valid tokens (kept out of the environ)"),
    # -- Host --------------------------------------------------------------------------------
    bad("host-missing-1.1", req(fields=b""), "HTTP/1.1 without Host is 400"),
    bad("host-missing-absolute-form", req(b"GET http://example.test/r HTTP/1.1", b""),
        "HTTP/1.1 without Host is 400 even in absolute-form"),
    Row("host-missing-1.0", req(b"GET /r HTTP/1.0", b""), (200,), True,
        "HTTP/1.0 needs no Host (and closes by default)"),
    bad("host-twice", req(fields=HOST + HOST), "more than one Host is 400"),
    bad("host-twice-different", req(fields=HOST + b"Host: evil.test\r\n"),
        "more than one Host is 400"),
    bad("host-comma-list", req(fields=b"Host: a.test, b.test\r\n"),
        "a Host list is invalid"),
    bad("host-space", req(fields=b"Host: exa mple.test\r\n"), "invalid Host is 400"),
    bad("host-slash", req(fields=b"Host: example.test/evil\r\n"), "invalid Host is 400"),
    bad("host-userinfo", req(fields=b"Host: user@example.test\r\n"), "invalid Host is 400"),
    bad("host-bad-port", req(fields=b"Host: example.test:8o\r\n"), "invalid Host is 400"),
    bad("host-obs-text", req(fields=b"Host: ex\xe4mple.test\r\n"), "invalid Host is 400"),
    bad("host-unclosed-ipv6", req(fields=b"Host: [::1\r\n"), "invalid Host is 400"),
    ok("host-ipv6", req(fields=b"Host: [::1]:8080\r\n"), "an IP-literal Host is valid"),
    ok("host-port", req(fields=b"Host: example.test:8080\r\n"), "host:port is valid"),
    ok("host-absolute-form-differs", req(b"GET http://other.test/r HTTP/1.1"),
       "absolute-form authority wins over Host"),
    # -- Content-Length ----------------------------------------------------------------------
    ok("cl-valid", post(b"hello"), "Content-Length delimits the body", b"POST /r 5"),
    ok("cl-leading-zeros", req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 005\r\n", b"hello"),
       "Content-Length is 1*DIGIT (leading zeros allowed)", b"POST /r 5"),
    ok("cl-ows", req(b"POST /r HTTP/1.1", HOST + b"Content-Length: \t5 \t\r\n", b"hello"),
       "OWS around the value is trimmed", b"POST /r 5"),
    ok("cl-body-is-a-request", post(SMUGGLED), "a body that looks like a request is data",
       b"POST /r %d" % len(SMUGGLED)),
    ok("cl-on-get", req(b"GET /r HTTP/1.1", HOST + b"Content-Length: %d\r\n" % len(SMUGGLED),
                        SMUGGLED), "a GET body is skipped, never parsed", b"GET /r"),
    ok("cl-zero", req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 0\r\n"),
       "Content-Length 0 is an empty body", b"POST /r 0"),
    Row("cl-identical-twice",
        req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
        (200, 400), None, "identical Content-Length values may be collapsed"),
    Row("cl-identical-list", req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 5, 5\r\n",
                                 b"hello"),
        (200, 400), None, "identical Content-Length values may be collapsed"),
]


def _cl_bad(value: bytes, rule: str) -> Row:
    raw = req(b"POST /r HTTP/1.1", HOST + b"Content-Length: " + value + b"\r\n",
              b"hello" + SMUGGLED)
    return bad("cl-" + value.decode("latin-1").encode("unicode_escape").decode(), raw, rule)


ROWS += [
    _cl_bad(b"+5", "Content-Length sign"),
    _cl_bad(b"-5", "Content-Length sign"),
    _cl_bad(b"0x5", "Content-Length in hex"),
    _cl_bad(b"5_0", "Content-Length with an underscore"),
    _cl_bad(b"5 0", "Content-Length with an inner space"),
    _cl_bad(b"5\t0", "Content-Length with an inner tab"),
    _cl_bad(b"", "empty Content-Length"),
    _cl_bad(b"1e3", "Content-Length in exponent notation"),
    _cl_bad(b"5.0", "Content-Length with a decimal point"),
    _cl_bad(b"5a", "Content-Length with a trailing letter"),
    _cl_bad(b"5,6", "a Content-Length list with differing values"),
    _cl_bad(b"5, 6", "a Content-Length list with differing values"),
    _cl_bad(b"5,", "a Content-Length list with an empty item"),
    _cl_bad(b"9223372036854775808", "Content-Length must fit in 63 bits"),
    _cl_bad(b"99999999999999999999999", "Content-Length must fit in 63 bits"),
    _cl_bad(b"\xd9\xa1", "Content-Length with a non-ASCII digit"),
    _cl_bad(b"\"5\"", "a quoted Content-Length"),
    bad("cl-differing-fields",
        req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n",
            b"hello" + SMUGGLED), "several Content-Length fields with differing values"),
    bad("cl-differing-fields-zero-first",
        req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 0\r\nContent-Length: 5\r\n",
            b"hello" + SMUGGLED), "several Content-Length fields with differing values"),
    bad("cl-one-malformed-of-two",
        req(b"POST /r HTTP/1.1", HOST + b"Content-Length: 5\r\nContent-Length: 5x\r\n",
            b"hello" + SMUGGLED), "any malformed Content-Length field"),
    bad("cl-space-before-colon",
        req(b"POST /r HTTP/1.1", HOST + b"Content-Length : 5\r\n", b"hello" + SMUGGLED),
        "whitespace before the colon"),
    # -- Content-Length with Transfer-Encoding -------------------------------------------------
    bad("cl-te", te(b"chunked", b"0\r\n\r\n" + SMUGGLED, b"Content-Length: 5\r\n"),
        "TE together with CL"),
    bad("te-cl", req(b"POST /r HTTP/1.1",
                     HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                     b"0\r\n\r\n" + SMUGGLED), "TE together with CL (in either order)"),
    bad("cl-te-classic-CL.TE",
        te(b"chunked", b"0\r\n\r\n" + SMUGGLED, b"Content-Length: %d\r\n" % (5 + len(SMUGGLED))),
        "CL.TE: a front end using CL forwards a smuggled request"),
    bad("cl-te-classic-TE.CL",
        te(b"chunked", b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
           b"Content-Length: 4\r\n"), "TE.CL: a back end using CL sees a smuggled request"),
    bad("cl-zero-te", te(b"chunked", GOOD_CHUNKS, b"Content-Length: 0\r\n"),
        "TE together with CL: 0"),
    bad("cl-te-obfuscated", te(b"chunked", b"0\r\n\r\n" + SMUGGLED, b"Content-Length: 5\r\n",
                               name=b"transfer-encoding"), "header names are case-insensitive"),
    # -- Transfer-Encoding -------------------------------------------------------------------
    ok("te-chunked", chunked(GOOD_CHUNKS), "chunked is decoded", b"POST /r 5"),
    ok("te-upper", te(b"CHUNKED", GOOD_CHUNKS), "chunked is case-insensitive", b"POST /r 5"),
    ok("te-mixed-case", te(b"cHuNkEd", GOOD_CHUNKS), "chunked is case-insensitive", b"POST /r 5"),
    ok("te-name-lower", te(b"chunked", GOOD_CHUNKS, name=b"transfer-encoding"),
       "field names are case-insensitive", b"POST /r 5"),
    ok("te-leading-tab", te(b"\tchunked", GOOD_CHUNKS), "leading HTAB is OWS, trimmed",
       b"POST /r 5"),
    ok("te-trailing-space", te(b"chunked  ", GOOD_CHUNKS), "trailing OWS is trimmed",
       b"POST /r 5"),
    bad("te-space-before-colon", te(b"chunked", GOOD_CHUNKS + SMUGGLED,
                                    name=b"Transfer-Encoding "), "whitespace before the colon"),
    bad("te-tab-before-colon", te(b"chunked", GOOD_CHUNKS + SMUGGLED,
                                  name=b"Transfer-Encoding\t"), "whitespace before the colon"),
    bad("te-vtab", te(b"chunked\x0b", GOOD_CHUNKS + SMUGGLED), "control characters in values"),
    bad("te-formfeed", te(b"\x0cchunked", GOOD_CHUNKS + SMUGGLED), "control characters in values"),
    bad("te-nul", te(b"chunked\x00", GOOD_CHUNKS + SMUGGLED), "NUL in values"),
    bad("te-xchunked", te(b"xchunked", GOOD_CHUNKS + SMUGGLED), "chunked must be the last coding"),
    bad("te-chunkedx", te(b"chunkedx", GOOD_CHUNKS + SMUGGLED), "chunked must be the last coding"),
    bad("te-quoted", te(b'"chunked"', GOOD_CHUNKS + SMUGGLED), "chunked must be the last coding"),
    bad("te-params", te(b"chunked;q=1", GOOD_CHUNKS + SMUGGLED), "chunked takes no parameters"),
    bad("te-gzip", te(b"gzip", GOOD_CHUNKS + SMUGGLED), "a coding without final chunked"),
    bad("te-identity", te(b"identity", GOOD_CHUNKS + SMUGGLED), "a coding without final chunked"),
    bad("te-empty", te(b"", GOOD_CHUNKS + SMUGGLED), "an empty Transfer-Encoding"),
    bad("te-chunked-gzip", te(b"chunked, gzip", GOOD_CHUNKS + SMUGGLED),
        "chunked must be the last coding"),
    bad("te-chunked-twice", te(b"chunked, chunked", GOOD_CHUNKS + SMUGGLED),
        "chunked must appear once"),
    bad("te-two-fields-chunked", te(b"chunked", GOOD_CHUNKS + SMUGGLED,
                                    b"Transfer-Encoding: chunked\r\n"), "chunked must appear once"),
    bad("te-two-fields-chunked-identity",
        te(b"identity", GOOD_CHUNKS + SMUGGLED, b"Transfer-Encoding: chunked\r\n"),
        "chunked must be the last coding across fields"),
    bad("te-gzip-chunked", te(b"gzip, chunked", GOOD_CHUNKS + SMUGGLED),
        "another coding before chunked is 501", 501),
    bad("te-two-fields-gzip-chunked",
        te(b"chunked", GOOD_CHUNKS + SMUGGLED, b"Transfer-Encoding: gzip\r\n"),
        "another coding before chunked (across fields) is 501", 501),
    bad("te-http10", te(b"chunked", GOOD_CHUNKS + SMUGGLED, version=b"HTTP/1.0"),
        "Transfer-Encoding on HTTP/1.0 is 400"),
    bad("te-http10-with-cl",
        te(b"chunked", GOOD_CHUNKS + SMUGGLED, b"Content-Length: 5\r\n", version=b"HTTP/1.0"),
        "Transfer-Encoding on HTTP/1.0 is 400"),
    bad("te-http10-identity", te(b"identity", b"hello" + SMUGGLED, version=b"HTTP/1.0"),
        "Transfer-Encoding on HTTP/1.0 is 400"),
    # -- chunk sizes -------------------------------------------------------------------------
    ok("chunk-16-digits", chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"),
       "16 hex digits are allowed", b"POST /r 5"),
    ok("chunk-upper-hex", chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), "hex digits in either case",
       b"POST /r 10"),
    ok("chunk-space-ext", chunked(b"5 ;ext\r\nhello\r\n0\r\n\r\n"),
       "spaces before a ; extension are allowed", b"POST /r 5"),
    ok("chunk-tab-ext", chunked(b"5\t;ext\r\nhello\r\n0\r\n\r\n"),
       "tabs before a ; extension are allowed", b"POST /r 5"),
    ok("chunk-ext-quoted", chunked(b'5;a="b c;d"\r\nhello\r\n0\r\n\r\n'),
       "quoted extension values", b"POST /r 5"),
    ok("chunk-data-crlf", chunked(b"3\r\n\r\n\r\r\n0\r\n\r\n"),
       "CR and LF inside chunk data are data", b"POST /r 3"),
    ok("chunk-data-is-request", chunked(b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"),
       "chunk data that looks like a request is data", b"POST /r %d" % len(SMUGGLED)),
]


def _chunk_bad(id: str, raw_body: bytes, rule: str) -> Row:
    return bad("chunk-" + id, chunked(raw_body + SMUGGLED), rule)


ROWS += [
    _chunk_bad("0x", b"0x5\r\nhello\r\n0\r\n\r\n", "chunk-size is hex digits only (no 0x)"),
    _chunk_bad("plus", b"+5\r\nhello\r\n0\r\n\r\n", "chunk-size has no sign"),
    _chunk_bad("minus", b"-1\r\nhello\r\n0\r\n\r\n", "chunk-size has no sign"),
    _chunk_bad("17-digits", b"00000000000000005\r\nhello\r\n0\r\n\r\n",
               "chunk-size is at most 16 hex digits"),
    _chunk_bad("17-digits-overflow", b"10000000000000000\r\nhello\r\n0\r\n\r\n",
               "chunk-size is at most 16 hex digits (overflow)"),
    _chunk_bad("empty", b"\r\nhello\r\n0\r\n\r\n", "chunk-size is 1 to 16 hex digits"),
    _chunk_bad("not-hex", b"g\r\nhello\r\n0\r\n\r\n", "chunk-size is hex"),
    _chunk_bad("underscore", b"0_5\r\nhello\r\n0\r\n\r\n", "chunk-size is hex"),
    _chunk_bad("space-inside", b"0 5\r\nhello\r\n0\r\n\r\n", "nothing but ; after size spaces"),
    _chunk_bad("trailing-space", b"5 \r\nhello\r\n0\r\n\r\n",
               "spaces after the size only before a ; extension"),
    _chunk_bad("leading-space", b" 5\r\nhello\r\n0\r\n\r\n", "chunk-size starts with a digit"),
    _chunk_bad("trailing-junk", b"5x\r\nhello\r\n0\r\n\r\n", "nothing but ; or CRLF after size"),
    _chunk_bad("size-lf-only", b"5\nhello\r\n0\r\n\r\n", "chunk-size line ends in CRLF"),
    _chunk_bad("size-cr-only", b"5\rhello\r\n0\r\n\r\n", "chunk-size line ends in CRLF"),
    _chunk_bad("all-lf", b"5\nhello\n0\n\n", "chunk lines end in CRLF"),
    _chunk_bad("data-lf-only", b"5\r\nhello\n0\r\n\r\n", "chunk data is followed by CRLF"),
    _chunk_bad("data-no-crlf", b"5\r\nhello0\r\n\r\n", "chunk data is followed by CRLF"),
    _chunk_bad("data-too-long", b"5\r\nhelloXX\r\n0\r\n\r\n", "chunk data is followed by CRLF"),
    _chunk_bad("data-too-short", b"7\r\nhello\r\n0\r\n\r\n", "chunk data is followed by CRLF"),
    _chunk_bad("size-smaller", b"3\r\nhello\r\n0\r\n\r\n", "chunk data is followed by CRLF"),
    _chunk_bad("ext-lf", b"5;a\nb\r\nhello\r\n0\r\n\r\n", "extensions may not contain LF"),
    _chunk_bad("ext-cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n", "extensions may not contain CR"),
    _chunk_bad("ext-nul", b"5;a\x00b\r\nhello\r\n0\r\n\r\n", "no control characters in extensions"),
    _chunk_bad("ext-too-long", b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
               "extensions are bounded (4 KiB per body)"),
    _chunk_bad("ext-many", b"".join(b"1;" + b"e" * 200 + b"\r\nx\r\n" for _ in range(25))
               + b"0\r\n\r\n", "extensions are bounded in total per body"),
    _chunk_bad("last-no-crlf", b"5\r\nhello\r\n0\r\n", "the last chunk is followed by a CRLF"),
    _chunk_bad("last-lf", b"5\r\nhello\r\n0\n\n", "the last chunk line ends in CRLF"),
    _chunk_bad("final-lf", b"5\r\nhello\r\n0\r\n\n", "the final line is CRLF"),
    # a trailer line without colon: the smuggled request line itself
    bad("chunk-last-then-request", chunked(b"0\r\n" + SMUGGLED),
        "after the last chunk come trailer fields, never a request"),
    bad("chunk-size-eats-request",
        chunked(b"a\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        "a chunk swallowing the 'last chunk' leaves garbage, never a request"),
    # -- trailers ----------------------------------------------------------------------------
    ok("trailer-one", chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), "trailer fields are consumed",
       b"POST /r 5"),
    ok("trailer-cl", chunked(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
       "trailers never change framing", b"POST /r 5"),
    ok("trailer-te", chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
       "trailers never change framing", b"POST /r 5"),
    ok("trailer-obs-text", chunked(b"5\r\nhello\r\n0\r\nX-T: \xe9\r\n\r\n"),
       "trailer values may hold bytes >= 0x80", b"POST /r 5"),
    ok("trailer-ext-on-last", chunked(b"5\r\nhello\r\n0;ext=1\r\nX-T: 1\r\n\r\n"),
       "an extension on the last chunk", b"POST /r 5"),
    bad("trailer-obs-fold", chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n folded\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: no obs-fold"),
    bad("trailer-space-before-colon",
        chunked(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: no space before the colon"),
    bad("trailer-no-colon", chunked(b"5\r\nhello\r\n0\r\nX-T\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: a colon"),
    bad("trailer-bare-lf", chunked(b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: CRLF"),
    bad("trailer-bare-cr", chunked(b"5\r\nhello\r\n0\r\nX-T: 1\rX: 2\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: no bare CR"),
    bad("trailer-nul", chunked(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: no NUL"),
    bad("trailer-name-nontoken", chunked(b"5\r\nhello\r\n0\r\nX(T): 1\r\n\r\n" + SMUGGLED),
        "trailers follow the header syntax: token names"),
    bad("trailer-too-large",
        chunked(b"5\r\nhello\r\n0\r\n" + b"X-T: " + b"t" * 17000 + b"\r\n\r\n" + SMUGGLED),
        "trailers are bounded (16 KiB)"),
    # -- Connection --------------------------------------------------------------------------
    Row("conn-close", field(b"Connection", b"close"), (200,), True,
        "after Connection: close no pipelined request is served"),
    Row("conn-close-upper", field(b"Connection", b"CLOSE"), (200,), True,
        "Connection tokens are case-insensitive"),
    Row("conn-keep-alive-close", field(b"Connection", b"keep-alive, close"), (200,), True,
        "Connection is a list: any close token closes"),
    Row("conn-foo-close", field(b"Connection", b"foo, Close"), (200,), True,
        "Connection is a list: any close token closes"),
    Row("conn-close-second-field",
        req(fields=HOST + b"Connection: keep-alive\r\nConnection: close\r\n"), (200,), True,
        "close in a second Connection field"),
    Row("conn-close-post-body", post(SMUGGLED, b"Connection: close\r\n"), (200,), True,
        "after Connection: close no pipelined request is served", b"POST /r"),
    Row("http10-default-close", req(b"GET /r HTTP/1.0"), (200,), True,
        "HTTP/1.0 closes unless keep-alive"),
    ok("http10-keep-alive", req(b"GET /r HTTP/1.0", HOST + b"Connection: keep-alive\r\n"),
       "HTTP/1.0 with keep-alive is persistent"),
    Row("http10-keep-alive-close",
        req(b"GET /r HTTP/1.0", HOST + b"Connection: keep-alive, close\r\n"), (200,), True,
        "close wins over keep-alive"),
    # -- Expect ------------------------------------------------------------------------------
    ok("expect-continue-read", post(b"hello", b"Expect: 100-continue\r\n"),
       "100-continue with a reading app", b"POST /r 5"),
    ok("expect-continue-case", post(b"hello", b"Expect: 100-Continue\r\n"),
       "Expect tokens are case-insensitive", b"POST /r 5"),
    Row("expect-continue-unread", post(SMUGGLED, b"Expect: 100-continue\r\n", b"/noread"),
        (200,), True, "100-continue and the app responds without reading: close"),
    Row("expect-other", post(SMUGGLED, b"Expect: something\r\n"), (417,), None,
        "an Expect other than 100-continue is 417"),
    # -- bodies left unread ------------------------------------------------------------------
    ok("unread-cl-small", post(SMUGGLED, path=b"/noread"),
       "a small unread body is drained, never parsed", b"POST /noread 0"),
    ok("unread-chunked-small",
       chunked(b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n", path=b"/noread"),
       "a small unread chunked body is drained, never parsed", b"POST /noread 0"),
    ok("unread-chunked-trailers",
       chunked(b"1\r\nx\r\n0\r\nX-T: 1\r\n\r\n", path=b"/noread"),
       "draining consumes trailers too", b"POST /noread 0"),
    ok("unread-get-body", req(b"GET /r HTTP/1.1",
                              HOST + b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED),
       "a GET body the app ignores is drained", b"GET /r 0"),
    # Bodies are collected before the application runs (buffer_request_body, the default): a
    # big unread body was read whole, so the connection is kept; a malformed one is refused
    # before the application. `streamed` holds the verdicts with buffer_request_body=False.
    Row("unread-cl-big", post(SMUGGLED * (BIG // len(SMUGGLED) + 1), path=b"/noread"),
        (200,), False, "a big unread body collected whole: the connection is kept",
        streamed=((200,), True, True)),
    Row("unread-chunked-big",
        chunked(b"".join(b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n"
                         for _ in range(BIG // len(SMUGGLED) + 1)) + b"0\r\n\r\n",
                path=b"/noread"),
        (200,), False, "a big unread chunked body collected whole: the connection is kept",
        streamed=((200,), True, False)),
    Row("unread-chunked-malformed", chunked(b"zz\r\n" + SMUGGLED, path=b"/noread"),
        (400,), True, "a malformed body is refused while collected, never parsed",
        streamed=((200,), True, False)),
    Row("unread-chunked-bad-after-data",
        chunked(b"5\r\nhelloXX" + SMUGGLED, path=b"/noread"),
        (400,), True, "a malformed body is refused while collected, never parsed",
        streamed=((200,), True, False)),
    # -- limits ------------------------------------------------------------------------------
    Row("head-too-large", field(b"X-Big", b"b" * 70_000), (431,), True,
        "the head is capped at 64 KiB"),
    Row("too-many-fields", req(fields=HOST + b"".join(b"X-F%d: 1\r\n" % i for i in range(101))),
        (431,), True, "the head is capped at 100 fields"),
    ok("fields-at-cap", req(fields=HOST + b"".join(b"X-F%d: 1\r\n" % i for i in range(99))),
       "100 fields are accepted"),
]

# -- control characters and non-ASCII, one row per byte and place ---------------------------
for _b in (0x00, 0x01, 0x0b, 0x0c, 0x1b, 0x7f, 0x80, 0xc3, 0xff):
    ROWS.append(bad(f"target-byte-{_b:02x}", line(b"GET /a" + bytes([_b]) + b"b HTTP/1.1"),
                    "NUL, control characters and bytes >= 0x80 in the target"))
ROWS.append(bad("target-tab", line(b"GET /a\tb HTTP/1.1"), "HTAB in the target"))
ROWS.append(bad("target-bare-cr", line(b"GET /a\rb HTTP/1.1"), "bare CR in the target"))
for _b in (0x00, 0x01, 0x7f, 0x80, 0xc9, 0xff):
    ROWS.append(bad(f"method-byte-{_b:02x}", line(b"GE" + bytes([_b]) + b"T /r HTTP/1.1"),
                    "the method is a token: no control or non-ASCII bytes"))
for _b in (0x00, 0x01, 0x0b, 0x7f, 0x80, 0xff, ord("("), ord("@"), ord('"'), ord("/"),
           ord("["), ord("{"), ord("=")):
    ROWS.append(bad(f"name-byte-{_b:02x}", field(b"X-" + bytes([_b]) + b"A", b"1"),
                    "the field name is a token"))
for _b in (0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f):
    ROWS.append(bad(f"value-byte-{_b:02x}", field(b"X-A", b"a" + bytes([_b]) + b"b"),
                    "NUL and control characters other than HTAB in values"))
ROWS.append(bad("cl-name-nul", req(b"POST /r HTTP/1.1", HOST + b"Content-Length\x00: 5\r\n",
                                   b"hello" + SMUGGLED), "NUL in a field name"))


IDS = [row.id for row in ROWS]
assert len(set(IDS)) == len(IDS), "duplicate row ids"


# ---------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------

def _first_method(raw: bytes) -> str:
    word = raw.lstrip(b"\r\n").split(b" ", 1)[0]
    return "HEAD" if word == b"HEAD" else "GET"


def _send_bytewise(running: Running, data: bytes, timeout: float) -> Talk:
    """Like talk(), but one byte per send (TCP_NODELAY): every split point of the head."""
    start = time.monotonic()
    with running.connect(timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            if not send_lenient(sock, data[i:i + 1]):
                break
        got, closed = read_until_close(sock, timeout)
    return Talk(got, closed, time.monotonic() - start)


def check_row(running: Running, recorder: PathRecorder, row: Row, bytewise: bool) -> None:
    follow = SMUGGLED if row.close else NEXT
    seen_before = len(recorder.paths)
    if bytewise:
        result = _send_bytewise(running, row.raw + follow, timeout=3)
    else:
        result = talk(running, row.raw + follow, timeout=3)
    seen = recorder.paths[seen_before:]
    assert not any("SMUGGLED" in p for p in seen), (
        f"{row.rule}: the application was called for a smuggled request: {seen}")

    if not result.data:
        assert 0 in row.status, f"{row.rule}: no response at all (closed={result.closed})"
        assert result.closed, f"{row.rule}: no response and the connection left open"
        return
    responses: list[Response] = parse_responses(result.data, [_first_method(row.raw), "GET"])
    first = responses[0]
    assert first.status in row.status, f"{row.rule}: expected {row.status}, got {first!r}"
    if row.body is not None:
        assert first.body.startswith(row.body), f"{row.rule}: {first!r}"
    if first.status >= 400:
        assert first.framing == "length" and first.complete, f"{row.rule}: {first!r}"

    if row.close:
        assert len(responses) == 1, f"{row.rule}: served after it should have closed: {responses}"
        assert result.closed, f"{row.rule}: connection not closed after the first response"
        http10 = row.raw.split(b"\r\n", 1)[0].endswith(b" HTTP/1.0")
        if row.announce_close and first.status < 300 and not http10:
            # (an HTTP/1.0 response implies close; stogie sends no Connection header there)
            assert first.says_close, f"{row.rule}: closing without Connection: close: {first!r}"
    elif row.close is False:
        assert len(responses) == 2, f"{row.rule}: expected the follow-up served: {responses}"
        assert not first.says_close, f"{row.rule}: {first!r}"
        second = responses[1]
        assert (second.status, second.body) == (200, b"GET /NEXT 0"), (
            f"{row.rule}: the follow-up was not served as sent: {second!r}")
        assert result.closed, f"{row.rule}: follow-up with Connection: close did not close"
    else:
        for extra in responses[1:]:
            assert (extra.status, extra.body) == (200, b"GET /NEXT 0"), f"{row.rule}: {extra!r}"


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row(running: Running, recorder: PathRecorder, row: Row) -> None:
    check_row(running, recorder, row, bytewise=False)


SMALL_ROWS = [row for row in ROWS if len(row.raw) <= 160]


@pytest.mark.parametrize("row", SMALL_ROWS, ids=[row.id for row in SMALL_ROWS])
def test_row_one_byte_at_a_time(running: Running, recorder: PathRecorder, row: Row) -> None:
    """The same verdict whatever the split: the parser state machine never decides early."""
    check_row(running, recorder, row, bytewise=True)


STREAMED_ROWS = [row for row in ROWS if row.streamed is not None]


@pytest.fixture(scope="module")
def running_streamed(recorder: PathRecorder) -> Iterator[Running]:
    server = start_server(recorder, timeout=5, buffer_request_body=False)
    yield server
    server.stop()


@pytest.mark.parametrize("row", STREAMED_ROWS, ids=[row.id for row in STREAMED_ROWS])
def test_row_streamed(running_streamed: Running, recorder: PathRecorder, row: Row) -> None:
    """The rows whose verdict depends on the application reading the body from the socket."""
    assert row.streamed is not None
    status, close, announce_close = row.streamed
    streamed = Row(row.id, row.raw, status, close, row.rule, row.body, announce_close)
    check_row(running_streamed, recorder, streamed, bytewise=False)


def test_table_size() -> None:
    assert len(ROWS) >= 150, len(ROWS)


def test_nothing_smuggled_in_the_whole_module(recorder: PathRecorder) -> None:
    """Runs last (file order): no row, even a failed one, ever reached the app smuggled."""
    assert recorder.paths, "the rows did not run"
    assert not [p for p in recorder.paths if "SMUGGLED" in p]
