"""Soak test: a million mixed requests against one stogie server process, watching its memory,
file descriptors and threads (not part of CI; see bench/SOAK.md).

    python3 bench/soak.py                       # >= 1,000,000 requests, then the checks
    python3 bench/soak.py --requests 200000     # shorter
    python3 bench/soak.py --big                 # 1 GiB uploads and a 1 GiB download instead
    python3 bench/soak.py --big --requests 1000000   # both

The server runs in a subprocess (this file, `serve` sub-command) with the stogie importable in
this interpreter. Load comes from `wrk` (one thread, N connections) with a Lua script that cycles
through the mix: keep-alive hello, `Connection: close` hello, POST echo (Content-Length), chunked
POST echo, and a streamed (chunked) response. Every second the server's RSS, open fds and
threads are sampled and a Python probe checks that an echo round-trips byte for byte.

Verdict (exit status 1 on failure): after warm-up, RSS may grow at most `--rss-growth` MiB
(default 8) by the end of the run; fds and threads must be back to their post-warm-up values
once the load stops; wrk must see no errors and no non-2xx responses; every probe must succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
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


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
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
    """Samples the server every second (and runs the echo probe), printing a line each time."""

    def __init__(self, pid: int, port: int, t0: float, quiet: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.port, self.t0, self.quiet = pid, port, t0, quiet
        self.samples: list[Sample] = []
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            s = sample(self.pid, self.t0)
            self.samples.append(s)
            error = probe(self.port, self.rng)
            if error:
                self.failures.append(f"t={s.t:.0f}s {error}")
            if not self.quiet:
                print(f"  t={s.t:6.0f}s  RSS {s.rss_kib / 1024:7.1f} MiB  fds {s.fds:4d}  "
                      f"threads {s.threads:3d}{'  ' + error if error else ''}", flush=True)


def settle(pid: int, target_fds: int, seconds: float = 10) -> Sample:
    """Waits (up to `seconds`) for the fd count to come back to `target_fds`."""
    deadline = time.monotonic() + seconds
    s = sample(pid)
    while s.fds > target_fds and time.monotonic() < deadline:
        time.sleep(0.2)
        s = sample(pid)
    time.sleep(0.5)
    return sample(pid)


def soak(args: argparse.Namespace) -> list[str]:
    failures: list[str] = []
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    proc, port = start_server(args.threads)
    script = os.path.join(tempfile.mkdtemp(prefix="stogie-soak-"), "mix.lua")
    with open(script, "w") as f:
        f.write(LUA)
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
                        help="seconds per wrk run; runs repeat until --requests (30)")
    parser.add_argument("--rss-growth", type=float, default=8,
                        help="MiB of RSS growth allowed after warm-up (8)")
    parser.add_argument("--big", action="store_true",
                        help="1 GiB Content-Length upload, chunked upload and streamed download")
    parser.add_argument("--big-size", type=int, default=1024, help="MiB per big transfer")
    parser.add_argument("--big-rss", type=float, default=32,
                        help="MiB of RSS growth allowed during a big transfer (32)")
    parser.add_argument("--quiet", action="store_true", help="no per-second lines")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.threads)
        return 0
    if args.requests is None:
        args.requests = 0 if args.big else 1_000_000
    failures: list[str] = []
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
