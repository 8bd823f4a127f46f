"""CherryPy's own server machinery on stogie (`stogie.cherrypy`, the `server.instance` switch).

`cherrypy.quickstart()` runs in a subprocess (it blocks and installs signal handlers); the
engine's stop/start, additional servers and TLS run in this process on their own server adapter
(`server.NAME.*`), with CherryPy's main `cherrypy.server` unsubscribed as tests/test_cherrypy.py
leaves it. Also here: the cheroot hooks CherryPy sets on the server object (`ConnectionClass`)
and `MaxSizeExceeded`'s cheroot arguments, which CherryPy turns into a 413.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from _apps import free_port
from _http import chunked, parse_responses, request, talk

pytest.importorskip("cherrypy")

import cherrypy  # noqa: E402
import cherrypy._cpserver  # noqa: E402

import stogie.cherrypy  # noqa: E402
from stogie import errors, server, wsgi  # noqa: E402

SWITCH = "stogie.cherrypy.CPWSGIServer"
HOST = "127.0.0.1"


@dataclass
class Endpoint:
    """Where a server listens; `connect()` as the raw-HTTP helpers expect."""

    host: str
    port: int

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls `check()` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def refuses(endpoint: Endpoint) -> bool:
    try:
        endpoint.connect(0.5).close()
    except OSError:
        return True
    return False


# ---------------------------------------------------------------------------
# cherrypy.quickstart() in a subprocess
# ---------------------------------------------------------------------------

QUICKSTART = textwrap.dedent(
    """
    import json, sys, threading, uuid
    import cherrypy

    TOKEN = uuid.uuid4().hex  # new in every process image (an execv restart makes a new one)


    class Root:
        @cherrypy.expose
        @cherrypy.tools.json_out()
        def index(self):
            server = cherrypy.server.httpserver
            return {
                "token": TOKEN,
                "server": f"{type(server).__module__}.{type(server).__qualname__}",
                "software": cherrypy.request.wsgi_environ["SERVER_SOFTWARE"],
                "threads": server.numthreads,
                "timeout": server.timeout,
            }

        @cherrypy.expose
        def upload(self):
            return f"read {len(cherrypy.request.body.read())} bytes"

        @cherrypy.expose
        def restart(self):
            # engine.restart() stops the servers and re-executes the process: not from inside
            # the request it would wait for.
            threading.Timer(0.2, cherrypy.engine.restart).start()
            return "restarting"


    port, error_log = int(sys.argv[1]), sys.argv[2]
    cherrypy.quickstart(Root(), config={"global": {
        "server.instance": "stogie.cherrypy.CPWSGIServer",
        "server.socket_host": "127.0.0.1",
        "server.socket_port": port,
        "server.thread_pool": 3,
        "server.socket_timeout": 7,
        "server.max_request_body_size": 1000,
        "engine.autoreload.on": False,
        "log.screen": False,
        "log.error_file": error_log,
        "log.access_file": "",
    }})
    """
)


@dataclass
class Quickstart:
    proc: subprocess.Popen[bytes]
    endpoint: Endpoint
    error_log: Path

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else "(no error log)"

    def wait_started(self, times: int = 1) -> None:
        """Until CherryPy's bus has reached STARTED `times` times. A stop or restart while it
        is still STARTING makes CherryPy end the process with status 70 instead."""
        wait_until(lambda: self.log().count("Bus STARTED") >= times, 30, "the bus to start")

    def index(self) -> dict | None:
        """GET / as JSON, or None while nothing is listening."""
        try:
            return requests.get(self.endpoint.url(), timeout=5).json()
        except requests.ConnectionError:
            if self.proc.poll() is not None:
                pytest.fail(f"quickstart exited with {self.proc.returncode}:\n{self.log()}")
            return None


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    script = tmp_path / "quickstart_app.py"
    script.write_text(QUICKSTART)
    error_log = tmp_path / "error.log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port), str(error_log)],
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running = Quickstart(proc, Endpoint(HOST, port), error_log)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_quickstart_serves_restarts_and_stops_on_stogie(quickstart: Quickstart) -> None:
    first = wait_until(quickstart.index, 30, "quickstart to serve")
    quickstart.wait_started()
    assert first["server"] == SWITCH
    assert first["software"].startswith(f"CherryPy/{cherrypy.__version__} stogie/"), first
    # CherryPy's server.* settings reached the server.
    assert (first["threads"], first["timeout"]) == (3, 7)
    # stogie's HTTP engine answers, not cheroot's: Content-Length with Transfer-Encoding is a
    # 400 here (cheroot would serve it).
    smuggled = request(
        "POST",
        "/upload",
        headers=[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
        body=chunked(b"abc"),
    )
    [refused] = parse_responses(talk(quickstart.endpoint, smuggled).data)
    assert refused.status == 400

    # engine.restart(): CherryPy stops the server and re-executes the process, which serves
    # again on the same port from a new process image.
    assert requests.get(quickstart.endpoint.url("/restart"), timeout=5).text == "restarting"

    def restarted() -> dict | None:
        page = quickstart.index()
        return page if page and page["token"] != first["token"] else None

    second = wait_until(restarted, 30, "the restarted quickstart to serve")
    assert second["server"] == SWITCH
    quickstart.wait_started(times=2)

    # engine.exit() (SIGTERM): stogie stops, quickstart() returns, the process exits 0.
    quickstart.proc.send_signal(signal.SIGTERM)
    assert quickstart.proc.wait(20) == 0, quickstart.log()
    log = quickstart.log()
    assert f"HTTP Server {SWITCH}(('127.0.0.1', {quickstart.endpoint.port})) shut down" in log
    assert "Re-spawning" in log, log
    assert refuses(quickstart.endpoint)


def test_quickstart_chunked_upload_over_limit_is_413(quickstart: Quickstart) -> None:
    """CherryPy reads the limit from MaxSizeExceeded's args[1] and answers 413."""
    wait_until(quickstart.index, 30, "quickstart to serve")
    at_limit = request(
        "POST",
        "/upload",
        headers=[("Transfer-Encoding", "chunked"), ("Content-Type", "application/octet-stream")],
        body=chunked(b"a" * 600, b"b" * 400),
    )
    [ok] = parse_responses(talk(quickstart.endpoint, at_limit, timeout=5).data)
    assert (ok.status, ok.body) == (200, b"read 1000 bytes")
    over = request(
        "POST",
        "/upload",
        headers=[("Transfer-Encoding", "chunked"), ("Content-Type", "application/octet-stream")],
        body=chunked(b"a" * 600, b"b" * 401),
    )
    [refused] = parse_responses(talk(quickstart.endpoint, over, timeout=5).data)
    assert refused.status == 413, refused
    assert b"Maximum request length: 1000" in refused.body, refused
    assert "500 Internal Server Error" not in quickstart.log()


