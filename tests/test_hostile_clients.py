"""Hostile clients: slowloris heads, slow readers of large responses, tens of thousands of idle
keep-alive connections and file-descriptor exhaustion at accept.

The server runs in this process (so /proc/self tells its memory, fds and threads), except for
the fd-exhaustion test, which lowers RLIMIT_NOFILE inside a server subprocess. Each test prints
the figures it measured (run with `-s` to see them; SECURITY.md quotes them).
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from _http import parse_responses, read_until_close
from conftest import Running, hello_app

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


# ---------------------------------------------------------------------------
# process figures
# ---------------------------------------------------------------------------

def rss_kib(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples this process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_get(running: Running, timeout: float = 5.0) -> float:
    """A normal client: fresh connection, one request, whole response. Returns the latency."""
    start = time.monotonic()
    with running.connect(timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data, _ = read_until_close(sock, timeout)
    elapsed = time.monotonic() - start
    responses = parse_responses(data)
    assert [r.status for r in responses] == [200], responses
    return elapsed


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed for this test")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# ---------------------------------------------------------------------------
# slowloris
# ---------------------------------------------------------------------------

TRICKLERS = 500
HEAD = b"GET /slow HTTP/1.1\r\nHost: h\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n"


def test_trickling_heads_do_not_slow_normal_clients_and_get_408(
        serve: Callable[..., Running]) -> None:
    raise_nofile(2 * TRICKLERS + 256)
    running = serve(hello_app, timeout=2)
    baseline = [timed_get(running) for _ in range(20)]

    socks: list[socket.socket] = []
    opened: dict[int, float] = {}
    for _ in range(TRICKLERS):
        sock = running.connect()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEAD[:1])
        opened[sock.fileno()] = time.monotonic()
        socks.append(sock)
    stop = threading.Event()
    broken: set[int] = set()

    def trickle() -> None:
        pos = 1
        while not stop.wait(1.0) and pos < len(HEAD):
            for sock in socks:
                if sock.fileno() in broken:
                    continue
                try:
                    sock.send(HEAD[pos:pos + 1])
                except OSError:
                    broken.add(sock.fileno())
            pos += 1

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        latencies = []
        phase_end = time.monotonic() + 1.6
        while time.monotonic() < phase_end:
            latencies.append(timed_get(running))
            time.sleep(0.02)

        # Every trickler gets a 408 and is closed at the 2 s head deadline (a total deadline:
        # at one byte per second no single read ever waits long).
        results: dict[int, bytes] = {s.fileno(): b"" for s in socks}
        closed_at: dict[int, float] = {}
        sel = selectors.DefaultSelector()
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = max(opened.values()) + 2 + 3
        while len(closed_at) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(4096)
                except OSError:
                    data = b""
                if data:
                    results[ready.fileno()] += data
                else:
                    closed_at[ready.fileno()] = time.monotonic()
                    sel.unregister(ready)
        sel.close()
    finally:
        stop.set()
        trickler.join()
        for sock in socks:
            sock.close()

    base_p50 = statistics.median(baseline)
    p50 = statistics.median(latencies)
    worst = max(latencies)
    lifetimes = [closed_at[fd] - opened[fd] for fd in closed_at]
    print(f"\n[trickle] {TRICKLERS} slowloris connections; normal client latency: baseline p50 "
          f"{base_p50 * 1000:.2f} ms, during p50 {p50 * 1000:.2f} ms, max {worst * 1000:.2f} ms "
          f"over {len(latencies)} requests; tricklers closed after "
          f"{min(lifetimes or [0]):.2f}-{max(lifetimes or [0]):.2f} s")
    not_closed = len(socks) - len(closed_at)
    assert not_closed == 0, f"{not_closed} trickling connections still open after the deadline"
    no_408 = [r[:60] for r in results.values() if not r.startswith(b"HTTP/1.1 408 ")]
    assert not no_408, f"{len(no_408)} tricklers got no 408, e.g. {no_408[:3]}"
    assert max(lifetimes) < 2 + 1.5, f"closed after {max(lifetimes):.2f}s with timeout=2"
    assert min(lifetimes) > 1.5, f"closed after {min(lifetimes):.2f}s: before the deadline"
    assert len(latencies) >= 20, f"only {len(latencies)} normal requests in 1.6 s"
    assert p50 < max(5 * base_p50, 0.02), f"normal p50 {p50:.4f}s vs {base_p50:.4f}s before"
    assert worst < 0.25, f"a normal request took {worst:.3f}s while tricklers were connected"


# ---------------------------------------------------------------------------
# slow reader of a large streamed response
# ---------------------------------------------------------------------------

STREAM_CHUNK = b"s" * 65536
STREAM_CHUNKS = 800  # 50 MiB


def streaming_app(environ: dict, start_response: Callable[..., Any]) -> Iterator[bytes]:
    if environ["PATH_INFO"] == "/":
        return iter(hello_app(environ, start_response))
    n = STREAM_CHUNKS if environ["PATH_INFO"] == "/big" else 16
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(n * len(STREAM_CHUNK)))])
    return (STREAM_CHUNK for _ in range(n))


def _read_response(sock: socket.socket, buf: bytearray, pause: float = 0.0,
                   pause_until: int = 0) -> int:
    """Reads one Content-Length response into a reused buffer; returns the body length."""
    view = memoryview(buf)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    got = 0
    while got < length:
        n = sock.recv_into(view, min(len(buf), length - got))
        if not n:
            break
        got += n
        if got < pause_until:
            time.sleep(pause)
    return got


def test_slow_reader_of_a_large_response_costs_bounded_memory(
        serve: Callable[..., Running]) -> None:
    running = serve(streaming_app, timeout=5)
    buf = bytearray(65536)
    # Warm-up: the same path with a 1 MiB response, so allocator pools exist already.
    with running.connect() as sock:
        sock.sendall(b"GET /warm HTTP/1.1\r\nHost: h\r\n\r\n")
        assert _read_response(sock, buf) == 16 * 65536
    before = rss_kib()
    total = STREAM_CHUNKS * len(STREAM_CHUNK)
    with RssSampler() as sampler, running.connect(timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        # The reader stalls for 1.5 s (below the 5 s timeout): the server must block on the
        # socket, not buffer the 50 MiB the application would happily produce meanwhile.
        time.sleep(1.5)
        stalled = rss_kib()
        # Other clients are served meanwhile.
        other = timed_get(running)
        # Then it reads slowly (64 KiB per 5 ms) for the first 8 MiB, and the rest quickly.
        start = time.monotonic()
        got = _read_response(sock, buf, pause=0.005, pause_until=8 << 20)
        elapsed = time.monotonic() - start
    growth = (sampler.peak - before) / 1024
    print(f"\n[slow reader] {total >> 20} MiB streamed to a stalled then slow reader in "
          f"{elapsed:.1f} s: RSS {before / 1024:.1f} MiB before, {stalled / 1024:.1f} MiB while "
          f"stalled, peak growth {growth:.1f} MiB; another client meanwhile: "
          f"{other * 1000:.1f} ms")
    assert got == total, f"only {got} of {total} bytes arrived"
    assert growth < 16, f"RSS grew {growth:.1f} MiB streaming to a slow reader"
    assert other < 0.5


# ---------------------------------------------------------------------------
# 10,000 idle keep-alive connections
# ---------------------------------------------------------------------------

IDLE = 10_000

IDLE_CLIENT = textwrap.dedent("""
    import resource, selectors, socket, sys, time
    port, n = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    start = time.monotonic()
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
    request = b"GET / HTTP/1.1\\r\\nHost: h\\r\\n\\r\\n"
    for s in socks:
        s.sendall(request)
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = b""
    done = 0
    deadline = time.monotonic() + 60
    while done < n and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj
            data = s.recv(4096)
            if not data:
                print("EOF", flush=True)
                sys.exit(1)
            got[s] += data
            if got[s].endswith(b"Hello, world!"):
                sel.unregister(s)
                done += 1
    print(f"READY {done} {time.monotonic() - start:.2f}", flush=True)
    sys.stdin.readline()
    # Nothing may have arrived on an idle connection meanwhile (no close, no data).
    alive = 0
    for s in socks:
        try:
            alive += s.recv(1) == b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    print(f"CLOSED {sum(1 for _ in socks)} {alive}", flush=True)
