"""glibc's malloc in a long-running server (src/memory.rs): the arena cap and the idle trim.

Each test runs the server in a fresh process, so that its arenas and its resident size are
the server's alone: a burst of slow requests makes the pool grow to 12 threads, each request
allocates 10 MB and keeps only its last block, so the rest is freed memory below a live
allocation, which glibc keeps resident until `malloc_trim`.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc arenas and malloc_trim (musl has neither)")

MIB = 1024 * 1024
HEAP_MAX = 64 * MIB  # glibc reserves each thread-arena heap at this size and alignment
BURST = 12

SERVER = textwrap.dedent("""
    import time
    from wsgiref.validate import validator
    from stogie import wsgi

    PINS = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/burst":
            time.sleep(0.3)  # every thread busy: the pool grows
            blocks = [b"x" * 100_000 for _ in range(100)]  # below the 128 KiB mmap threshold
            PINS.append(blocks[-1])  # the other 99 are freed beneath a live block
            del blocks
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = wsgi.Server(("127.0.0.1", 0), validator(app), numthreads=2, max=16)
    server.prepare()
    print(server.bind_addr[1], flush=True)
    server.serve()
""")


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port

    def get(self, path: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data

    def burst(self) -> None:
        """BURST concurrent /burst requests, each answered 200."""
        answers: list[bytes] = []
        threads = [threading.Thread(target=lambda: answers.append(self.get("/burst")))
                   for _ in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(answers) == BURST
        assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers), answers

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def thread_arenas(self) -> int:
        """glibc's thread-arena heaps: read-write anonymous mappings that start on a 64 MiB
        boundary and end where the heap's inaccessible rest of the reservation begins (or
        fill it)."""
        maps = []
        with open(f"/proc/{self.proc.pid}/maps") as f:
            for line in f:
                fields = line.split()
                start, end = (int(x, 16) for x in fields[0].split("-"))
                maps.append((start, end, fields[1], len(fields) > 5))
        count = 0
        for i, (start, end, perms, named) in enumerate(maps):
            if named or perms != "rw-p" or start % HEAP_MAX:
                continue
            rest = maps[i + 1] if i + 1 < len(maps) else None
            fills = end - start == HEAP_MAX
            reserved = (rest is not None and rest[0] == end and rest[2] == "---p"
                        and rest[1] == start + HEAP_MAX)
            count += fills or reserved
        return count


@pytest.fixture
def server() -> Iterator[Callable[..., Served]]:
    procs: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str] | None = None) -> Served:
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
        environ.update(env or {})
        proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                                text=True, env=environ)
        procs.append(proc)
        assert proc.stdout is not None
        return Served(proc, int(proc.stdout.readline()))

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(15)


def test_freed_memory_goes_back_to_the_kernel_when_idle(server: Callable[..., Served]) -> None:
    s = server()
    s.get("/")
    time.sleep(1.5)  # the start-up allocations trimmed too
    before = s.rss()
    s.burst()
    after_burst = s.rss()
    kept = after_burst - before
    # Sanity: the burst leaves memory behind (10 MB per request, at least one at a time).
    assert kept > 8 * MIB, f"the burst grew RSS only {kept / MIB:.1f} MiB"
    assert s.threads() > 2 + BURST // 2, "the pool did not grow"
    deadline = time.monotonic() + 10
    while s.rss() - before > kept / 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    left = s.rss() - before
    assert left <= kept / 4, (
        f"RSS {before / MIB:.1f} MiB before the burst, {after_burst / MIB:.1f} after it, "
        f"still {s.rss() / MIB:.1f} MiB 10 s later")


def test_arenas_are_capped(server: Callable[..., Served]) -> None:
    s = server()
    s.burst()
    assert s.threads() > 2 + BURST // 2, "the pool did not grow"
    # Without the cap each new thread gets an arena of its own (up to 8 per core).
    assert s.thread_arenas() == 1


def test_malloc_arena_max_from_the_environment_wins(server: Callable[..., Served]) -> None:
    s = server({"MALLOC_ARENA_MAX": "4"})
    s.burst()
    assert s.thread_arenas() == 3  # the main arena and three more
