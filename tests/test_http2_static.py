"""Static files (`--static PREFIX=DIR`) over HTTP/2: the answers of tests/test_static_files.py
(validators, conditional requests, ranges, codings, traversal, 404 and 405) on streams, large
files sent by the HTTP/2 thread as the window opens (no worker held by a slow reader), the
access log and the counters, TLS with ALPN `h2`, and curl. Real sockets throughout."""

# ruff: noqa: F811  (tests take the imported fixtures as arguments)
from __future__ import annotations

import email.utils
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable
from wsgiref.validate import validator

import pytest
from _h2 import H2Client, StreamResult, tls_context

# The fixtures tree, app and site (the HTTP/1.x static tests') and pki (test_http2's) are
# imported, so both protocols are tested against the same files.
from test_http2 import pki  # noqa: F401
from test_static_files import (  # noqa: F401
    BR,
    CSS,
    GZ,
    JS,
    SECRET,
    AppCalls,
    app,
    site,
    tree,
)

from conftest import Running

trustme = pytest.importorskip("trustme")

Headers = list[tuple[str, str]]


def client(running: Running, **kw: Any) -> H2Client:
    return H2Client(running.host, running.port, **kw)


def get(running: Running, path: str, headers: Headers = (), method: str = "GET",
        **kw: Any) -> StreamResult:
    with client(running) as c:
        return c.get(path, method=method, headers=list(headers), **kw)


def http_date(path: Path) -> str:
    return email.utils.formatdate(int(path.stat().st_mtime), usegmt=True)


def names(result: StreamResult) -> list[str]:
    return [name for name, _ in result.headers]


# -- the response head ------------------------------------------------------------------------


@pytest.mark.parametrize("target, body", [("/static/css/site.css", CSS),   # kept in memory
                                          ("/static/js/app.js", JS)])      # from the file
def test_get_sends_the_file_with_validators(site: Running, tree: Path, app: AppCalls,
                                            target: str, body: bytes) -> None:
    result = get(site, target)
    assert result.ended and result.reset is None
    assert names(result) == [":status", "content-type", "accept-ranges", "etag",
                             "last-modified", "vary", "content-length", "date", "server"]
    assert result.status == 200
    kind = "text/css" if target.endswith(".css") else "text/javascript"
    assert result.header("content-type") == f"{kind}; charset=utf-8"
    assert result.header("content-length") == str(len(body))
    assert result.header("accept-ranges") == "bytes"
    assert result.header("vary") == "Accept-Encoding"
    path = tree / target.removeprefix("/static/")
    assert result.header("last-modified") == http_date(path)
    assert re.fullmatch(rf'"[0-9a-f]+-{len(body):x}"', result.header("etag") or ""), result
    assert bytes(result.data) == body
    assert app.paths == [], "the application is never called"
    # The same validators as over HTTP/1.1.
    with site.connect() as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert f"\r\nETag: {result.header('etag')}\r\n".encode() in reply


def test_head_has_the_get_headers_and_no_body(site: Running) -> None:
    for target in ("/static/css/site.css", "/static/js/app.js"):
        full = get(site, target)
        head = get(site, target, method="HEAD")
        assert head.status == 200 and head.ended and bytes(head.data) == b""
        drop = {"date"}
        assert ([h for h in head.headers if h[0] not in drop]
                == [h for h in full.headers if h[0] not in drop])


def test_if_none_match_and_if_modified_since(site: Running, tree: Path) -> None:
    first = get(site, "/static/css/site.css")
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag and modified
    earlier = email.utils.formatdate(int((tree / "css" / "site.css").stat().st_mtime) - 10,
                                     usegmt=True)
    for headers, status in [
        ([("if-none-match", etag)], 304),
        ([("if-none-match", f'"nope", W/{etag}')], 304),
        ([("if-modified-since", modified)], 304),
        ([("if-modified-since", earlier)], 200),
        ([("if-none-match", '"nope"'), ("if-modified-since", modified)], 200),
    ]:
        result = get(site, "/static/css/site.css", headers=headers)
        assert result.status == status, (headers, result)
        if status == 304:
            assert names(result) == [":status", "etag", "last-modified", "vary", "date",
                                     "server"], result
            assert result.header("etag") == etag and bytes(result.data) == b""
            assert result.ended
        else:
            assert bytes(result.data) == CSS


@pytest.mark.parametrize("target, value, start, end, body", [
    ("/static/css/site.css", "bytes=0-0", 0, 0, CSS),
    ("/static/css/site.css", "bytes=-10", 4086, 4095, CSS),
    ("/static/js/app.js", "bytes=100-20099", 100, 20099, JS),
])
def test_single_range(site: Running, target: str, value: str, start: int, end: int,
                      body: bytes) -> None:
    result = get(site, target, headers=[("range", value)])
    assert result.status == 206, result
    assert result.header("content-range") == f"bytes {start}-{end}/{len(body)}"
    assert result.header("content-length") == str(end - start + 1)
    assert bytes(result.data) == body[start:end + 1]


