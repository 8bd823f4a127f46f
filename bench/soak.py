"""Soak test: mixed load against one stogie server process, watching its memory, file
descriptors and threads (not part of CI; see bench/SOAK.md).

    python3 bench/soak.py                       # >= 1,000,000 requests, then the checks
    python3 bench/soak.py --requests 200000     # shorter
    python3 bench/soak.py --duration 1800       # 30 minutes of the mixed soak, a line per 10 s
    python3 bench/soak.py --big                 # 1 GiB uploads and a 1 GiB download instead
    python3 bench/soak.py --big --requests 1000000   # both

The server runs in a subprocess (this file, `serve` sub-command) with the stogie importable in
this interpreter. Load comes from `wrk` (one thread, N connections) with a Lua script that cycles
through the mix: keep-alive hello, `Connection: close` hello, POST echo (Content-Length), chunked
POST echo, and a streamed (chunked) response. Every second the server's RSS, open fds and
threads are sampled and a Python probe checks that an echo round-trips byte for byte.

`--duration SECONDS` runs the time-bounded mixed soak instead (it stops by itself): wrk with
keep-alive GETs, 100 KiB Content-Length POSTs and chunked POSTs; Python client threads that
open connection after connection, check every answer byte for byte and drop one connection in
twenty mid-request (half a head, half a body, part of a chunked body; FIN or RST); three
slowloris clients (a head byte every 2 s, reconnecting when the server cuts them). A line
every 10 s: elapsed time, requests answered so far, RSS, fds, threads.

Verdict (exit status 1 on failure): after warm-up, RSS may grow at most `--rss-growth` MiB
(default 8) by the end of the run (with --duration, also at most `--late-rss` MiB from
`--late-after` seconds on); fds and threads must be back to their post-warm-up values once the
load stops; wrk must see no errors and no non-2xx responses; every probe and every Python
client exchange must succeed.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable

MIB = 1024 * 1024
HELLO = b"Hello, soak!"
STREAM_PIECE = b"s" * 4096
STREAM_PIECES = 16
READ_SIZE = 64 * 1024
BIG_PIECE = b"b" * (256 * 1024)

# ---------------------------------------------------------------------------
# the application (runs in the server subprocess)
# ---------------------------------------------------------------------------


def _read_all(environ: dict[str, Any]) -> Iterator[bytes]:
    inp = environ["wsgi.input"]
    while True:
        data = inp.read(READ_SIZE)
        if not data:
            return
        yield data


_served = [0]
_served_lock = threading.Lock()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with _served_lock:
        _served[0] += 1
    path = environ.get("PATH_INFO", "")
    if path == "/count":  # requests the application has been called for, this one included
        out = str(_served[0]).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if path == "/mem":  # glibc malloc totals and Python's allocated blocks, as JSON
        query = environ.get("QUERY_STRING")
        if query == "gc":  # after a full garbage collection
            gc.collect()
        if query == "arenas":  # malloc_info(): each arena's size and free bytes
            figures: Any = arena_info()
        elif query == "trim":  # RSS before and after malloc_trim(0)
            figures = trim_figures()
        else:
            figures = malloc_figures()
        out = json.dumps(figures).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(HELLO)))])
        return [HELLO]
    if path == "/echo":
        body = b"".join(_read_all(environ))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (STREAM_PIECE for _ in range(STREAM_PIECES))
    if path == "/upload":  # counts a body of any size without keeping it
        total = sum(len(piece) for piece in _read_all(environ))
        out = str(total).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if path == "/download":  # ?N bytes, streamed in 256 KiB pieces with a Content-Length
        size = int(environ.get("QUERY_STRING") or 0)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])

        def pieces() -> Iterator[bytes]:
            left = size
            while left > 0:
                piece = BIG_PIECE if left >= len(BIG_PIECE) else BIG_PIECE[:left]
                left -= len(piece)
                yield piece
        return pieces()
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return []


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_figures() -> dict[str, int]:
    """glibc's mallinfo2() over all arenas (bytes): `used` by live allocations from the arenas,
    `free` kept by the arenas, `mmapped` in separate mappings; and Python's `py_blocks`
    (sys.getallocatedblocks). Empty malloc figures where mallinfo2 is missing (not glibc)."""
    out = {"py_blocks": sys.getallocatedblocks()}
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return out
    fn.restype = _Mallinfo2
    info = fn()
    out.update(used=info.uordblks, free=info.fordblks, mmapped=info.hblkhd, arena=info.arena)
    return out


def arena_info() -> list[dict[str, int]]:
    """Per arena, from glibc's malloc_info() XML: `nr`, `size` (bytes the arena has from the
    system), `free` (bytes in its free chunks, fastbins included). Empty where it is missing."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_info"):
        return []
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    xml = ctypes.string_at(buf, size.value).decode()
    libc.free(buf)
    arenas = []
    for heap in ElementTree.fromstring(xml).findall("heap"):
        totals = {t.get("type"): int(t.get("size", 0)) for t in heap.findall("total")}
        current = next(int(s.get("size", 0)) for s in heap.findall("system")
                       if s.get("type") == "current")
        arenas.append({"nr": int(heap.get("nr", -1)), "size": current,
                       "free": totals.get("fast", 0) + totals.get("rest", 0)})
    return arenas


