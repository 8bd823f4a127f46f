"""Lingering close after an error response (docs/http-policy.md, "6. Connection management").

After a "400 + close" the server shuts down its write side and discards what the client still
sends, for at most 200 ms and 64 KiB, so unread bytes do not make the kernel reset the
connection before the client has read the response. No thread may wait for such a client:
the connection waits in epoll like an idle one.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

from _http import assert_error, read_until_close, talk
from conftest import hello_app

BAD_REQUEST = b"GET / HTTP/1.1\r\n\r\n"          # no Host: 400 + close
LINGER_BUDGET = 64 * 1024
READ_CHUNK = 16 * 1024


def timed_get(port: int) -> float:
    """Seconds for one ordinary GET on a fresh connection (its whole response read)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, closed = read_until_close(sock, 5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and closed, data
    return time.monotonic() - start


def silent_rejected_client(port: int) -> socket.socket:
    """A client whose request is refused and which then stays open and silent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(BAD_REQUEST)
    return sock


def test_silent_rejected_clients_do_not_stall_the_server(serve):
    running = serve(hello_app, numthreads=10)
    clients = [silent_rejected_client(running.port) for _ in range(20)]
    try:
        time.sleep(0.05)   # all 20 requests are in
        assert timed_get(running.port) < 0.1
    finally:
        for sock in clients:
            sock.close()


def test_a_steady_trickle_of_rejected_clients_costs_ordinary_requests_nothing(serve):
    running = serve(hello_app, numthreads=10)
    stop = threading.Event()
    clients: list[socket.socket] = []

    def attacker() -> None:
        while not stop.is_set():
            clients.append(silent_rejected_client(running.port))
            stop.wait(0.2)            # 5 per second

    thread = threading.Thread(target=attacker)
    thread.start()
    timings = []
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            timings.append(timed_get(running.port))
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
        for sock in clients:
            sock.close()
    assert len(clients) >= 25
    assert statistics.median(timings) < 0.01, sorted(timings)[-5:]


def test_the_error_response_arrives_whole_despite_an_unread_body(serve):
    running = serve(hello_app, max_request_body_size=1000)
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        sent = 0
        try:
            # The body keeps coming after the 413 went out: it must not reset the connection
            # before the client has read the answer.
            for _ in range(10):
                sock.sendall(b"x" * 8192)
                sent += 8192
        except OSError:
            pass
        data, closed = read_until_close(sock, 5)
    assert closed
    assert_error(data, 413)
    assert sent > 0


def test_a_client_that_keeps_sending_is_cut_at_the_byte_budget(serve):
    running = serve(hello_app)
    before = running.server._engine.stats()["bytes_in"]
    with running.connect() as sock:
        sock.sendall(BAD_REQUEST)
        sock.setblocking(False)
        pushed = 0
        cut = False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                pushed += sock.send(b"g" * 65536)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:      # reset or broken pipe: the server closed
                cut = True
                break
        sock.setblocking(True)
        if not cut:
            data, cut = read_until_close(sock, 1)
    assert cut, "the server never closed the connection"
    deadline = time.monotonic() + 2
    while running.server._engine.stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.01)
    discarded = running.server._engine.stats()["bytes_in"] - before - len(BAD_REQUEST)
    # The server read (and dropped) its budget of what followed, besides what its read of the
    # request head had already taken (one 16 KiB read), then closed while the client pushed
    # more.
    assert LINGER_BUDGET <= discarded <= LINGER_BUDGET + READ_CHUNK, (discarded, pushed)
    assert pushed > LINGER_BUDGET


def test_lingering_connections_close_when_the_client_closes(serve):
    running = serve(hello_app)
    result = talk(running, BAD_REQUEST + b"junk", timeout=2, shut_write=True)
    assert_error(result, 400)
    assert result.elapsed < 1
    deadline = time.monotonic() + 2
    while running.server._engine.stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.server._engine.stats()["open_connections"] == 0