# ---------------------------------------------------------------------------
# the engine in this process, on an additional server (server.NAME.*)
# ---------------------------------------------------------------------------


class Echo:
    @cherrypy.expose
    def index(self) -> str:
        return "hello from CherryPy"

    @cherrypy.expose
    def upload(self) -> str:
        return f"read {len(cherrypy.request.body.read())} bytes"


@pytest.fixture
def engine() -> Iterator[Callable[..., Any]]:
    """`engine(**server_settings)` mounts Echo, configures `server.stogietest.*` (with the
    switch) and starts CherryPy's engine; returns the server adapter."""
    started: list[str] = []

    def start(**settings: Any) -> Any:
        name = "stogietest"
        cherrypy.config.update({"environment": "embedded", "log.screen": False})
        cherrypy.tree.mount(Echo(), "/")
        cherrypy.server.unsubscribe()  # CherryPy's main server stays off, as in test_cherrypy.py
        config = {"instance": SWITCH, "socket_host": HOST, "socket_port": free_port()}
        config.update(settings)
        cherrypy.config.update({f"server.{name}.{key}": value for key, value in config.items()})
        started.append(name)
        cherrypy.engine.start()
        return cherrypy.servers[name]

    yield start
    cherrypy.engine.exit()
    for name in started:
        cherrypy.servers.pop(name).unsubscribe()
    cherrypy.tree.apps.clear()


