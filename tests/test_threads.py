"""numthreads worker threads run the application: functional concurrency checks.

These are not benchmarks: the bounds leave a lot of slack for a noisy 2-core machine, but
they still tell 10-way parallelism from serial execution.
"""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from _apps import read_response


class SleepyApp:
    """Sleeps `delay` per request and records concurrency and the threads it ran on."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.threads: set[int] = set()
        self.thread_names: set[str] = set()

    def __call__(self, environ, start_response):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.add(threading.get_ident())
            self.thread_names.add(threading.current_thread().name)
        try:
            time.sleep(self.delay)
        finally:
            with self.lock:
                self.active -= 1
        body = b"slept"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def run_clients(running, clients: int, per_client: int, timeout: float = 30.0) -> float:
    """`clients` keep-alive connections, each doing `per_client` sequential requests."""
    barrier = threading.Barrier(clients)

    def client(_):
        conn = http.client.HTTPConnection(running.host, running.port, timeout=timeout)
        try:
            conn.connect()
            barrier.wait(timeout)
            for _ in range(per_client):
                conn.request("GET", "/")
                resp = conn.getresponse()
                assert resp.status == 200
                assert resp.read() == b"slept"
        finally:
            conn.close()

    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for fut in [pool.submit(client, i) for i in range(clients)]:
            fut.result()
    return time.monotonic() - t0


def test_ten_threads_run_in_parallel(serve):
    app = SleepyApp(0.1)
    running = serve(app, numthreads=10, request_queue_size=64)
    elapsed = run_clients(running, clients=50, per_client=2)
    assert app.calls == 100
    # Serial would be 100 * 0.1 s = 10 s; ten-way parallel is ~1 s.
    assert elapsed < 5.0, f"100 requests took {elapsed:.2f}s: no parallelism"
    assert 6 <= app.max_active <= 10, app.max_active
    assert len(app.threads) <= 10, app.thread_names
    assert threading.get_ident() not in app.threads
    assert running.thread.ident not in app.threads, "the app ran on the serving thread"


def test_default_numthreads_is_ten(serve):
    app = SleepyApp(0.2)
    running = serve(app, request_queue_size=64)
    run_clients(running, clients=20, per_client=1)
    assert app.calls == 20
    assert 6 <= app.max_active <= 10, app.max_active


def test_one_thread_serializes(serve):
    app = SleepyApp(0.1)
    running = serve(app, numthreads=1)
    elapsed = run_clients(running, clients=5, per_client=2)
    assert app.calls == 10
    assert app.max_active == 1
    assert len(app.threads) == 1, app.thread_names
    assert elapsed >= 0.95, f"10 requests of 0.1 s took only {elapsed:.2f}s on one thread"


@pytest.mark.parametrize("numthreads", [2, 4])
def test_max_active_equals_numthreads(serve, numthreads):
    app = SleepyApp(0.15)
    running = serve(app, numthreads=numthreads)
    elapsed = run_clients(running, clients=numthreads * 3, per_client=2)
    assert app.max_active == numthreads
    assert len(app.threads) <= numthreads
    # 6 rounds of 0.15 s at the very least.
    assert elapsed >= 0.85


def test_slow_request_does_not_stall_fast_one(serve):
    release = threading.Event()
    slow_started = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            slow_started.set()
            release.wait(2)
            body = b"slow"
        else:
            body = b"fast"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    running = serve(app, numthreads=2)
    slow_result = {}

    def slow_client():
        slow_result["text"] = requests.get(running.url("/slow"), timeout=10).text

    t = threading.Thread(target=slow_client, daemon=True)
    t.start()
    try:
        assert slow_started.wait(5)
        t0 = time.monotonic()
        fast = requests.get(running.url("/fast"), timeout=5)
        fast_elapsed = time.monotonic() - t0
        assert fast.text == "fast"
        assert fast_elapsed < 1.0, f"fast request waited {fast_elapsed:.2f}s behind the slow one"
        assert t.is_alive(), "the slow request should still be running"
    finally:
        release.set()
    t.join(10)
    assert slow_result == {"text": "slow"}


def test_idle_keepalive_connections_hold_no_worker(serve):
    app = SleepyApp(0.0)
    running = serve(app, numthreads=2)
    idle = []
    try:
        for _ in range(6):
            sock = running.connect()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(sock).body == b"slept"
            idle.append(sock)
        t0 = time.monotonic()
        r = requests.get(running.url(), timeout=5)
        assert r.text == "slept"
        assert time.monotonic() - t0 < 1.0
        # The parked connections still work afterwards.
        for sock in idle:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(sock).body == b"slept"
    finally:
        for sock in idle:
            sock.close()


def test_silent_connections_hold_no_worker(serve):
    """Connections that never send a byte must not starve the pool (slowloris)."""
    app = SleepyApp(0.0)
    running = serve(app, numthreads=1, timeout=10)
    silent = [running.connect() for _ in range(4)]
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        r = requests.get(running.url(), timeout=5)
        assert r.text == "slept"
        assert time.monotonic() - t0 < 1.5
    finally:
        for sock in silent:
            sock.close()


def test_slow_upload_holds_no_other_request(serve):
    """A client dribbling its request head must not block other clients either."""
    app = SleepyApp(0.0)
    running = serve(app, numthreads=1, timeout=10)
    slow = running.connect()
    try:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX-Partial: ")
        time.sleep(0.2)
        t0 = time.monotonic()
        assert requests.get(running.url(), timeout=5).text == "slept"
        assert time.monotonic() - t0 < 1.5
        slow.sendall(b"done\r\n\r\n")
        assert read_response(slow).body == b"slept"
    finally:
        slow.close()


def test_requests_session_many_requests(serve):
    """Like cheroot's test_connection_keepalive: many keep-alive requests from a thread pool."""
    hits = {"n": 0}
    lock = threading.Lock()

    def app(environ, start_response):
        with lock:
            hits["n"] += 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    running = serve(app, numthreads=10, request_queue_size=64)
    local = threading.local()

    def one(_):
        if not hasattr(local, "s"):
            local.s = requests.Session()
        r = local.s.get(running.url(), timeout=10)
        return r.status_code, r.text

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(400)))
    assert results == [(200, "ok")] * 400
    assert hits["n"] == 400
