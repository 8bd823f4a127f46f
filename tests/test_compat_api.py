"""cheroot API surface beyond the stock gateway: custom gateways, the native HTTPServer,
PathInfoDispatcher, Gateway_u0, live attributes, interrupts, peer credentials, pool growth."""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from wsgiref.validate import validator

import pytest
import requests

from stogie import server as stogie_server
from stogie import wsgi

from conftest import exchange, hello_app, start_server


def text_app(body: bytes):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def body_of(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    return body


def get(running, path: str = "/") -> bytes:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return exchange(running, raw)


# --- gateways ------------------------------------------------------------------------------

def test_custom_gateway_get_environ_and_respond_are_called(serve):
    seen = []

    class Gateway(wsgi.Gateway_10):
        def get_environ(self):
            env = super().get_environ()
            env["X_ADDED"] = "by-gateway"
            return env

        def respond(self):
            seen.append(self.req.method)
            super().respond()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["X_ADDED"].encode(), b";", environ["PATH_INFO"].encode()]

    running = serve(validator(app))
    running.server.gateway = Gateway
    resp = requests.get(running.url("/a%20b"), timeout=5)
    assert (resp.status_code, resp.text) == (200, "by-gateway;/a b")
    assert seen == [b"GET"]


def test_native_gateway_sees_cheroot_request_attributes():
    captured = {}

    class Native(stogie_server.Gateway):
        def respond(self):
            req = self.req
            captured.update(method=req.method, path=req.path, qs=req.qs, uri=req.uri,
                            proto=req.request_protocol, host=req.inheaders.get(b"Host"),
                            custom=req.inheaders.get(b"X-Custom"),
                            remote=req.conn.remote_addr, body=req.rfile.read())
            req.status = b"201 Created"
            req.outheaders.append((b"Content-Type", b"text/plain"))
            req.write(b"native")

    srv = stogie_server.HTTPServer(("127.0.0.1", 0), Native)
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    try:
        resp = requests.post(f"http://127.0.0.1:{srv.bind_addr[1]}/p/q?x=1", data=b"abc",
                             headers={"X-Custom": "yes"}, timeout=5)
    finally:
        srv.stop()
        thread.join(5)
    assert (resp.status_code, resp.text) == (201, "native")
    assert captured == {"method": b"POST", "path": b"/p/q", "qs": b"x=1", "uri": b"/p/q?x=1",
                        "proto": b"HTTP/1.1", "host": f"127.0.0.1:{srv.bind_addr[1]}".encode(),
                        "custom": b"yes", "remote": "127.0.0.1", "body": b"abc"}


def test_native_gateway_base_class_is_a_500():
    srv = stogie_server.HTTPServer(("127.0.0.1", 0), stogie_server.Gateway)
    srv.error_log = lambda *a, **k: None
    srv.prepare()
    threading.Thread(target=srv.serve, daemon=True).start()
    try:
        resp = requests.get(f"http://127.0.0.1:{srv.bind_addr[1]}/", timeout=5)
    finally:
        srv.stop()
    assert resp.status_code == 500


