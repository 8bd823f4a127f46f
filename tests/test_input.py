"""wsgi.input: every read method, for Content-Length and chunked bodies alike."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time

import pytest
import requests

from _apps import read_response
from conftest import recv_all


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(items):
    if isinstance(items, list):
        return [base64.b64decode(x) for x in items]
    return base64.b64decode(items)


def reader_app(environ, start_response):
    """Reads the body the way the X-Read header says; reports every piece it got."""
    inp = environ["wsgi.input"]
    how = environ.get("HTTP_X_READ", "read")
    pieces: list[bytes] = []
    if how == "read":
        pieces.append(inp.read())
    elif how == "read-1":
        pieces.append(inp.read(-1))
    elif how == "read-none":
        pieces.append(inp.read(None))
    elif how.startswith("read-n-"):
        n = int(how[len("read-n-"):])
        while True:
            data = inp.read(n)
            if not data:
                break
            pieces.append(data)
    elif how == "readline":
        while True:
            line = inp.readline()
            if not line:
                break
            pieces.append(line)
    elif how.startswith("readline-n-"):
        n = int(how[len("readline-n-"):])
        while True:
            line = inp.readline(n)
            if not line:
                break
            pieces.append(line)
    elif how == "readlines":
        pieces.extend(inp.readlines())
    elif how.startswith("readlines-hint-"):
        hint = int(how[len("readlines-hint-"):])
        pieces.extend(inp.readlines(hint))
        pieces.append(b"|REST|" + inp.read())
    elif how == "iter":
        pieces.extend(iter(inp))
    elif how == "mixed":
        pieces.append(inp.readline())
        pieces.append(inp.read(3))
        pieces.append(inp.readline(2))
        pieces.extend(inp.readlines())
    else:
        raise AssertionError(how)
    after = [inp.read(), inp.read(10), inp.readline(), inp.read(0)]
    body = json.dumps({
        "types": sorted({type(p).__name__ for p in pieces}),
        "pieces": [_b64(p) for p in pieces],
        "after": [_b64(a) for a in after],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


BODY = b"first line\nsecond line\r\n\nfourth line, no newline at the end"
LINES = [b"first line\n", b"second line\r\n", b"\n", b"fourth line, no newline at the end"]


def chunk_encode(body: bytes, sizes=(1, 7, 3, 16, 5), ext: bool = False) -> bytes:
    out = b""
    pos = 0
    i = 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        piece = body[pos:pos + size]
        extension = b";name=value;flag" if ext and i % 2 == 0 else b""
        out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        pos += size
        i += 1
    return out + b"0\r\n\r\n"


def post(running, how: str, body: bytes = BODY, chunked: bool = False) -> dict:
    with running.connect() as sock:
        head = (f"POST /read HTTP/1.1\r\nHost: h\r\nX-Read: {how}\r\n"
                "Connection: close\r\n").encode()
        if chunked:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunk_encode(body))
        else:
            sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        resp = read_response(sock)
    assert resp.status == 200, (resp.status_line, resp.body[:500])
    result = json.loads(resp.body)
    assert result["after"] == ["", "", "", ""], "reading past the end must give b''"
    return result


@pytest.fixture
def running(serve):
    return serve(reader_app)


FRAMINGS = pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])


@FRAMINGS
@pytest.mark.parametrize("how", ["read", "read-1", "read-none"])
def test_read_all(running, chunked, how):
    result = post(running, how, chunked=chunked)
    assert result["types"] == ["bytes"]
    assert _unb64(result["pieces"]) == [BODY]


@FRAMINGS
@pytest.mark.parametrize("n", [1, 5, 11, 1000])
def test_read_n(running, chunked, n):
    result = post(running, f"read-n-{n}", chunked=chunked)
    pieces = _unb64(result["pieces"])
    assert b"".join(pieces) == BODY
    assert all(0 < len(p) <= n for p in pieces)
    if n == 1:
        assert len(pieces) == len(BODY)


@FRAMINGS
def test_readline(running, chunked):
    result = post(running, "readline", chunked=chunked)
    assert _unb64(result["pieces"]) == LINES


@FRAMINGS
def test_readline_with_size(running, chunked):
    result = post(running, "readline-n-4", chunked=chunked)
    pieces = _unb64(result["pieces"])
    assert b"".join(pieces) == BODY
    assert pieces[:4] == [b"firs", b"t li", b"ne\n", b"seco"]
    assert all(len(p) <= 4 for p in pieces)
    # A piece only ends early at a newline (or at the end of the body).
    for p in pieces[:-1]:
        assert len(p) == 4 or p.endswith(b"\n"), p


@FRAMINGS
def test_readlines(running, chunked):
    result = post(running, "readlines", chunked=chunked)
    assert _unb64(result["pieces"]) == LINES


@FRAMINGS
@pytest.mark.parametrize("hint", [1, 12, 10000])
def test_readlines_with_hint(running, chunked, hint):
    # PEP 3333: the server may ignore the hint; but what it returns must be whole lines,
    # and together with what is left they make the body.
    result = post(running, f"readlines-hint-{hint}", chunked=chunked)
    pieces = _unb64(result["pieces"])
    lines, rest = pieces[:-1], pieces[-1]
    assert rest.startswith(b"|REST|")
    assert lines, "readlines(hint) returned nothing"
    assert lines == LINES[:len(lines)]
    assert b"".join(lines) + rest[len(b"|REST|"):] == BODY


@FRAMINGS
def test_iteration(running, chunked):
    result = post(running, "iter", chunked=chunked)
    assert _unb64(result["pieces"]) == LINES


@FRAMINGS
def test_mixed_calls(running, chunked):
    result = post(running, "mixed", chunked=chunked)
    assert _unb64(result["pieces"]) == [b"first line\n", b"sec", b"on", b"d line\r\n", b"\n",
                                        b"fourth line, no newline at the end"]


@FRAMINGS
@pytest.mark.parametrize("how", ["read", "readline", "readlines", "iter", "read-n-10"])
def test_empty_body(running, chunked, how):
    result = post(running, how, body=b"", chunked=chunked)
    assert b"".join(_unb64(result["pieces"])) == b""


@pytest.mark.parametrize("how", ["read", "readline", "readlines", "read-n-10"])
def test_get_without_body(running, how):
    with running.connect() as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: h\r\nX-Read: {how}\r\n"
                     "Connection: close\r\n\r\n".encode())
        resp = read_response(sock)
    assert resp.status == 200
    result = json.loads(resp.body)
    assert b"".join(_unb64(result["pieces"])) == b""
    assert result["after"] == ["", "", "", ""]


def test_long_line_readline(running):
    body = os.urandom(100_000).replace(b"\n", b"x") + b"\ntail"
    result = post(running, "readline", body=body)
    assert _unb64(result["pieces"]) == [body[:-4], b"tail"]


def test_chunked_lines_across_chunk_boundaries(running):
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nX-Read: readline\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     b"2\r\nab\r\n3\r\nc\nd\r\n3\r\nef\n\r\n1\r\n\n\r\n0\r\n\r\n")
        resp = read_response(sock)
    assert _unb64(json.loads(resp.body)["pieces"]) == [b"abc\n", b"def\n", b"\n"]


def test_chunk_extensions_and_trailers(running):
    """Extensions are ignored, trailers consumed; the connection then serves the next request."""
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nX-Read: read\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     b"5;ext=1\r\nhello\r\n"
                     b"6 ; name=\"quoted value\"\r\n world\r\n"
                     b"A;x\r\n, trailers\r\n"
                     b"0;last=yes\r\nX-Trailer: t1\r\nX-Checksum: abc\r\n\r\n")
        first = read_response(sock)
        assert first.status == 200
        assert _unb64(json.loads(first.body)["pieces"]) == [b"hello world, trailers"]
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nX-Read: read\r\nContent-Length: 4\r\n"
                     b"\r\nnext")
        second = read_response(sock)
        assert second.status == 200
        assert _unb64(json.loads(second.body)["pieces"]) == [b"next"]


def test_trailers_not_in_environ(serve):
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read()
        seen["keys"] = sorted(k for k in environ if k.startswith("HTTP_"))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []

    running = serve(app)
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        assert read_response(sock).status == 200
    assert seen["body"] == b"abc"
    assert seen["keys"] == ["HTTP_CONNECTION", "HTTP_HOST", "HTTP_TRANSFER_ENCODING"]


def test_unread_body_before_keepalive_request(serve):
    """An app that ignores the body: the body bytes must not be parsed as a request."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [environ["PATH_INFO"][1:3].encode()]

    running = serve(app)
    with running.connect() as sock:
        smuggled = b"GET /evil HTTP/1.1\r\nHost: h\r\n\r\n"
        sock.sendall(b"POST /p1 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
                     + smuggled + b"GET /p2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        buf = bytearray()
        first = read_response(sock, buffer=buf)
        assert first.body == b"p1"
        if first.header("Connection", "").lower() != "close":
            second = read_response(sock, buffer=buf)
            assert second.body == b"p2"


def _hash_app(environ, start_response):
    inp = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    largest = 0
    reads = 0
    while True:
        data = inp.read(65536)
        if not data:
            break
        reads += 1
        largest = max(largest, len(data))
        total += len(data)
        digest.update(data)
    body = json.dumps({"sha256": digest.hexdigest(), "total": total, "largest": largest,
                       "reads": reads}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


BIG = os.urandom(5 * 1024 * 1024 + 123)
BIG_SHA = hashlib.sha256(BIG).hexdigest()


def test_big_body_content_length(serve):
    running = serve(_hash_app)
    r = requests.post(running.url("/big"), data=BIG, timeout=30)
    assert r.status_code == 200
    result = r.json()
    assert result["total"] == len(BIG)
    assert result["sha256"] == BIG_SHA
    assert 0 < result["largest"] <= 65536
    assert result["reads"] >= len(BIG) // 65536


def test_big_body_chunked(serve):
    running = serve(_hash_app)

    def gen():
        step = 100_000        # deliberately not a multiple of the read size
        for i in range(0, len(BIG), step):
            yield BIG[i:i + step]

    r = requests.post(running.url("/big"), data=gen(), timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200
    result = r.json()
    assert result["total"] == len(BIG)
    assert result["sha256"] == BIG_SHA
    assert 0 < result["largest"] <= 65536


def test_big_body_echo(serve):
    def echo(environ, start_response):
        inp = environ["wsgi.input"]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", environ["CONTENT_LENGTH"])])
        return iter(lambda: inp.read(65536), b"")

    running = serve(echo)
    data = BIG[:1024 * 1024]
    r = requests.post(running.url("/echo"), data=data, timeout=30)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()


# --- a client that stops in the middle of a body -----------------------------------------

class _Recorder:
    def __init__(self, how: str = "read") -> None:
        self.done = threading.Event()
        self.result: dict = {}
        self.how = how

    def __call__(self, environ, start_response):
        inp = environ["wsgi.input"]
        got = b""
        try:
            if self.how == "read":
                got = inp.read()
            else:
                while True:
                    data = inp.read(4)
                    if not data:
                        break
                    got += data
        except Exception as exc:
            self.result["exc"] = exc
            self.result["got"] = got
            raise
        else:
            self.result["data"] = got
        finally:
            self.done.set()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


#: Requests whose bodies stop short (then the client closes).
TRUNCATED = {
    "length": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789",
    "chunked": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"a\r\n0123456789\r\n20\r\n01234",
}


@pytest.mark.parametrize("how", ["read", "read-n"])
@pytest.mark.parametrize("close", ["shutdown", "close"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_truncated_body_raises(serve, how, close, framing):
    """Streamed bodies (buffer_request_body=False): the application's read fails."""
    app = _Recorder(how)
    running = serve(app, timeout=5, buffer_request_body=False)
    sock = running.connect()
    sock.sendall(TRUNCATED[framing])
    time.sleep(0.2)
    if close == "shutdown":
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.close()
    try:
        assert app.done.wait(8), "the app's read() never returned"
        assert "data" not in app.result, f"short body presented as complete: {app.result}"
        assert isinstance(app.result.get("exc"), Exception)
        assert len(app.result["got"]) < 100
    finally:
        if close == "shutdown":
            sock.close()
    # The server is still fine.
    assert requests.post(running.url(), data=b"x" * 3, timeout=5).text == "ok"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_truncated_buffered_body_never_reaches_the_app(serve, framing):
    """Buffered bodies (the default): a body cut short is never presented at all."""
    app = _Recorder("read")
    running = serve(app, timeout=5)
    sock = running.connect()
    sock.sendall(TRUNCATED[framing])
    time.sleep(0.2)
    assert running.server._engine_stats()["bodies_collecting"] == 1
    sock.shutdown(socket.SHUT_WR)
    try:
        assert recv_all(sock, timeout=5) == b"", "no response to a request that never ended"
    finally:
        sock.close()
    assert not app.done.is_set(), "the application ran for an incomplete body"
    assert requests.post(running.url(), data=b"x" * 3, timeout=5).text == "ok"
    assert app.result == {"data": b"xxx"}


# --- max_request_body_size ----------------------------------------------------------------

def test_body_size_limit_content_length(serve):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    running = serve(app, max_request_body_size=100)
    ok = requests.post(running.url("/ok"), data=b"a" * 100, timeout=5)
    assert ok.status_code == 200 and ok.content == b"a" * 100
    with running.connect() as sock:
        # Only the head: the limit is checked against Content-Length before any body is read.
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
        resp = read_response(sock)
    assert resp.status == 413
    assert calls == ["/ok"], "the app must not run for a body over the limit"


def test_body_size_limit_chunked(serve):
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    running = serve(app, max_request_body_size=100)
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n")
        resp = read_response(sock)
    assert resp.status == 200 and resp.body == b"a" * 50 + b"b" * 50
    with running.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"32\r\n" + b"a" * 50 + b"\r\n33\r\n" + b"b" * 51 + b"\r\n0\r\n\r\n")
        resp = read_response(sock)
    assert resp.status == 413


def test_body_size_limit_zero_is_unlimited(serve):
    running = serve(_hash_app, max_request_body_size=0)
    data = BIG[:1_000_000]
    r = requests.post(running.url(), data=data, timeout=10)
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