def test_unsatisfiable_range(site: Running) -> None:
    result = get(site, "/static/css/site.css", headers=[("range", "bytes=5000-6000")])
    assert result.status == 416 and result.ended
    assert result.header("content-range") == "bytes */4096"
    assert result.header("content-length") == "0" and bytes(result.data) == b""


@pytest.mark.parametrize("accept, coding, body", [
    ("gzip", "gzip", GZ),
    ("gzip, deflate, br", "br", BR),
    ("identity", None, CSS),
    (None, None, CSS),
])
def test_precompressed_siblings(site: Running, accept: str | None, coding: str | None,
                                body: bytes) -> None:
    headers = [("accept-encoding", accept)] if accept is not None else []
    result = get(site, "/static/pre/style.css", headers=headers)
    assert result.status == 200
    assert result.header("content-encoding") == coding
    assert result.header("content-type") == "text/css; charset=utf-8"
    assert result.header("vary") == "Accept-Encoding"
    assert result.header("content-length") == str(len(body)) and bytes(result.data) == body


# -- what is not served -----------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/static/../secret",
    "/static/css/../../secret",
    "/static/%2e%2e/secret",
    "/static/.%2e/secret",
    "/static/..%2fsecret",
    "/static/escape",
    "/static/escape-abs",
    "/static/nothing.css",
    "/static/css",
    "/static/css/",
    "/static/",
    "/static/fifo",
])
def test_traversal_missing_files_and_directories_are_404(site: Running, app: AppCalls,
                                                         target: str) -> None:
    result = get(site, target)
    assert result.status == 404, result
    assert result.header("content-type") == "text/plain"
    assert result.header("content-length") == "9" and bytes(result.data) == b"Not Found"
    assert SECRET not in bytes(result.data)
    assert app.paths == []


@pytest.mark.parametrize("method", ["POST", "DELETE", "OPTIONS"])
def test_other_methods_get_405(site: Running, app: AppCalls, method: str) -> None:
    result = get(site, "/static/css/site.css", method=method)
    assert result.status == 405
    assert result.header("allow") == "GET, HEAD"
    assert bytes(result.data) == b"Method Not Allowed"
    # A request with a body is answered the same; the body is not read.
    with client(site) as c:
        sid = c.request("/static/css/site.css", method=method, body=b"x=1")
        assert c.wait(sid)[0].status == 405
    assert app.paths == []


def test_paths_outside_the_prefix_reach_the_application(site: Running, app: AppCalls) -> None:
    result = get(site, "/staticfiles/x.css")
    assert bytes(result.data) == b"app:/staticfiles/x.css"
    assert app.paths == ["/staticfiles/x.css"]


# -- large files ------------------------------------------------------------------------------


def test_a_large_file_through_small_windows(serve: Callable[..., Running], tree: Path,
                                            app: AppCalls) -> None:
    """5 MiB through the client's default 64 KiB windows, and a range of it: every byte."""
    big = os.urandom(5 << 20)
    (tree / "big.bin").write_bytes(big)
    running = serve(validator(app), static={"/static/": str(tree)})
    with client(running) as c:
        whole, part = c.wait([c.request("/static/big.bin"),
                              c.request("/static/big.bin", headers=[("range", "bytes=7-3000006")])],
                             timeout=60)
    assert whole.status == 200 and whole.ended and whole.reset is None
    assert whole.header("content-length") == str(len(big))
    assert hashlib.sha256(whole.data).digest() == hashlib.sha256(big).digest()
    assert part.status == 206 and bytes(part.data) == big[7:3000007]


def test_a_slow_reader_of_a_large_file_holds_no_thread(serve: Callable[..., Running],
                                                       tree: Path, app: AppCalls) -> None:
    """One worker thread. A client reads nothing of a 20 MiB file after its first window:
    the worker is free at once, for another connection and for a sibling stream on the same
    connection. Then the slow stream is read to its end, every byte in order."""
    big = os.urandom(20 << 20)
    (tree / "big.bin").write_bytes(big)
    # A worker held by the slow reader would only be freed by the timeout, far away.
    running = serve(validator(app), numthreads=1, max=1, timeout=60,
                    static={"/static/": str(tree)})
    with client(running, auto_ack=False) as slow:
        # The connection's window is wide open; the stream's stays at 64 KiB until acked.
        slow.conn.increment_flow_control_window(64 << 20)
        slow.flush()
        sid = slow.request("/static/big.bin")
        while len(slow.streams[sid].data) < 65535:
            assert slow.receive_once(timeout=5)
        assert not slow.streams[sid].ended
        started = time.monotonic()
        with client(running) as other:
            assert bytes(other.get("/hello", timeout=5).data) == b"app:/hello"
            assert bytes(other.get("/static/css/site.css", timeout=5).data) == CSS
            assert bytes(other.get("/static/js/app.js", timeout=5).data) == JS
        # JS fits the sibling's own window: it needs no acknowledgement.
        sibling = slow.wait(slow.request("/static/js/app.js"), timeout=5)[0]
        assert sibling.ended and bytes(sibling.data) == JS
        assert time.monotonic() - started < 5
        assert not slow.streams[sid].ended
        # Now the slow stream reads on.
        slow.auto_ack = True
        slow.conn.acknowledge_received_data(len(slow.streams[sid].data), sid)
        slow.flush()
        result = slow.wait(sid, timeout=60)[0]
    assert result.ended and result.reset is None
    assert hashlib.sha256(result.data).digest() == hashlib.sha256(big).digest()
    assert app.paths == ["/hello"]