def _own_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def trim_figures() -> dict[str, int]:
    """RSS (KiB) before and after glibc's malloc_trim(0), and the microseconds it took."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        return {}
    before = _own_rss_kib()
    started = time.perf_counter()
    libc.malloc_trim(ctypes.c_size_t(0))
    took = time.perf_counter() - started
    return {"rss_before_kib": before, "rss_after_kib": _own_rss_kib(),
            "trim_us": round(took * 1e6)}


def serve(port: int, threads: int) -> None:
    from stogie import wsgi

    server = wsgi.Server(("127.0.0.1", port), application, numthreads=threads)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    server.safe_start()


# ---------------------------------------------------------------------------
# process figures
# ---------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int
    threads: int

    def line(self, label: str) -> str:
        return (f"{label:<18} RSS {self.rss_kib / 1024:8.1f} MiB   fds {self.fds:5d}   "
                f"threads {self.threads:3d}")


def sample(pid: int, t0: float = 0.0) -> Sample:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return Sample(time.monotonic() - t0, rss, len(os.listdir(f"/proc/{pid}/fd")),
                  len(os.listdir(f"/proc/{pid}/task")))


HEAP_MAX = 64 * MIB  # glibc's per-thread arena heaps are reserved at this size and alignment


def arena_mappings(pid: int) -> tuple[int, int, int]:
    """From /proc/PID/smaps: the number of glibc thread-arena heaps (anonymous read-write
    mappings that start on a 64 MiB boundary), their resident KiB, and the main heap's."""
    count = arena_kib = heap_kib = 0
    kind = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                start = int(fields[0].split("-")[0], 16)
                path = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if path == "[heap]" else
                        "arena" if not path and fields[1] == "rw-p" and start % HEAP_MAX == 0
                        else "")
                count += kind == "arena"
            elif fields[0] == "Rss:" and kind:
                if kind == "arena":
                    arena_kib += int(fields[1])
                else:
                    heap_kib += int(fields[1])
    return count, arena_kib, heap_kib


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve",
                             "--port", str(port), "--threads", str(threads)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request(port, b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n")[1] == HELLO:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------
# a small strict client (probes and the big transfers)
# ---------------------------------------------------------------------------


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str]]:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise OSError("connection closed before the response head")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[:]
    buf += rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, headers


def _read_body(sock: socket.socket, buf: bytearray, headers: dict[str, str],
               keep: bool = True) -> tuple[bytes, int]:
    """The body (if `keep`) and its length; Content-Length or chunked framing."""
    out = bytearray()
    total = 0
    if "content-length" in headers:
        left = int(headers["content-length"])
        take = min(left, len(buf))
        total += take
        if keep:
            out += buf[:take]
        del buf[:take]
        left -= take
        scratch = bytearray(1 << 20)
        view = memoryview(scratch)
        while left:
            n = sock.recv_into(view, min(left, len(scratch)))
            if not n:
                raise OSError("connection closed inside the body")
            if keep:
                out += view[:n]
            total += n
            left -= n
        return bytes(out), total
    while True:  # chunked
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, rest = bytes(buf).partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        del buf[:]
        buf += rest
        while len(buf) < size + 2:
            data = sock.recv(65536)
            if not data:
                raise OSError("connection closed inside a chunk")
            buf += data
        if keep:
            out += buf[:size]
        total += size
        del buf[:size + 2]
        if size == 0:
            return bytes(out), total


