"""Static files from the engine (`server.static`, `--static PREFIX=DIR`): every header rule with
raw requests, traversal attempts, a 1 GiB sparse file by sendfile, TLS, the access log and the
counters, the command line and a real Django project's `collectstatic` output."""

from __future__ import annotations

import email.utils
import gzip
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable
from wsgiref.validate import validator

import pytest

from stogie import metrics

from _apps import free_port, stogie_script
from _http import Client, chunked, get, parse_responses, request, talk
from conftest import Running

CSS = (b"/* site */\n" + b"body { color: #333; margin: 0 auto; }\n" * 110)[:4096]
JS = b"console.log('static');\n" * 1000           # 23 KiB: more than the 16 KiB read inline
GZ = gzip.compress(CSS, mtime=0)
BR = b"fake brotli bytes: stogie sends the sibling as it is"
SECRET = b"outside the static directory"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/root (the static directory) and tmp/secret beside it."""
    root = tmp_path / "root"
    (root / "css").mkdir(parents=True)
    (root / "js").mkdir()
    (root / "pre").mkdir()
    (root / "css" / "site.css").write_bytes(CSS)
    (root / "js" / "app.js").write_bytes(JS)
    (root / "a b.txt").write_bytes(b"spaced")
    (root / "empty.txt").write_bytes(b"")
    (root / "pre" / "style.css").write_bytes(CSS)
    (root / "pre" / "style.css.gz").write_bytes(GZ)
    (root / "pre" / "style.css.br").write_bytes(BR)
    (root / "pre" / "only-gz.js").write_bytes(JS)
    (root / "pre" / "only-gz.js.gz").write_bytes(gzip.compress(JS, mtime=0))
    (tmp_path / "secret").write_bytes(SECRET)
    (root / "escape").symlink_to("../secret")
    (root / "escape-abs").symlink_to(tmp_path / "secret")
    (root / "inner").symlink_to("css/site.css")
    os.mkfifo(root / "fifo")
    return root


class AppCalls:
    """A validated application that says which path it saw; records every call."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app:" + environ["PATH_INFO"].encode("latin-1")]


@pytest.fixture
def app() -> AppCalls:
    return AppCalls()


@pytest.fixture
def site(serve: Callable[..., Running], tree: Path, app: AppCalls) -> Running:
    return serve(validator(app), static={"/static/": str(tree)})


def one(running: Running, data: bytes, method: str = "GET") -> Any:
    with Client(running) as client:
        client.send(data)
        return client.response(method)


def http_date(path: Path) -> str:
    return email.utils.formatdate(int(path.stat().st_mtime), usegmt=True)


# -- the response head ------------------------------------------------------------------------


def test_get_sends_the_file_with_validators(site: Running, tree: Path) -> None:
    resp = one(site, get("/static/css/site.css"))
    assert (resp.version, resp.status, resp.reason) == ("HTTP/1.1", 200, "OK")
    names = [name for name, _ in resp.headers]
    assert names == ["Content-Type", "Accept-Ranges", "ETag", "Last-Modified", "Vary",
                     "Content-Length", "Date", "Server"]
    assert resp.header("Content-Type") == "text/css; charset=utf-8"
    assert resp.header("Content-Length") == str(len(CSS))
    assert resp.header("Accept-Ranges") == "bytes"
    assert resp.header("Vary") == "Accept-Encoding"
    assert resp.header("Last-Modified") == http_date(tree / "css" / "site.css")
    assert re.fullmatch(r'"[0-9a-f]+-1000"', resp.header("ETag") or ""), resp
    assert resp.body == CSS
    assert one(site, get("/static/css/site.css")).header("ETag") == resp.header("ETag")


@pytest.mark.parametrize("target, content_type, body", [
    ("/static/js/app.js", "text/javascript; charset=utf-8", JS),
    ("/static/a%20b.txt", "text/plain; charset=utf-8", b"spaced"),
    ("/static/empty.txt", "text/plain; charset=utf-8", b""),
    ("/static/inner", "application/octet-stream", CSS),        # a symlink inside: followed
    ("/static/css/site.css?v=123", "text/css; charset=utf-8", CSS),
    ("/static//css//site.css", "text/css; charset=utf-8", CSS),
])
def test_content_types_and_names(site: Running, target: str, content_type: str,
                                 body: bytes) -> None:
    resp = one(site, get(target))
    assert resp.status == 200, resp
    assert resp.header("Content-Type") == content_type
    assert resp.header("Content-Length") == str(len(body))
    assert resp.body == body