def test_a_reset_large_file_leaves_the_connection_usable(serve: Callable[..., Running],
                                                         tree: Path, app: AppCalls) -> None:
    big = os.urandom(8 << 20)
    (tree / "big.bin").write_bytes(big)
    running = serve(validator(app), numthreads=1, static={"/static/": str(tree)})
    with client(running, auto_ack=False) as c:
        c.conn.increment_flow_control_window(64 << 20)
        c.flush()
        sid = c.request("/static/big.bin")
        while not c.streams[sid].data:
            assert c.receive_once(timeout=5)
        c.reset(sid)
        assert bytes(c.get("/static/js/app.js").data) == JS
    deadline = time.monotonic() + 5
    while running.server._engine_stats()["http2_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server._engine_stats()["http2_streams"] == 0


# -- the access log and the counters ----------------------------------------------------------


def test_access_log_and_counters(serve: Callable[..., Running], tree: Path, app: AppCalls,
                                 tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    running = serve(validator(app), static={"/static/": str(tree)}, access_log=str(log),
                    access_log_format='%h "%r" %s %b')
    with client(running) as c:
        for path, method in [("/static/css/site.css", "GET"), ("/static/none", "GET"),
                             ("/static/js/app.js", "HEAD"), ("/static/js/app.js", "GET")]:
            assert c.get(path, method=method).ended
    stats = running.server._engine.stats()
    assert stats["static_responses"] == 4
    assert stats["requests"] == 4
    running.stop()
    assert log.read_text().splitlines() == [
        '127.0.0.1 "GET /static/css/site.css HTTP/2" 200 4096',
        '127.0.0.1 "GET /static/none HTTP/2" 404 9',
        '127.0.0.1 "HEAD /static/js/app.js HTTP/2" 200 -',
        f'127.0.0.1 "GET /static/js/app.js HTTP/2" 200 {len(JS)}',
    ]


# -- TLS and curl -----------------------------------------------------------------------------


def test_tls_alpn_h2(serve: Callable[..., Running], tree: Path, app: AppCalls,
                     pki: dict[str, str]) -> None:
    from stogie.ssl import BuiltinSSLAdapter

    big = os.urandom(3 << 20)
    (tree / "big.bin").write_bytes(big)
    running = serve(validator(app), ssl_adapter=BuiltinSSLAdapter(pki["cert"], pki["key"]),
                    static={"/static/": str(tree)})
    with client(running, tls=tls_context(pki["ca"], ["h2", "http/1.1"])) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
        css, js, whole = c.wait([c.request(p, scheme="https") for p in
                                 ("/static/css/site.css", "/static/js/app.js",
                                  "/static/big.bin")], timeout=60)
    assert bytes(css.data) == CSS and bytes(js.data) == JS
    assert whole.ended and hashlib.sha256(whole.data).digest() == hashlib.sha256(big).digest()
    assert app.paths == []


def test_curl_prior_knowledge(site: Running, tree: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
         "-w", "%{http_version} %{size_download}", "-H", "Accept-Encoding: gzip",
         site.url("/static/pre/style.css")],
        capture_output=True, timeout=30, check=True).stdout.decode()
    assert out.startswith("HTTP/2 200 \r\n"), out
    assert "\r\ncontent-encoding: gzip\r\n" in out
    assert out.endswith(f"2 {len(GZ)}")



def test_a_1_gib_file_is_not_read_into_memory(serve: Callable[..., Running], tree: Path,
                                              app: AppCalls) -> None:
    """A 1 GiB sparse file whose reader takes one window: the server (in this process) reads
    no more of it than the stream may buffer."""
    size = 1 << 30
    with open(tree / "huge.bin", "wb") as fh:
        fh.truncate(size)
    running = serve(validator(app), static={"/static/": str(tree)})

    def rss() -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    before = rss()
    with client(running, auto_ack=False) as c:
        sid = c.request("/static/huge.bin")
        while len(c.streams[sid].data) < 65535:
            assert c.receive_once(timeout=5)
        result = c.streams[sid]
        assert result.header("content-length") == str(size)
        time.sleep(0.3)
        assert rss() - before < 64 << 20
        c.reset(sid)
