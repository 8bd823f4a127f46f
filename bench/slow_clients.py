"""Slow clients: can they starve everyone else? (issue 13's scenario)

For each server, with 10 threads: N connections send a request body at one byte per second,
N connections read a 10 MiB response at a few KiB per second, and meanwhile a probe client
sends ordinary GETs one after the other (a fresh connection each) and records their latency.
Reported per server: probe p50/p99/max and failures, and the server's RSS (peak and at the
end), in a markdown table.

    python3 bench/run.py --list                      # once: sets up bench/.venv
    bench/.venv/bin/python -m bench.slow_clients     # from the repository root
    bench/.venv/bin/python -m bench.slow_clients --servers stogie,waitress --clients 200

Bounded in time: `--seconds` of load per server plus start-up and shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from bench import run

BODY_HEAD = (b"POST /slow HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n")
BIG_REQUEST = b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n"
PROBE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


@dataclass
class Outcome:
    server: str
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    connected: int = 0
    peak_rss_kib: int = 0
    end_rss_kib: int = 0
    error: str = ""


def open_slow(port: int, count: int, request: bytes, rcvbuf: int | None) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            sock = socket.socket()
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(2)
            sock.connect((run.HOST, port))
            sock.sendall(request)
            sock.setblocking(False)
            socks.append(sock)
        except OSError:
            break
    return socks


def probe(port: int) -> float | None:
    start = time.monotonic()
    try:
        with socket.create_connection((run.HOST, port), timeout=5) as sock:
            sock.sendall(PROBE)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    return (time.monotonic() - start) * 1000


def drive(port: int, senders: list[socket.socket], readers: list[socket.socket],
          seconds: float, read_per_second: int, pid: int, outcome: Outcome) -> None:
    """One loop: a body byte per sender per second, `read_per_second` bytes per reader per
    second (in one recv), a probe GET whenever the last one is done."""
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + 1.0
            for sock in senders:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            for sock in readers:
                with contextlib.suppress(OSError):
                    sock.recv(read_per_second)
            status = run.tree_status(pid)
            outcome.peak_rss_kib = max(outcome.peak_rss_kib, status["vmrss_kib"])
        latency = probe(port)
        if latency is None:
            outcome.failures += 1
        else:
            outcome.latencies_ms.append(latency)
        time.sleep(0.02)


def measure(name: str, args: argparse.Namespace, opts: run.Options) -> Outcome:
    outcome = Outcome(name)
    server = run.SERVER_BY_NAME[name]
    port = run.free_port()
    cmd = server.command("bench.apps:slow_clients", port, opts)
    pythonpath = f"{server.pythonpath}:{run.REPO}" if server.pythonpath else str(run.REPO)
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{run.VENV / 'bin'}:{env.get('PATH', '')}"
    proc = subprocess.Popen(cmd, cwd=run.REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    senders: list[socket.socket] = []
    readers: list[socket.socket] = []
    try:
        problem = run.wait_ready(proc, port, "/")
        if problem:
            outcome.error = problem
            return outcome
        senders = open_slow(port, args.clients, BODY_HEAD, None)
        readers = open_slow(port, args.clients, BIG_REQUEST, 4096)
        outcome.connected = len(senders) + len(readers)
        drive(port, senders, readers, args.seconds, args.read_per_second, proc.pid, outcome)
        outcome.end_rss_kib = run.tree_status(proc.pid)["vmrss_kib"]
    finally:
        for sock in senders + readers:
            sock.close()
        run.stop_server(proc)
    return outcome


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="stogie,waitress,granian,cheroot,gunicorn")
    parser.add_argument("--clients", type=int, default=1000,
                        help="slow senders, and as many slow readers (default 1000 each)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--read-per-second", type=int, default=4096)
    args = parser.parse_args()
    run.raise_fd_limit()
    opts = run.options_from(run.parse_args(["--no-setup", "--threads", "10"]))
    print(f"{args.clients} slow senders (1 B/s) + {args.clients} slow readers of 10 MiB "
          f"({args.read_per_second} B/s), {args.seconds:g} s, threads 10\n")
    print("| server | connected | probe p50 ms | probe p99 ms | probe max ms | probes | failed "
          "| peak RSS MiB | end RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.servers.split(","):
        o = measure(name, args, opts)
        if o.error:
            print(f"| {name} | – | {o.error} | | | | | | |")
            continue
        lat = o.latencies_ms
        print(f"| {name} | {o.connected} | {statistics.median(lat) if lat else float('nan'):.1f} "
              f"| {percentile(lat, 99):.1f} | {max(lat, default=float('nan')):.1f} | {len(lat)} "
              f"| {o.failures} | {o.peak_rss_kib / 1024:.1f} | {o.end_rss_kib / 1024:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