def test_head_has_get_headers_and_no_body(site: Running) -> None:
    with Client(site) as client:
        client.send(get("/static/js/app.js"))
        full = client.response()
        client.send(request("HEAD", "/static/js/app.js") + get("/static/css/site.css"))
        head = client.response("HEAD")
        after = client.response()
    assert head.status == 200 and head.body == b""
    drop = {"Date"}
    assert ([h for h in head.headers if h[0] not in drop]
            == [h for h in full.headers if h[0] not in drop])
    assert after.body == CSS, "the connection went on after HEAD, with nothing left over"


# -- conditional requests ---------------------------------------------------------------------


def test_if_none_match_and_if_modified_since(site: Running, tree: Path) -> None:
    first = one(site, get("/static/css/site.css"))
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    assert etag and modified
    earlier = email.utils.formatdate(int((tree / "css" / "site.css").stat().st_mtime) - 10,
                                     usegmt=True)
    for headers, status in [
        ([("If-None-Match", etag)], 304),
        ([("If-None-Match", f'"nope", W/{etag}')], 304),
        ([("If-None-Match", "*")], 304),
        ([("If-None-Match", '"nope"')], 200),
        ([("If-Modified-Since", modified)], 304),
        ([("If-Modified-Since", earlier)], 200),
        ([("If-Modified-Since", "yesterday")], 200),
        # If-None-Match decides alone when it is there.
        ([("If-None-Match", '"nope"'), ("If-Modified-Since", modified)], 200),
    ]:
        resp = one(site, get("/static/css/site.css", headers=headers))
        assert resp.status == status, (headers, resp)
        if status == 304:
            assert resp.reason == "Not Modified"
            assert [n for n, _ in resp.headers] == ["ETag", "Last-Modified", "Vary", "Date",
                                                    "Server"], resp
            assert resp.header("ETag") == etag and resp.body == b""


def test_a_304_keeps_the_connection(site: Running) -> None:
    with Client(site) as client:
        client.send(get("/static/css/site.css"))
        etag = client.response().header("ETag")
        client.send(get("/static/css/site.css", headers=[("If-None-Match", etag)])
                    + get("/static/a%20b.txt"))
        assert client.response().status == 304
        assert client.response().body == b"spaced"


def test_changed_file_gets_a_new_etag(site: Running, tree: Path) -> None:
    before = one(site, get("/static/a%20b.txt")).header("ETag")
    (tree / "a b.txt").write_bytes(b"SPACED")
    time.sleep(1.1)    # small files are kept in memory and looked at again after 1 s
    resp = one(site, get("/static/a%20b.txt", headers=[("If-None-Match", before)]))
    assert resp.status == 200 and resp.body == b"SPACED"
    assert resp.header("ETag") != before


# -- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value, start, end", [
    ("bytes=0-99", 0, 99),
    ("bytes=4000-", 4000, 4095),
    ("bytes=-10", 4086, 4095),
    ("bytes=4090-9999", 4090, 4095),
    ("bytes=-99999", 0, 4095),
])
def test_single_range(site: Running, value: str, start: int, end: int) -> None:
    resp = one(site, get("/static/css/site.css", headers=[("Range", value)]))
    assert (resp.status, resp.reason) == (206, "Partial Content"), resp
    assert resp.header("Content-Range") == f"bytes {start}-{end}/4096"
    assert resp.header("Content-Length") == str(end - start + 1)
    assert resp.body == CSS[start:end + 1]


def test_range_of_a_large_file_by_sendfile(site: Running) -> None:
    resp = one(site, get("/static/js/app.js", headers=[("Range", "bytes=100-20099")]))
    assert resp.status == 206 and resp.body == JS[100:20100]


