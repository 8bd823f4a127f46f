"""HTTP/2 (docs/http2.md): cleartext prior knowledge and TLS with ALPN `h2`, streams as WSGI
calls on the worker threads, the HTTP/1.1 request rules applied to HTTP/2 heads, flow control
both ways, resets, and the attacks the connection limits bound. Real sockets throughout: the
`h2` package (python-hyper) for frame-level cases, curl for end-to-end ones."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from wsgiref.validate import validator

import h2.errors
import hyperframe.frame
import pytest
from _h2 import (
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    H2Client,
    tls_context,
)

from conftest import exchange

trustme = pytest.importorskip("trustme")

ENVIRON_KEYS = ("SERVER_PROTOCOL", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
                "HTTP_HOST", "HTTP_COOKIE", "HTTP_ACCEPT", "CONTENT_LENGTH", "CONTENT_TYPE",
                "wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "REMOTE_ADDR", "SCRIPT_NAME")


def read_all(stream) -> bytes:
    chunks = []
    while chunk := stream.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def environ_app(environ, start_response):
    body = read_all(environ["wsgi.input"])
    data = {k: environ.get(k) for k in ENVIRON_KEYS}
    data["http_keys"] = sorted(k for k in environ if k.startswith("HTTP_"))
    data["body_sha256"] = hashlib.sha256(body).hexdigest()
    data["body_len"] = len(body)
    out = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


def client(running, **kw) -> H2Client:
    return H2Client(running.host, running.port, **kw)


def env_of(result):
    assert result.status == 200, (result.headers, bytes(result.data[:200]))
    return json.loads(bytes(result.data))


# -- protocol selection ------------------------------------------------------------------------


def test_prior_knowledge_environ(serve):
    running = serve(validator(environ_app))
    with client(running) as c:
        result = c.get("/a%20b/c?x=1&y=2", authority="example.com:8080",
                       headers=[("accept", "text/html"), ("cookie", "a=1"), ("cookie", "b=2")])
        env = env_of(result)
        assert env["SERVER_PROTOCOL"] == "HTTP/2"
        assert env["REQUEST_METHOD"] == "GET"
        assert env["PATH_INFO"] == "/a b/c"
        assert env["QUERY_STRING"] == "x=1&y=2"
        assert env["REQUEST_URI"] == "/a%20b/c?x=1&y=2"
        # RFC 9113 §8.3.1: :authority stands for Host; §8.2.3: cookie crumbs join with "; ".
        assert env["HTTP_HOST"] == "example.com:8080"
        assert env["HTTP_COOKIE"] == "a=1; b=2"
        assert env["HTTP_ACCEPT"] == "text/html"
        assert env["wsgi.url_scheme"] == "http"
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        # Pseudo-headers never reach the environ.
        assert env["http_keys"] == ["HTTP_ACCEPT", "HTTP_COOKIE", "HTTP_HOST"]
        assert result.header("content-type") == "application/json"
        assert result.header("server") == running.server.server_name
        assert email.utils.parsedate_to_datetime(result.header("date")).tzname() == "UTC"
        # A second stream on the same connection.
        assert env_of(c.get("/second"))["PATH_INFO"] == "/second"
    assert running.server._engine_stats()["requests"] >= 2


def test_application_date_and_server_are_sent_once_and_server_name_is_the_default(serve):
    def app(environ, start_response):
        own = [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Server", "mine")]
        start_response("200 OK", own if environ["PATH_INFO"] == "/own" else [])
        return [b""]

    running = serve(app)
    with client(running) as c:
        result = c.get("/own")
        assert [v for k, v in result.headers if k == "date"] == ["Sun, 06 Nov 1994 08:49:37 GMT"]
        assert [v for k, v in result.headers if k == "server"] == ["mine"]
    # (A server_name no header can carry is refused before it gets here: test_compat_api.)
    running.server.server_name = "edge\tcafé"
    with client(running) as c:
        result = c.get("/")
        assert result.status == 200
        assert result.header("server") == "edge\tcafé"
        assert result.header("date") is not None


def test_scheme_comes_from_the_transport_not_from_the_scheme_pseudo_header(serve):
    running = serve(environ_app)
    with client(running) as c:
        env = env_of(c.get("/", scheme="https"))
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTPS"] is None


def test_curl_prior_knowledge_get_and_post(serve, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    running = serve(environ_app)
    body = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "body").write_bytes(body)
    out = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
         "--data-binary", f"@{tmp_path / 'body'}", running.url("/upload")],
        capture_output=True, timeout=30, check=True).stdout
    data, version = out.rsplit(b"\n", 1)
    assert version == b"2"
    env = json.loads(data)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_LENGTH"] == str(len(body))
    assert env["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_http2_off_refuses_the_preface_as_http1_would(serve):
    running = serve(environ_app, http2=False)
    reply = exchange(running, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), reply[:80]


def test_preface_then_garbage_is_a_connection_error_never_a_hang(serve):
    running = serve(environ_app)
    reply = exchange(running, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"GET / HTTP/1.1\r\n\r\n",
                     timeout=5)
    # The server's SETTINGS, then GOAWAY (type 7) with an error code (FRAME_SIZE_ERROR: the
    # HTTP/1 bytes read as a frame header announce a frame beyond 16 KiB), then close.
    assert reply[3] == 0x04, reply[:16]
    goaway = reply.find(b"\x07\x00\x00\x00\x00\x00")
    assert goaway > 0, reply
    code = int.from_bytes(reply[goaway + 10:goaway + 14], "big")
    assert code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR, reply


def test_a_silent_http2_connection_is_closed_after_timeout(serve):
    running = serve(environ_app, timeout=1)
    started = time.monotonic()
    with running.connect(timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")   # and no SETTINGS
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply[3] == 0x04
    assert time.monotonic() - started < 4


def test_upgrade_h2c_is_not_taken(serve):
    """The HTTP/1.1 upgrade to h2c (dropped by RFC 9113) is not offered: served as HTTP/1.1."""
    running = serve(environ_app)
    reply = exchange(running, b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings"
                              b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
                              b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:80]
    assert b'"SERVER_PROTOCOL": "HTTP/1.1"' in reply


def test_http1_still_served_beside_http2(serve):
    running = serve(environ_app)
    reply = exchange(running, b"GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"SERVER_PROTOCOL": "HTTP/1.1"' in reply


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki-h2")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": str(base / "ca.pem"), "cert": str(base / "cert.pem"),
             "key": str(base / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


def tls_server(serve, pki, app=environ_app, **options):
    from stogie.ssl import BuiltinSSLAdapter

    return serve(app, ssl_adapter=BuiltinSSLAdapter(pki["cert"], pki["key"]), **options)


def test_tls_alpn_h2(serve, pki):
    running = tls_server(serve, pki)
    context = tls_context(pki["ca"], ["h2", "http/1.1"])
    with client(running, tls=context) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
        body = b"x" * 300_000
        result = c.wait(c.request("/tls", method="POST", body=body, scheme="https"))[0]
        env = env_of(result)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
    assert env["body_len"] == len(body)


def test_tls_curl_http2(serve, pki):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    running = tls_server(serve, pki)
    out = subprocess.run(
        [curl, "-sS", "--http2", "--cacert", pki["ca"], "-w", "\n%{http_version}",
         f"https://localhost:{running.port}/curl"],
        capture_output=True, timeout=30, check=True).stdout
    data, version = out.rsplit(b"\n", 1)
    assert version == b"2"
    assert json.loads(data)["PATH_INFO"] == "/curl"


def test_tls_http2_off_does_not_select_h2(serve, pki):
    import ssl

    running = tls_server(serve, pki, http2=False)
    context = tls_context(pki["ca"], ["h2"])
    with socket.create_connection((running.host, running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() is None
    context = tls_context(pki["ca"], ["h2", "http/1.1"])
    with socket.create_connection((running.host, running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    assert ssl  # the module is used for the contexts above


# -- the HTTP/1.1 rules apply to HTTP/2 heads -----------------------------------------------


def test_settings_advertised(serve):
    running = serve(environ_app)
    with client(running) as c:
        c.get("/")
        assert c.remote_settings[MAX_CONCURRENT_STREAMS] == 100
        assert c.remote_settings[INITIAL_WINDOW_SIZE] == 256 * 1024
        assert c.remote_settings[MAX_HEADER_LIST_SIZE] == 64 * 1024


@pytest.mark.parametrize("headers, status", [
    ([("host", "bad host")], 400),          # the Host grammar of HTTP/1.1
    ([("host", "a.example"), ("host", "b.example")], 400),
    # Malformed or conflicting lengths: refused by h2 itself with a stream error
    # (RFC 9113 §8.1.1), before the HTTP/1.1 parser would answer 400.
    ([("content-length", "12x")], "reset"),
    ([("content-length", "12"), ("content-length", "13")], "reset"),
])
def test_head_rules_of_http1(serve, headers, status):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    running = serve(app)
    with client(running, validate=False) as c:
        result = c.get("/", headers=headers)
    if status == "reset":
        assert result.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
    else:
        assert result.status == status
    assert calls == []


def test_underscore_fields_are_dropped_as_in_http1(serve):
    running = serve(environ_app)
    with client(running) as c:
        env = env_of(c.get("/", headers=[("x_forwarded_for", "1.2.3.4"), ("x-real", "1")]))
    assert env["http_keys"] == ["HTTP_HOST", "HTTP_X_REAL"]


def test_body_over_max_request_body_size(serve):
    running = serve(environ_app, max_request_body_size=1000)
    with client(running) as c:
        declared = c.wait(c.request("/", method="POST", body=b"x" * 2000,
                                    headers=[("content-length", "2000")]))[0]
        assert declared.status == 413
        undeclared = c.wait(c.request("/", method="POST", body=b"x" * 2000))[0]
        assert undeclared.status == 413


def test_connection_specific_field_is_a_stream_error(serve):
    running = serve(environ_app)
    with client(running, validate=False) as c:
        result = c.get("/", headers=[("connection", "keep-alive")])
        assert result.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        # The connection goes on.
        assert env_of(c.get("/after"))["PATH_INFO"] == "/after"


def test_missing_pseudo_header_is_a_stream_error(serve):
    running = serve(environ_app)
    with client(running, validate=False) as c:
        sid = c.send_raw_headers([(":method", "GET"), (":scheme", "http"),
                                  (":authority", "x")])
        assert c.wait(sid)[0].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR


# -- responses --------------------------------------------------------------------------------


def test_head_204_and_304_have_no_body(serve):
    def app(environ, start_response):
        status = {"/204": "204 No Content", "/304": "304 Not Modified"}.get(
            environ["PATH_INFO"], "200 OK")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"" if status != "200 OK" else b"body"]

    running = serve(app)
    with client(running) as c:
        head = c.get("/", method="HEAD")
        assert (head.status, bytes(head.data), head.ended) == (200, b"", True)
        for path, code in (("/204", 204), ("/304", 304)):
            result = c.get(path)
            assert (result.status, bytes(result.data)) == (code, b"")
        assert bytes(c.get("/").data) == b"body"


def test_write_callable_and_generator(serve):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")

        def rest():
            yield b"two,"
            yield b""
            yield b"three"
        return rest()

    running = serve(validator(app))
    with client(running) as c:
        assert bytes(c.get("/").data) == b"one,two,three"


def test_large_response_through_a_small_window(serve):
    """A 5 MiB streamed response read through the client's default 64 KiB windows."""
    chunk = bytes(range(256)) * 256  # 64 KiB

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (chunk for _ in range(80))

    running = serve(app)
    with client(running) as c:
        result = c.get("/", timeout=30)
    assert result.ended and result.reset is None
    assert hashlib.sha256(result.data).digest() == hashlib.sha256(chunk * 80).digest()