def request(port: int, raw: bytes, body: Iterable[bytes] = (),
            timeout: float = 30) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        for piece in body:
            sock.sendall(piece)
        buf = bytearray()
        status, headers = _read_head(sock, buf)
        data, _ = _read_body(sock, buf, headers)
        return status, data


def probe(port: int, rng: random.Random) -> str | None:
    """An echo of random bytes must come back unchanged; returns an error text or None."""
    body = rng.randbytes(rng.randrange(1, 8192))
    raw = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    try:
        status, data = request(port, raw, timeout=10)
    except OSError as exc:
        return f"probe failed: {exc}"
    if status != 200 or data != body:
        return f"probe echo mismatch: status {status}, {len(data)} of {len(body)} bytes"
    return None


# ---------------------------------------------------------------------------
# the soak
# ---------------------------------------------------------------------------

LUA = r"""
local H = "Host: soak\r\n"
local e = string.rep("e", 1024)
local c = string.rep("c", 700)
local mix = {
  "GET /hello HTTP/1.1\r\n" .. H .. "\r\n",
  "GET /hello HTTP/1.1\r\n" .. H .. "Connection: close\r\n\r\n",
  "POST /echo HTTP/1.1\r\n" .. H .. "Content-Length: 1024\r\n\r\n" .. e,
  "POST /echo HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" ..
    "2bc\r\n" .. c .. "\r\n" .. "2bc;ext=1\r\n" .. c .. "\r\n0\r\nX-Trailer: 1\r\n\r\n",
  "GET /stream HTTP/1.1\r\n" .. H .. "\r\n",
  "GET /hello HTTP/1.1\r\n" .. H .. "\r\n",
  "GET /hello HTTP/1.1\r\n" .. H .. "\r\n",
  "POST /echo HTTP/1.1\r\n" .. H .. "Content-Length: 1024\r\n\r\n" .. e,
}
local n = 0
request = function()
  n = n + 1
  return mix[(n % #mix) + 1]
end
done = function(summary, latency, requests)
  local x = summary.errors
  io.write(string.format(
    "SOAKJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration, x.connect, x.read, x.write, x.status, x.timeout,
    latency:percentile(99)))
end
"""


