"""Prometheus metrics for `stogie --metrics-bind`: rendering and a tiny HTTP endpoint.

The endpoint is deliberately minimal and single-threaded: it is driven by the caller's selector
(the supervisor's event loop, which must not start threads because it forks) or by `run()` in a
thread of its own (a server running in a single process).
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import Any, Callable

from stogie import _core

logger = logging.getLogger("stogie.metrics")

#: Engine counters (`server._engine.stats()` keys) exported as Prometheus counters.
COUNTERS = (
    ("accepts", "accepts_total", "Connections accepted."),
    ("requests", "requests_total", "Requests received (request heads parsed)."),
    ("socket_errors", "socket_errors_total", "Socket errors (accept, read or write failures)."),
    ("bytes_in", "bytes_in_total", "Bytes received from clients."),
    ("bytes_out", "bytes_out_total", "Bytes sent to clients."),
    ("held_responses", "responses_batched_total",
     "Responses held back briefly and written together with others (one client wake-up)."),
    ("held_bytes_rescued", "batched_bytes_rescued_total",
     "Bytes of held responses written early because their worker was in a slow request."),
    ("responses_handed_off", "responses_handed_off_total",
     "Responses whose end was written from the event loop because the client read slowly."),
    ("body_spool_refusals", "request_body_spool_refusals_total",
     "Request bodies refused (503) because the temporary files held request_body_spool_limit."),
    ("static_responses", "static_responses_total",
     "Responses to --static requests, served by the engine without the application."),
    *((f"responses_{c}xx", f"responses_{c}xx_total", f"Responses with a {c}xx status.")
      for c in range(1, 6)),
)
#: Engine values exported as gauges; `busy_threads` is `threads - idle_threads`.
GAUGES = (
    ("open_connections", "open_connections", "Open client connections."),
    ("threads", "threads", "Worker threads."),
    ("idle_threads", "idle_threads", "Worker threads waiting for work."),
    ("busy_threads", "busy_threads", "Worker threads running a request."),
    ("in_flight", "in_flight_requests", "Requests being handled."),
    ("responses_sending", "responses_sending",
     "Connections whose response waits for a slow client to read it (no thread held)."),
    ("bodies_collecting", "request_bodies_collecting",
     "Connections whose request body is arriving before the application runs (no thread held)."),
    ("body_bytes_in_memory", "request_body_bytes_in_memory",
     "Bytes of request bodies held in memory."),
    ("body_bytes_spooled", "request_body_bytes_spooled",
     "Bytes of request bodies held in temporary files."),
    ("http2_connections", "http2_connections", "Open HTTP/2 connections."),
    ("http2_streams", "http2_streams",
     "HTTP/2 streams waiting for a worker or running the application."),
)
#: Request durations: cumulative `latency_bucket_<i>` counts for these upper bounds, then +Inf.
LATENCY_BOUNDS = [us / 1e6 for us in _core.LATENCY_BOUNDS_US]
LATENCY_KEYS = (*(f"latency_bucket_{i}" for i in range(len(LATENCY_BOUNDS) + 1)),
                "latency_sum_us")
#: Every key of the engine's stats, in the engine's order (defined once, in src/counters.rs).
STAT_KEYS = tuple(_core.STAT_KEYS)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Stats = Mapping[str, Any]


def _value(stats: Stats, key: str) -> int:
    if key == "busy_threads":
        return max(int(stats.get("threads", 0)) - int(stats.get("idle_threads", 0)), 0)
    return int(stats.get(key, 0))


def render(workers: Iterable[tuple[int, Stats]], finished: Stats | None = None,
           extra: Iterable[tuple[str, str, str, float]] = ()) -> str:
    """Prometheus text for the workers' engine stats.

    `workers`: (pid, stats) of the running workers. `finished`: counter totals of workers that
    have exited, so that the summed counters never go backwards when a worker is replaced.
    `extra`: further (name, type, help, value) samples, e.g. the number of workers.
    Summed series are `stogie_<name>`; per-worker series are `stogie_worker_<name>{worker="PID"}`.
    """
    workers = sorted(workers, key=lambda item: item[0])
    finished = finished or {}
    lines: list[str] = []
    for kind, table in (("counter", COUNTERS), ("gauge", GAUGES)):
        for key, name, help_text in table:
            total = sum(_value(stats, key) for _, stats in workers)
            if kind == "counter":
                total += int(finished.get(key, 0))
            lines += [f"# HELP stogie_{name} {help_text}", f"# TYPE stogie_{name} {kind}",
                      f"stogie_{name} {total}"]
    for kind, table in (("counter", COUNTERS), ("gauge", GAUGES)):
        for key, name, help_text in table:
            lines += [f"# HELP stogie_worker_{name} {help_text} Per worker process.",
                      f"# TYPE stogie_worker_{name} {kind}"]
            lines += [f'stogie_worker_{name}{{worker="{pid}"}} {_value(stats, key)}'
                      for pid, stats in workers]
    lines += _accept_errors(workers, finished)
    lines += _latency_histogram(workers, finished)
    for name, kind, help_text, value in extra:
        lines += [f"# HELP stogie_{name} {help_text}", f"# TYPE stogie_{name} {kind}",
                  f"stogie_{name} {value:g}"]
    return "\n".join(lines) + "\n"


#: `accept_errors_<reason>` keys, exported as one counter with a `reason` label.
ACCEPT_ERROR_REASONS = tuple(key.removeprefix("accept_errors_") for key in _core.STAT_KEYS
                             if key.startswith("accept_errors_"))


def _accept_errors(workers: list[tuple[int, Stats]], finished: Stats) -> list[str]:
    name = "stogie_accept_errors_total"
    lines = [f"# HELP {name} Failed accept() calls: emfile and enfile are out of file "
             "descriptors (accepting pauses), other is anything else.",
             f"# TYPE {name} counter"]
    for reason in ACCEPT_ERROR_REASONS:
        key = f"accept_errors_{reason}"
        total = sum(_value(stats, key) for _, stats in workers) + int(finished.get(key, 0))
        lines.append(f'{name}{{reason="{reason}"}} {total}')
    return lines


def _latency_histogram(workers: list[tuple[int, Stats]], finished: Stats) -> list[str]:
    """The summed request-duration histogram, in seconds."""
    def total(key: str) -> int:
        return sum(int(stats.get(key, 0)) for _, stats in workers) + int(finished.get(key, 0))

    name = "stogie_request_duration_seconds"
    lines = [f"# HELP {name} Time from a complete request head to the end of the response.",
             f"# TYPE {name} histogram"]
    bounds = [f"{b:g}" for b in LATENCY_BOUNDS] + ["+Inf"]
    lines += [f'{name}_bucket{{le="{le}"}} {total(f"latency_bucket_{i}")}'
              for i, le in enumerate(bounds)]
    lines += [f"{name}_sum {total('latency_sum_us') / 1e6:g}",
              f"{name}_count {total(f'latency_bucket_{len(LATENCY_BOUNDS)}')}"]
    return lines


def bind_socket(addr: Any) -> socket.socket:
    """A listening socket for the metrics endpoint: (host, port), a UNIX path or '\\x00name'."""
    if isinstance(addr, str):
        if not addr.startswith("\x00"):
            with suppress(FileNotFoundError):
                os.unlink(addr)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        host, port = addr
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", "::0"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(addr)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class MetricsEndpoint:
    """Answers `GET /metrics` (and `GET /`) with `render_text()`; anything else is a 404."""

    MAX_HEAD = 8192
    CLIENT_TIMEOUT = 5.0

    def __init__(self, sock: socket.socket, render_text: Callable[[], str]) -> None:
        self.sock = sock
        self.render_text = render_text
        self._selector: selectors.BaseSelector | None = None
        self._clients: dict[socket.socket, tuple[bytearray, float]] = {}

    def register(self, selector: selectors.BaseSelector) -> None:
        """Drive the endpoint from `selector`: each key's data is a callable to run when ready."""
        self._selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self) -> None:
        assert self._selector is not None
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("metrics endpoint: accept failed: %s", exc)
                return
            conn.setblocking(False)
            self._clients[conn] = (bytearray(), time.monotonic() + self.CLIENT_TIMEOUT)
            self._selector.register(conn, selectors.EVENT_READ,
                                    lambda conn=conn: self._on_readable(conn))

    def _on_readable(self, conn: socket.socket) -> None:
        buf, _ = self._clients[conn]
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf += data
        if b"\r\n\r\n" in buf or b"\n\n" in buf or len(buf) > self.MAX_HEAD:
            self._respond(conn, bytes(buf))

    def _respond(self, conn: socket.socket, head: bytes) -> None:
        parts = head.split(b"\r\n", 1)[0].split()
        method, target = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        path = target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif path not in (b"/metrics", b"/"):
            status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
        else:
            try:
                status, body, ctype = "200 OK", self.render_text().encode(), CONTENT_TYPE
            except Exception:  # noqa: BLE001 - never let a metrics bug kill the supervisor
                logger.exception("metrics endpoint: rendering failed")
                status, body, ctype = "500 Internal Server Error", b"error\n", "text/plain"
        out = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        if method != b"HEAD":
            out += body
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(out)
        except OSError:
            pass
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        if self._selector is not None:
            with suppress(KeyError, ValueError):
                self._selector.unregister(conn)
        conn.close()

    def expire(self) -> None:
        """Closes clients that did not send a request head in time; call it now and then."""
        now = time.monotonic()
        for conn, (_, deadline) in list(self._clients.items()):
            if now >= deadline:
                self._drop(conn)

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn)
        if self._selector is not None:
            with suppress(KeyError, ValueError):
                self._selector.unregister(self.sock)
        self.sock.close()

    def run(self, stop: threading.Event) -> None:
        """Serves in the calling thread until `stop` is set (single-process mode)."""
        with selectors.DefaultSelector() as selector:
            self.register(selector)
            while not stop.is_set():
                for key, _ in selector.select(0.5):
                    key.data()
                self.expire()
            self.close()
            self._selector = None

    def start_thread(self) -> Callable[[], None]:
        """Serves in a daemon thread; returns a function that stops it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="stogie-metrics",
                                  daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join(timeout=2)

        return stopper