""")


def test_ten_thousand_idle_keep_alive_connections(serve: Callable[..., Running]) -> None:
    raise_nofile(IDLE + 512)
    running = serve(hello_app, timeout=60)
    timed_get(running)
    threads_before = thread_count()
    fds_before = fd_count()
    rss_before = rss_kib()
    child = subprocess.Popen([sys.executable, "-c", IDLE_CLIENT, str(running.port), str(IDLE)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = child.stdout.readline().split()
        assert ready[:2] == ["READY", str(IDLE)], f"the client did not get its responses: {ready}"
        held_fds = fd_count() - fds_before
        rss_held = rss_kib()
        threads_held = thread_count()
        latency = max(timed_get(running) for _ in range(10))
        child.stdin.write("close\n")
        child.stdin.flush()
        closed = child.stdout.readline().split()
        count = fd_count()
        deadline = time.monotonic() + 10
        while count > fds_before + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            count = fd_count()
    finally:
        with contextlib.suppress(OSError):
            child.kill()
        child.wait(10)
    print(f"\n[idle] {IDLE} idle keep-alive connections set up in {ready[2]} s: server fds "
          f"+{held_fds}, threads {threads_before} -> {threads_held}, RSS "
          f"{rss_before / 1024:.1f} -> {rss_held / 1024:.1f} MiB "
          f"({(rss_held - rss_before) * 1024 / IDLE:.0f} B per connection); normal request "
          f"while held: {latency * 1000:.1f} ms; fds after close: {count} (before {fds_before})")
    assert held_fds >= IDLE, f"the server holds only {held_fds} connections"
    assert closed[:3] == ["CLOSED", str(IDLE), str(IDLE)], (
        f"idle connections were dropped or got data while held: {closed}")
    assert threads_held <= threads_before, (
        f"threads grew from {threads_before} to {threads_held} with idle connections")
    assert latency < 0.5, f"a normal request took {latency:.3f}s with {IDLE} idle connections"
    assert count <= fds_before + 2, f"fds not released: {count} now, {fds_before} before"


# ---------------------------------------------------------------------------
# running out of file descriptors at accept
# ---------------------------------------------------------------------------

FD_SERVER = textwrap.dedent("""
    import os, resource, sys, threading
    sys.path[:0] = [sys.argv[1]]
    from conftest import hello_app
    from stogie import wsgi
    server = wsgi.Server(("127.0.0.1", 0), hello_app, numthreads=4, timeout=30)
    server.prepare()
    # Room for ~40 connections beyond what the running server holds.
    limit = len(os.listdir("/proc/self/fd")) + 40
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    print(server.bind_addr[1], limit, flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve()
""")


def _answered(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"Hello, world!"):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
    except socket.timeout:
        return False
    return data.startswith(b"HTTP/1.1 200 ")


def test_fd_exhaustion_at_accept_is_survived() -> None:
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen([sys.executable, "-c", FD_SERVER, tests_dir],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    pending: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port_text, limit = child.stdout.readline().split()
        port = int(port_text)
        # Open keep-alive connections until the server cannot accept any more.
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(REQUEST)
            if _answered(sock, 1.0):
                held.append(sock)
            else:
                pending.append(sock)
                break
        assert pending, f"never ran out of fds with the limit at {limit} ({len(held)} served)"
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(REQUEST)
            pending.append(sock)
        # While it cannot accept, the server must not spin on the listening socket.
        cpu_start = cpu_seconds(child.pid)
        time.sleep(1.0)
        cpu_used = cpu_seconds(child.pid) - cpu_start
        assert child.poll() is None, "the server died when it ran out of fds"
        for sock in held:
            sock.close()
        # The connections that waited in the backlog are served once fds are free again,
        # without a new connection arriving to wake the listener.
        served_pending = sum(_answered(sock, 4.0) for sock in pending)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fresh:
            fresh.sendall(REQUEST)
            fresh_ok = _answered(fresh, 4.0)
    finally:
        for sock in held + pending:
            sock.close()
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print(f"\n[fd exhaustion] limit {limit}: {len(held)} connections served before accept "
          f"failed; server CPU while exhausted {cpu_used * 100:.0f}% of a core; "
          f"{served_pending}/{len(pending)} backlogged connections served after fds were freed")
    assert cpu_used < 0.5, f"the server used {cpu_used:.2f}s CPU in 1 s while out of fds"
    assert served_pending == len(pending), (
        f"only {served_pending} of {len(pending)} backlogged connections were served")
    assert fresh_ok, "the server does not serve new connections after fd exhaustion"