def test_unicode_gateway_via_wsgi_version(serve):
    class UServer(wsgi.Server):
        wsgi_version = ("u", 0)

    seen = {}

    def app(environ, start_response):
        seen.update(path=environ["PATH_INFO"], enc=environ["wsgi.url_encoding"],
                    version=environ["wsgi.version"])
        start_response("200 OK", [("Content-Length", "0")])
        return []

    srv = UServer(("127.0.0.1", 0), app)
    assert srv.gateway is wsgi.Gateway_u0
    srv.prepare()
    threading.Thread(target=srv.serve, daemon=True).start()
    try:
        with socket.create_connection(srv.bind_addr[:2], timeout=5) as sock:
            sock.sendall(b"GET /%E4%BD%A0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.recv(4096)
        with socket.create_connection(srv.bind_addr[:2], timeout=5) as sock:
            sock.sendall(b"GET /%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.recv(4096)
            assert seen == {"path": "/\xff", "enc": "ISO-8859-1", "version": ("u", 0)}
    finally:
        srv.stop()


def test_unicode_gateway_decodes_utf8(serve):
    seen = {}

    def app(environ, start_response):
        seen.update(path=environ["PATH_INFO"], enc=environ["wsgi.url_encoding"])
        start_response("200 OK", [("Content-Length", "0")])
        return []

    running = serve(app)
    running.server.gateway = wsgi.Gateway_u0
    get(running, "/%E4%BD%A0")
    assert seen == {"path": "/你", "enc": "utf-8"}


def test_gateway_map_includes_u0():
    assert wsgi.Gateway.gateway_map() == {(1, 0): wsgi.Gateway_10, ("u", 0): wsgi.Gateway_u0}


def test_gateway_unit_errors():
    gateway = wsgi.Gateway(None)
    with pytest.raises(RuntimeError, match="WSGI write called before start_response."):
        gateway.write(b"x")


# --- PathInfoDispatcher --------------------------------------------------------------------

def test_path_info_dispatcher_longest_prefix_and_404(serve):
    def echo(name):
        def app(environ, start_response):
            body = f"{name}|{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return app

    apps = [("/a", echo("a")), ("/a/b/", echo("ab")), ("/c", echo("c"))]
    original = list(apps)
    running = serve(wsgi.PathInfoDispatcher(apps))
    assert apps == original, "the caller's list must not be mutated"
    assert body_of(get(running, "/a/b/c")) == b"ab|/a/b|/c"
    assert body_of(get(running, "/a/b")) == b"ab|/a/b|"
    assert body_of(get(running, "/a/bx")) == b"a|/a|/bx"
    assert body_of(get(running, "/c")) == b"c|/c|"
    assert get(running, "/zzz").startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_path_info_dispatcher_root_catches_all(serve):
    running = serve(wsgi.PathInfoDispatcher({"/": text_app(b"root"), "/x": text_app(b"x")}))
    assert body_of(get(running, "/anything")) == b"root"
    assert body_of(get(running, "/x/y")) == b"x"


# --- live attributes -----------------------------------------------------------------------

def test_wsgi_app_and_protocol_change_while_serving(serve):
    running = serve(text_app(b"first"))
    assert body_of(get(running)) == b"first"
    running.server.wsgi_app = text_app(b"second")
    assert body_of(get(running)) == b"second"
    running.server.protocol = "HTTP/1.0"
    data = get(running)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")


def test_max_request_body_size_changes_while_serving(serve):
    running = serve(text_app(b"ok"))
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
    assert exchange(running, post, timeout=2).startswith(b"HTTP/1.1 200")
    running.server.max_request_body_size = 5
    assert exchange(running, post, timeout=2).startswith(b"HTTP/1.1 413")


def test_attributes_set_before_init_survive():
    class CherryStyle(wsgi.Server):
        def __init__(self, *args, **kwargs):
            self.max_request_header_size = 1234
            self.custom = "kept"
            super().__init__(*args, **kwargs)

    srv = CherryStyle(("127.0.0.1", 0), hello_app)
    assert (srv.max_request_header_size, srv.custom) == (1234, "kept")
    assert str(srv) == f"{__name__}.CherryStyle(('127.0.0.1', 0))"


def test_server_name_and_software(serve):
    seen = {}

    def app(environ, start_response):
        seen.update(name=environ["SERVER_NAME"], software=environ["SERVER_SOFTWARE"])
        start_response("200 OK", [("Content-Length", "0")])
        return []

    running = serve(app, server_name="example.org")
    data = get(running)
    assert b"\r\nServer: example.org\r\n" in data
    assert seen == {"name": "example.org", "software": running.server.software}
    assert running.server.software == f"{running.server.version} Server"


@pytest.mark.parametrize("name", ["edge\r\nX-Injected: 1", "edge\n", "edge\x00", "edge\x7f"])
def test_server_name_with_a_control_character_is_refused(name, serve):
    srv = wsgi.Server(("127.0.0.1", 0), hello_app, server_name=name)
    with pytest.raises(ValueError, match="server_name .* control character"):
        srv.prepare()
    assert srv.socket is None and not srv.ready       # nothing left bound
    # On a running server the new name is refused and the old one stays in the header.
    running = serve(hello_app, server_name="edge")
    with pytest.raises(ValueError, match="control character"):
        running.server.server_name = name
    data = get(running)
    assert b"\r\nServer: edge\r\n" in data and b"X-Injected" not in data


def test_server_name_may_hold_a_tab_and_non_ascii(serve):
    running = serve(hello_app, server_name="edge\tcafé")
    assert "\r\nServer: edge\tcafé\r\n".encode() in get(running)


# --- lifecycle -----------------------------------------------------------------------------

@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_app_interrupt_stops_server_and_is_reraised(exc_type):
    def app(environ, start_response):
        raise exc_type()

    srv = wsgi.Server(("127.0.0.1", 0), app, shutdown_timeout=1)
    srv.error_log = lambda *a, **k: None
    srv.prepare()
    raised = []

    def run():
        try:
            srv.serve()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    with socket.create_connection(srv.bind_addr, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)
    thread.join(10)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], exc_type)
    assert not srv.ready