def test_upload_3_mib_through_default_windows(serve):
    running = serve(environ_app)
    body = bytes(range(256)) * (3 * 4096)
    with client(running) as c:
        sid = c.request("/up", method="POST", body=body)
        env = env_of(c.wait(sid, timeout=30)[0])
    assert env["body_len"] == len(body)
    assert env["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_slow_uploads_are_collected_without_a_thread(serve):
    """Bodies arrive before the application runs, as for HTTP/1.1: with one worker thread,
    five peers trickling uploads do not delay a GET, and each application call then reads
    its whole body."""
    running = serve(environ_app, numthreads=1, max=1, timeout=10)
    uploaders = [client(running) for _ in range(5)]
    try:
        sids = []
        for c in uploaders:
            sid = c.request("/up", method="POST", body=b"first part,", end=False)
            sids.append(sid)
        deadline = time.monotonic() + 5
        while (running.server._engine_stats()["bodies_collecting"] < 5
               and time.monotonic() < deadline):
            time.sleep(0.02)
        assert running.server._engine_stats()["bodies_collecting"] == 5
        started = time.monotonic()
        with client(running) as other:
            assert other.get("/plain", timeout=5).status == 200
        assert time.monotonic() - started < 1
        for c, sid in zip(uploaders, sids):
            c.send_body(sid, b"second part", end=True)
            env = env_of(c.wait(sid)[0])
            assert env["body_len"] == len(b"first part,second part")
            assert env["body_sha256"] == hashlib.sha256(b"first part,second part").hexdigest()
    finally:
        for c in uploaders:
            c.close()
    assert running.server._engine_stats()["bodies_collecting"] == 0


def test_a_stalled_upload_gets_408(serve):
    calls = []

    def app(environ, start_response):
        calls.append(1)
        start_response("200 OK", [])
        return [b""]

    running = serve(app, timeout=1, request_body_min_rate=500)
    with client(running) as c:
        sid = c.request("/up", method="POST", body=b"x" * 10, end=False)
        result = c.wait(sid, timeout=8)[0]
    assert result.status == 408
    assert calls == []


def test_expect_100_continue_is_informational(serve):
    running = serve(environ_app)
    with client(running) as c:
        sid = c.request("/", method="POST", headers=[("expect", "100-continue")], end=False)
        # Nothing is sent before the application reads; then 100, then the body.
        c.send_body(sid, b"hello", end=True)
        result = c.wait(sid)[0]
    assert [dict(h)[":status"] for h in result.informational] == ["100"]
    assert env_of(result)["body_len"] == 5


def test_app_error_before_and_after_the_head(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/early":
            raise RuntimeError("boom early")

        def body():
            yield b"partial"
            raise RuntimeError("boom late")
        start_response("200 OK", [])
        return body()

    running = serve(app)
    with client(running) as c:
        early = c.get("/early")
        assert early.status == 500
        assert bytes(early.data).startswith(b"The server encountered an unexpected condition")
        # Too late for a status: the stream is reset (what was queued may never go out).
        assert c.get("/late").reset == h2.errors.ErrorCodes.INTERNAL_ERROR
        # The connection goes on.
        assert c.get("/early").status == 500


def test_short_body_against_content_length_resets_the_stream(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]

    running = serve(app)
    with client(running) as c:
        result = c.get("/")
    assert result.reset == h2.errors.ErrorCodes.INTERNAL_ERROR


# -- concurrency, resets and slow peers ----------------------------------------------------


def test_one_hundred_concurrent_streams(serve):
    def app(environ, start_response):
        time.sleep(0.01)
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    running = serve(app, numthreads=4)
    with client(running) as c:
        c.get("/warm")
        ids = [c.request(f"/s{i}") for i in range(100)]
        results = c.wait(ids, timeout=30)
    assert [bytes(r.data) for r in results] == [f"/s{i}".encode() for i in range(100)]


def test_client_reset_stops_the_iteration_and_calls_close(serve):
    closed = threading.Event()
    produced = []

    class Body:
        def __iter__(self):
            for i in range(1000):
                produced.append(i)
                time.sleep(0.01)
                yield b"x" * 1024

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    running = serve(app)
    with client(running) as c:
        sid = c.request("/")
        while not c.streams[sid].data:
            c.receive_once(timeout=5)
        c.reset(sid)
        assert closed.wait(5), "close() was not called after the client reset"
        assert len(produced) < 1000


def test_slow_reader_does_not_block_its_siblings(serve):
    """A stream whose reader never opens its window beside fast streams on the same
    connection (the client's connection window is large)."""
    big = b"y" * (4 * 1024 * 1024)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [big] if environ["PATH_INFO"] == "/big" else [b"small"]

    running = serve(app, numthreads=2, timeout=5)
    with client(running, auto_ack=False) as c:
        c.conn.increment_flow_control_window(64 * 1024 * 1024)
        c.flush()
        slow = c.request("/big")
        fast = [c.request(f"/s{i}") for i in range(5)]
        # Fast streams' data is acknowledged by hand; the slow one's never.
        deadline = time.monotonic() + 5
        while not all(c.streams[i].ended for i in fast) and time.monotonic() < deadline:
            c.receive_once(timeout=5)
            for i in fast:
                pending = len(c.streams[i].data)
                if pending:
                    c.conn.acknowledge_received_data(0, i)
        assert all(bytes(c.streams[i].data) == b"small" for i in fast)
        assert not c.streams[slow].ended


def test_a_list_response_frees_the_worker_for_a_slow_reader(serve):
    """A list result is queued whole: with one thread, a peer that reads nothing of 4 MiB
    does not hold it; the stalled connection is closed after `timeout` without progress."""
    big = b"z" * (4 * 1024 * 1024)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [big] if environ["PATH_INFO"] == "/big" else [b"small"]

    running = serve(app, numthreads=1, max=1, timeout=2)
    with client(running, auto_ack=False) as slow:
        sid = slow.request("/big")
        slow.receive_once(timeout=5)
        started = time.monotonic()
        with client(running) as other:
            assert bytes(other.get("/small", timeout=5).data) == b"small"
        assert time.monotonic() - started < 1.5
        slow.wait_closed(timeout=10)
        assert not slow.streams[sid].ended
    deadline = time.monotonic() + 5
    while running.server._engine_stats()["http2_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server._engine_stats()["http2_streams"] == 0


def test_rapid_reset_is_refused(serve):
    """Streams opened and reset at once (CVE-2023-44487): the connection is closed with
    ENHANCE_YOUR_CALM, and reset streams do not become application calls."""
    calls = []

    def app(environ, start_response):
        calls.append(1)
        time.sleep(0.05)
        start_response("200 OK", [])
        return [b"ok"]

    running = serve(app, numthreads=2)
    with client(running) as c:
        for _ in range(500):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                      (":authority", "x"), (":path", "/")])
            c.conn.reset_stream(sid)
        with contextlib.suppress(OSError):
            c.flush()
        c.wait_closed(timeout=10)
        # The GOAWAY may be lost in the reset the kernel sends for the frames still unread.
        assert c.goaway in (h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, None)
    assert len(calls) < 100
    # The server goes on.
    with client(running) as c:
        assert c.get("/").status == 200


def test_continuation_flood_is_bounded(serve):
    running = serve(environ_app)
    with client(running) as c:
        headers = hyperframe.frame.HeadersFrame(1)
        headers.data = c.conn.encoder.encode([(":method", "GET"), (":scheme", "http"),
                                              (":authority", "x"), (":path", "/")])
        frames = [headers.serialize()]
        for _ in range(2000):
            cont = hyperframe.frame.ContinuationFrame(1)
            cont.data = b"\x40\x01a\x01b" * 1000   # literal fields, never ending the block
            frames.append(cont.serialize())
        with contextlib.suppress(OSError):
            c.sock.sendall(b"".join(frames))
        c.wait_closed(timeout=10)
    with client(running) as c:
        assert c.get("/").status == 200


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_ping_and_settings_floods_do_not_pile_up(serve, frame):
    """A peer that sends PING (or SETTINGS) frames without reading the answers: the server
    holds one unsent answer at a time and stops reading once the socket takes no more
    answers, so its memory does not grow with the flood (what the kernel buffers aside);
    other clients are served meanwhile."""
    running = serve(environ_app)
    if frame == "ping":
        one = hyperframe.frame.PingFrame(0)
        one.opaque_data = b"12345678"
    else:
        one = hyperframe.frame.SettingsFrame(0)
        one.settings = {hyperframe.frame.SettingsFrame.HEADER_TABLE_SIZE: 4096}
    burst = one.serialize() * 10_000
    before = _rss_kib()
    with client(running) as flooder:
        flooder.sock.settimeout(0.5)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += flooder.sock.send(burst)
            except (TimeoutError, OSError):
                break
        assert sent > 0
        with client(running) as other:
            assert other.get("/").status == 200
    assert _rss_kib() - before < 64 * 1024


def test_idle_connection_gets_goaway(serve):
    running = serve(environ_app, timeout=1)
    with client(running) as c:
        assert c.get("/").status == 200
        c.wait_closed(timeout=6)
        assert c.goaway == h2.errors.ErrorCodes.NO_ERROR


def test_stop_sends_goaway_and_lets_streams_finish(serve):
    """SIGTERM's path: GOAWAY to every HTTP/2 connection; a stream in progress finishes.
    (curl runs the stream: python-hyper's h2 treats any GOAWAY as the end of the
    connection.)"""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    started = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            started.set()
            time.sleep(0.5)
        start_response("200 OK", [])
        return [b"finished"]

    running = serve(app, shutdown_timeout=5)
    with client(running) as idle:
        assert idle.get("/").status == 200
        slow = subprocess.Popen([curl, "-sS", "--http2-prior-knowledge", running.url("/slow")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert started.wait(5)
        stopper = threading.Thread(target=running.server.stop)
        stopper.start()
        out, err = slow.communicate(timeout=10)
        assert (out, err) == (b"finished", b"")
        idle.wait_closed(timeout=10)
        assert idle.goaway == h2.errors.ErrorCodes.NO_ERROR
        stopper.join(10)
    assert not stopper.is_alive()


def test_access_log_line(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(environ_app, access_log=str(path))
    with client(running) as c:
        body = c.get("/logged?x=1", headers=[("user-agent", "h2-tester/1.0"),
                                              ("referer", "https://ref.example/")]).data
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not (path.exists() and path.read_text()):
        time.sleep(0.05)
    (line,) = path.read_text().splitlines()
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith(f'"GET /logged?x=1 HTTP/2" 200 {len(body)} '
                         '"https://ref.example/" "h2-tester/1.0"'), line


def test_stats_count_http2_connections(serve):
    running = serve(environ_app)
    with client(running) as c:
        c.get("/")
        stats = running.server._engine_stats()
        assert stats["http2_connections"] == 1
        assert stats["open_connections"] >= 1
    deadline = time.monotonic() + 5
    while running.server._engine_stats()["http2_connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server._engine_stats()["http2_connections"] == 0
