"""Request bodies collected before the application runs (buffer_request_body, the default).

A client that trickles its body holds no thread: the connection waits in epoll until the body
is complete, in memory up to request_body_memory_limit, in an unlinked temporary file beyond
it (bounded by request_body_spool_limit across the server). docs/configuration.md, "Request
bodies".
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
import requests

from conftest import Running, recv_all

MiB = 1024 * 1024


def hello_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class Digest:
    """Reads the body the way `?how=` says and answers its length and SHA-256."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        self.calls += 1
        inp = environ["wsgi.input"]
        how = environ.get("QUERY_STRING", "") or "read"
        digest = hashlib.sha256()
        total = 0
        if how == "read":
            data = inp.read(int(environ.get("CONTENT_LENGTH") or 0))
            digest.update(data)
            total = len(data)
        elif how == "read-n":
            while chunk := inp.read(65536 + 7):
                digest.update(chunk)
                total += len(chunk)
        elif how == "readline":
            while line := inp.readline():
                digest.update(line)
                total += len(line)
        elif how == "iterate":
            for line in inp:
                digest.update(line)
                total += len(line)
        out = f"{total} {digest.hexdigest()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out)))])
        return [out]


def slow_body_client(running: Running, stop: threading.Event, declared: int = 1000) -> None:
    """Sends a head announcing `declared` body bytes, then one byte every 0.2 s until `stop`."""
    with running.connect(timeout=30) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
        while not stop.wait(0.2):
            try:
                sock.sendall(b"s")
            except OSError:
                return


@pytest.fixture
def slow_clients() -> Iterator[Callable[[Running, int], None]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(running: Running, count: int) -> None:
        for _ in range(count):
            t = threading.Thread(target=slow_body_client, args=(running, stop), daemon=True)
            t.start()
            threads.append(t)

    yield start
    stop.set()
    for t in threads:
        t.join(5)


def test_slow_bodies_never_starve_a_normal_request(serve, slow_clients) -> None:
    """numthreads=1 and ten clients trickling their bodies: a GET is still answered at once."""
    running = serve(validator(hello_app), numthreads=1, max=1, timeout=30)
    slow_clients(running, 10)
    stats = running.server._engine_stats
    deadline = time.monotonic() + 5
    while stats()["bodies_collecting"] < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats()["bodies_collecting"] == 10, stats()
    for _ in range(5):
        start = time.monotonic()
        resp = requests.get(running.url("/"), timeout=5)
        assert (resp.status_code, resp.text) == (200, "hello")
        waited = time.monotonic() - start
        assert waited < 2.0, f"a normal GET waited {waited:.2f}s behind slow bodies"
    assert stats()["threads"] == 1


def test_streamed_bodies_do_starve_with_buffering_off(serve, slow_clients) -> None:
    """The guard for the test above: with buffer_request_body=False, one slow body holds the
    only thread, so the GET waits (this is what buffering removes)."""
    app = validator(hello_app)

    def reading_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read()
        return app(environ, start_response)

    running = serve(reading_app, numthreads=1, max=1, timeout=30, buffer_request_body=False)
    slow_clients(running, 1)
    time.sleep(0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(running.url("/"), timeout=1.0)


@pytest.mark.parametrize("how", ["read", "read-n", "readline", "iterate"])
def test_a_50_mib_upload_is_spooled_and_read_exactly(serve, how: str) -> None:
    app = Digest()
    running = serve(validator(app), request_body_memory_limit=MiB)
    lines = b"".join(b"line %d of the upload\n" % i for i in range(2_000_000))
    body = (lines * 3)[: 50 * MiB]
    conn = http.client.HTTPConnection(running.host, running.port, timeout=60)
    conn.request("POST", "/?" + how, body=body)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    conn.close()
    stats = running.server._engine_stats()
    assert (stats["body_bytes_spooled"], stats["body_bytes_in_memory"]) == (0, 0), stats


def test_chunked_upload_is_collected_whole(serve) -> None:
    app = Digest()
    running = serve(validator(app), request_body_memory_limit=64 * 1024)
    body = os.urandom(3 * MiB)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i:i + 100_000]

    resp = requests.post(running.url("/?read-n"), data=chunks(), timeout=30)
    assert resp.text == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert app.calls == 1


def _head(length: int) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length


def test_the_spool_limit_is_shared_503_then_recovers(serve) -> None:
    app = Digest()
    running = serve(validator(app), request_body_memory_limit=1024,
                    request_body_spool_limit=100_000)
    stats = running.server._engine_stats
    holder = running.connect()
    holder.sendall(_head(90_000) + b"h" * 80_000)   # 80 kB spooled, the rest never comes
    deadline = time.monotonic() + 5
    while stats()["body_bytes_spooled"] < 80_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats()["body_bytes_spooled"] == 80_000, stats()
    with running.connect() as second:
        second.sendall(_head(50_000) + b"s" * 50_000)
        reply = recv_all(second, timeout=5)
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), reply
    assert b"too many large request bodies" in reply
    assert stats()["body_spool_refusals"] == 1
    holder.close()
    deadline = time.monotonic() + 5
    while stats()["body_bytes_spooled"] and time.monotonic() < deadline:
        time.sleep(0.02)
    resp = requests.post(running.url("/"), data=b"s" * 50_000, timeout=10)
    assert resp.text.startswith("50000 ")


def test_a_body_larger_than_the_spool_is_413(serve) -> None:
    running = serve(validator(Digest()), request_body_memory_limit=1024,
                    request_body_spool_limit=10_000)
    with running.connect() as sock:
        sock.sendall(_head(20_000) + b"b" * 20_000)
        reply = recv_all(sock, timeout=5)
    assert reply.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), reply
    assert b"request_body_spool_limit" in reply


