"""Shared WSGI apps and small raw-HTTP helpers for the gateway, lifecycle and thread tests.

The raw-protocol tests have their own helpers (tests/_http.py); these are deliberately
independent so that both sets can evolve separately.
"""

from __future__ import annotations

import json
import shutil
import socket
import sysconfig
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from wsgiref.validate import validator

import pytest

from stogie import wsgi

# ---------------------------------------------------------------------------
# environ reporting
# ---------------------------------------------------------------------------

WSGI_SCALARS = (
    "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
    "wsgi.input_terminated",
)


def environ_subset(environ: dict) -> dict:
    """Everything in the environ that JSON can carry, plus type names for the rest."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if isinstance(value, str) or key in WSGI_SCALARS:
            out[key] = value
    version = environ.get("wsgi.version")
    out["wsgi.version"] = list(version) if isinstance(version, tuple) else repr(version)
    out["wsgi.version:type"] = type(version).__name__
    for key in WSGI_SCALARS:
        out[key + ":type"] = type(environ.get(key)).__name__
    errors = environ.get("wsgi.errors")
    out["wsgi.errors:ok"] = all(hasattr(errors, m) for m in ("write", "writelines", "flush"))
    inp = environ.get("wsgi.input")
    out["wsgi.input:ok"] = all(hasattr(inp, m) for m in ("read", "readline", "readlines",
                                                        "__iter__"))
    out["__keys__"] = sorted(environ)
    return out


def environ_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    body = json.dumps(environ_subset(environ)).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


# PEP 3333 checker around the environ app: any violation is an AssertionError in the app
# (so a 500), and the checker also insists that close() is called on the iterable.
validated_environ_app = validator(environ_app)


def hello_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


class ClosingIterable:
    """An app iterable that records close() (a threading.Event) and can fail on demand."""

    def __init__(self, chunks: Iterable[Any], fail_after: int | None = None,
                 delay: float = 0.0, limit_seconds: float | None = None) -> None:
        self._chunks = iter(chunks)
        self._fail_after = fail_after
        self._delay = delay
        self._deadline = None if limit_seconds is None else time.monotonic() + limit_seconds
        self.yielded = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._fail_after is not None and self.yielded >= self._fail_after:
            raise ValueError("app iterable failed on purpose")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise StopIteration
        if self._delay:
            time.sleep(self._delay)
        chunk = next(self._chunks)
        self.yielded += 1
        return chunk

    def close(self) -> None:
        self.closed.set()


# ---------------------------------------------------------------------------
# raw HTTP responses
# ---------------------------------------------------------------------------

@dataclass
class RawResponse:
    status_line: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool          # the framing said the body ended (vs. cut by a close)
    chunked: bool
    raw_body: bytes = field(default=b"", repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def header_list(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Incomplete(Exception):
    """Not enough bytes yet for a whole response."""


def _parse_chunked(data: bytes) -> tuple[bytes, bool, int]:
    """Decode a chunked body; return (body, terminated, bytes consumed)."""
    pos = 0
    out = []
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), False, len(data)
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return b"".join(out), False, len(data)
        if size == 0:
            end = data.find(b"\r\n\r\n", eol)
            if end < 0:
                return b"".join(out), False, len(data)
            return b"".join(out), True, end + 4
        start = eol + 2
        if len(data) < start + size + 2:
            out.append(data[start:start + size])
            return b"".join(out), False, len(data)
        out.append(data[start:start + size])
        pos = start + size + 2


def parse_response(data: bytes, method: str = "GET",
                   eof: bool = True) -> tuple[RawResponse, bytes]:
    """Parse one response from `data`; return it and the bytes after it.

    With eof=False, raise Incomplete when the response is not whole yet.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        if eof:
            raise AssertionError(f"no complete response head in {data[:200]!r}")
        raise Incomplete
    head = data[:head_end].decode("latin-1")
    rest = data[head_end + 4:]
    lines = head.split("\r\n")
    status_line = lines[0]
    status = int(status_line.split(" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    resp = RawResponse(status_line, status, headers, b"", True, False)
    if 100 <= status < 200:
        return resp, rest
    te = (resp.header("Transfer-Encoding") or "").lower()
    cl = resp.header("Content-Length")
    if method == "HEAD" or status in (204, 304):
        return resp, rest
    if "chunked" in te:
        body, terminated, used = _parse_chunked(rest)
        if not terminated and not eof:
            raise Incomplete
        resp.body, resp.complete, resp.chunked = body, terminated, True
        resp.raw_body = rest[:used]
        return resp, rest[used:]
    if cl is not None:
        n = int(cl)
        if len(rest) < n and not eof:
            raise Incomplete
        resp.body, resp.complete = rest[:n], len(rest) >= n
        resp.raw_body = rest[:n]
        return resp, rest[n:]
    if not eof:
        raise Incomplete
    resp.body = resp.raw_body = rest
    return resp, b""


def parse_responses(data: bytes) -> list[RawResponse]:
    """Parse all responses of a connection, skipping interim 1xx responses."""
    out = []
    while data:
        resp, data = parse_response(data)
        if not 100 <= resp.status < 200:
            out.append(resp)
    return out


def read_response(sock: socket.socket, method: str = "GET", timeout: float = 5.0,
                  buffer: bytearray | None = None) -> RawResponse:
    """Read exactly one final response from a socket that may stay open."""
    buf = buffer if buffer is not None else bytearray()
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp, rest = parse_response(bytes(buf), method, eof=False)
        except Incomplete:
            pass
        else:
            del buf[:len(buf) - len(rest)]
            if 100 <= resp.status < 200:
                continue
            return resp
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out reading a response; got {bytes(buf)[:300]!r}")
        data = sock.recv(65536)
        if not data:
            resp, rest = parse_response(bytes(buf), method, eof=True)
            del buf[:]
            return resp
        buf += data


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------

class Started:
    """A server (any Server subclass) serving in a background thread."""

    def __init__(self, server: wsgi.Server, target: str = "serve") -> None:
        self.server = server
        self.errors: list[BaseException] = []
        if target == "serve":
            server.prepare()

        def run() -> None:
            try:
                getattr(server, target)()
            except BaseException as exc:  # noqa: BLE001 - recorded for the test
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, name="stogie-test-" + target, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not server.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.ready, "server did not become ready"

    @property
    def host(self) -> str:
        return self.server.bind_addr[0]

    @property
    def port(self) -> int:
        return self.server.bind_addr[1]

    def url(self, path: str = "/") -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    def stop(self, join: float = 15) -> None:
        self.server.stop()
        self.thread.join(timeout=join)


def simple_request(host: str, port: int, path: str = "/", method: str = "GET",
                   headers: dict[str, str] | None = None, body: bytes | None = None,
                   family: int = 0, timeout: float = 5.0) -> RawResponse:
    """One request on a fresh connection with `Connection: close`."""
    hdrs = {"Host": "example.test", "Connection": "close"}
    hdrs.update(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    if family:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect((host, port))
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
    with sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        return read_response(sock, method, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stogie_script() -> str:
    """The installed `stogie` console script (this interpreter's, else the one on PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "stogie"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("stogie")
    if found is None:
        pytest.fail("the `stogie` console script is not installed")
    return found
