"""wsgi.file_wrapper: sendfile(2) for real files, iteration for other file-likes."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time

import pytest
import requests

from conftest import exchange

SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def data_file():
    fd, path = tempfile.mkstemp()
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(SIZE))
    yield path
    os.unlink(path)


def file_app(path, opened, headers=(), seek=0):
    def app(environ, start_response):
        f = open(path, "rb")  # noqa: SIM115 - the server closes it through the wrapper
        f.seek(seek)
        opened.append(f)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *headers])
        return environ["wsgi.file_wrapper"](f, 65536)
    return app


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_whole_file_is_sent_and_closed(serve, data_file):
    opened: list = []
    running = serve(file_app(data_file, opened))
    resp = requests.get(running.url(), timeout=10)
    with open(data_file, "rb") as f:
        expected = f.read()
    assert resp.headers["Content-Length"] == str(SIZE)
    assert digest(resp.content) == digest(expected)
    assert opened and opened[0].closed


def test_from_the_current_position(serve, data_file):
    opened: list = []
    running = serve(file_app(data_file, opened, seek=1000))
    resp = requests.get(running.url(), timeout=10)
    with open(data_file, "rb") as f:
        f.seek(1000)
        expected = f.read()
    assert resp.content == expected


def test_declared_length_shorter_than_the_file(serve, data_file):
    opened: list = []
    running = serve(file_app(data_file, opened, headers=[("Content-Length", "1000")]))
    with requests.Session() as session:
        resp = session.get(running.url(), timeout=10)
        with open(data_file, "rb") as f:
            assert resp.content == f.read(1000)
        assert session.get(running.url(), timeout=10).status_code == 200  # still in sync
    # The body is out (sendfile) before the server thread calls close(): the client can see
    # the whole response a moment before the file object is closed.
    deadline = time.monotonic() + 2
    while not all(f.closed for f in opened) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(f.closed for f in opened)


def test_head_sends_no_body(serve, data_file):
    opened: list = []
    running = serve(file_app(data_file, opened))
    raw = exchange(running, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {SIZE}".encode() in head
    assert body == b""
    assert opened[0].closed


def test_non_file_objects_are_iterated(serve):
    closed = []

    class Tracked(io.BytesIO):
        def close(self):
            closed.append(True)
            super().close()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](Tracked(b"x" * 100_000), 4096)

    running = serve(app)
    resp = requests.get(running.url(), timeout=10)
    assert resp.content == b"x" * 100_000
    assert closed == [True]


def test_file_closed_when_client_disconnects(serve, data_file):
    opened: list = []
    running = serve(file_app(data_file, opened))
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
    for _ in range(100):
        if opened and opened[0].closed:
            break
        time.sleep(0.05)
    assert opened[0].closed