def run_wrk(port: int, seconds: float, connections: int, script: str) -> dict[str, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
           "-s", script, f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("SOAKJSON "):
            return dict(json.loads(line[len("SOAKJSON "):]))
    raise SystemExit(f"wrk printed no summary:\n{out}")


class Sampler(threading.Thread):
    """Samples the server every second (and runs the echo probe), printing a line every
    `print_every` samples; with `count`, the line shows the requests served since `t0`."""

    def __init__(self, pid: int, port: int, t0: float, quiet: bool, print_every: int = 1,
                 count: bool = False, mem: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid, self.port, self.t0, self.quiet = pid, port, t0, quiet
        self.print_every, self.count, self.mem = print_every, count, mem
        self.base = served_count(port) if count else 0  # requests before t0 (the warm-up)
        self.samples: list[Sample] = []
        self.series: list[tuple[Sample, int]] = []  # the printed samples, with requests
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        tick = 0
        while not self.stop_event.wait(max(0.0, self.t0 + tick + 1 - time.monotonic())):
            tick += 1
            s = sample(self.pid, self.t0)
            self.samples.append(s)
            error = probe(self.port, self.rng)
            if error:
                self.failures.append(f"t={s.t:.0f}s {error}")
            if tick % self.print_every:
                continue
            served = served_count(self.port) - self.base if self.count else -1
            self.series.append((s, served))
            if self.quiet:
                continue
            what = f"  requests {served:11,}" if self.count else ""
            print(f"  t={s.t:6.0f}s{what}  RSS {s.rss_kib / 1024:7.1f} MiB  fds {s.fds:4d}  "
                  f"threads {s.threads:3d}"
                  f"{mem_columns(self.port, self.pid) if self.mem else ''}"
                  f"{'  ' + error if error else ''}", flush=True)


def mem_columns(port: int, pid: int) -> str:
    """The server's malloc figures (see `malloc_figures`) and its arena mappings (see
    `arena_mappings`) for a sample line."""
    arenas, arena_kib, heap_kib = arena_mappings(pid)
    mapped = f"  arenas {arenas} RSS {arena_kib / 1024:4.1f} heap {heap_kib / 1024:4.1f} MiB"
    try:
        m = json.loads(request(port, b"GET /mem HTTP/1.1\r\nHost: soak\r\n"
                               b"Connection: close\r\n\r\n", timeout=10)[1])
    except (OSError, ValueError):
        return mapped + "  malloc ?"
    if "used" not in m:
        return f"{mapped}  py blocks {m['py_blocks']:,}"
    return (f"{mapped}  malloc used {m['used'] / MIB:5.1f} free {m['free'] / MIB:5.1f} mmapped "
            f"{m['mmapped'] / MIB:5.1f} MiB  py blocks {m['py_blocks']:,}")


def served_count(port: int) -> int:
    """Requests the server's application has answered so far (-1 if it cannot say)."""
    try:
        status, data = request(port, b"GET /count HTTP/1.1\r\nHost: soak\r\n"
                               b"Connection: close\r\n\r\n", timeout=10)
        return int(data) if status == 200 else -1
    except (OSError, ValueError):
        return -1


def settle(pid: int, target_fds: int, seconds: float = 10) -> Sample:
    """Waits (up to `seconds`) for the fd count to come back to `target_fds`."""
    deadline = time.monotonic() + seconds
    s = sample(pid)
    while s.fds > target_fds and time.monotonic() < deadline:
        time.sleep(0.2)
        s = sample(pid)
    time.sleep(0.5)
    return sample(pid)


def wrk_script(name: str, text: str) -> str:
    """Checks that wrk is installed and writes its Lua script to a fresh temporary directory."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    script = os.path.join(tempfile.mkdtemp(prefix="stogie-soak-"), name)
    with open(script, "w") as f:
        f.write(text)
    return script


def soak(args: argparse.Namespace) -> list[str]:
    failures: list[str] = []
    script = wrk_script("mix.lua", LUA)
    proc, port = start_server(args.threads)
    try:
        before = sample(proc.pid)
        print(before.line("before warm-up"), flush=True)
        warm = run_wrk(port, args.warmup, args.connections, script)
        warmed = settle(proc.pid, before.fds)
        print(f"warm-up: {warm['requests']:,} requests in {args.warmup:.0f} s", flush=True)
        print(warmed.line("after warm-up"), flush=True)

        t0 = time.monotonic()
        sampler = Sampler(proc.pid, port, t0, args.quiet)
        sampler.start()
        total = 0
        errors: dict[str, int] = {}
        p99 = 0
        while total < args.requests:
            left = args.requests - total
            rate = total / max(time.monotonic() - t0, 1e-9) if total else 10_000
            seconds = min(args.segment, max(2.0, left / max(rate, 1) * 1.05))
            result = run_wrk(port, seconds, args.connections, script)
            total += result["requests"]
            p99 = max(p99, result["p99_us"])
            for key in ("connect", "read", "write", "status", "timeout"):
                errors[key] = errors.get(key, 0) + result[key]
            elapsed = time.monotonic() - t0
            print(f"  ... {total:,} requests in {elapsed:.0f} s "
                  f"({total / elapsed:,.0f}/s), errors {errors}", flush=True)
        elapsed = time.monotonic() - t0
        sampler.stop_event.set()
        sampler.join()
        end = settle(proc.pid, warmed.fds)
        peak = max((s.rss_kib for s in sampler.samples), default=end.rss_kib)
        print(f"\n{total:,} requests in {elapsed:.0f} s ({total / elapsed:,.0f}/s); "
              f"worst p99 {p99 / 1000:.1f} ms; wrk errors {errors}; "
              f"{len(sampler.samples)} samples, {len(sampler.failures)} failed probes")
        print(before.line("before warm-up"))
        print(warmed.line("after warm-up"))
        print(f"{'peak during soak':<18} RSS {peak / 1024:8.1f} MiB")
        print(end.line("at the end"))
        growth = (end.rss_kib - warmed.rss_kib) / 1024
        print(f"RSS growth after warm-up: {growth:+.1f} MiB (limit {args.rss_growth} MiB)")
        if growth > args.rss_growth:
            failures.append(f"RSS grew {growth:.1f} MiB after warm-up")
        if end.fds > warmed.fds:
            failures.append(f"fd leak: {warmed.fds} after warm-up, {end.fds} at the end")
        if end.threads > warmed.threads:
            failures.append(f"threads grew: {warmed.threads} -> {end.threads}")
        if any(errors.values()):
            failures.append(f"wrk errors: {errors}")
        failures += sampler.failures
        if proc.poll() is not None:
            failures.append(f"the server exited with {proc.returncode}")
    finally:
        stop_server(proc)
    return failures


# ---------------------------------------------------------------------------
# --duration: the time-bounded mixed soak (wrk + Python clients that drop connections
# mid-request + slowloris clients)
# ---------------------------------------------------------------------------

LUA_MIXED = r"""
local H = "Host: soak\r\n"
local big = string.rep("p", 100 * 1024)
local piece = string.rep("c", 4096)
local chunked = ""
for i = 1, 8 do chunked = chunked .. "1000\r\n" .. piece .. "\r\n" end
local get = "GET /hello HTTP/1.1\r\n" .. H .. "\r\n"
local mix = {
  get, get,
  "POST /upload HTTP/1.1\r\n" .. H .. "Content-Length: 102400\r\n\r\n" .. big,
  get, get,
  "POST /upload HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" .. chunked ..
    "0\r\nX-Trailer: 1\r\n\r\n",
  get, get,
}
local n = 0
request = function()
  n = n + 1
  return mix[(n % #mix) + 1]
end
""" + LUA[LUA.index("done = function"):]


class Stats:
    """Counters shared by the Python client threads (each thread adds its own at the end)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    def add(self, counts: dict[str, int], errors: list[str]) -> None:
        with self.lock:
            for key, value in counts.items():
                self.counts[key] = self.counts.get(key, 0) + value
            self.errors += errors


def _recv_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = bytearray()
    status, headers = _read_head(sock, buf)
    return status, _read_body(sock, buf, headers)[0]


class Churn(threading.Thread):
    """Opens connection after connection until `deadline`: each makes 1-4 requests (GET,
    Content-Length echo of up to 100 KiB, chunked echo), checked byte for byte, and closes;
    one connection in twenty is instead dropped mid-request: half a head, or a head and half
    a Content-Length body, or a head and part of a chunked body; then a close, every other
    time an abortive one (RST)."""

    def __init__(self, port: int, deadline: float, stop: threading.Event, seed: int,
                 stats: Stats) -> None:
        super().__init__(daemon=True)
        self.port, self.deadline, self.stop, self.stats = port, deadline, stop, stats
        self.rng = random.Random(seed)
        self.counts = {"connections": 0, "requests": 0, "dropped": 0}
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                self.counts["connections"] += 1
                n = self.counts["connections"]
                try:
                    if n % 20 == 0:
                        self.drop(n // 20)
                    else:
                        self.exchange()
                except OSError as exc:
                    self.errors.append(f"client connection {n}: {exc!r}")
        finally:
            self.stats.add(self.counts, self.errors)

    def exchange(self) -> None:
        rng = self.rng
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            for _ in range(rng.randint(1, 4)):
                kind = rng.randrange(3)
                body = b""
                if kind == 0:
                    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n")
                    expect = HELLO
                else:
                    body = rng.randbytes(rng.randrange(1, 100 * 1024 + 1))
                    expect = body
                    if kind == 1:
                        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d"
                                     b"\r\n\r\n" % len(body) + body)
                    else:
                        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: soak\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n")
                        at = 0
                        while at < len(body):
                            step = rng.randrange(1, 16385)
                            part = body[at:at + step]
                            at += step
                            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                        sock.sendall(b"0\r\n\r\n")
                status, data = _recv_response(sock)
                self.counts["requests"] += 1
                if status != 200 or data != expect:
                    self.errors.append(f"client: status {status}, {len(data)} bytes back "
                                       f"for a {('GET', 'POST', 'chunked POST')[kind]} "
                                       f"({len(body)} bytes sent)")
                    return

    def drop(self, n: int) -> None:
        """A request cut short by the client: the kind cycles with `n`."""
        self.counts["dropped"] += 1
        body = bytes(100 * 1024)
        kind = n % 3
        if kind == 0:
            head = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 102400\r\n"
                    b"X-Padding: " + b"x" * 200 + b"\r\n\r\n")
            raw = head[:len(head) // 2]
        elif kind == 1:
            raw = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body[:len(body) // 2])
        else:
            raw = (b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"1000\r\n" + body[:4096] + b"\r\n" for _ in range(12)))
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            sock.sendall(raw)
            time.sleep(0.01)  # let the server start on it
            if n % 2:  # abortive close: RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()


class Slowloris(threading.Thread):
    """Keeps a connection sending a request head one byte every `interval` seconds until
    `deadline`; when the server cuts it (answer or close), counts the cut and reconnects."""

    def __init__(self, port: int, deadline: float, stop: threading.Event, interval: float,
                 stats: Stats) -> None:
        super().__init__(daemon=True)
        self.port, self.deadline, self.stop, self.stats = port, deadline, stop, stats
        self.interval = interval
        self.counts = {"slowloris connections": 0, "slowloris cuts": 0}
        self.held: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    self.one()
                except OSError as exc:
                    self.errors.append(f"slowloris connect: {exc!r}")
                    self.stop.wait(1.0)
        finally:
            self.stats.add(self.counts, self.errors)
            with self.stats.lock:
                self.stats.counts["slowloris held max s"] = max(
                    [self.stats.counts.get("slowloris held max s", 0)]
                    + [round(h) for h in self.held])

    def one(self) -> None:
        self.counts["slowloris connections"] += 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            opened = time.monotonic()
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: soak\r\n")
            line = 0
            pending = b""
            while not self.stop.wait(self.interval) and time.monotonic() < self.deadline:
                readable, _, _ = select.select([sock], [], [], 0)
                cut = bool(readable)
                if not cut:
                    if not pending:
                        line += 1
                        pending = b"X-Slow-%d: %s\r\n" % (line, b"z" * 20)
                    try:
                        sock.send(pending[:1])
                        pending = pending[1:]
                    except OSError:
                        cut = True
                if cut:
                    self.counts["slowloris cuts"] += 1
                    self.held.append(time.monotonic() - opened)
                    return


def timed_soak(args: argparse.Namespace) -> list[str]:
    """Mixed load for `args.duration` seconds; a line every 10 s; verdict at the end."""
    failures: list[str] = []
    script = wrk_script("mixed.lua", LUA_MIXED)
    proc, port = start_server(args.threads)
    stop = threading.Event()
    try:
        before = sample(proc.pid)
        print(before.line("before warm-up"), flush=True)
        if args.warmup > 0:
            warm = run_wrk(port, args.warmup, args.connections, script)
            print(f"warm-up: {warm['requests']:,} wrk requests in {args.warmup:.0f} s",
                  flush=True)
        warmed = settle(proc.pid, before.fds)
        print(warmed.line("after warm-up"), flush=True)
        print(f"soak: {args.duration:.0f} s of wrk -c{args.connections} (keep-alive GETs, "
              f"100 KiB POSTs, chunked POSTs), {args.clients} client thread(s) dropping one "
              f"connection in 20, {args.slowloris} slowloris client(s)", flush=True)

        t0 = time.monotonic()
        deadline = t0 + args.duration
        stats = Stats()
        sampler = Sampler(proc.pid, port, t0, args.quiet, print_every=10, count=True,
                          mem=args.malloc_stats)
        first = sample(proc.pid, t0)
        sampler.series.append((first, 0))
        if not args.quiet:
            print(f"  t={0:6.0f}s  requests {sampler.series[0][1]:11,}  RSS "
                  f"{first.rss_kib / 1024:7.1f} MiB  fds {first.fds:4d}  threads "
                  f"{first.threads:3d}{mem_columns(port, proc.pid) if args.malloc_stats else ''}",
                  flush=True)
        sampler.start()
        workers: list[threading.Thread] = [
            Churn(port, deadline, stop, 100 + i, stats) for i in range(args.clients)]
        workers += [Slowloris(port, deadline, stop, args.slow_interval, stats)
                    for _ in range(args.slowloris)]
        for w in workers:
            w.start()
        wrk_total = 0
        errors: dict[str, int] = {}
        p99 = 0
        while (left := deadline - time.monotonic()) >= 1:
            result = run_wrk(port, min(args.segment, left), args.connections, script)
            wrk_total += result["requests"]
            p99 = max(p99, result["p99_us"])
            for key in ("connect", "read", "write", "status", "timeout"):
                errors[key] = errors.get(key, 0) + result[key]
            if proc.poll() is not None:
                break
        stop.set()
        for w in workers:
            w.join(30)
        sampler.stop_event.set()
        sampler.join(30)
        elapsed = time.monotonic() - t0
        served = served_count(port) - sampler.base
        end = settle(proc.pid, warmed.fds)

        counts = stats.counts
        print(f"\n{elapsed:.0f} s: the application answered {served:,} requests "
              f"({served / elapsed:,.0f}/s); wrk {wrk_total:,} (worst p99 "
              f"{p99 / 1000:.1f} ms, errors {errors}); Python clients "
              f"{counts.get('requests', 0):,} requests on {counts.get('connections', 0):,} "
              f"connections, {counts.get('dropped', 0):,} dropped mid-request; slowloris "
              f"{counts.get('slowloris connections', 0):,} connections, "
              f"{counts.get('slowloris cuts', 0):,} cut by the server (held at most "
              f"{counts.get('slowloris held max s', 0)} s); "
              f"{len(sampler.samples)} probes, {len(sampler.failures)} failed")
        rss = [s.rss_kib for s in sampler.samples]
        series = sampler.series
        print(before.line("before warm-up"))
        print(warmed.line("after warm-up"))
        if rss:
            print(f"{'during the soak':<18} RSS {min(rss) / 1024:8.1f} - {max(rss) / 1024:.1f} "
                  f"MiB   fds {min(s.fds for s in sampler.samples)} - "
                  f"{max(s.fds for s in sampler.samples)}   threads "
                  f"{min(s.threads for s in sampler.samples)} - "
                  f"{max(s.threads for s in sampler.samples)}")
        print(end.line("at the end"))
        growth = (end.rss_kib - warmed.rss_kib) / 1024
        print(f"RSS growth after warm-up: {growth:+.1f} MiB (limit {args.rss_growth} MiB)")
        # The late-growth check: RSS from `--late-after` seconds (or half the run) on.
        late_at = min(args.late_after, args.duration / 2)
        late = [s.rss_kib for s in sampler.samples if s.t >= late_at]
        if late:
            ref = late[0]
            late_growth = (max(late + [end.rss_kib]) - ref) / 1024
            print(f"RSS growth after t={late_at:.0f} s: {late_growth:+.1f} MiB "
                  f"({ref / 1024:.1f} -> peak {max(late + [end.rss_kib]) / 1024:.1f} MiB, "
                  f"end {end.rss_kib / 1024:.1f} MiB; limit {args.late_rss} MiB)")
            if late_growth > args.late_rss:
                failures.append(f"RSS grew {late_growth:.1f} MiB after t={late_at:.0f} s")
        if series:
            print("series: " + ", ".join(f"{s.t:.0f}s {s.rss_kib / 1024:.1f}" for s, _ in
                                         series[::max(1, len(series) // 12)]))
        if growth > args.rss_growth:
            failures.append(f"RSS grew {growth:.1f} MiB after warm-up")
        if end.fds > warmed.fds:
            failures.append(f"fd leak: {warmed.fds} after warm-up, {end.fds} at the end")
        if end.threads > warmed.threads:
            failures.append(f"threads grew: {warmed.threads} -> {end.threads}")
        if any(errors.values()):
            failures.append(f"wrk errors: {errors}")
        if stats.errors:
            failures.append(f"{len(stats.errors)} client errors, the first: "
                            + "; ".join(stats.errors[:5]))
        failures += sampler.failures
        if proc.poll() is not None:
            failures.append(f"the server exited with {proc.returncode}")
    finally:
        stop.set()
        stop_server(proc)
    return failures


# ---------------------------------------------------------------------------
# --big: 1 GiB through one request in each direction
# ---------------------------------------------------------------------------


def _zeros(total: int, piece: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(piece)
    while total > 0:
        n = min(total, piece)
        total -= n
        yield block if n == piece else block[:n]


def _chunked(total: int, piece: int = 1 << 20) -> Iterator[bytes]:
    for block in _zeros(total, piece):
        yield b"%x\r\n" % len(block) + block + b"\r\n"
    yield b"0\r\n\r\n"


class PeakWatcher(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak = max(self.peak, sample(self.pid).rss_kib)
            time.sleep(0.02)


def big(args: argparse.Namespace) -> list[str]:
    failures: list[str] = []
    size = args.big_size * MIB
    proc, port = start_server(args.threads)
    try:
        # Warm the paths with small transfers first.
        request(port, b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                % MIB, _zeros(MIB))
        request(port, b"GET /download?%d HTTP/1.1\r\nHost: soak\r\n\r\n" % MIB)
        base = sample(proc.pid)
        print(base.line("before big"), flush=True)
        transfers: list[tuple[str, Callable[[], int]]] = [
            ("upload (Content-Length)", lambda: int(request(
                port, b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                % size, _zeros(size), timeout=120)[1])),
            ("upload (chunked)", lambda: int(request(
                port, b"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n", _chunked(size), timeout=120)[1])),
            ("download (streamed)", lambda: _download(port, size)),
        ]
        for name, run in transfers:
            watcher = PeakWatcher(proc.pid)
            watcher.start()
            start = time.monotonic()
            try:
                moved = run()
            finally:
                watcher.stop_event.set()
                watcher.join()
            elapsed = time.monotonic() - start
            growth = (watcher.peak - base.rss_kib) / 1024
            print(f"{args.big_size} MiB {name}: {moved:,} bytes in {elapsed:.1f} s "
                  f"({moved / MIB / elapsed:,.0f} MiB/s); server RSS peak "
                  f"{watcher.peak / 1024:.1f} MiB ({growth:+.1f} MiB)", flush=True)
            if moved != size:
                failures.append(f"{name}: {moved} of {size} bytes")
            if growth > args.big_rss:
                failures.append(f"{name}: RSS grew {growth:.1f} MiB (limit {args.big_rss})")
        end = sample(proc.pid)
        print(end.line("after big"))
        if end.fds > base.fds:
            failures.append(f"fd leak after big transfers: {base.fds} -> {end.fds}")
    finally:
        stop_server(proc)
    return failures


def _download(port: int, size: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(b"GET /download?%d HTTP/1.1\r\nHost: soak\r\n\r\n" % size)
        buf = bytearray()
        status, headers = _read_head(sock, buf)
        if status != 200:
            return -1
        return _read_body(sock, buf, headers, keep=False)[1]


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve_cmd = sub.add_parser("serve", help="(internal) run the soak server")
    serve_cmd.add_argument("--port", type=int, required=True)
    serve_cmd.add_argument("--threads", type=int, default=10)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests in the soak (default 1,000,000; with --big: none)")
    parser.add_argument("--warmup", type=float, default=10, help="warm-up seconds (10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=10, help="server numthreads (10)")
    parser.add_argument("--segment", type=float, default=30,
                        help="seconds per wrk run; runs repeat until --requests or "
                             "--duration (30)")
    parser.add_argument("--rss-growth", type=float, default=8,
                        help="MiB of RSS growth allowed after warm-up (8)")
    parser.add_argument("--big", action="store_true",
                        help="1 GiB Content-Length upload, chunked upload and streamed download")
    parser.add_argument("--big-size", type=int, default=1024, help="MiB per big transfer")
    parser.add_argument("--big-rss", type=float, default=32,
                        help="MiB of RSS growth allowed during a big transfer (32)")
    parser.add_argument("--duration", type=float, default=0,
                        help="the time-bounded mixed soak (instead of the 1,000,000 "
                             "requests unless --requests is given): this many seconds of wrk "
                             "(keep-alive GETs, 100 KiB POSTs, chunked POSTs), Python clients "
                             "dropping one connection in 20 mid-request and slowloris "
                             "clients, a line every 10 s (see bench/SOAK.md)")
    parser.add_argument("--clients", type=int, default=1,
                        help="--duration: Python client threads (1)")
    parser.add_argument("--slowloris", type=int, default=3,
                        help="--duration: slowloris clients (3)")
    parser.add_argument("--slow-interval", type=float, default=2,
                        help="--duration: seconds between a slowloris client's bytes (2)")
    parser.add_argument("--late-after", type=float, default=300,
                        help="--duration: RSS growth is also checked from this second on "
                             "(300; half the run if shorter)")
    parser.add_argument("--late-rss", type=float, default=1,
                        help="--duration: MiB of RSS growth allowed after --late-after (1)")
    parser.add_argument("--malloc-stats", action="store_true",
                        help="--duration: add the server's glibc malloc totals (mallinfo2: "
                             "in use, free in the arenas, mmapped) and Python's allocated "
                             "blocks to each 10 s line")
    parser.add_argument("--quiet", action="store_true", help="no per-second (per-10 s) lines")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.threads)
        return 0
    if args.requests is None:
        args.requests = 0 if args.big or args.duration else 1_000_000
    failures: list[str] = []
    if args.duration:
        failures += timed_soak(args)
    if args.requests:
        failures += soak(args)
    if args.big:
        failures += big(args)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
