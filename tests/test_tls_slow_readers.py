"""Responses to slow readers over TLS: what the socket does not take at once waits in the
connection's backlog (plaintext, bounded by HIGH_WATER, plus rustls' records) and is encrypted
and written from the event side as the client reads, without a thread (docs/configuration.md,
"Responses to slow readers"). The plain-TCP versions are in test_request_bodies.py."""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
import requests

from conftest import Running

trustme = pytest.importorskip("trustme")

from stogie.ssl import BuiltinSSLAdapter  # noqa: E402

MiB = 1024 * 1024
BIG = bytes(range(256)) * (40 * 1024)  # 10 MiB


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {name: str(base / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


@pytest.fixture
def https(serve: Callable[..., Running], pki: dict[str, str]) -> Callable[..., Running]:
    def _start(app: Callable[..., Any], **options: Any) -> Running:
        return serve(app, ssl_adapter=BuiltinSSLAdapter(pki["cert"], pki["key"]), **options)

    return _start


def hello_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def big_list_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        return [BIG]
    return hello_app(environ, start_response)


def tls_connect(running: Running, pki: dict[str, str], timeout: float = 30) -> ssl.SSLSocket:
    """A TLS client with a small receive buffer, so that the server's writes fill up."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    raw.settimeout(timeout)
    raw.connect((running.host, running.port))
    context = ssl.create_default_context(cafile=pki["ca"])
    return context.wrap_socket(raw, server_hostname="localhost")


def read_response(sock: ssl.SSLSocket, timeout: float = 30) -> tuple[bytes, bytes]:
    """One response with a Content-Length or chunked body: (head, body decoded)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before the head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    reader = _Buffered(sock, rest)
    lines = head.lower().split(b"\r\n")
    length = next((int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length:")),
                  None)
    if length is not None:
        return head, reader.take(length)
    assert b"transfer-encoding: chunked" in lines
    body = bytearray()
    while True:
        size = int(reader.line(), 16)
        if size == 0:
            assert reader.line() == b""
            return head, bytes(body)
        body += reader.take(size)
        assert reader.take(2) == b"\r\n"


class _Buffered:
    def __init__(self, sock: ssl.SSLSocket, start: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(start)

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 20)
        assert chunk, "the server closed before the whole body"
        self.buf += chunk

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, _ = bytes(self.buf).partition(b"\r\n")
        del self.buf[: len(line) + 2]
        return line


def wait_for(predicate: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_slow_tls_readers_never_starve_a_normal_request(https, pki) -> None:
    """numthreads=1: five TLS clients that ask for 10 MiB and read nothing hold no thread."""
    running = https(validator(big_list_app), numthreads=1, max=1, timeout=30)
    readers = []
    for _ in range(5):
        sock = tls_connect(running, pki)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        readers.append(sock)
    stats = running.server._engine_stats
    assert wait_for(lambda: stats()["responses_sending"] == 5), stats()
    for _ in range(5):
        start = time.monotonic()
        resp = requests.get(f"https://localhost:{running.port}/", verify=pki["ca"], timeout=5)
        waited = time.monotonic() - start
        assert resp.text == "hello"
        assert waited < 2.0, f"a normal HTTPS GET waited {waited:.2f}s behind slow readers"
    # Each slow reader still gets every byte, in order, then the connection is reused.
    for sock in readers:
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert len(body) == len(BIG) and sha(body) == sha(BIG)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock)[1] == b"hello"
        sock.close()
    assert wait_for(lambda: stats()["responses_sending"] == 0), stats()
    assert stats()["responses_handed_off"] >= 5


def test_a_stopped_tls_reader_is_closed_after_timeout(https, pki) -> None:
    running = https(validator(big_list_app), numthreads=1, max=1, timeout=1)
    sock = tls_connect(running, pki, timeout=10)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
    stats = running.server._engine_stats
    assert wait_for(lambda: stats()["responses_sending"] == 1), stats()
    assert wait_for(lambda: stats()["open_connections"] == 0), \
        "a TLS reader that stopped kept its connection"
    assert stats()["responses_sending"] == 0
    sock.close()


def test_pipelined_request_after_a_handed_off_tls_response(https, pki) -> None:
    """The handed-off bytes and the next pipelined response never overtake each other."""
    running = https(validator(big_list_app), numthreads=1, max=1, timeout=30)
    with tls_connect(running, pki) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        stats = running.server._engine_stats
        assert wait_for(lambda: stats()["responses_sending"] == 1), stats()
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK") and sha(body) == sha(BIG)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in head.lower()
        assert body == b"hello"
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the connection closes after the second response"


def random_chunks(seed: int, total: int) -> list[bytes]:
    """Chunks of mixed sizes (small ones copied, large ones pinned) with varied content."""
    rng = random.Random(seed)
    chunks, size = [], 0
    while size < total:
        n = rng.choice([1, 7, 100, 4096, 16 * 1024, 16 * 1024 + 1, 70_000, 300_000, MiB])
        chunks.append(rng.randbytes(n))
        size += n
    return chunks


def test_a_stream_to_a_slow_tls_reader_arrives_exactly(https, pki) -> None:
    """A generator's chunks over TLS (copied when small, pinned when large) reach a client
    that starts reading late, in order; `write()` bytes go the same way."""
    chunks = random_chunks(13, 12 * MiB)
    expected = b"written first;" + b"".join(chunks)

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        write(b"written first;")
        yield from chunks

    running = https(validator(app), numthreads=2, timeout=30)
    with tls_connect(running, pki) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(0.5)
        head, body = read_response(sock)
        assert b"transfer-encoding: chunked" in head.lower()
        assert len(body) == len(expected) and sha(body) == sha(expected)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sha(read_response(sock)[1]) == sha(expected)


def test_file_wrapper_over_tls_is_iterated_with_bounded_hand_off(https, pki, tmp_path) -> None:
    """No sendfile over TLS: the file is read in blocks, and while the client reads nothing
    the application is held back once the client is HIGH_WATER behind (it does not read the
    whole file into memory); then every byte arrives and the file is closed."""
    content = random.Random(5).randbytes(48 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    read_so_far = [0]
    closed = threading.Event()

    class Tracked:
        def __init__(self) -> None:
            self.file = open(path, "rb")  # noqa: SIM115 - closed through close() below

        def read(self, n: int = -1) -> bytes:
            data = self.file.read(n)
            read_so_far[0] += len(data)
            return data

        def close(self) -> None:
            self.file.close()
            closed.set()

    def app(environ: dict, start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(content)))])
            return environ["wsgi.file_wrapper"](Tracked(), MiB)
        return hello_app(environ, start_response)

    running = https(app, numthreads=2, timeout=30)
    with tls_connect(running, pki) as sock:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # The application reads ahead only by what the socket buffers (at most 4 MiB each
        # side on Linux), HIGH_WATER, rustls' records and a block or two.
        time.sleep(1.0)
        ahead = read_so_far[0]
        assert 0 < ahead <= 16 * MiB, f"the file wrapper read {ahead} bytes ahead of the client"
        assert not closed.is_set()
        resp = requests.get(f"https://localhost:{running.port}/", verify=pki["ca"], timeout=5)
        assert resp.text == "hello"
        head, body = read_response(sock)
        assert len(body) == len(content) and sha(body) == sha(content)
        assert closed.wait(2), "the file object is closed once the response is out"
