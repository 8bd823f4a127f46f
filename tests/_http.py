"""Raw-HTTP helpers for the protocol tests (test_http_*.py).

A strict response parser (status line, header pairs, body framed by Content-Length, chunked
or close, honouring HEAD/1xx/204/304), a small persistent client that can tell "the server
closed the connection" from "the server is waiting", request builders, and recording apps.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from wsgiref.validate import validator

HOST = "example.test"

# ---------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------

HeaderList = Sequence[tuple[Any, Any]]


def _b(text: Any) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode("latin-1")


def request(method: Any = "GET", target: Any = "/", version: Any = "HTTP/1.1",
            headers: HeaderList = (), body: bytes = b"", host: Any = HOST,
            content_length: bool = False) -> bytes:
    """Build raw request bytes. `host=None` sends no Host field; `content_length=True`
    adds a Content-Length for `body`."""
    out = _b(method) + b" " + _b(target) + b" " + _b(version) + b"\r\n"
    if host is not None:
        out += b"Host: " + _b(host) + b"\r\n"
    for name, value in headers:
        out += _b(name) + b": " + _b(value) + b"\r\n"
    if content_length:
        out += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return out + b"\r\n" + body


def get(target: str = "/", version: str = "HTTP/1.1", headers: HeaderList = (),
        **kw: Any) -> bytes:
    return request("GET", target, version, headers, **kw)


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    """A well-formed chunked body (lower-case hex sizes), optional raw trailer lines."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return out + b"0\r\n" + trailers + b"\r\n"


# ---------------------------------------------------------------------------
# responses
# ---------------------------------------------------------------------------

