"""Application failures: 500 before the headers went out, a cut connection after, and the
traceback logged through server.error_log(msg, level=logging.ERROR, traceback=True)."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest
import requests

from _apps import parse_response, read_response
from conftest import recv_all


class LogCalls:
    """A replacement for server.error_log that records every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, msg="", level=20, traceback=False):
        with self.lock:
            self.calls.append({"msg": str(msg), "level": level, "traceback": traceback,
                               "exc": sys.exc_info()[1]})

    def errors(self) -> list[dict]:
        return [c for c in self.calls if c["level"] >= logging.ERROR]

    def wait_errors(self, n: int = 1, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.errors()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.errors()


def about(call: dict, marker: str) -> bool:
    """Whether a log call is about the exception carrying `marker` (in the text or in flight)."""
    return marker in call["msg"] or (call["exc"] is not None and marker in str(call["exc"]))


def raw_get(running, path="/", timeout=5.0):
    with running.connect(timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        start = time.monotonic()
        data = recv_all(sock, timeout)
        return data, time.monotonic() - start


def with_alive(app):
    def wrapped(environ, start_response):
        if environ["PATH_INFO"] == "/__alive__":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"alive"]
        return app(environ, start_response)
    return wrapped


def still_serving(running):
    r = requests.get(running.url("/__alive__"), timeout=5)
    assert (r.status_code, r.text) == (200, "alive")


@pytest.fixture
def log():
    return LogCalls()


def test_exception_before_start_response(serve, log):
    def app(environ, start_response):
        raise ValueError("marker-before-start")

    running = serve(with_alive(app), error_log=log)
    data, _ = raw_get(running)
    resp, _ = parse_response(data)
    assert resp.status == 500
    assert resp.complete
    errors = log.wait_errors()
    assert errors, f"nothing logged at ERROR: {log.calls}"
    matching = [c for c in errors if about(c, "marker-before-start")]
    assert matching, errors
    assert matching[0]["level"] == logging.ERROR
    assert matching[0]["traceback"] is True
    still_serving(running)


def test_exception_after_start_response_before_body(serve, log):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("marker-after-start")

    running = serve(with_alive(app), error_log=log)
    resp, _ = parse_response(raw_get(running)[0])
    assert resp.status == 500
    errors = [c for c in log.wait_errors() if about(c, "marker-after-start")]
    assert errors and errors[0]["traceback"] is True and errors[0]["level"] == 40
    still_serving(running)


def test_500_via_requests(serve, log):
    def app(environ, start_response):
        raise ZeroDivisionError("marker-requests")

    running = serve(with_alive(app), error_log=log)
    r = requests.get(running.url("/x"), timeout=5)
    assert r.status_code == 500
    still_serving(running)


def test_exception_after_headers_cuts_chunked_body(serve, log):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"part one;"
            yield b"part two;"
            raise ValueError("marker-mid-body")

        return gen()

    running = serve(with_alive(app), error_log=log)
    data, elapsed = raw_get(running)
    resp, _ = parse_response(data)
    assert resp.status == 200
    assert resp.chunked
    assert resp.body == b"part one;part two;"
    assert not resp.complete, "a failed body must not end with the terminating 0-chunk"
    assert not data.endswith(b"0\r\n\r\n")
    assert elapsed < 4, "the connection must be closed, not left open"
    still_serving(running)


def test_exception_after_headers_is_logged(serve, log):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"x"
            raise ValueError("marker-logged-mid-body")

        return gen()

    running = serve(app, error_log=log)
    raw_get(running)
    errors = [c for c in log.wait_errors() if about(c, "marker-logged-mid-body")]
    assert errors, log.calls


def test_exception_after_headers_with_content_length(serve, log):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

        def gen():
            yield b"0123456789"
            raise ValueError("marker-cl")

        return gen()

    running = serve(with_alive(app), error_log=log)
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")     # keep-alive request
        start = time.monotonic()
        data = recv_all(sock, 6)
        elapsed = time.monotonic() - start
    resp, _ = parse_response(data)
    assert resp.status == 200
    assert resp.body == b"0123456789"
    assert not resp.complete
    assert elapsed < 4, "the connection must be closed, not left open"
    still_serving(running)


@pytest.mark.parametrize("result", [
    ["text, not bytes"],
    "a str instead of a list",
    [bytearray(b"bytearray")],
    [1, 2],
    None,
    42,
], ids=["str-chunk", "str-body", "bytearray-chunk", "int-chunks", "none", "int"])
def test_bad_first_chunk_or_result_gives_500(serve, log, result):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    running = serve(with_alive(app), error_log=log)
    resp, _ = parse_response(raw_get(running)[0])
    assert resp.status == 500
    assert log.wait_errors(), "the error must be logged"
    still_serving(running)


def test_non_bytes_in_a_list_is_500(serve, log):
    # A list is known whole before anything is sent: a bad item gets a clean 500.
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"good;", "bad"]

    running = serve(with_alive(app), error_log=log)
    resp, _ = parse_response(raw_get(running)[0])
    assert resp.status == 500
    assert log.wait_errors(), "the error must be logged"


def test_non_bytes_after_headers_cuts(serve, log):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"good;"
        yield "bad"

    running = serve(with_alive(app), error_log=log)
    data, elapsed = raw_get(running)
    resp, _ = parse_response(data)
    assert resp.status == 200
    assert resp.body == b"good;"
    assert not resp.complete
    assert b"bad" not in data
    assert elapsed < 4
    assert log.wait_errors()
    still_serving(running)


def test_no_start_response(serve, log):
    def app(environ, start_response):
        return [b"forgot start_response"]

    running = serve(with_alive(app), error_log=log)
    data, _ = raw_get(running)
    resp, _ = parse_response(data)
    assert resp.status == 500
    assert b"forgot start_response" not in data
    assert log.wait_errors()
    still_serving(running)


def test_server_survives_many_errors(serve, log):
    counter = {"n": 0}
    lock = threading.Lock()

    def app(environ, start_response):
        with lock:
            counter["n"] += 1
        kind = environ["PATH_INFO"]
        if kind == "/raise":
            raise ValueError("marker-many")
        if kind == "/midbody":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def gen():
                yield b"a"
                raise ValueError("marker-many-midbody")

            return gen()
        if kind == "/badchunk":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return ["x"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    running = serve(app, numthreads=2, error_log=log)
    for i in range(10):
        for path in ("/raise", "/midbody", "/badchunk"):
            raw_get(running, path)
        r = requests.get(running.url("/ok"), timeout=5)
        assert (r.status_code, r.text) == (200, "ok"), i
    assert counter["n"] == 40
    # And concurrently, on keep-alive connections.
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(running.url("/raise"), timeout=5).status_code == 500
            assert s.get(running.url("/ok"), timeout=5).text == "ok"


def test_keep_alive_after_500(serve):
    """After a 500 the server either closes or keeps serving that connection; never garbage."""
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/fail":
            raise ValueError("fail")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    running = serve(app, error_log=LogCalls())
    with running.connect() as sock:
        sock.sendall(b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n")
        first = read_response(sock)
        assert first.status == 500
        if (first.header("Connection") or "").lower() == "close":
            assert recv_all(sock, 3) == b""
            return
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        second = read_response(sock)
        assert (second.status, second.body) == (200, b"ok")