def endpoint_of(adapter: Any) -> Endpoint:
    return Endpoint(adapter.socket_host, adapter.socket_port)


def test_engine_stop_and_start_reuse_the_stogie_server(engine: Callable[..., Any]) -> None:
    adapter = engine(thread_pool=2, thread_pool_max=4, socket_timeout=3, shutdown_timeout=1)
    httpserver = adapter.httpserver
    assert isinstance(httpserver, stogie.cherrypy.CPWSGIServer)
    assert (httpserver.numthreads, httpserver._max_threads, httpserver.timeout) == (2, 4, 3)
    assert httpserver.shutdown_timeout == 1
    endpoint = endpoint_of(adapter)
    assert requests.get(endpoint.url(), timeout=5).text == "hello from CherryPy"

    cherrypy.engine.stop()
    assert not httpserver.ready and refuses(endpoint)
    cherrypy.engine.start()
    assert adapter.httpserver is httpserver and httpserver.ready
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(endpoint.url(), timeout=5).text == "hello from CherryPy"
        resp = session.post(endpoint.url("/upload"), data=b"x" * 5000, timeout=5)
        assert resp.text == "read 5000 bytes"


def test_server_settings_reach_stogie(engine: Callable[..., Any]) -> None:
    adapter = engine(
        socket_queue_size=64,
        accepted_queue_size=8,
        accepted_queue_timeout=2.5,
        max_request_header_size=4096,
        max_request_body_size=100,
        protocol_version="HTTP/1.0",
        nodelay=False,
        statistics=True,
        wsgi_version=("u", 0),
    )
    httpserver = adapter.httpserver
    assert httpserver.server_adapter is adapter
    assert httpserver.request_queue_size == 64
    assert (httpserver.accepted_queue_size, httpserver.accepted_queue_timeout) == (8, 2.5)
    assert (httpserver.max_request_header_size, httpserver.max_request_body_size) == (4096, 100)
    assert (httpserver.protocol, httpserver.nodelay) == ("HTTP/1.0", False)
    assert httpserver.gateway is wsgi.Gateway_u0
    assert httpserver.stats["Enabled"] is True
    assert httpserver.server_name == HOST
    assert httpserver.version == f"CherryPy/{cherrypy.__version__} stogie/{server.__version__}"
    endpoint = endpoint_of(adapter)
    resp = requests.post(endpoint.url("/upload"), data=b"x" * 101, timeout=5)
    assert resp.status_code == 413
    resp = requests.get(endpoint.url(), timeout=5)
    assert resp.raw.version == 10 and resp.text == "hello from CherryPy"


