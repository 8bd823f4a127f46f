"""Faults: clients that vanish mid-request, applications that misbehave or hang, and `stop()`
while requests are in flight.

After every fault the server must have called the application's iterable `close()`, freed the
worker (a follow-up request is served, with fewer threads than faults so a leaked worker shows),
leaked no file descriptor, and logged application errors through `server.error_log`.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import pytest

from _http import Client, parse_responses, read_until_close
from conftest import Running

NUMTHREADS = 2
FAULTS = 6  # more faults than threads: a worker that is not freed blocks the follow-ups


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class LogCalls:
    """A replacement for `server.error_log` that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool, BaseException | None]] = []
        self.lock = threading.Lock()

    def __call__(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        with self.lock:
            self.calls.append((str(msg), level, traceback, sys.exc_info()[1]))

    def errors(self) -> list[tuple[str, int, bool, BaseException | None]]:
        with self.lock:
            return [c for c in self.calls if c[1] >= logging.ERROR]

    def wait_errors(self, n: int, timeout: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.errors()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.errors()


class Tracked:
    """An app iterable that counts the chunks it produced and records `close()`."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self.produced = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._it)
        self.produced += 1
        return chunk

    def close(self) -> None:
        self.closed.set()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def settle_fds(limit: int, timeout: float = 5.0) -> int:
    """Waits until this process has at most `limit` fds open; returns the last count."""
    deadline = time.monotonic() + timeout
    count = fd_count()
    while count > limit and time.monotonic() < deadline:
        time.sleep(0.05)
        count = fd_count()
    return count


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the harshest way for a client to vanish."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def get_ok(running: Running, path: str = "/ok", timeout: float = 5.0) -> int:
    """One request on a fresh connection; returns its status."""
    with running.connect(timeout) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n"
                     b"Connection: close\r\n\r\n")
        data, _ = read_until_close(sock, timeout)
    return parse_responses(data)[0].status


def ok_response(start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


BIG_CHUNK = b"d" * 65536


# ---------------------------------------------------------------------------
# clients that disconnect
# ---------------------------------------------------------------------------

class DisconnectApp:
    """/upload reads the body (recording how the read ended), /download streams ~1 GiB lazily,
    /slow sleeps before answering; every response is a Tracked iterable."""

    def __init__(self) -> None:
        self.iterables: list[Tracked] = []
        self.read_errors: list[BaseException] = []
        self.short_reads: list[int] = []
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        if path == "/ok":
            return ok_response(start_response)
        self.entered.release()
        if path == "/upload":
            expected = int(environ.get("CONTENT_LENGTH") or 10_000_000)
            got = 0
            try:
                while True:
                    data = environ["wsgi.input"].read(65536)
                    if not data:
                        break
                    got += len(data)
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                with self.lock:
                    self.read_errors.append(exc)
            else:
                if got < expected:
                    with self.lock:
                        self.short_reads.append(got)
            chunks: Iterable[bytes] = [b"uploaded"]
        elif path == "/download":
            chunks = (BIG_CHUNK for _ in range(16384))
        else:  # /slow
            time.sleep(0.5)
            chunks = (b"late" for _ in range(100))
        tracked = Tracked(chunks)
        with self.lock:
            self.iterables.append(tracked)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return tracked


@pytest.fixture
def disconnects(serve: Callable[..., Running]) -> tuple[Running, DisconnectApp]:
    app = DisconnectApp()
    return serve(app, numthreads=NUMTHREADS, timeout=3), app


def _check_recovered(running: Running, app: DisconnectApp, fds_before: int) -> None:
    assert wait_for(lambda: len(app.iterables) == FAULTS), (
        f"the app returned {len(app.iterables)} iterables of {FAULTS}")
    not_closed = [t for t in app.iterables if not t.closed.wait(5)]
    assert not not_closed, f"{len(not_closed)} iterables never had close() called"
    assert get_ok(running) == 200, "no worker left to serve a normal request"
    # The server may still be closing the last sockets: allow it a moment.
    count = settle_fds(fds_before + 1)
    assert count <= fds_before + 1, f"fd leak: {fds_before} before, {count} after"


UPLOAD_HEADS = {
    "length": b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n"
              + b"u" * 100_000,
    "chunked": b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"186a0\r\n" + b"u" * 100_000 + b"\r\n" + b"989680\r\n" + b"v" * 1000,
}


@pytest.mark.parametrize("framing", list(UPLOAD_HEADS))
@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_upload(serve: Callable[..., Running], how: str, framing: str) -> None:
    """A streamed body (buffer_request_body=False): the application's read fails."""
    app = DisconnectApp()
    running = serve(app, numthreads=NUMTHREADS, timeout=3, buffer_request_body=False)
    assert get_ok(running) == 200
    fds_before = fd_count()
    for _ in range(FAULTS):
        sock = running.connect()
        sock.sendall(UPLOAD_HEADS[framing])
        assert app.entered.acquire(timeout=5), "the app was never called"
        time.sleep(0.05)
        if how == "reset":
            reset(sock)
        else:
            sock.close()
    _check_recovered(running, app, fds_before)
    assert not app.short_reads, (
        f"a truncated body was presented as complete (read() returned b'' after "
        f"{app.short_reads} bytes); wsgi.input must raise")
    assert len(app.read_errors) == FAULTS, app.read_errors


def _held_body_bytes(stats: dict) -> int:
    return stats["body_bytes_in_memory"] + stats["body_bytes_spooled"]


@pytest.mark.parametrize("framing", list(UPLOAD_HEADS))
@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("memory_limit", [1 << 20, 4096], ids=["in-memory", "spooled"])
def test_disconnect_mid_buffered_upload(serve: Callable[..., Running], how: str, framing: str,
                                        memory_limit: int) -> None:
    """A buffered body (the default): the application never runs for an upload cut short,
    and nothing is left behind: no descriptor, no temporary file, no buffered byte."""
    app = DisconnectApp()
    running = serve(app, numthreads=NUMTHREADS, timeout=3,
                    request_body_memory_limit=memory_limit)
    assert get_ok(running) == 200
    fds_before = fd_count()
    stats = running.server._engine_stats
    for _ in range(FAULTS):
        sock = running.connect()
        sock.sendall(UPLOAD_HEADS[framing])
        assert wait_for(lambda: stats()["bodies_collecting"] == 1), "the body is not collected"
        assert wait_for(lambda: _held_body_bytes(stats()) >= 100_000), stats()
        assert (stats()["body_bytes_spooled"] > 0) == (memory_limit < 100_000), stats()
        if how == "reset":
            reset(sock)
        else:
            sock.close()
        assert wait_for(lambda: stats()["bodies_collecting"] == 0), "the body was never dropped"
    assert not app.entered.acquire(timeout=0.2), "the application ran for a truncated body"
    assert get_ok(running) == 200
    after = stats()
    assert (after["body_bytes_in_memory"], after["body_bytes_spooled"]) == (0, 0), after
    count = settle_fds(fds_before + 1)
    assert count <= fds_before + 1, f"fd or temporary-file leak: {fds_before} before, {count} after"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_download(disconnects: tuple[Running, DisconnectApp], how: str) -> None:
    running, app = disconnects
    assert get_ok(running) == 200
    fds_before = fd_count()
    for _ in range(FAULTS):
        sock = running.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /download HTTP/1.1\r\nHost: h\r\n\r\n")
        assert sock.recv(65536), "no response started"
        if how == "reset":
            reset(sock)
        else:
            sock.close()
    _check_recovered(running, app, fds_before)
    produced = [t.produced for t in app.iterables]
    assert max(produced) < 16384, f"the server kept iterating for a gone client: {produced}"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_before_response(disconnects: tuple[Running, DisconnectApp],
                                    how: str) -> None:
    running, app = disconnects
    assert get_ok(running) == 200
    fds_before = fd_count()
    for _ in range(FAULTS):
        sock = running.connect()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        assert app.entered.acquire(timeout=5), "the app was never called"
        if how == "reset":
            reset(sock)
        else:
            sock.close()
    _check_recovered(running, app, fds_before)


def test_disconnect_mid_head_and_idle(serve: Callable[..., Running]) -> None:
    """Connections that vanish before a whole head, or while idle, leave nothing behind."""
    running = serve(lambda e, s: ok_response(s), numthreads=NUMTHREADS, timeout=3)
    assert get_ok(running) == 200
    fds_before = fd_count()
    for i in range(50):
        sock = running.connect()
        if i % 3 == 0:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
        elif i % 3 == 1:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            sock.recv(4096)
        (reset if i % 2 else socket.socket.close)(sock)
    assert get_ok(running) == 200
    count = settle_fds(fds_before + 1)
    assert count <= fds_before + 1, f"fd leak: {fds_before} before, {count} after"


# ---------------------------------------------------------------------------
# misbehaving applications
# ---------------------------------------------------------------------------

class BadReturn:
    """An iterable whose only element is not bytes; records close()."""

    def __init__(self, item: Any) -> None:
        self.item = item
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        yield self.item

    def close(self) -> None:
        self.closed = True


def _raises(environ: dict, start_response: Callable[..., Any]) -> Any:
    raise RuntimeError("boom-raises")


def _raises_after_start(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("boom-after-start")


def _returns_none(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return None


def _returns_int(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return 42


def _returns_str(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return "a str, not an iterable of bytes"


def _yields_str(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["text"]


def _yields_none(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [None]


def _no_start_response(environ: dict, start_response: Callable[..., Any]) -> Any:
    return [b"body without headers"]


def _start_response_twice(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"x"]


def _status_bytes(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response(b"200 OK", [("Content-Type", "text/plain")])
    return [b"x"]


def _status_no_space(environ: dict, start_response: Callable[..., Any]) -> Any:
    # ("200" alone is served with its standard reason phrase: see test_conformance.py)
    start_response("200OK", [("Content-Type", "text/plain")])
    return [b"x"]


def _status_crlf(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK\r\nX-Injected: 1", [("Content-Type", "text/plain")])
    return [b"x"]


def _header_value_bytes(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type", b"text/plain")])
    return [b"x"]


def _header_crlf(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("X-A", "1\r\nSet-Cookie: injected=1")])
    return [b"x"]


def _headers_not_list(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", "Content-Type: text/plain")
    return [b"x"]


def _header_not_tuple(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("Content-Type",)])
    return [b"x"]


def _header_non_latin1(environ: dict, start_response: Callable[..., Any]) -> Any:
    start_response("200 OK", [("X-A", "\u2603")])
    return [b"x"]


def _generator_raises_midway(environ: dict, start_response: Callable[..., Any]) -> Any:
    def body() -> Iterator[bytes]:
        yield b"first part"
        raise RuntimeError("boom-midway")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


def _close_raises(environ: dict, start_response: Callable[..., Any]) -> Any:
    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"ok"

        def close(self) -> None:
            raise RuntimeError("boom-in-close")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return Body()


# (app, acceptable statuses, whether the response may be cut after the headers went out)
MISBEHAVING: dict[str, tuple[Callable[..., Any], tuple[int, ...], bool]] = {
    "raises": (_raises, (500,), False),
    "raises-after-start-response": (_raises_after_start, (500,), False),
    "returns-none": (_returns_none, (500,), False),
    "returns-int": (_returns_int, (500,), False),
    "returns-str": (_returns_str, (500,), False),
    "yields-str": (_yields_str, (500,), False),
    "yields-none": (_yields_none, (500,), False),
    "no-start-response": (_no_start_response, (500,), False),
    "start-response-twice": (_start_response_twice, (500,), False),
    "status-bytes": (_status_bytes, (500,), False),
    "status-without-space": (_status_no_space, (500,), False),
    "status-crlf": (_status_crlf, (500,), False),
    "header-value-bytes": (_header_value_bytes, (500,), False),
    "header-crlf": (_header_crlf, (500,), False),
    "headers-not-a-list": (_headers_not_list, (500,), False),
    "header-not-a-pair": (_header_not_tuple, (500,), False),
    "header-not-latin1": (_header_non_latin1, (500,), False),
    "generator-raises-midway": (_generator_raises_midway, (200,), True),
    "close-raises": (_close_raises, (200,), False),
}


@pytest.mark.parametrize("name", list(MISBEHAVING))
def test_misbehaving_app(serve: Callable[..., Running], name: str) -> None:
    bad_app, statuses, cut = MISBEHAVING[name]

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/ok":
            return ok_response(start_response)
        return bad_app(environ, start_response)

    log = LogCalls()
    running = serve(app, numthreads=NUMTHREADS, error_log=log)
    for attempt in range(FAULTS):
        with running.connect() as sock:
            sock.sendall(b"GET /bad HTTP/1.1\r\nHost: h\r\n\r\n")
            data, closed = read_until_close(sock, 3)
        assert data, f"{name}: no response at all"
        resp = parse_responses(data)[0]
        assert resp.status in statuses, f"{name}: {resp!r}"
        assert b"injected" not in resp.head.lower(), f"{name}: response splitting: {resp.head!r}"
        if cut:
            assert not resp.complete and closed, f"{name}: a broken body must be cut: {resp!r}"
        elif resp.status == 500:
            assert closed or resp.complete, resp
        errors = log.wait_errors(attempt + 1)
        assert len(errors) >= attempt + 1, f"{name}: nothing logged through error_log: {log.calls}"
    assert get_ok(running) == 200, f"{name}: the server stopped serving"


def test_bad_return_iterable_is_closed(serve: Callable[..., Running]) -> None:
    """An iterable yielding a non-bytes item is still closed."""
    made: list[BadReturn] = []

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        made.append(BadReturn("not bytes"))
        return made[-1]

    log = LogCalls()
    running = serve(app, error_log=log)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        data, _ = read_until_close(sock, 3)
    assert parse_responses(data)[0].status == 500
    assert wait_for(lambda: bool(made) and made[0].closed, 3), "close() not called"
    assert log.wait_errors(1)


# ---------------------------------------------------------------------------
# hanging applications and stop()
# ---------------------------------------------------------------------------

def test_stop_with_a_hanging_app_returns_within_shutdown_timeout(
        serve: Callable[..., Running]) -> None:
    release = threading.Event()
    entered = threading.Event()

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        entered.set()
        release.wait(30)
        return ok_response(start_response)

    running = serve(app, shutdown_timeout=1)
    sock = running.connect()
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert entered.wait(5)
        start = time.monotonic()
        running.server.stop()
        elapsed = time.monotonic() - start
        assert elapsed < 1 + 1.0, f"stop() took {elapsed:.2f}s with shutdown_timeout=1"
        # The stuck client is not left hanging forever either.
        _, closed = read_until_close(sock, 3)
        assert closed, "the hung request's connection was left open after stop()"
    finally:
        release.set()
        sock.close()


@pytest.mark.parametrize("queued", [False, True], ids=["all-in-app", "more-than-threads"])
def test_stop_under_load_completes_accepted_requests(serve: Callable[..., Running],
                                                     queued: bool) -> None:
    n = 6
    entered = threading.Semaphore(0)

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        entered.release()
        time.sleep(0.5)
        return ok_response(start_response)

    running = serve(app, numthreads=2 if queued else n, shutdown_timeout=5)
    stats = running.server.stats
    accepts_before = stats["Accepts"](stats)
    clients = [Client(running, timeout=8) for _ in range(n)]
    try:
        for c in clients:
            c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        # Wait until every connection has been accepted by the server (and, without queueing,
        # until every request is inside the application).
        assert wait_for(lambda: stats["Accepts"](stats) - accepts_before >= n, 5), (
            "the server did not accept the connections")
        for _ in range(2 if queued else n):
            assert entered.acquire(timeout=5)
        stopper = threading.Thread(target=running.server.stop)
        start = time.monotonic()
        stopper.start()
        statuses = []
        for c in clients:
            try:
                statuses.append(c.response().status)
            except AssertionError as exc:
                statuses.append(str(exc)[:80])  # type: ignore[arg-type]
        stopper.join(10)
        elapsed = time.monotonic() - start
    finally:
        for c in clients:
            c.close()
    assert statuses == [200] * n, f"requests accepted before stop() were dropped: {statuses}"
    assert elapsed < 5 + 1.0, f"stop() took {elapsed:.2f}s"