@pytest.mark.parametrize("value", ["bytes=4096-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range(site: Running, value: str) -> None:
    with Client(site) as client:
        client.send(get("/static/css/site.css", headers=[("Range", value)]))
        resp = client.response()
        assert (resp.status, resp.reason) == (416, "Range Not Satisfiable"), resp
        assert resp.header("Content-Range") == "bytes */4096"
        assert resp.header("Content-Length") == "0" and resp.body == b""
        assert client.is_open(), "a 416 keeps the connection"


@pytest.mark.parametrize("value", ["bytes=0-1,5-6", "items=0-1", "bytes=9-1", "bytes=x-"])
def test_ignored_ranges_send_everything(site: Running, value: str) -> None:
    resp = one(site, get("/static/css/site.css", headers=[("Range", value)]))
    assert resp.status == 200 and resp.body == CSS and resp.header("Content-Range") is None


def test_if_range(site: Running) -> None:
    first = one(site, get("/static/css/site.css"))
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    for if_range, status in [(etag, 206), (modified, 206), ('"stale"', 200),
                             (f"W/{etag}", 200), ("Mon, 01 Jan 2001 00:00:00 GMT", 200)]:
        headers = [("Range", "bytes=0-9"), ("If-Range", if_range)]
        resp = one(site, get("/static/css/site.css", headers=headers))
        assert resp.status == status, (if_range, resp)
        assert resp.body == (CSS[:10] if status == 206 else CSS)


def test_head_with_a_range(site: Running) -> None:
    resp = one(site, request("HEAD", "/static/css/site.css", headers=[("Range", "bytes=1-2")]),
               "HEAD")
    assert resp.status == 206 and resp.header("Content-Length") == "2" and resp.body == b""
    assert resp.header("Content-Range") == "bytes 1-2/4096"


# -- precompressed siblings -------------------------------------------------------------------


@pytest.mark.parametrize("accept, coding, body", [
    ("gzip", "gzip", GZ),
    ("gzip, deflate, br", "br", BR),
    ("br;q=0, gzip", "gzip", GZ),
    ("*", "br", BR),
    ("*;q=0", None, CSS),
    ("identity", None, CSS),
    (None, None, CSS),
])
def test_precompressed_siblings(site: Running, accept: str | None, coding: str | None,
                                body: bytes) -> None:
    headers = [("Accept-Encoding", accept)] if accept is not None else []
    resp = one(site, get("/static/pre/style.css", headers=headers))
    assert resp.status == 200
    assert resp.header("Content-Encoding") == coding
    assert resp.header("Content-Type") == "text/css; charset=utf-8"
    assert resp.header("Vary") == "Accept-Encoding"
    assert resp.header("Content-Length") == str(len(body)) and resp.body == body


def test_each_coding_has_its_own_etag_and_ranges(site: Running) -> None:
    tags = {one(site, get("/static/pre/style.css", headers=[("Accept-Encoding", ae)]))
            .header("ETag") for ae in ("gzip", "br", "identity")}
    assert len(tags) == 3
    resp = one(site, get("/static/pre/style.css",
                         headers=[("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")]))
    assert resp.status == 206 and resp.body == GZ[:10]
    assert resp.header("Content-Range") == f"bytes 0-9/{len(GZ)}"


def test_a_missing_sibling_falls_back(site: Running) -> None:
    resp = one(site, get("/static/pre/only-gz.js", headers=[("Accept-Encoding", "br")]))
    assert resp.header("Content-Encoding") is None and resp.body == JS
    resp = one(site, get("/static/css/site.css", headers=[("Accept-Encoding", "gzip, br")]))
    assert resp.header("Content-Encoding") is None and resp.body == CSS
    resp = one(site, get("/static/pre/only-gz.js", headers=[("Accept-Encoding", "gzip, br")]))
    assert resp.header("Content-Encoding") == "gzip" and gzip.decompress(resp.body) == JS


# -- methods, missing files, what reaches the application -------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405(site: Running, method: str) -> None:
    with Client(site) as client:
        client.send(request(method, "/static/css/site.css", body=b"x=1", content_length=True)
                    + get("/static/a%20b.txt"))
        resp = client.response()
        assert (resp.status, resp.reason) == (405, "Method Not Allowed")
        assert resp.header("Allow") == "GET, HEAD"
        assert resp.body == b"Method Not Allowed"
        assert client.response().body == b"spaced", "the small body was skipped"


@pytest.mark.parametrize("buffered", [True, False], ids=["collected", "on-socket"])
def test_request_bodies_are_dropped(serve: Callable[..., Running], tree: Path, app: AppCalls,
                                    buffered: bool) -> None:
    running = serve(validator(app), static={"/static/": str(tree)},
                    buffer_request_body=buffered)
    chunked_post = request("POST", "/static/a%20b.txt", body=chunked(b"abc", b"def"),
                           headers=[("Transfer-Encoding", "chunked")])
    with Client(running) as client:
        client.send(chunked_post + get("/static/a%20b.txt"))
        resp = client.response()
        assert resp.status == 405
        if buffered:
            # Collected before the request was routed: the connection goes on.
            assert not resp.says_close and client.response().body == b"spaced"
        else:
            # Still on the socket, chunked: not skipped, the connection closes.
            assert resp.says_close
            client.wait_closed()
    assert app.paths == []


@pytest.mark.parametrize("target", [
    "/static/nothing.css", "/static/", "/static/css", "/static/css/", "/static/css/site.css/",
    "/static/fifo", "/static/js",
])
def test_missing_files_and_directories_are_404(site: Running, app: AppCalls,
                                               target: str) -> None:
    with Client(site) as client:
        client.send(get(target))
        resp = client.response()
        assert (resp.status, resp.reason) == (404, "Not Found"), resp
        assert resp.header("Content-Type") == "text/plain" and resp.body == b"Not Found"
        assert client.is_open(), "a 404 keeps the connection"
    assert app.paths == [], "a path under the prefix never reaches the application"


@pytest.mark.parametrize("target", ["/static", "/staticfiles/x.css", "/other", "/STATIC/x"])
def test_paths_outside_the_prefix_reach_the_application(site: Running, app: AppCalls,
                                                        target: str) -> None:
    resp = one(site, get(target))
    assert resp.status == 200 and resp.body == b"app:" + target.encode()
    assert app.paths == [target]


@pytest.mark.parametrize("target", [
    "/static/../secret",
    "/static/css/../../secret",
    "/static/%2e%2e/secret",
    "/static/%2E%2E/secret",
    "/static/.%2e/secret",
    "/static/..%2fsecret",
    "/static/..%2Fsecret",
    "/static/css/%2e%2e/%2e%2e/secret",
    "/static/escape",
    "/static/escape-abs",
    "/static/./css/site.css",
    "/static/css%2fsite.css",
    "/static/css/site.css%00.txt",
    "/static/%zz",
])
def test_traversal_is_404(site: Running, app: AppCalls, target: str) -> None:
    resp = one(site, get(target))
    assert resp.status == 404, resp
    assert resp.body == b"Not Found"
    assert app.paths == []


def test_longest_prefix_wins(serve: Callable[..., Running], tree: Path, app: AppCalls) -> None:
    running = serve(validator(app), static=[("/static", str(tree)),
                                            ("/static/css/", str(tree / "js"))])
    assert one(running, get("/static/css/app.js")).body == JS
    assert one(running, get("/static/js/app.js")).body == JS
    assert one(running, get("/static/css/site.css")).status == 404


# -- connections ------------------------------------------------------------------------------


def test_pipelined_static_and_application_requests(site: Running, app: AppCalls) -> None:
    many = 40
    data = (get("/static/css/site.css") + get("/app") + request("HEAD", "/static/js/app.js")
            + get("/static/js/app.js") + get("/static/missing")) + get("/static/a%20b.txt") * many
    with Client(site) as client:
        client.send(data)
        got = [client.response(m) for m in ["GET", "GET", "HEAD", "GET", "GET"]]
        rest = [client.response() for _ in range(many)]
    assert [r.status for r in got] == [200, 200, 200, 200, 404]
    assert got[0].body == CSS and got[1].body == b"app:/app" and got[3].body == JS
    assert all(r.body == b"spaced" for r in rest)
    assert app.paths == ["/app"]


def test_http10_and_connection_close(site: Running) -> None:
    result = talk(site, get("/static/a%20b.txt", version="HTTP/1.0"), timeout=3)
    [resp] = result.responses
    assert resp.version == "HTTP/1.1" and resp.body == b"spaced" and result.closed
    with Client(site) as client:
        client.send(get("/static/a%20b.txt", version="HTTP/1.0",
                        headers=[("Connection", "keep-alive")]))
        resp = client.response()
        assert resp.header("Connection") == "Keep-Alive" and client.is_open()
    result = talk(site, get("/static/a%20b.txt", headers=[("Connection", "close")]), timeout=3)
    assert result.closed and result.responses[0].header("Connection") == "close"


def test_one_gib_sparse_file_by_sendfile(site: Running, tree: Path) -> None:
    size = 1 << 30
    with open(tree / "big.bin", "wb") as f:
        f.truncate(size)
    with site.connect(timeout=30) as sock:
        sock.sendall(get("/static/big.bin"))
        head, body_start = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"Content-Length: {size}\r\n".encode() in head
        assert b"Content-Type: application/octet-stream\r\n" in head
        received = _discard(sock, size - len(body_start), deadline=time.monotonic() + 120)
        assert received + len(body_start) == size
        # The connection goes on after the large body: a range near the end.
        sock.sendall(get("/static/big.bin", headers=[("Range", "bytes=1073741000-")]))
        resp = _read_all_of_one(sock)
    assert resp.status == 206
    assert resp.header("Content-Range") == f"bytes 1073741000-{size - 1}/{size}"
    assert resp.body == b"\0" * (size - 1073741000)


def test_slow_readers_of_large_files_hold_no_thread(serve: Callable[..., Running], tree: Path,
                                                    app: AppCalls) -> None:
    """One worker thread; three clients ask for a 20 MiB file (two for all of it, one for a
    range) and read nothing more than the head: the file's rest waits in each connection's
    backlog, written from the event loop, so the worker is free for the next request at once.
    Then each slow client reads its body, every byte of it, in order."""
    size = 20 << 20
    big = os.urandom(size)
    (tree / "big.bin").write_bytes(big)
    # The server's timeout is far beyond the clients' waits: a worker held by a slow reader
    # would only be freed by it.
    running = serve(validator(app), numthreads=1, timeout=60, static={"/static/": str(tree)})
    first, last = 1000, size - 5000
    asks: list[tuple[list[tuple[str, str]], int, bytes]] = [
        ([], 200, big),
        ([("Range", f"bytes={first}-{last}")], 206, big[first:last + 1]),
        ([], 200, big),
    ]
    slow: list[tuple[socket.socket, bytes, bytes]] = []
    try:
        for headers, _, _ in asks:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.settimeout(5)
            sock.connect((running.host, running.port))
            sock.sendall(get("/static/big.bin", headers=headers))
            head, body_start = _read_head(sock)   # times out if the worker is held
            slow.append((sock, head, body_start))
        resp = one(running, get("/hello"))
        assert (resp.status, resp.body) == (200, b"app:/hello")
        assert one(running, get("/static/css/site.css")).body == CSS
        for (sock, head, body_start), (_, status, want) in zip(slow, asks):
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            assert f"\r\nContent-Length: {len(want)}\r\n".encode() in head
            if status == 206:
                assert f"\r\nContent-Range: bytes {first}-{last}/{size}\r\n".encode() in head
            assert len(body_start) < len(want), "the socket took the whole file at once"
            body = bytearray(body_start)
            got = _read_body_into(sock, body, len(want), deadline=time.monotonic() + 60)
            assert got == len(want) and body == want
            # Exactly the body: the connection goes on with the next response.
            sock.sendall(get("/static/a%20b.txt"))
            assert _read_all_of_one(sock).body == b"spaced"
    finally:
        for sock, _, _ in slow:
            sock.close()
    assert app.paths == ["/hello"]


def _read_body_into(sock: socket.socket, body: bytearray, want: int, deadline: float) -> int:
    """Reads into `body` until it holds `want` bytes (or the peer closes); its length."""
    while len(body) < want and time.monotonic() < deadline:
        chunk = sock.recv(min(1 << 20, want - len(body)))
        if not chunk:
            break
        body += chunk
    return len(body)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head: {data!r}"
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def _discard(sock: socket.socket, want: int, deadline: float) -> int:
    buf = bytearray(1 << 20)
    got = 0
    while got < want and time.monotonic() < deadline:
        n = sock.recv_into(buf, min(len(buf), want - got))
        if n == 0:
            break
        got += n
    return got


def _read_all_of_one(sock: socket.socket) -> Any:
    data = b""
    while True:
        try:
            [resp] = parse_responses(data)
            if resp.complete:
                return resp
        except (AssertionError, ValueError):
            pass
        chunk = sock.recv(65536)
        assert chunk, f"closed: {data[:300]!r}"
        data += chunk


def test_tls_copies_the_file(serve: Callable[..., Running], tree: Path, app: AppCalls,
                             tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    from stogie.ssl import BuiltinSSLAdapter

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    running = serve(validator(app), static={"/static/": str(tree)},
                    ssl_adapter=BuiltinSSLAdapter(str(cert_path), str(key_path)))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with running.connect() as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(get("/static/js/app.js") + get("/static/css/site.css")
                  + get("/static/js/app.js", headers=[("Range", "bytes=20000-")]))
        data = b""
        s.settimeout(5)
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(JS[20000:]):
            chunk = s.recv(65536)
            assert chunk, data[-200:]
            data += chunk
    big, small, part = parse_responses(data)
    assert (big.status, big.body) == (200, JS)
    assert (small.status, small.body) == (200, CSS)
    assert (part.status, part.body) == (206, JS[20000:])


# -- the access log, the counters and the setting ---------------------------------------------


def test_access_log_and_counters(serve: Callable[..., Running], tree: Path, app: AppCalls,
                                 tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    running = serve(validator(app), static={"/static/": str(tree)}, access_log=str(log),
                    access_log_format='%h "%r" %s %b')
    with Client(running) as client:
        client.send(get("/static/css/site.css") + get("/static/none") + get("/app")
                    + request("HEAD", "/static/a%20b.txt"))
        [client.response(m) for m in ("GET", "GET", "GET", "HEAD")]
    stats = running.server._engine.stats()
    assert stats["static_responses"] == 3
    assert stats["requests"] == 4
    assert running.server.stats["Static Responses"](running.server.stats) == 3
    text = metrics.render([(os.getpid(), stats)])
    assert "stogie_static_responses_total 3\n" in text
    running.stop()
    assert log.read_text().splitlines() == [
        '127.0.0.1 "GET /static/css/site.css HTTP/1.1" 200 4096',
        '127.0.0.1 "GET /static/none HTTP/1.1" 404 9',
        '127.0.0.1 "GET /app HTTP/1.1" 200 8',
        '127.0.0.1 "HEAD /static/a%20b.txt HTTP/1.1" 200 -',
    ]


def test_the_setting_is_checked(tree: Path) -> None:
    from stogie import wsgi

    server = wsgi.Server(("127.0.0.1", 0), None)
    assert server.static == ()
    server.static = {"/static": str(tree)}
    assert server.static == (("/static/", str(tree)),)
    server.static = [("/a/", str(tree)), ("/b/", tree)]
    assert [p for p, _ in server.static] == ["/a/", "/b/"]
    server.static = None
    assert server.static == ()
    for bad, message in [
        ({"static/": str(tree)}, "must be a string starting with '/'"),
        ({"/s/": str(tree / "missing")}, "does not exist or is not a directory"),
        ({"/s/": str(tree / "css" / "site.css")}, "does not exist or is not a directory"),
        ([("/s/", str(tree)), ("/s", str(tree))], "is given twice"),
        ("/static/=" + str(tree), "not the string"),
        ([("/s/",)], "is not a (URL prefix, directory) pair"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            server.static = bad


def test_relative_directories_are_made_absolute(tree: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from stogie import wsgi

    monkeypatch.chdir(tree.parent)
    server = wsgi.Server(("127.0.0.1", 0), None)
    server.static = {"/s/": "root"}
    assert server.static == (("/s/", str(tree)),)


def test_the_setting_is_live(serve: Callable[..., Running], tree: Path, app: AppCalls) -> None:
    running = serve(validator(app))
    assert one(running, get("/static/a%20b.txt")).body == b"app:/static/a b.txt"
    running.server.static = {"/static/": str(tree)}
    assert one(running, get("/static/a%20b.txt")).body == b"spaced"
    running.server.static = None
    assert one(running, get("/static/a%20b.txt")).body == b"app:/static/a b.txt"


# -- the command line -------------------------------------------------------------------------


HELLO = ("def app(environ, start_response):\n"
         "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
         "    return [b'hello from the app']\n")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STOGIE_")}


@pytest.fixture
def run_stogie(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """`run_stogie(*options, env=...)` starts `stogie hello:app` on a free port; returns the
    base URL once it answers. Stopped at teardown."""
    procs: list[subprocess.Popen] = []
    (tmp_path / "hello.py").write_text(HELLO)

    def start(*options: str, env: dict[str, str] | None = None, app: str = "hello:app",
              cwd: Path = tmp_path) -> str:
        port = free_port()
        proc = subprocess.Popen([stogie_script(), app, "--bind", f"127.0.0.1:{port}", *options],
                                cwd=cwd, env={**_env(), **(env or {})},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        _wait_listening(port, proc)
        return f"127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"stogie exited with {proc.returncode}: {err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("stogie did not start listening")


def _raw_get(addr: str, target: str, headers: list[tuple[str, str]] | None = None) -> Any:
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(get(target, headers=headers or [], host=addr)
                     + b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse_responses(data)[0]


def test_cli_static_option(run_stogie: Callable[..., str], tree: Path, tmp_path: Path) -> None:
    addr = run_stogie("--static", f"/static/={tree}", "--static", "/js=root/js",
                      "--workers", "2")
    resp = _raw_get(addr, "/static/css/site.css")
    assert resp.status == 200 and resp.body == CSS
    assert _raw_get(addr, "/js/app.js").body == JS
    assert _raw_get(addr, "/static/missing").status == 404
    assert _raw_get(addr, "/static/../secret").status == 404
    assert _raw_get(addr, "/").body == b"hello from the app"


def test_cli_static_from_the_config_file_and_environment(run_stogie: Callable[..., str],
                                                         tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "stogie.toml"
    config.write_text(f'[static]\n"/static/" = "{tree}"\n"/more" = "{tree / "js"}"\n')
    addr = run_stogie("-c", str(config))
    assert _raw_get(addr, "/static/a%20b.txt").body == b"spaced"
    assert _raw_get(addr, "/more/app.js").body == JS
    config.write_text(f'static = ["/s/={tree}"]\n')
    shown = subprocess.run([stogie_script(), "hello:app", "-c", str(config), "--print-config"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=20, check=True, stdin=subprocess.DEVNULL).stdout
    assert f'static = ["/s/={tree}"]' in shown
    addr = run_stogie(env={"STOGIE_STATIC": f"/env/={tree}"})
    assert _raw_get(addr, "/env/css/site.css").body == CSS


@pytest.mark.parametrize("value, message", [
    ("static/=root", "invalid --static 'static/=root'"),
    ("/static/", "use PREFIX=DIR"),
    ("/static/=missing", "'missing' is not a directory"),
    ("/static/=root/css/site.css", "is not a directory"),
])
def test_cli_bad_static_option(tree: Path, value: str, message: str) -> None:
    proc = subprocess.run([stogie_script(), "hello:app", "--static", value],
                          cwd=tree.parent, env=_env(), capture_output=True, text=True,
                          timeout=20, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.startswith("stogie: error: ") and message in proc.stderr, proc.stderr


# -- a real Django project's collectstatic output ---------------------------------------------


DJANGO_SETTINGS = '''
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
]
MIDDLEWARE = []
DATABASES = {}
STATIC_URL = "/static/"
STATIC_ROOT = STATIC_ROOT_PATH
USE_TZ = True
'''

DJANGO_URLS = '''
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("", lambda request: HttpResponse(b"django view"))]
'''

DJANGO_WSGI = '''
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
'''


def test_django_admin_static_files(run_stogie: Callable[..., str], tmp_path: Path) -> None:
    pytest.importorskip("django")
    project = tmp_path / "project"
    project.mkdir()
    static_root = tmp_path / "collected"
    settings = DJANGO_SETTINGS.replace("STATIC_ROOT_PATH", repr(str(static_root)))
    (project / "settings.py").write_text(settings)
    (project / "urls.py").write_text(DJANGO_URLS)
    (project / "wsgi.py").write_text(DJANGO_WSGI)
    subprocess.run([sys.executable, "-m", "django", "collectstatic", "--noinput", "-v", "0"],
                   cwd=project, env={**_env(), "DJANGO_SETTINGS_MODULE": "settings",
                                     "PYTHONPATH": str(project)},
                   check=True, timeout=120, stdin=subprocess.DEVNULL)
    base_css = static_root / "admin" / "css" / "base.css"
    assert base_css.is_file()
    addr = run_stogie("--static", f"/static/={static_root}", app="wsgi:application",
                      cwd=project)
    for name, content_type in [("admin/css/base.css", "text/css; charset=utf-8"),
                               ("admin/js/core.js", "text/javascript; charset=utf-8"),
                               ("admin/img/icon-yes.svg", "image/svg+xml")]:
        resp = _raw_get(addr, f"/static/{name}")
        assert resp.status == 200, (name, resp)
        assert resp.header("Content-Type") == content_type
        assert resp.body == (static_root / name).read_bytes()
    etag = _raw_get(addr, "/static/admin/css/base.css").header("ETag")
    assert _raw_get(addr, "/static/admin/css/base.css",
                    headers=[("If-None-Match", etag)]).status == 304
    assert _raw_get(addr, "/static/admin/css/nothing.css").status == 404
    assert _raw_get(addr, "/").body == b"django view"