def test_error_log_goes_to_cherrypy(engine: Callable[..., Any]) -> None:
    adapter = engine()
    seen: list[tuple[str, int, bool]] = []

    def listener(msg: str, level: int = 20, traceback: bool = False) -> None:
        seen.append((msg, level, traceback))

    cherrypy.engine.subscribe("log", listener)
    try:
        adapter.httpserver.error_log("a stogie message", 30)
    finally:
        cherrypy.engine.unsubscribe("log", listener)
    assert ("a stogie message", 30, False) in seen


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    trustme = pytest.importorskip("trustme")
    base = tmp_path_factory.mktemp("cherrypy-pki")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    paths = {name: str(base / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    issued.cert_chain_pems[0].write_to_path(paths["cert"])
    issued.private_key_pem.write_to_path(paths["key"])
    return paths


def test_ssl_certificate_settings_serve_https(
    engine: Callable[..., Any], certificate: dict[str, str]
) -> None:
    adapter = engine(ssl_certificate=certificate["cert"], ssl_private_key=certificate["key"])
    port = adapter.socket_port
    resp = requests.get(f"https://{HOST}:{port}/", verify=certificate["ca"], timeout=5)
    assert resp.text == "hello from CherryPy"
    assert adapter.description == f"https://{HOST}:{port}"


def test_ssl_context_is_refused() -> None:
    adapter = cherrypy._cpserver.Server()
    adapter.socket_port = free_port()
    adapter.ssl_context = object()
    with pytest.raises(ValueError, match=r"server\.ssl_context cannot be used with stogie"):
        stogie.cherrypy.CPWSGIServer(adapter)


# ---------------------------------------------------------------------------
# cheroot hooks CherryPy sets on the server object
# ---------------------------------------------------------------------------


def test_connection_class_is_there_and_unchanged_classes_do_not_warn() -> None:
    stock = wsgi.Server((HOST, 0), None)
    assert stock.ConnectionClass is server.HTTPConnection
    assert stock.ConnectionClass.RequestHandlerClass is server.HTTPRequest  # type: ignore
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stock.prepare()
    stock.stop()


@pytest.mark.parametrize("target", ["ConnectionClass", "RequestHandlerClass"])
def test_replacing_a_hook_class_warns_at_prepare(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Custom:
        pass

    custom = wsgi.Server((HOST, 0), None)
    if target == "ConnectionClass":
        custom.ConnectionClass = Custom
    else:
        monkeypatch.setattr(server.HTTPConnection, "RequestHandlerClass", Custom)
    with pytest.warns(errors.NoEffectWarning, match=f"{target} = .*Custom has no effect"):
        custom.prepare()
    custom.stop()


def test_cherrypys_own_cpwsgiserver_rebased_on_stogie(tmp_path: Path) -> None:
    """The issue's case: cherrypy._cpwsgi_server.CPWSGIServer on stogie.wsgi.Server. Its
    __init__ sets ConnectionClass.RequestHandlerClass (accepted without a warning: its request
    class only turns on proxy mode, whose absolute-form targets stogie always accepts). stogie
    itself never imports CherryPy: only stogie.cherrypy does."""
    script = tmp_path / "rebased.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys, threading, urllib.request, warnings
            import stogie, stogie.errors, stogie.server, stogie.wsgi
            assert "cherrypy" not in sys.modules
            warnings.simplefilter("error", stogie.errors.NoEffectWarning)
            import cheroot.wsgi
            cheroot.wsgi.Server = stogie.wsgi.Server
            import cherrypy
            from cherrypy import _cpwsgi_server

            class Root:
                @cherrypy.expose
                def index(self):
                    return "rebased"

            cherrypy.config.update({"log.screen": False})
            cherrypy.tree.mount(Root(), "/")
            cherrypy.server.socket_host = "127.0.0.1"
            cherrypy.server.socket_port = int(sys.argv[1])
            server = _cpwsgi_server.CPWSGIServer(cherrypy.server)
            server.prepare()
            threading.Thread(target=server.serve, daemon=True).start()
            url = f"http://127.0.0.1:{sys.argv[1]}/"
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            print(json.dumps({"body": body, "mro": [c.__module__ for c in type(server).__mro__]}))
            server.stop()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script), str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["body"] == "rebased"
    assert "stogie.wsgi" in result["mro"] and "cheroot.wsgi" not in result["mro"]


# ---------------------------------------------------------------------------
# MaxSizeExceeded carries cheroot's arguments
# ---------------------------------------------------------------------------


def test_max_size_exceeded_has_cheroots_arguments(serve: Any) -> None:
    caught: list[tuple] = []

    def app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except errors.MaxSizeExceeded as exc:
            caught.append(exc.args)
            body = f"Maximum request length: {exc.args[1]!r}".encode()
            start_response("413 Request Entity Too Large", [("Content-Type", "text/plain")])
            return [body]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read all"]

    running = serve(app, max_request_body_size=100)
    raw = request("POST", "/", headers=[("Transfer-Encoding", "chunked")], body=chunked(b"x" * 101))
    [resp] = parse_responses(talk(running, raw).data)
    assert caught == [("Request Entity Too Large", 100)]
    assert (resp.status, resp.body) == (413, b"Maximum request length: 100")