def test_no_spool_refuses_bodies_beyond_memory(serve) -> None:
    running = serve(validator(Digest()), request_body_memory_limit=1024,
                    request_body_spool_limit=0)
    assert requests.post(running.url("/"), data=b"m" * 1024, timeout=5).status_code == 200
    # (A body that arrives whole with its head, within one 16 KiB read, is used in place.)
    assert requests.post(running.url("/"), data=b"m" * 100_000, timeout=5).status_code == 413


def test_expect_continue_is_not_collected_ahead(serve) -> None:
    """A client waiting for 100 Continue gets it only when the application reads."""
    app = Digest()
    running = serve(validator(app))
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert app.calls == 1   # the application ran before the body was sent
        sock.sendall(b"hello")
        reply = recv_all(sock, timeout=1)
    assert reply.endswith(b"5 " + hashlib.sha256(b"hello").hexdigest().encode()), reply


def test_content_length_is_still_exact_after_collection(serve) -> None:
    seen: list[str] = []

    def app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(environ.get("CONTENT_LENGTH", ""))
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    running = serve(validator(app))
    with running.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_head(6) + b"abc")
        time.sleep(0.2)
        sock.sendall(b"def" + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = recv_all(sock, timeout=5)
    assert reply.count(b"HTTP/1.1 200 OK") == 2, reply
    assert b"\r\n\r\nabcdef" in reply
    assert seen == ["6", ""]


def test_buffering_setting_is_validated(serve) -> None:
    with pytest.raises(ValueError, match="request_body_memory_limit must be an integer >= 0"):
        serve(hello_app, request_body_memory_limit=-1)


# --- responses to slow readers ----------------------------------------------------------------

BIG = bytes(range(256)) * (40 * 1024)   # 10 MiB


def big_list_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        return [BIG]
    return hello_app(environ, start_response)


def _read_response(sock: socket.socket, expect_body: int, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    while len(body) < expect_body:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed before the whole body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_slow_readers_never_starve_a_normal_request(serve) -> None:
    """numthreads=1: five clients that ask for 10 MiB and read nothing hold no thread."""
    running = serve(validator(big_list_app), numthreads=1, max=1, timeout=30)
    readers = []
    for _ in range(5):
        sock = running.connect(timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(sock)
    stats = running.server._engine_stats
    deadline = time.monotonic() + 5
    while stats()["responses_sending"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats()["responses_sending"] == 5, stats()
    for _ in range(5):
        start = time.monotonic()
        assert requests.get(running.url("/"), timeout=5).text == "hello"
        waited = time.monotonic() - start
        assert waited < 2.0, f"a normal GET waited {waited:.2f}s behind slow readers"
    # Each slow reader still gets every byte, in order, then the connection is reused.
    for sock in readers:
        reply = _read_response(sock, len(BIG))
        assert reply.endswith(b"\r\n\r\n" + BIG)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock, 5).endswith(b"hello")
        sock.close()
    assert stats()["responses_sending"] == 0
    assert stats()["responses_handed_off"] >= 5


def test_slow_reader_that_stops_is_closed_after_timeout(serve) -> None:
    running = serve(validator(big_list_app), numthreads=1, max=1, timeout=1)
    sock = running.connect(timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    stats = running.server._engine_stats
    deadline = time.monotonic() + 5
    while stats()["responses_sending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats()["responses_sending"] == 1
    deadline = time.monotonic() + 5
    while stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats()["open_connections"] == 0, "a reader that stopped kept its connection"
    sock.close()


def test_streamed_response_with_a_pipelined_request_behind_it(serve) -> None:
    """Bytes handed off and the next pipelined response never overtake each other."""
    running = serve(validator(big_list_app), numthreads=1, max=1, timeout=30)
    with running.connect(timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        reply = recv_all(sock, timeout=10)
    first, sep, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert rest[: len(BIG)] == BIG
    assert rest[len(BIG):].startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b"\r\n\r\nhello")


def test_slow_reader_of_a_file_wrapper_response_holds_no_thread(serve, tmp_path) -> None:
    """sendfile goes on from the event loop; the application's file is closed at once (the
    server keeps a descriptor of its own)."""
    path = tmp_path / "big.bin"
    path.write_bytes(BIG)
    closed: list[bool] = []

    class Tracked:
        def __init__(self) -> None:
            self.file = open(path, "rb")  # noqa: SIM115 - closed through close() below

        def read(self, n: int = -1) -> bytes:
            return self.file.read(n)

        def fileno(self) -> int:
            return self.file.fileno()

        def tell(self) -> int:
            return self.file.tell()

        def close(self) -> None:
            self.file.close()
            closed.append(True)

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(BIG)))])
            return environ["wsgi.file_wrapper"](Tracked(), 1 << 20)
        return hello_app(environ, start_response)

    # (Not wrapped in wsgiref's validator: its iterator wrapper hides the file wrapper, and
    # the response would be a plain iteration.)
    running = serve(app, numthreads=1, max=1, timeout=30)
    sock = running.connect(timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
    stats = running.server._engine_stats
    deadline = time.monotonic() + 5
    while stats()["responses_sending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats()["responses_sending"] == 1, stats()
    assert closed == [True], "the file object is closed once the application is done"
    start = time.monotonic()
    assert requests.get(running.url("/"), timeout=5).text == "hello"
    assert time.monotonic() - start < 2.0
    reply = _read_response(sock, len(BIG))
    assert reply.endswith(b"\r\n\r\n" + BIG)
    sock.close()
