"""Shared fixtures: real stogie servers on 127.0.0.1 and raw-socket helpers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from stogie import wsgi

# Constructor arguments of stogie.wsgi.Server; every other keyword given to
# `serve()` is set as an attribute on the server before it is prepared.
_CTOR_ARGS = {
    "numthreads", "server_name", "max", "request_queue_size", "timeout",
    "shutdown_timeout", "accepted_queue_size", "accepted_queue_timeout",
    "peercreds_enabled", "peercreds_resolve_enabled", "reuse_port",
}


class Running:
    """A server serving in a background thread."""

    def __init__(self, server: wsgi.Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def host(self) -> str:
        return self.server.bind_addr[0]

    @property
    def port(self) -> int:
        return self.server.bind_addr[1]

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=15)


def start_server(
    app: Callable[..., Any] | None,
    bind_addr: Any = ("127.0.0.1", 0),
    **options: Any,
) -> Running:
    ctor = {k: v for k, v in options.items() if k in _CTOR_ARGS}
    attrs = {k: v for k, v in options.items() if k not in _CTOR_ARGS}
    ctor.setdefault("shutdown_timeout", 1)
    server = wsgi.Server(bind_addr, app, **ctor)
    for name, value in attrs.items():
        setattr(server, name, value)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="stogie-test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.ready, "server did not become ready"
    return Running(server, thread)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    """`serve(app, **options)` starts a server; all are stopped at teardown."""
    started: list[Running] = []

    def _serve(app: Callable[..., Any] | None, bind_addr: Any = ("127.0.0.1", 0),
               **options: Any) -> Running:
        running = start_server(app, bind_addr, **options)
        started.append(running)
        return running

    yield _serve
    for running in started:
        running.stop()


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes the connection or `timeout` passes without data."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exchange(running: Running, data: bytes, timeout: float = 5.0,
             shut_write: bool = False) -> bytes:
    """Send raw bytes on a fresh connection and return everything read until close."""
    with running.connect(timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        return recv_all(sock, timeout)


def hello_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    body = b"Hello, world!"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