def test_stop_returns_within_shutdown_timeout_with_a_hung_app():
    release = threading.Event()

    def app(environ, start_response):
        release.wait(30)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    running = start_server(app, shutdown_timeout=1)
    sock = running.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    started = time.monotonic()
    running.server.stop()
    elapsed = time.monotonic() - started
    release.set()
    sock.close()
    assert elapsed < 2.5


def test_clear_stats_and_counters(serve):
    running = serve(hello_app)
    stats = running.server.stats
    for _ in range(3):
        get(running)
    assert stats["Requests"](stats) >= 3
    assert stats["Accepts"](stats) >= 3
    assert stats["Bytes Read"](stats) >= 3 * len("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert stats["Bytes Written"](stats) >= 3 * len("Hello, world!")
    assert stats["Work Time"](stats) > 0 and stats["Write Throughput"](stats) > 0
    assert set(stats) >= {"Enabled", "Bind Address", "Run time", "Threads", "Threads Idle",
                          "Socket Errors", "Bytes Read", "Bytes Written", "Worker Threads"}
    assert running.server.runtime() > 0


# --- binding and peer credentials -----------------------------------------------------------

@pytest.mark.parametrize("as_bytes", [False, True])
def test_unix_socket_and_peer_credentials(as_bytes):
    seen = {}

    def app(environ, start_response):
        seen.update({k: v for k, v in environ.items() if "REMOTE" in k or k == "SERVER_PORT"})
        start_response("200 OK", [("Content-Length", "0")])
        return []

    path = os.path.join(tempfile.mkdtemp(), "stogie.sock")
    bind = path.encode() if as_bytes else path
    running = start_server(app, bind, peercreds_enabled=True, peercreds_resolve_enabled=True)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        running.stop()
    import grp
    import pwd
    assert seen == {
        "REMOTE_ADDR": "", "REMOTE_PORT": "", "SERVER_PORT": "",
        "X_REMOTE_PID": str(os.getpid()), "X_REMOTE_UID": str(os.getuid()),
        "X_REMOTE_GID": str(os.getgid()),
        "X_REMOTE_USER": pwd.getpwuid(os.getuid()).pw_name,
        "REMOTE_USER": pwd.getpwuid(os.getuid()).pw_name,
        "X_REMOTE_GROUP": grp.getgrgid(os.getgid()).gr_name,
    }


def test_abstract_unix_socket():
    name = f"\x00stogie-test-{os.getpid()}"
    running = start_server(text_app(b"abstract"), name)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(name)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert body_of(data) == b"abstract"
    finally:
        running.stop()


# --- thread pool ---------------------------------------------------------------------------

def test_pool_grows_up_to_max_while_threads_are_busy():
    gate = threading.Barrier(4, timeout=10)

    def app(environ, start_response):
        gate.wait()  # passes only when four requests run at once
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    running = start_server(app, numthreads=1, max=4)
    try:
        results = []

        def client():
            results.append(requests.get(running.url(), timeout=15).status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == [200] * 4
    finally:
        running.stop()


def test_pool_shrinks_back_to_numthreads_when_idle():
    gate = threading.Barrier(3, timeout=10)
    calls = itertools.count(1)

    def app(environ, start_response):
        if next(calls) <= 3:
            gate.wait()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    running = start_server(app, numthreads=1, max=3, thread_idle_timeout=0.5)
    stats = running.server.stats
    statuses: list[int] = []
    try:
        threads = [threading.Thread(
            target=lambda: statuses.append(requests.get(running.url(), timeout=15).status_code))
            for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # The barrier lets the three through only together: the pool grew to three threads.
        # (Counting the threads here raced with the first one retiring on a slow machine.)
        assert statuses == [200] * 3, f"statuses {statuses}, threads {stats['Threads'](stats)}"
        deadline = time.monotonic() + 10
        while stats["Threads"](stats) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        left = stats["Threads"](stats)
        assert left == 1, f"{left} threads 10 s after the requests (idle timeout 0.5 s)"
        # The thread left must still serve, also after idling past its own poll timeout
        # (1 s): a retired thread once stayed counted as active, the last one parked, and
        # the server answered nothing more.
        for _ in range(2):
            time.sleep(1.6)
            assert requests.get(running.url(), timeout=5).status_code == 200
        assert stats["Threads"](stats) == 1
    finally:
        running.stop()


def test_pool_grows_and_shrinks_again_and_again():
    """Several threads idling out at once, cycle after cycle: the pool ends each time at
    numthreads, never below, and the threads left serve at once."""
    gate = threading.Barrier(6, timeout=10)

    def app(environ, start_response):
        if environ["QUERY_STRING"] == "together":
            gate.wait()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    running = start_server(app, numthreads=2, max=6, thread_idle_timeout=0.3)
    stats = running.server.stats
    try:
        for cycle in range(3):
            with ThreadPoolExecutor(6) as pool:
                codes = list(pool.map(
                    lambda _: requests.get(running.url("/?together"), timeout=15).status_code,
                    range(6)))
            assert codes == [200] * 6, f"cycle {cycle}: {codes}"
            deadline = time.monotonic() + 10
            while stats["Threads"](stats) > 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.2)  # past the idle timeout and a poll timeout: the two left may park
            assert stats["Threads"](stats) == 2, f"cycle {cycle}"
            started = time.monotonic()
            assert requests.get(running.url("/"), timeout=5).status_code == 200
            assert time.monotonic() - started < 1, f"cycle {cycle}: slow after the shrink"
    finally:
        running.stop()


def test_thread_pool_argument_checks():
    with pytest.raises(ValueError, match="min=0 must be > 0"):
        wsgi.Server(("127.0.0.1", 0), hello_app, numthreads=0)
    with pytest.raises(ValueError, match="max=2 must be > min=5"):
        wsgi.Server(("127.0.0.1", 0), hello_app, numthreads=5, max=2)
    with pytest.raises(TypeError, match="Expected an integer or the infinity value"):
        wsgi.Server(("127.0.0.1", 0), hello_app, max=0)
    wsgi.Server(("127.0.0.1", 0), hello_app, max=float("inf"))


def test_keep_alive_conn_limit(serve):
    running = serve(hello_app, keep_alive_conn_limit=1)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with running.connect() as first:
        first.sendall(request)
        assert b"Connection: close" not in first.recv(4096)  # kept: nothing else is idle
        with running.connect() as second:
            second.sendall(request)
            reply = second.recv(4096)
            assert b"\r\nConnection: close\r\n" in reply  # `first` already fills the limit
    running.server.keep_alive_conn_limit = None
    with running.connect() as third:
        third.sendall(request)
        assert b"Connection: close" not in third.recv(4096)


def test_worker_keeps_one_python_thread_state(serve):
    # A threading.local lives in the thread state: it survives across requests only if each
    # worker keeps the same thread state for its whole life.
    local = threading.local()

    def app(environ, start_response):
        local.count = getattr(local, "count", 0) + 1
        body = f"{threading.get_ident()}:{local.count}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    running = serve(app, numthreads=1)
    with requests.Session() as session:
        replies = [session.get(running.url(), timeout=5).text for _ in range(20)]
    idents = {reply.split(":")[0] for reply in replies}
    assert len(idents) == 1
    assert [int(reply.split(":")[1]) for reply in replies] == list(range(1, 21))


def test_overload_answers_503_without_stalling_accept():
    release = threading.Event()

    def app(environ, start_response):
        release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    running = start_server(app, numthreads=1, accepted_queue_size=1,
                           accepted_queue_timeout=0.3)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        busy = running.connect()
        busy.sendall(request)           # occupies the only worker
        time.sleep(0.2)
        queued = running.connect()
        queued.sendall(request)         # takes the one queue place
        time.sleep(0.2)
        started = time.monotonic()
        with running.connect() as rejected:
            rejected.sendall(request)   # no place left: 503 after the queue timeout
            reply = rejected.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), reply
        assert time.monotonic() - started < 3
        release.set()
        for sock in (busy, queued):
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
            sock.close()
    finally:
        release.set()
        running.stop()


def test_request_arriving_just_after_stop_on_a_fresh_connection_is_served():
    running = start_server(hello_app, shutdown_timeout=3)
    sock = running.connect()
    time.sleep(0.1)  # accepted, nothing sent yet
    stopper = threading.Thread(target=running.server.stop)
    stopper.start()
    time.sleep(0.3)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = sock.recv(4096)
    sock.close()
    stopper.join(10)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    assert b"\r\nConnection: close\r\n" in reply


def test_idle_keep_alive_connection_is_closed_at_stop():
    running = start_server(hello_app, shutdown_timeout=3)
    sock = running.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    started = time.monotonic()
    running.server.stop()
    assert time.monotonic() - started < 1.0  # no wait for a connection that sent nothing new
    assert sock.recv(100) == b""
    sock.close()


def test_nodelay_is_set_on_the_listener_and_follows_the_attribute(serve):
    # Accepted sockets inherit TCP_NODELAY from the listening socket on Linux.
    running = serve(hello_app)
    listener = running.server.socket
    assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    with running.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    running.server.nodelay = False
    assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
