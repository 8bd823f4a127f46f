"""Response write-behind (src/outbox.rs): a worker holds small responses while other requests
wait for it and writes them as one batch. These tests check that holding never changes what
a client receives and never delays a response behind a slow request or a paused stream.

A single worker thread makes the order deterministic: a first request keeps it busy while
the others are sent, so they are all waiting when it comes back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable
from wsgiref.validate import validator

from _apps import read_response

SLOW_SECONDS = 1.0


def routed_app(environ: dict, start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return paused_stream()
    if path.startswith("/size/"):
        body = path.encode() + b"." * int(path.rsplit("/", 1)[1])
    else:
        body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    if path.startswith("/pieces/"):
        return iter([body[:3], body[3:]])
    return [body]


def paused_stream() -> Iterator[bytes]:
    yield b"first"
    time.sleep(SLOW_SECONDS)
    yield b"second"


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def connect_all(running: Any, n: int) -> list[socket.socket]:
    return [running.connect(timeout=10) for _ in range(n)]


def recv_until(sock: socket.socket, done: Callable[[bytes], bool], received: bytes = b""
               ) -> bytes:
    """Reads until `done(received)`; the connection must not close first."""
    sock.settimeout(10)
    while not done(received):
        data = sock.recv(65536)
        assert data, f"connection closed early after {len(received)} bytes"
        received += data
    return received


def held(running: Any) -> tuple[int, int]:
    stats = running.server._engine_stats()
    return stats["held_responses"], stats["held_bytes_rescued"]


def send_behind_blocker(running: Any, paths: list[str], block: float = 0.3
                        ) -> tuple[socket.socket, list[socket.socket], float]:
    """Occupies the only worker with a sleeping request, then sends `paths` (one connection
    each, in order) so they are all waiting when the worker is free again."""
    blocker = running.connect(timeout=10)
    blocker.sendall(request(f"/sleep/{block}"))
    time.sleep(0.1)
    socks = connect_all(running, len(paths))
    for sock, path in zip(socks, paths):
        sock.sendall(request(path))
    return blocker, socks, time.monotonic()


def test_held_responses_are_not_delayed_by_a_slow_request(serve):
    running = serve(validator(routed_app), numthreads=1)
    for attempt in range(3):
        paths = [f"/fast/{attempt}/{i}" for i in range(6)] + [f"/sleep/{SLOW_SECONDS}"]
        before_held, before_rescued = held(running)
        blocker, socks, sent = send_behind_blocker(running, paths)
        assert read_response(blocker).status == 200
        for sock, path in zip(socks[:-1], paths[:-1]):
            resp = read_response(sock)
            waited = time.monotonic() - sent
            assert (resp.status, resp.body) == (200, path.encode())
            # The slow request runs right after these: a held response must not wait for it.
            assert waited < 0.3 + SLOW_SECONDS / 2, f"{path} waited {waited:.3f}s"
        assert read_response(socks[-1]).status == 200
        assert time.monotonic() - sent >= SLOW_SECONDS
        for sock in [blocker, *socks]:
            sock.close()
        now_held, now_rescued = held(running)
        assert now_held > before_held, "no response was held: batching did not happen"
        if now_rescued > before_rescued:
            return
    raise AssertionError("the monitor never had to write held bytes; the test proved nothing")


def test_a_paused_stream_sends_its_first_chunk_without_waiting(serve):
    running = serve(validator(routed_app), numthreads=1)
    paths = ["/fast/a", "/fast/b", "/stream", "/fast/c", "/fast/d"]
    blocker, socks, sent = send_behind_blocker(running, paths)
    read_response(blocker)
    stream = socks[2]
    received = recv_until(stream, lambda r: b"first" in r)
    waited = time.monotonic() - sent
    assert waited < 0.3 + SLOW_SECONDS / 2, f"first chunk waited {waited:.3f}s"
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in received
    received = recv_until(stream, lambda r: r.endswith(b"0\r\n\r\n"), received)
    assert received.split(b"\r\n\r\n", 1)[1] == b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"
    for sock, path in zip(socks, paths):
        if sock is not stream:
            resp = read_response(sock)
            assert (resp.status, resp.body) == (200, path.encode())
    for sock in [blocker, *socks]:
        sock.close()


def test_batched_responses_reach_every_client_intact(serve):
    """Many keep-alive clients, one worker: responses are held and batched all the time;
    every client must still get exactly its own responses, in order."""
    running = serve(validator(routed_app), numthreads=1)
    sizes = [0, 1, 100, 5000, 70000, 300000]
    clients, rounds = 16, 25
    failures: list[str] = []

    def client(n: int) -> None:
        with running.connect(timeout=20) as sock:
            for r in range(rounds):
                kind = ("size", "pieces", "plain")[(n + r) % 3]
                if kind == "size":
                    path = f"/size/{n}-{r}/{sizes[(n * 7 + r) % len(sizes)]}"
                else:
                    path = f"/{kind}/{n}-{r}"
                sock.sendall(request(path))
                resp = read_response(sock, timeout=20)
                expected = path.encode()
                if kind == "size":
                    expected += b"." * int(path.rsplit("/", 1)[1])
                if (resp.status, resp.body) != (200, expected):
                    failures.append(f"client {n} round {r}: {resp.status} {resp.body[:60]!r}")
                    return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert held(running)[0] > 0, "no response was held: batching did not happen"


BIG = 100_000  # above the 16 KiB copy limit: queued without a copy, written in batches


def big_stream_app(environ: dict, start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    pieces = [bytes([65 + i % 26]) * (BIG + i) for i in range(12)]
    headers = [("Content-Type", "application/octet-stream")]
    if path == "/length":
        headers.append(("Content-Length", str(sum(map(len, pieces)))))
    start_response("200 OK", headers)
    if path == "/pause":
        return paused_big(pieces)
    return iter(pieces)


def paused_big(pieces: list[bytes]) -> Iterator[bytes]:
    yield pieces[0]
    time.sleep(SLOW_SECONDS)
    yield pieces[1]


def test_big_stream_chunks_arrive_intact_in_both_framings(serve):
    running = serve(validator(big_stream_app), numthreads=1)
    expected = b"".join(bytes([65 + i % 26]) * (BIG + i) for i in range(12))
    with running.connect(timeout=10) as sock:
        for path in ["/length", "/chunked", "/length", "/chunked"]:
            sock.sendall(request(path))
            resp = read_response(sock, timeout=10)
            assert resp.status == 200
            assert resp.chunked == (path == "/chunked")
            assert resp.body == expected


def test_a_paused_big_stream_sends_its_first_chunk_without_waiting(serve):
    running = serve(validator(big_stream_app), numthreads=1)
    with running.connect(timeout=10) as sock:
        sent = time.monotonic()
        sock.sendall(request("/pause"))
        received = recv_until(sock, lambda r: r.count(b"A") >= BIG)
        waited = time.monotonic() - sent
        assert waited < SLOW_SECONDS / 2, f"first chunk waited {waited:.3f}s"
        resp = read_response(sock, timeout=10, buffer=bytearray(received))
        assert resp.body == b"A" * BIG + b"B" * (BIG + 1)


def pipelined_app(environ: dict, start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if path.startswith("/big/"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([path.encode(), b"-" * 40_000, body])
    out = path.encode() + b":" + body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def pipelined_batch(n: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """`n` pipelined requests of several kinds, and (method, expected body) for each."""
    data, expected = b"", []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data += request(f"/small/{i}")
            expected.append(("GET", f"/small/{i}:".encode()))
        elif kind == 1:
            data += request(f"/big/{i}")
            expected.append(("GET", f"/big/{i}".encode() + b"-" * 40_000))
        elif kind == 2:
            payload = f"body-{i}".encode()
            data += (f"POST /post/{i} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
            expected.append(("POST", f"/post/{i}:".encode() + payload))
        else:
            data += f"HEAD /head/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            expected.append(("HEAD", b""))
    return data, expected


def test_pipelined_responses_are_batched_in_order(serve):
    running = serve(validator(pipelined_app), numthreads=1)
    before = held(running)[0]
    data, expected = pipelined_batch(24)
    with running.connect(timeout=10) as sock:
        sock.sendall(data)
        buf = bytearray()
        for method, body in expected:
            resp = read_response(sock, method=method, timeout=10, buffer=buf)
            assert (resp.status, resp.body) == (200, body)
        assert not buf
    assert held(running)[0] > before, "no pipelined response was held"


def two_answered_then(sock: socket.socket, tail: bytes) -> bytearray:
    """Pipelines two small requests and `tail`; checks the two answers, returns what is left."""
    sock.sendall(request("/small/a") + request("/small/b") + tail)
    buf = bytearray()
    for path in ("/small/a", "/small/b"):
        assert read_response(sock, buffer=buf).body == path.encode() + b":"
    return buf


def test_a_pipelined_request_cut_in_the_middle_completes_later(serve):
    running = serve(validator(pipelined_app), numthreads=1)
    with running.connect(timeout=10) as sock:
        buf = two_answered_then(sock, b"GET /small/c HTTP/1.1\r\nHo")
        time.sleep(0.2)
        sock.sendall(b"st: t\r\n\r\n")
        assert read_response(sock, buffer=buf).body == b"/small/c:"


def test_a_bad_pipelined_request_follows_the_held_responses(serve):
    running = serve(validator(pipelined_app), numthreads=1)
    with running.connect(timeout=10) as sock:
        buf = two_answered_then(sock, b"GET /bad\x01 HTTP/1.1\r\n\r\n")
        assert read_response(sock, buffer=buf).status == 400
