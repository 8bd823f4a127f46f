"""start_response(), write() and the response iterable (PEP 3333 as cheroot's Gateway does it)."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import requests

from _apps import ClosingIterable, parse_response
from conftest import recv_all


def get(running, path: str = "/", method: str = "GET", version: str = "HTTP/1.1",
        timeout: float = 5.0):
    """One request with Connection: close; returns (response, seconds until the server closed)."""
    with running.connect(timeout) as sock:
        sock.sendall(f"{method} {path} {version}\r\nHost: h\r\nConnection: close\r\n\r\n"
                     .encode())
        start = time.monotonic()
        data = recv_all(sock, timeout)
        elapsed = time.monotonic() - start
    resp, rest = parse_response(data, method)
    return resp, elapsed, rest


def still_serving(running):
    r = requests.get(running.url("/__alive__"), timeout=5)
    assert r.status_code == 200


def recording(app_body):
    """Wrap an app so that /__alive__ answers 200 and exceptions are recorded."""
    seen: list = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/__alive__":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"alive"]
        try:
            return app_body(environ, start_response)
        except Exception as exc:
            seen.append(exc)
            raise

    return app, seen


# --- start_response argument checks --------------------------------------------------------

def test_second_call_without_exc_info(serve):
    def body(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except RuntimeError as exc:
            msg = str(exc).encode()
        else:
            msg = b"no error"
        return [msg]

    app, _ = recording(body)
    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 200
    assert resp.body == b"WSGI start_response called a second time with no exc_info."


@pytest.mark.parametrize("status", [b"200 OK", 200, None])
def test_status_not_str(serve, status):
    app, seen = recording(lambda environ, sr: (sr(status, []), [b"x"])[1])
    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 500
    assert len(seen) == 1 and type(seen[0]) is TypeError
    still_serving(running)


@pytest.mark.parametrize("header", [
    (b"X-Bytes-Name", "v"),
    ("X-Bytes-Value", b"v"),
    ("X-Int-Value", 3),
    (None, "v"),
], ids=["bytes-name", "bytes-value", "int-value", "none-name"])
def test_header_not_str(serve, header):
    app, seen = recording(lambda environ, sr: (sr("200 OK", [header]), [b"x"])[1])
    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 500
    assert len(seen) == 1 and type(seen[0]) is TypeError
    still_serving(running)


def test_headers_any_iterable_of_pairs(serve):
    def app(environ, start_response):
        start_response("200 OK", {"Content-Type": "text/plain", "X-From-Dict": "yes"}.items())
        return [b"dict"]

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 200
    assert resp.header("X-From-Dict") == "yes"
    assert resp.body == b"dict"


def test_status_reason_and_headers_verbatim(serve):
    def app(environ, start_response):
        start_response("299 Custom Thing Here", [
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "a=1"),
            ("X-Mixed-Case", "Value With  Spaces"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "4"),
        ])
        return [b"body"]

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status_line == "HTTP/1.1 299 Custom Thing Here"
    assert resp.header_list("Set-Cookie") == ["a=1", "b=2"]
    assert resp.header("X-Mixed-Case") == "Value With  Spaces"
    assert resp.body == b"body"


def test_date_and_server_added(serve):
    running = serve(lambda e, sr: (sr("200 OK", [("Content-Type", "text/plain")]), [b"x"])[1])
    resp, _, _ = get(running)
    assert len(resp.header_list("Date")) == 1
    assert resp.header_list("Server") == [running.server.server_name]


def test_app_server_and_date_headers_not_duplicated(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Server", "MyApp/1"),
                                  ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")])
        return [b"x"]

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.header_list("Server") == ["MyApp/1"]
    assert resp.header_list("Date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]


@pytest.mark.parametrize("status", ["abc", "20 OK", "2000 OK", "OK 200", "200 OK\r\nX-Injected: 1"])
def test_malformed_status_gives_500(serve, status):
    app, _ = recording(lambda environ, sr: (sr(status, [("Content-Type", "text/plain")]),
                                            [b"should not be sent"])[1])
    running = serve(app)
    resp, _, rest = get(running)
    assert resp.status == 500
    assert resp.header("X-Injected") is None
    assert b"should not be sent" not in resp.body + rest
    still_serving(running)


@pytest.mark.parametrize("header", [
    ("X-Split", "a\r\nX-Injected: 1"),
    ("X-Split", "a\nX-Injected: 1"),
    ("X-Nul", "a\x00b"),
    ("X-Injected: 1\r\nX-Name", "v"),
    ("X-Euro", "\u20ac"),
], ids=["crlf-value", "lf-value", "nul-value", "crlf-name", "non-latin1"])
def test_unsafe_header_gives_500(serve, header):
    app, _ = recording(lambda environ, sr: (sr("200 OK", [("Content-Type", "text/plain"), header]),
                                            [b"should not be sent"])[1])
    running = serve(app)
    resp, _, rest = get(running)
    assert resp.status == 500
    assert resp.header("X-Injected") is None
    assert b"should not be sent" not in resp.body + rest
    still_serving(running)


# --- write() ------------------------------------------------------------------------------

@pytest.mark.parametrize("with_length", [True, False])
def test_write_then_iterable_in_order(serve, with_length):
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        if with_length:
            headers.append(("Content-Length", "6"))
        write = start_response("200 OK", headers)
        write(b"a")
        write(b"bc")

        def gen():
            yield b"d"
            write(b"e")          # write() while iterating: still in order
            yield b"f"

        return gen()

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 200
    assert resp.body == b"abcdef"
    assert resp.complete
    if not with_length:
        assert resp.chunked


def test_write_only_empty_iterable(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        for piece in (b"x", b"", b"yz"):
            write(piece)
        return []

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 200
    assert resp.body == b"xyz"
    assert resp.complete


def test_write_returns_none(serve):
    results = []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        results.append(write(b"w"))
        return [b"!"]

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.body == b"w!"
    assert results == [None]


def test_write_sends_headers_immediately(serve):
    """write() is unbuffered: the client sees the first bytes while the app still runs."""
    proceed = threading.Event()

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early")
        proceed.wait(5)
        return [b"late"]

    running = serve(app)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        sock.settimeout(3)
        data = b""
        while b"early" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        proceed.set()
        data += recv_all(sock)
    resp, _ = parse_response(data)
    assert resp.body == b"earlylate"


def test_empty_chunks_are_skipped(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"", b"a", b"", b"", b"b", b""]

    running = serve(app)
    resp, _, _ = get(running)
    # Several chunks are framed like a stream (PEP 3333 computes a length for one chunk only).
    assert resp.chunked and resp.complete
    assert resp.body == b"ab"
    assert b"0\r\n\r\n" not in resp.raw_body[:-5]


# --- lazy headers and exc_info -----------------------------------------------------------

def test_raise_after_start_response_before_body(serve):
    def body(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
        raise ValueError("boom before body")

    app, seen = recording(body)
    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 500
    assert resp.header("X-App") is None
    assert [type(e) for e in seen] == [ValueError]
    still_serving(running)


@pytest.mark.parametrize("first", [[], [b""], [b"", b""]], ids=["nothing", "empty", "empties"])
def test_generator_fails_before_first_non_empty_chunk(serve, first):
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])

        def gen():
            try:
                yield from first
                raise ValueError("boom in generator")
            finally:
                closed.set()

        return gen()

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 500
    assert resp.header("X-App") is None
    assert closed.wait(5)


def test_exc_info_before_headers_replaces_status(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("inner")
        except KeyError:
            start_response("503 Try Later", [("Content-Type", "text/plain"),
                                             ("Retry-After", "7")], sys.exc_info())
        return [b"custom error page"]

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status_line == "HTTP/1.1 503 Try Later"
    assert resp.header("Retry-After") == "7"
    assert resp.body == b"custom error page"


def test_exc_info_after_headers_reraises(serve):
    outcome: dict = {}
    done = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first part;"
            try:
                raise LookupError("original")
            except LookupError as original:
                try:
                    start_response("500 Error", [("Content-Type", "text/plain")],
                                   sys.exc_info())
                except BaseException as exc:  # noqa: BLE001
                    outcome["raised"] = exc
                    outcome["same"] = exc is original
                else:
                    outcome["raised"] = None
                finally:
                    done.set()
                raise

        return gen()

    running = serve(app)
    resp, elapsed, _ = get(running)
    assert done.wait(5)
    assert outcome["raised"] is not None, "start_response(exc_info) after headers must raise"
    assert outcome["same"] is True
    assert resp.status == 200
    assert resp.body.startswith(b"first part;")
    assert not resp.complete, "the body must be cut, not terminated normally"
    assert elapsed < 4


# --- close() on the iterable ---------------------------------------------------------------

def test_close_after_normal_completion(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        it = ClosingIterable([b"a", b"b"])
        its.append(it)
        return it

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.body == b"ab"
    assert its[0].closed.wait(5)


def test_close_with_content_length(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        it = ClosingIterable([b"abc"])
        its.append(it)
        return it

    running = serve(app)
    with requests.Session() as s:
        assert s.get(running.url(), timeout=5).text == "abc"
        assert its[0].closed.wait(5)
        assert s.get(running.url(), timeout=5).text == "abc"
        assert its[1].closed.wait(5)


def test_close_after_iterable_raised_before_headers(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        it = ClosingIterable([b"never"], fail_after=0)
        its.append(it)
        return it

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 500
    assert its[0].closed.wait(5)


def test_close_after_iterable_raised_after_headers(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        it = ClosingIterable([b"one", b"two", b"three"], fail_after=2)
        its.append(it)
        return it

    running = serve(app)
    resp, _, _ = get(running)
    assert resp.status == 200
    assert resp.body == b"onetwo"
    assert not resp.complete
    assert its[0].closed.wait(5)


def test_close_when_non_bytes_chunk(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        it = ClosingIterable([b"ok", "not bytes"])
        its.append(it)
        return it

    running = serve(app)
    get(running)
    assert its[0].closed.wait(5)


def test_close_on_client_disconnect(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        # Endless (well, 15 s) 64 KiB chunks: only a dead client stops it early.
        it = ClosingIterable(iter(lambda: b"z" * 65536, None), delay=0.001, limit_seconds=15)
        its.append(it)
        return it

    running = serve(app)
    sock = running.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    got = 0
    while got < 200_000:
        data = sock.recv(65536)
        assert data
        got += len(data)
    sock.close()
    start = time.monotonic()
    assert its[0].closed.wait(6), "close() not called after the client went away"
    assert time.monotonic() - start < 6
    still = requests.get(running.url("/again"), stream=True, timeout=5)
    assert still.status_code == 200
    still.close()


def test_close_on_head(serve):
    its = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        it = ClosingIterable([b"head body"])
        its.append(it)
        return it

    running = serve(app)
    resp, _, rest = get(running, method="HEAD")
    assert resp.status == 200
    assert resp.header("Content-Length") == "9"
    assert rest == b""
    assert its[0].closed.wait(5)


# --- Content-Length against the real body ---------------------------------------------------

def test_body_longer_than_content_length_is_cut(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"01234", b"56789"]

    running = serve(app)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        data = recv_all(sock, 5)
    resp, rest = parse_response(data)
    assert resp.status == 200
    assert resp.body == b"01234"
    assert rest == b"", "bytes past the declared Content-Length were sent"


def test_body_shorter_than_content_length_closes(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"01234"]

    running = serve(app)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # keep-alive request
        start = time.monotonic()
        data = recv_all(sock, 6)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"\r\n\r\n01234")
    assert elapsed < 4, "the client was left waiting for bytes that never come"


def test_app_connection_close_is_honoured(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"),
                                  ("Connection", "close")])
        return [b"ok"]

    running = serve(app)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        start = time.monotonic()
        data = recv_all(sock, 6)
        elapsed = time.monotonic() - start
    resp, rest = parse_response(data)
    assert resp.body == b"ok" and rest == b""
    assert elapsed < 4