_STATUS_RE = re.compile(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$")


class Incomplete(Exception):
    """Not enough bytes yet for a whole response."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    head: bytes                       # status line + header lines + blank line, as sent
    body: bytes = b""                 # decoded body
    raw_body: bytes = b""             # body bytes as on the wire
    framing: str = "none"             # none | length | chunked | close
    complete: bool = True             # the framing said the body ended (not cut by EOF)
    trailers: bytes = b""
    interim: list[Response] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        values = self.header_list(name)
        return values[0] if values else default

    def header_list(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def count(self, name: str) -> int:
        return len(self.header_list(name))

    @property
    def connection_tokens(self) -> set[str]:
        tokens = set()
        for value in self.header_list("Connection"):
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
        return tokens

    @property
    def says_close(self) -> bool:
        return "close" in self.connection_tokens

    def __repr__(self) -> str:  # compact, for assertion messages
        return (f"Response({self.version} {self.status} {self.reason!r}, "
                f"headers={self.headers!r}, body={self.body[:200]!r}, framing={self.framing},"
                f" complete={self.complete})")


def _parse_chunked(data: bytes) -> tuple[bytes, bytes, bool, int]:
    """Strictly decode a chunked body: (body, trailers, terminated, bytes consumed)."""
    pos = 0
    out = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), b"", False, len(data)
        size_line = data[pos:eol]
        size_text = size_line.split(b";", 1)[0]
        if not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
            raise AssertionError(f"bad chunk-size line in response: {size_line[:80]!r}")
        size = int(size_text, 16)
        start = eol + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", eol)
            if data[start:start + 2] == b"\r\n":
                return b"".join(out), b"", True, start + 2
            if end < 0:
                return b"".join(out), b"", False, len(data)
            return b"".join(out), data[start:end + 2], True, end + 4
        if len(data) < start + size + 2:
            out.append(data[start:start + size])
            return b"".join(out), b"", False, len(data)
        out.append(data[start:start + size])
        if data[start + size:start + size + 2] != b"\r\n":
            raise AssertionError(f"chunk data not followed by CRLF: {data[start:start+size+8]!r}")
        pos = start + size + 2


def parse_response(data: bytes, method: str = "GET", eof: bool = True) -> tuple[Response, bytes]:
    """Parse one response (final or interim) from the start of `data`.

    Returns it and the bytes after it. With eof=False raises Incomplete when more bytes
    are needed; with eof=True a truncated body is returned with complete=False.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        if eof:
            raise AssertionError(f"no complete response head in {data[:300]!r}")
        raise Incomplete
    head = data[:head_end + 4]
    rest = data[head_end + 4:]
    lines = data[:head_end].split(b"\r\n")
    for line in lines:
        assert b"\n" not in line and b"\r" not in line, f"bare CR/LF in response head {head!r}"
    match = _STATUS_RE.match(lines[0])
    assert match, f"bad status line {lines[0]!r} in {data[:300]!r}"
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        assert sep and name and name.strip() == name, f"bad response header line {line!r}"
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    resp = Response(match.group(1).decode(), int(match.group(2)),
                    (match.group(3) or b"").decode("latin-1"), headers, head)
    if 100 <= resp.status < 200 or resp.status in (204, 304) or method == "HEAD":
        return resp, rest
    te = ",".join(resp.header_list("Transfer-Encoding")).lower()
    cl = resp.header_list("Content-Length")
    if te:
        assert te.replace(" ", "").split(",")[-1] == "chunked", f"response TE {te!r}"
        body, trailers, terminated, used = _parse_chunked(rest)
        if not terminated and not eof:
            raise Incomplete
        resp.body, resp.trailers, resp.complete = body, trailers, terminated
        resp.framing, resp.raw_body = "chunked", rest[:used]
        return resp, rest[used:]
    if cl:
        assert len(set(cl)) == 1 and cl[0].isdigit(), f"bad response Content-Length {cl!r}"
        n = int(cl[0])
        if len(rest) < n and not eof:
            raise Incomplete
        resp.body = resp.raw_body = rest[:n]
        resp.framing, resp.complete = "length", len(rest) >= n
        return resp, rest[n:]
    if not eof:
        raise Incomplete
    resp.body = resp.raw_body = rest
    resp.framing = "close"
    return resp, b""


def parse_responses(data: bytes, methods: Iterable[str] = ()) -> list[Response]:
    """Split everything read from a connection into final responses (1xx go to .interim).

    `methods` gives the request method for each response in order (HEAD matters);
    responses beyond it are taken as GET.
    """
    methods = list(methods)
    out: list[Response] = []
    interim: list[Response] = []
    while data:
        method = methods[len(out)] if len(out) < len(methods) else "GET"
        resp, data = parse_response(data, method)
        if 100 <= resp.status < 200:
            interim.append(resp)
            continue
        resp.interim, interim = interim, []
        out.append(resp)
    assert not interim, f"interim response(s) without a final one: {interim!r}"
    return out


# ---------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------

@dataclass
class Talk:
    """What one raw exchange produced."""
    data: bytes
    closed: bool          # the server closed (EOF or reset) before our read timeout
    elapsed: float
    methods: tuple[str, ...] = ()

    @property
    def responses(self) -> list[Response]:
        return parse_responses(self.data, self.methods)


def send_lenient(sock: socket.socket, data: bytes) -> bool:
    """sendall that tolerates the server closing early (it may answer before reading all)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until EOF/reset (closed=True) or until `timeout` passes in total (closed=False)."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), True
        chunks.append(data)


def talk(running: Any, data: bytes, timeout: float = 3.0, shut_write: bool = False,
         methods: Iterable[str] = ()) -> Talk:
    """Send `data` on a fresh connection and read until the server closes or `timeout`."""
    start = time.monotonic()
    with running.connect(timeout) as sock:
        send_lenient(sock, data)
        if shut_write:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        got, closed = read_until_close(sock, timeout)
    return Talk(got, closed, time.monotonic() - start, tuple(methods))


class Client:
    """One persistent connection: send bytes, read whole responses, probe for closure."""

    def __init__(self, running: Any, timeout: float = 5.0) -> None:
        self.sock = running.connect(timeout)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        return send_lenient(self.sock, data)

    def shut_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _recv(self, timeout: float) -> bool:
        """One recv into the buffer; False on timeout. Sets eof on EOF/reset."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return True

    def response(self, method: str = "GET", timeout: float | None = None,
                 keep_interim: bool = False) -> Response:
        """Read the next final response (interim 1xx ones are collected into .interim)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim: list[Response] = []
        while True:
            if self.buf:
                try:
                    resp, rest = parse_response(bytes(self.buf), method, eof=self.eof)
                except Incomplete:
                    pass
                else:
                    del self.buf[:len(self.buf) - len(rest)]
                    if 100 <= resp.status < 200 and not keep_interim:
                        interim.append(resp)
                        continue
                    resp.interim = interim
                    return resp
            if self.eof:
                raise AssertionError(f"connection closed; no (further) response; "
                                     f"interim={interim!r}, buffered={bytes(self.buf)[:300]!r}")
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                raise AssertionError(f"timed out waiting for a response; "
                                     f"got {bytes(self.buf)[:300]!r}")

    def read_exactly(self, n: int, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                break
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def pending(self, wait: float = 0.3) -> bytes:
        """Whatever arrives within `wait` seconds (without consuming it)."""
        deadline = time.monotonic() + wait
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                break
        return bytes(self.buf)

    def wait_closed(self, timeout: float = 3.0) -> bytes:
        """Assert that the server closes within `timeout`; return unread bytes it sent."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                raise AssertionError(f"server did not close the connection within {timeout}s;"
                                     f" buffered={bytes(self.buf)[:300]!r}")
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def is_open(self, wait: float = 0.3) -> bool:
        """True if within `wait` the server neither closed nor sent anything unexpected."""
        self.pending(wait)
        return not self.eof and not self.buf


