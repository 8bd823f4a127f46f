"""Server construction, binding, prepare/serve/start/safe_start/stop, ready, Ctrl-C."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from stogie import wsgi

from _apps import Started, environ_app, free_port, hello_app, read_response, simple_request

EXPECTED_SIGNATURE = [
    ("bind_addr", inspect.Parameter.empty),
    ("wsgi_app", inspect.Parameter.empty),
    ("numthreads", 10),
    ("server_name", None),
    ("max", -1),
    ("request_queue_size", 5),
    ("timeout", 10),
    ("shutdown_timeout", 5),
    ("accepted_queue_size", -1),
    ("accepted_queue_timeout", 10),
    ("peercreds_enabled", False),
    ("peercreds_resolve_enabled", False),
    ("reuse_port", False),
]


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


# --- construction -------------------------------------------------------------------------

def test_constructor_signature():
    params = list(inspect.signature(wsgi.Server.__init__).parameters.values())
    assert params[0].name == "self"
    assert [(p.name, p.default) for p in params[1:]] == EXPECTED_SIGNATURE
    for p in params[1:]:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, p


def test_positional_construction_sets_attributes():
    server = wsgi.Server(("127.0.0.1", 0), hello_app, 3, "positional.test", -1, 11, 7, 2)
    assert server.wsgi_app is hello_app
    assert server.server_name == "positional.test"
    assert server.numthreads == 3
    assert server.request_queue_size == 11
    assert server.timeout == 7
    assert server.shutdown_timeout == 2
    assert server.ready is False


def test_keyword_construction():
    server = wsgi.Server(bind_addr=("127.0.0.1", 0), wsgi_app=hello_app, numthreads=2,
                         timeout=3, shutdown_timeout=1)
    assert (server.numthreads, server.timeout, server.shutdown_timeout) == (2, 3, 1)
    assert server.bind_addr == ("127.0.0.1", 0)


def test_server_is_subclassable_with_attributes_set_before_init():
    class Sub(wsgi.Server):
        def __init__(self, *args, **kwargs):
            self.max_request_body_size = 1234
            self.custom = "kept"
            super().__init__(*args, **kwargs)

    server = Sub(("127.0.0.1", 0), hello_app)
    assert server.custom == "kept"
    assert server.max_request_body_size == 1234
    assert isinstance(server, wsgi.Server)


def test_wsgi_app_none_then_assigned(serve):
    running = serve(None)
    running.server.wsgi_app = hello_app
    r = requests.get(running.url(), timeout=5)
    assert (r.status_code, r.text) == (200, "Hello, world!")


def test_wsgi_app_replaced_while_running(serve):
    running = serve(hello_app)
    assert requests.get(running.url(), timeout=5).text == "Hello, world!"

    def other(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"other"]

    running.server.wsgi_app = other
    assert requests.get(running.url(), timeout=5).text == "other"


@pytest.mark.parametrize("host", ["", None])
def test_empty_host_rejected(host):
    with pytest.raises(ValueError) as info:
        server = wsgi.Server((host, 0), hello_app)
        try:
            server.prepare()
        finally:
            server.stop()
    assert str(info.value).startswith("Host values of '' or None are not allowed.")


# --- binding ------------------------------------------------------------------------------

def test_ready_and_bind_addr_lifecycle():
    server = wsgi.Server(("127.0.0.1", 0), hello_app, shutdown_timeout=1)
    assert server.ready is False
    assert server.bind_addr == ("127.0.0.1", 0)
    server.prepare()
    try:
        assert server.ready is True
        host, port = server.bind_addr
        assert host == "127.0.0.1"
        assert isinstance(port, int) and port > 0
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        assert simple_request(host, port).body == b"Hello, world!"
        assert server.ready is True
    finally:
        server.stop()
    thread.join(5)
    assert not thread.is_alive(), "serve() did not return after stop()"
    assert server.ready is False


def test_fixed_port_is_kept(serve):
    port = free_port()
    running = serve(hello_app, bind_addr=("127.0.0.1", port))
    assert running.server.bind_addr == ("127.0.0.1", port)
    assert simple_request("127.0.0.1", port).status == 200


def test_rebind_same_port_after_stop():
    port = free_port()
    for _ in range(2):
        server = wsgi.Server(("127.0.0.1", port), hello_app, shutdown_timeout=1)
        started = Started(server)
        with requests.Session() as s:
            assert s.get(started.url(), timeout=5).status_code == 200
        started.stop()
        assert not started.thread.is_alive()


@needs_ipv6
def test_ipv6_loopback(serve):
    running = serve(environ_app, bind_addr=("::1", 0))
    host, port = running.server.bind_addr[:2]
    assert host == "::1" and port > 0
    resp = simple_request("::1", port, "/v6", family=socket.AF_INET6)
    assert resp.status == 200
    assert json.loads(resp.body)["REMOTE_ADDR"] == "::1"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@needs_ipv6
def test_dual_stack_any(serve):
    running = serve(environ_app, bind_addr=("::", 0))
    host, port = running.server.bind_addr[:2]
    assert host == "::" and port > 0
    v4 = simple_request("127.0.0.1", port, "/four")
    assert v4.status == 200
    assert json.loads(v4.body)["REMOTE_ADDR"] in ("127.0.0.1", "::ffff:127.0.0.1")
    v6 = simple_request("::1", port, "/six", family=socket.AF_INET6)
    assert v6.status == 200
    assert json.loads(v6.body)["REMOTE_ADDR"] == "::1"


def test_any_ipv4(serve):
    running = serve(hello_app, bind_addr=("0.0.0.0", 0))
    assert running.server.bind_addr[0] == "0.0.0.0"
    assert simple_request("127.0.0.1", running.server.bind_addr[1]).status == 200


def test_localhost_name(serve):
    running = serve(hello_app, bind_addr=("localhost", 0))
    port = running.server.bind_addr[1]
    assert port > 0
    assert requests.get(f"http://localhost:{port}/", timeout=5).status_code == 200


def test_reuse_port_allows_two_servers():
    port = free_port()
    a = wsgi.Server(("127.0.0.1", port), hello_app, reuse_port=True, shutdown_timeout=1)
    b = wsgi.Server(("127.0.0.1", port), hello_app, reuse_port=True, shutdown_timeout=1)
    sa = Started(a)
    try:
        sb = Started(b)
        try:
            assert a.bind_addr[1] == b.bind_addr[1] == port
            assert simple_request("127.0.0.1", port).status == 200
        finally:
            sb.stop()
    finally:
        sa.stop()


def test_port_in_use_without_reuse_port():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        server = wsgi.Server(("127.0.0.1", port), hello_app)
        with pytest.raises(OSError):
            server.prepare()
        assert server.ready is False


# --- start / safe_start / stop ------------------------------------------------------------

@pytest.mark.parametrize("method", ["start", "safe_start"])
def test_blocking_start_returns_after_stop(method):
    server = wsgi.Server(("127.0.0.1", 0), hello_app, shutdown_timeout=1)
    started = Started(server, target=method)
    assert requests.get(started.url(), timeout=5).text == "Hello, world!"
    assert started.thread.is_alive(), f"{method}() must block while serving"
    t0 = time.monotonic()
    server.stop()
    started.thread.join(5)
    assert not started.thread.is_alive(), f"{method}() did not return after stop()"
    assert time.monotonic() - t0 < 4
    assert started.errors == []
    assert server.ready is False


def test_stop_is_idempotent_and_safe_before_start():
    server = wsgi.Server(("127.0.0.1", 0), hello_app, shutdown_timeout=1)
    server.stop()                       # never started: a no-op
    started = Started(server)
    started.stop()
    server.stop()                       # already stopped
    assert server.ready is False


def test_listener_closed_after_stop(serve):
    running = serve(hello_app)
    port = running.port
    assert simple_request("127.0.0.1", port).status == 200
    running.stop()
    with pytest.raises(OSError), \
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            # Accepted by a not-yet-closed backlog? Then it must not be served.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            if not sock.recv(100):
                raise ConnectionResetError("closed without a response")


def test_stop_with_idle_keepalive_connections(serve):
    running = serve(hello_app, shutdown_timeout=1)
    socks = []
    for _ in range(5):
        sock = running.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(sock).status == 200
        socks.append(sock)
    silent = [running.connect() for _ in range(3)]       # connected, never send anything
    time.sleep(0.1)
    t0 = time.monotonic()
    running.stop()
    elapsed = time.monotonic() - t0
    assert elapsed < 3.5, f"stop() took {elapsed:.1f}s with idle connections open"
    assert not running.thread.is_alive()
    for sock in socks + silent:
        sock.settimeout(3)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b"", "an idle connection was not closed by stop()"
        sock.close()


def test_stop_with_busy_request_respects_shutdown_timeout(serve):
    release = threading.Event()
    entered = threading.Event()

    def stuck_app(environ, start_response):
        entered.set()
        release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"late"]

    running = serve(stuck_app, shutdown_timeout=1)
    sock = running.connect(timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert entered.wait(5)
    try:
        t0 = time.monotonic()
        stopper = threading.Thread(target=running.server.stop, daemon=True)
        stopper.start()
        stopper.join(6)
        elapsed = time.monotonic() - t0
        assert not stopper.is_alive(), "stop() hung on a busy request"
        assert elapsed < 4, f"stop() took {elapsed:.1f}s with shutdown_timeout=1"
        running.thread.join(5)
        assert not running.thread.is_alive(), "serve() did not return"
    finally:
        release.set()
        sock.close()


def test_graceful_stop_lets_short_request_finish(serve):
    entered = threading.Event()

    def slowish(environ, start_response):
        entered.set()
        time.sleep(0.5)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"finished"]

    running = serve(slowish, shutdown_timeout=5)
    result = queue.Queue()

    def client():
        try:
            result.put(requests.get(running.url(), timeout=10).text)
        except Exception as exc:  # noqa: BLE001
            result.put(exc)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    assert entered.wait(5)
    t0 = time.monotonic()
    running.stop()
    assert time.monotonic() - t0 < 5
    assert result.get(timeout=10) == "finished"


def test_stop_from_app_thread(serve):
    """stop() may be called from any thread, even a worker running the app."""
    holder = {}

    def app(environ, start_response):
        threading.Thread(target=holder["server"].stop, daemon=True).start()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"bye"]

    running = serve(app)
    holder["server"] = running.server
    with contextlib.suppress(requests.ConnectionError):
        requests.get(running.url(), timeout=5)
    running.thread.join(6)
    assert not running.thread.is_alive()
    assert running.server.ready is False


# --- Ctrl-C -------------------------------------------------------------------------------

CTRL_C_SCRIPT = textwrap.dedent("""
    import signal, sys, threading, time
    from stogie import wsgi

    # Ctrl-C as in a terminal, even when the test run itself ignores SIGINT (a background
    # job of a non-interactive shell does, and Python then keeps ignoring it in children).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '2')])
        return [b'ok']

    server = wsgi.Server(('127.0.0.1', 0), app, shutdown_timeout=1)

    def announce():
        while not server.ready:
            time.sleep(0.01)
        print('PORT', server.bind_addr[1], flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.safe_start()
    except KeyboardInterrupt:
        print('KEYBOARDINTERRUPT', flush=True)
        print('READY', server.ready, flush=True)
        sys.exit(0)
    print('RETURNED WITHOUT EXCEPTION', flush=True)
    sys.exit(3)
""")


def _line_reader(stream, q):
    for line in iter(stream.readline, ""):
        q.put(line)
    q.put(None)


@pytest.mark.parametrize("keepalive_open", [False, True], ids=["plain", "with-idle-conn"])
def test_ctrl_c_stops_safe_start(tmp_path, keepalive_open):
    script = tmp_path / "ctrl_c_server.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_line_reader, args=(proc.stdout, lines), daemon=True).start()
    idle = None
    try:
        first = lines.get(timeout=15)
        assert first and first.startswith("PORT "), first
        port = int(first.split()[1])
        assert simple_request("127.0.0.1", port).body == b"ok"
        if keepalive_open:
            idle = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(idle).status == 200
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if idle is not None:
            idle.close()
    out = []
    while True:
        item = lines.get(timeout=5)
        if item is None:
            break
        out.append(item.strip())
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert rc == 0, (rc, out, stderr)
    assert out == ["KEYBOARDINTERRUPT", "READY False"], (out, stderr)
    assert elapsed < 5
    assert "Traceback" not in stderr, stderr


def test_process_exits_after_stop(tmp_path):
    """No non-daemon thread is left behind: the interpreter exits once serve() returns."""
    script = tmp_path / "stop_and_exit.py"
    script.write_text(textwrap.dedent("""
        import threading, time
        from stogie import wsgi

        def app(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [b'ok']

        server = wsgi.Server(('127.0.0.1', 0), app, shutdown_timeout=1)

        def stopper():
            while not server.ready:
                time.sleep(0.01)
            time.sleep(0.3)
            server.stop()

        threading.Thread(target=stopper).start()
        server.start()
        print('START RETURNED', flush=True)
    """))
    proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True,
                          text=True, timeout=20, cwd=tmp_path, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "START RETURNED"