# ---------------------------------------------------------------------------
# server-generated error responses
# ---------------------------------------------------------------------------

def assert_error(result: Talk | bytes, status: int, text: bytes | None = None,
                 protocol: str = "HTTP/1.1", closed: bool = True) -> Response:
    """The one and only response is a server error in cheroot's simple_response shape
    (Content-Length, Content-Type: text/plain, the text), and the connection is closed."""
    data = result.data if isinstance(result, Talk) else result
    responses = parse_responses(data)
    assert len(responses) == 1, f"expected exactly one (error) response, got {responses!r}"
    resp = responses[0]
    assert (resp.version, resp.status) == (protocol, status), resp
    assert resp.reason, f"no reason phrase: {resp!r}"
    assert resp.header("Content-Type") == "text/plain", resp
    assert resp.header_list("Content-Length") == [str(len(resp.body))], resp
    assert resp.framing == "length" and resp.complete, resp
    assert resp.connection_tokens <= {"close"}, resp
    if text is not None:
        assert resp.body == text, resp
    if closed and isinstance(result, Talk):
        assert result.closed, f"connection not closed after the {status} response"
    return resp


# ---------------------------------------------------------------------------
# applications
# ---------------------------------------------------------------------------

def _snapshot(environ: dict) -> dict:
    return {k: v for k, v in environ.items() if isinstance(v, str)}


class Recorder:
    """Wraps an app: counts calls and keeps a copy of each environ's str values.

    With validate=True the app runs under wsgiref.validate.validator.
    """

    def __init__(self, app: Callable[..., Any], validate: bool = True) -> None:
        self.inner = validator(app) if validate else app
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        with self.lock:
            self.calls.append(_snapshot(environ))
        return self.inner(environ, start_response)

    @property
    def count(self) -> int:
        return len(self.calls)

    @property
    def paths(self) -> list[str]:
        return [c.get("PATH_INFO") for c in self.calls]


def read_body(environ: dict, size: int = 65536) -> bytes:
    """Read wsgi.input to the end with sized reads (validator allows read(n) only)."""
    inp = environ["wsgi.input"]
    parts = []
    while True:
        data = inp.read(size)
        if not data:
            return b"".join(parts)
        parts.append(data)


def describe(environ: dict) -> bytes:
    return f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}".encode("latin-1")


def path_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers `METHOD PATH_INFO` with a Content-Length; never reads the body."""
    body = describe(environ)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the request body it read completely."""
    body = read_body(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body))),
                              ("X-Path", environ.get("PATH_INFO", ""))])
    return [body]


def make_app(status: str = "200 OK", headers: HeaderList = (("Content-Type", "text/plain"),),
             body: Any = (b"ok",), read: bool = False) -> Callable[..., Any]:
    """An app returning `body` (a list/tuple, or a callable making an iterable)."""

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        if read:
            read_body(environ)
        start_response(status, list(headers))
        return body() if callable(body) else body

    return app


class Closing:
    """An app iterable that records close()."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self.closed = threading.Event()

    def __iter__(self) -> Closing:
        return self

    def __next__(self) -> bytes:
        return next(self._it)

    def close(self) -> None:
        self.closed.set()


IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                         r"\d{2}:\d{2}:\d{2} GMT$")
