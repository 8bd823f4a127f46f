"""`stogie` in production: every option, worker processes, signals, reloads, metrics.

Every server here is a `stogie` subprocess on loopback, started in its own session so that
teardown can kill it together with its workers; every wait is bounded.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from stogie import cli, supervisor, wsgi

from _apps import free_port, stogie_script

APP = textwrap.dedent('''
    import json
    import os
    import time

    VERSION = "one"


    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/slow":
            open(environ["QUERY_STRING"], "w").close()        # "I have started"
            time.sleep(1.5)
        if path == "/env":
            body = json.dumps({k: v for k, v in environ.items()
                               if isinstance(v, (str, bool, int))}).encode()
        else:
            body = f"{os.getpid()} {VERSION}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]


    def create_app():
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"made by the factory"]
        return app
''')

NATIVE_APP = textwrap.dedent('''
    from stogie import server


    class Hello(server.Gateway):
        def respond(self):
            self.req.status = b"200 OK"
            self.req.outheaders.append((b"Content-Type", b"text/plain"))
            self.req.outheaders.append((b"Content-Length", b"6"))
            self.req.ensure_headers_sent()
            self.req.write(b"native")
''')

STOP = 15.0          # bound on every wait for a process to exit


@pytest.fixture
def appdir(tmp_path: Path) -> Path:
    (tmp_path / "prodapp.py").write_text(APP)
    (tmp_path / "nativeapp.py").write_text(NATIVE_APP)
    return tmp_path


class Stogie:
    """A `stogie` command running as a subprocess in its own session."""

    def __init__(self, args: list[str], cwd: Path, port: int | None,
                 open_files: int | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = port
        self.cwd = cwd
        self.log = cwd / f"stogie-{time.monotonic_ns()}.log"
        self.out_path = cwd / f"stogie-{time.monotonic_ns()}.out"
        self._err = open(self.log, "w")  # noqa: SIM115 - closed in close()
        self._out = open(self.out_path, "w")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONSTARTUP", "LISTEN_PID", "LISTEN_FDS")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra_env or {})

        def limit_open_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen([stogie_script(), *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, env=env,
                                     start_new_session=True, preexec_fn=limit_open_files)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stderr(self) -> str:
        self._err.flush()
        return self.log.read_text()

    def stdout(self) -> str:
        self._out.flush()
        return self.out_path.read_text()

    def get(self, path: str = "/", timeout: float = 10) -> requests.Response:
        # A fresh connection per request (no pooling): no keep-alive races with restarts.
        return requests.get(self.url(path), timeout=timeout, headers={"Connection": "close"})

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the port accepts and stogie logged that it serves (workers are ready)."""
        wait_for(lambda: self._answers() and " serving " in self.stderr(), timeout,
                 lambda: f"not serving: {self.stderr()}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited with {self.proc.returncode}: {self.stderr()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s: {self.stderr()}") from None

    def workers(self) -> set[int]:
        """The pids of the supervisor's children."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return set()
        return {int(pid) for pid in children.split()}

    def kill(self) -> None:
        # The whole session: the supervisor and any worker it left behind.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP)

    def close(self) -> None:
        self.kill()
        self._err.close()
        self._out.close()


def wait_for(check: Callable[[], Any], timeout: float, message: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(message())


@pytest.fixture
def stogie() -> Iterator[Callable[..., Stogie]]:
    started: list[Stogie] = []

    def start(args: list[str], cwd: Path, port: int | None = None, bind: bool = True,
              ready: bool = True, open_files: int | None = None,
              env: dict[str, str] | None = None) -> Stogie:
        if bind:
            port = port or free_port()
            args = [*args, "--bind", f"127.0.0.1:{port}"]
        server = Stogie(args, cwd, port, open_files, env)
        started.append(server)
        if ready and port is not None:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.close()


def pid_of(response: requests.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.text.split()[0])


def assert_released(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def http_over_unix(address: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(address)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


# -- options ----------------------------------------------------------------------------------


def test_options_map_to_server_settings(tmp_path: Path) -> None:
    args = cli.parse_args([
        "mod:app", "--bind", "127.0.0.1:9", "--threads", "3", "--max-threads", "7",
        "--server-name", "edge", "--timeout", "2.5", "--shutdown-timeout", "4",
        "--request-queue-size", "50", "--accepted-queue-size", "8",
        "--accepted-queue-timeout", "1.5", "--access-log", "-", "--access-log-format", "%h %r",
        "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1", "--proxy-protocol",
    ])
    srv = cli.make_server(args, lambda environ, start_response: [])
    assert isinstance(srv, wsgi.Server)
    assert srv.bind_addr == ("127.0.0.1", 9)
    assert (srv.numthreads, srv._max_threads) == (3, 7)
    assert srv.server_name == "edge"
    assert (srv.timeout, srv.shutdown_timeout) == (2.5, 4)
    assert srv.request_queue_size == 50
    assert (srv.accepted_queue_size, srv.accepted_queue_timeout) == (8, 1.5)
    assert (srv.access_log, srv.access_log_format) == ("-", "%h %r")
    assert srv.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert srv.proxy_protocol is True

    defaults = cli.make_server(cli.parse_args(["mod:app"]), None)
    assert defaults.bind_addr == ("::1", 8000)
    assert (defaults.numthreads, defaults.timeout, defaults.shutdown_timeout) == (10, 10, 5)
    for attr in ("access_log", "access_log_format", "forwarded_allow_ips", "proxy_protocol"):
        assert attr not in vars(defaults)          # the engine's defaults are left alone
    for attr in ("max_request_header_size", "max_request_body_size"):
        assert getattr(defaults, attr) == 0 and attr not in vars(defaults)
    limited = cli.make_server(cli.parse_args([
        "m:a", "--max-request-header-size", "16k", "--max-request-body-size", "1G"]), None)
    assert (limited.max_request_header_size, limited.max_request_body_size) == (16384, 2**30)
    assert cli.parse_args(["m:a", "--max-request-body-size", "1000"]).max_request_body_size == 1000
    assert cli.parse_args(["m:a", "--forwarded-allow-ips", "*"]).forwarded_allow_ips == ["*"]
    assert not cli.uses_supervisor(cli.parse_args(["m:a"]))
    assert cli.uses_supervisor(cli.parse_args(["m:a", "--workers", "1"]))
    assert cli.uses_supervisor(cli.parse_args(["m:a", "--max-requests", "9"]))


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::]:80", ("::", 80)),
    ("/run/app.sock", "/run/app.sock"),
    ("app.sock", "app.sock"),
    ("unix:/run/app.sock", "/run/app.sock"),
    ("@stogie", "\x00stogie"),
])
def test_bind_forms(text: str, expected: Any) -> None:
    assert cli.parse_bind(text) == expected


@pytest.mark.parametrize("text", ["8000", "127.0.0.1:99999", ":8000", "127.0.0.1:http"])
def test_bad_bind_forms(text: str) -> None:
    with pytest.raises(cli.UsageError, match="--bind"):
        cli.parse_bind(text)


@pytest.mark.parametrize("argv, mention", [
    (["--bogus"], "--bogus"),
    (["--threads", "0"], "--threads"),
    (["--threads", "many"], "--threads"),
    (["--workers", "-1"], "--workers"),
    (["--bind", "8000"], "--bind"),
    (["--bind", "127.0.0.1:70000"], "--bind"),
    (["--forwarded-allow-ips", "10.0.0.300"], "--forwarded-allow-ips"),
    (["--log-level", "loud"], "--log-level"),
    (["--access-log-format", "%h"], "--access-log"),
    (["--max-threads", "2", "--threads", "5"], "max"),
    (["--workers", "2", "--max-threads", "2", "--threads", "5"], "max"),
    (["--max-request-body-size", "lots"], "--max-request-body-size"),
    (["--max-request-header-size", "-5"], "--max-request-header-size"),
    (["--chdir", "/nonexistent/stogie"], "--chdir"),
    (["--access-log", "/nonexistent/stogie/access.log"], "access log"),
    (["--workers", "2", "--access-log", "-", "--access-log-format", "%Q"], "%Q"),
    (["--workers", "2", "--bind", "1.2.3.4:1"], "cannot listen"),
    (["--server-name", "edge\x01", "--bind", "127.0.0.1:0"], "server_name"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_is_one_line_and_status_2(appdir: Path, argv: list[str],
                                             mention: str) -> None:
    proc = subprocess.run([stogie_script(), "prodapp", *argv], cwd=appdir, capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stogie: error: "), proc.stderr
    assert mention in lines[0]


@pytest.mark.parametrize("target, mention", [
    ("no_such_module_xyz:app", "no_such_module_xyz"),
    ("prodapp:nope", "nope"),
    ("prodapp:VERSION", "not callable"),
    ("prodapp:application --factory", "factory"),
], ids=["no-module", "no-attribute", "not-callable", "factory-fails"])
def test_bad_application_with_workers(appdir: Path, target: str, mention: str) -> None:
    port = free_port()
    proc = subprocess.run([stogie_script(), *target.split(), "--workers", "2",
                           "--bind", f"127.0.0.1:{port}"], cwd=appdir, capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and mention in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert_released(port)


def test_help_lists_every_option(appdir: Path) -> None:
    proc = subprocess.run([stogie_script(), "--help"], cwd=appdir, capture_output=True,
                          text=True, timeout=20, check=False)
    assert proc.returncode == 0
    for option in ("--bind", "--chdir", "--server-name", "--threads", "--max-threads",
                   "--timeout", "--shutdown-timeout", "--request-queue-size",
                   "--accepted-queue-size", "--accepted-queue-timeout", "--factory",
                   "--workers", "--access-log", "--access-log-format", "--log-level",
                   "--max-requests", "--pid", "--forwarded-allow-ips", "--proxy-protocol",
                   "--metrics-bind", "--version"):
        assert option in proc.stdout, option
    assert "MODULE:APP" in proc.stdout


# -- one process ------------------------------------------------------------------------------


def test_environ_reflects_options(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--server-name", "edge.example",
                     "--threads", "2"], appdir)
    r = server.get("/env")
    env = r.json()
    assert env["SERVER_NAME"] == "edge.example"
    assert r.headers["Server"] == "edge.example"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["wsgi.multiprocess"] is False
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_chdir_and_factory(stogie: Callable[..., Stogie], appdir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = stogie(["prodapp:create_app", "--factory", "--chdir", str(appdir)], elsewhere)
    assert server.get().text == "made by the factory"
    server.signal(signal.SIGINT)
    assert server.wait() == 0


def test_native_gateway(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["nativeapp:Hello"], appdir)
    assert server.get().text == "native"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.parametrize("workers", [None, "2"], ids=["one-process", "workers"])
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_unix_sockets(stogie: Callable[..., Stogie], appdir: Path, kind: str,
                      workers: str | None) -> None:
    name = f"stogie-test-{os.getpid()}-{time.monotonic_ns()}"
    bind = str(appdir / "s.sock") if kind == "path" else f"@{name}"
    address = bind if kind == "path" else "\x00" + name
    extra = ["--workers", workers] if workers else []
    server = stogie(["prodapp:application", "--bind", bind, *extra], appdir, bind=False)

    def answers() -> bytes | None:
        assert server.proc.poll() is None, server.stderr()
        try:
            return http_over_unix(address)
        except OSError:
            return None

    response = wait_for(answers, 15, server.stderr)
    assert response.startswith(b"HTTP/1.1 200 OK"), response
    env_pid = int(response.split(b"\r\n\r\n", 1)[1].split()[0])
    assert env_pid != server.proc.pid if workers else env_pid == server.proc.pid
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_sigterm_lets_a_slow_request_finish(stogie: Callable[..., Stogie], appdir: Path,
                                            extra: list[str]) -> None:
    server = stogie(["prodapp:application", *extra], appdir)
    marker = appdir / "slow-started"
    result: dict[str, Any] = {}

    def slow() -> None:
        result["r"] = server.get(f"/slow?{marker}")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(marker.exists, 10, lambda: "the slow request did not start")
    server.signal(signal.SIGTERM)
    t.join(timeout=10)
    assert result["r"].status_code == 200
    assert server.wait() == 0, server.stderr()
    assert "Traceback" not in server.stderr()
    assert_released(server.port)


class NotifySocket:
    """A stand-in for systemd's NOTIFY_SOCKET: collects the datagrams stogie sends."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        with suppress(socket.timeout):
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    def wait_for(self, line: str, timeout: float = 10) -> list[str]:
        return wait_for(lambda: any(line in m.splitlines() for m in self.collect()) and
                        self.messages, timeout, lambda: f"no {line}: {self.messages}")


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_systemd_notify_ready_watchdog_and_stopping(stogie: Callable[..., Stogie],
                                                    appdir: Path, extra: list[str]) -> None:
    notify = NotifySocket(appdir)
    server = stogie(["prodapp:application", *extra], appdir,
                    env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    messages = notify.wait_for("READY=1")
    assert any(m.startswith("READY=1\nSTATUS=serving") for m in messages), messages
    time.sleep(1.0)
    pings = [m for m in notify.collect() if m == "WATCHDOG=1"]
    assert 2 <= len(pings) <= 8, notify.messages          # every 0.2 s, give or take
    assert server.get().status_code == 200
    server.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert server.wait() == 0, server.stderr()
    ready = [m for m in notify.collect() if m.startswith("READY=1")]
    assert len(ready) == 1, notify.messages                # workers never notify


def test_systemd_notify_reloading(stogie: Callable[..., Stogie], appdir: Path) -> None:
    notify = NotifySocket(appdir)
    server = stogie(["prodapp:application", "--workers", "1"], appdir,
                    env={"NOTIFY_SOCKET": notify.path})
    notify.wait_for("READY=1")
    server.signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    wait_for(lambda: len([m for m in notify.collect() if m.startswith("READY=1")]) == 2, 15,
             lambda: f"no READY=1 after the reload: {notify.messages}")
    reloading = next(m for m in notify.messages if m.startswith("RELOADING=1"))
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading), reloading
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.stderr()


def test_descriptor_exhaustion_is_logged_and_counted(stogie: Callable[..., Stogie],
                                                     appdir: Path) -> None:
    """Under `ulimit -n 128`, 300 clients: accepting pauses (no spin), one WARNING names the
    cause and the limit, further ones come at most about once a second with a count, an INFO
    line says when accepting resumes, and the metrics count the failed accepts."""
    metrics_port = free_port()
    server = stogie(["prodapp:application", "--metrics-bind", f"127.0.0.1:{metrics_port}"],
                    appdir, open_files=128)
    clients = []
    try:
        for _ in range(300):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        started = time.monotonic()
        wait_for(lambda: "too many open files" in server.stderr(), 10, server.stderr)
        time.sleep(2.5)
        log = server.stderr()
        warnings = [line for line in log.splitlines() if "[WARNING]" in line]
        first = next(line for line in warnings if "too many open files" in line)
        assert "EMFILE" in first and "128" in first, first
        assert len(warnings) <= 2 + (time.monotonic() - started), warnings   # about 1/s
        assert any("still out of file descriptors" in line for line in warnings), warnings
    finally:
        for sock in clients:
            sock.close()
    wait_for(lambda: "accepting connections again" in server.stderr(), 10, server.stderr)
    assert server.get().status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    emfile = re.search(r'^stogie_accept_errors_total\{reason="emfile"\} (\d+)$', metrics, re.M)
    assert emfile and int(emfile.group(1)) > 0, metrics
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.stderr()


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_request_limits_on_the_command_line(stogie: Callable[..., Stogie], appdir: Path,
                                           extra: list[str]) -> None:
    server = stogie(["prodapp:application", "--max-request-body-size", "1k",
                     "--max-request-header-size", "2k", *extra], appdir)
    url = server.url()
    assert requests.post(url, data=b"x" * 1024, timeout=10).status_code == 200
    assert requests.post(url, data=b"x" * 1025, timeout=10).status_code == 413
    assert requests.get(url, headers={"X-Big": "y" * 1500}, timeout=10).status_code == 200
    assert requests.get(url, headers={"X-Big": "y" * 2100}, timeout=10).status_code == 431
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.stderr()


@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_sigterm_refuses_new_clients_at_once(stogie: Callable[..., Stogie], appdir: Path,
                                             extra: list[str]) -> None:
    """The listening socket closes in every process the moment the graceful stop begins: a
    new client is refused (safe to retry elsewhere), while the requests in flight finish."""
    server = stogie(["prodapp:application", "--threads", "4", *extra], appdir)
    markers = [appdir / f"slow-{i}" for i in range(3)]
    results: list[Any] = []

    def slow(marker: Path) -> None:
        results.append(server.get(f"/slow?{marker}").status_code)

    threads = [threading.Thread(target=slow, args=(m,)) for m in markers]
    for t in threads:
        t.start()
    wait_for(lambda: all(m.exists() for m in markers), 10, lambda: "slow requests not started")
    server.signal(signal.SIGTERM)
    deadline = time.monotonic() + 0.3
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            time.sleep(0.01)
        except ConnectionRefusedError:
            refused = True
    assert refused, "a new connection was still accepted 0.3 s after SIGTERM"
    for t in threads:
        t.join(timeout=10)
    assert results == [200, 200, 200]
    assert server.wait() == 0, server.stderr()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate")
@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_systemd_socket_activation(appdir: Path,
                                   extra: list[str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", stogie_script(),
         "prodapp:application", "--bind", "127.0.0.1:1", *extra],     # --bind is ignored
        cwd=appdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        r = wait_for(lambda: _try_get(f"http://127.0.0.1:{port}/env"), 15, lambda: "no answer")
        env = r.json()
        assert env["SERVER_PORT"] == str(port)
        assert env["wsgi.multiprocess"] is bool(extra)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=STOP)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP)


def _try_get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2, headers={"Connection": "close"})
    except requests.ConnectionError:
        return None


# -- worker processes -------------------------------------------------------------------------


def test_workers_pid_file_metrics_and_restart(stogie: Callable[..., Stogie],
                                              appdir: Path) -> None:
    metrics_port = free_port()
    pidfile = appdir / "run" / "stogie.pid"
    pidfile.parent.mkdir()
    server = stogie(["prodapp:application", "--workers", "2", "--pid", "run/stogie.pid",
                     "--metrics-bind", f"127.0.0.1:{metrics_port}"], appdir)
    assert pidfile.read_text().strip() == str(server.proc.pid)
    workers = wait_for(lambda: len(server.workers()) == 2 and server.workers(), 10,
                       lambda: f"not 2 workers: {server.workers()}")
    seen = wait_for(lambda: {pid_of(server.get()) for _ in range(30)} == workers and workers,
                    10, lambda: "requests were not served by both workers")
    assert server.get("/env").json()["wsgi.multiprocess"] is True

    time.sleep(1.3)                                   # the workers report every second
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert int(re.search(r"^stogie_requests_total (\d+)$", text, re.M)[1]) >= 31
    assert "stogie_workers 2" in text
    for pid in seen:
        assert f'stogie_worker_requests_total{{worker="{pid}"}}' in text
    assert re.search(r"^stogie_threads 20$", text, re.M), text
    assert requests.get(f"http://127.0.0.1:{metrics_port}/nope", timeout=5).status_code == 404

    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10,
             lambda: f"worker not replaced: {server.workers()} {server.stderr()}")
    pids = {pid_of(server.get()) for _ in range(20)}
    assert victim not in pids
    assert re.search(f"worker {victim} died .*SIGKILL", server.stderr())
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "stogie_worker_restarts_total 1" in text

    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not pidfile.exists()
    assert_released(server.port)
    assert_released(metrics_port)


def get_retrying(server: Stogie, path: str = "/") -> tuple[requests.Response, int]:
    """GET with up to 5 attempts on connection errors; (response, connection errors seen).

    The retries hide the engine dropping accepted connections on stop, tested apart below.
    """
    errors = 0
    while True:
        try:
            return server.get(path), errors
        except requests.ConnectionError:
            errors += 1
            if errors >= 5:
                raise


def test_sighup_reloads_the_application(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--workers", "2"], appdir)
    old_workers = wait_for(lambda: len(server.workers()) == 2 and server.workers(), 10,
                           lambda: "no workers")
    source = appdir / "prodapp.py"
    source.write_text(source.read_text().replace('VERSION = "one"', 'VERSION = "two!"'))
    server.signal(signal.SIGHUP)
    wait_for(lambda: get_retrying(server)[0].text.endswith("two!"), 15,
             lambda: f"not reloaded: {server.stderr()}")
    wait_for(lambda: len(server.workers()) == 2 and not (server.workers() & old_workers), 15,
             lambda: f"old workers still running: {server.stderr()}")
    assert "reload complete" in server.stderr()

    new_workers = server.workers()
    source.write_text("this is not python(\n")              # a broken reload keeps serving
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.stderr(), 15, server.stderr)
    assert "SyntaxError" in server.stderr()
    time.sleep(0.2)
    assert server.workers() == new_workers
    assert get_retrying(server)[0].text.endswith("two!")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_max_requests_recycles_workers(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--max-requests", "10"], appdir)
    pids: list[int] = []
    deadline = time.monotonic() + 20
    while len(set(pids)) < 3 and time.monotonic() < deadline:
        pids.append(pid_of(get_retrying(server)[0]))
    assert len(set(pids)) >= 3, (pids, server.stderr())
    assert server.proc.pid not in pids
    assert pids.count(pids[0]) >= 10                        # replaced after (about) 10
    assert "reached --max-requests 10" in server.stderr()
    assert len(server.workers()) <= 2
    server.signal(signal.SIGINT)
    assert server.wait() == 0


def _hammer(server: Stogie, stop: threading.Event, seen: list[str], failures: list[str]) -> None:
    while not stop.is_set():
        try:
            r = server.get(timeout=10)
            if r.status_code == 200:
                seen.append(r.text)
            else:
                failures.append(f"{r.status_code} {r.text}")
        except requests.RequestException as exc:
            failures.append(repr(exc))


def test_no_request_lost_during_reload_and_recycling(stogie: Callable[..., Stogie],
                                                     appdir: Path) -> None:
    server = stogie(["prodapp:application", "--workers", "2", "--max-requests", "150"], appdir)
    stop, seen, failures = threading.Event(), [], []
    clients = [threading.Thread(target=_hammer, args=(server, stop, seen, failures))
               for _ in range(4)]
    for t in clients:
        t.start()
    try:
        for _ in range(3):
            time.sleep(0.7)
            server.signal(signal.SIGHUP)
        time.sleep(0.7)
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=15)
    assert server.stderr().count("reload complete") >= 1
    assert len({text.split()[0] for text in seen}) > 4         # many workers served
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert failures == [], f"{len(failures)} of {len(seen) + len(failures)}: {failures[:3]}"


def test_sighup_without_workers_is_ignored(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application"], appdir)
    pid = pid_of(server.get())
    server.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in server.stderr(), 5, server.stderr)
    assert pid_of(server.get()) == pid
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_metrics_in_one_process(stogie: Callable[..., Stogie], appdir: Path) -> None:
    metrics_port = free_port()
    server = stogie(["prodapp:application", "--threads", "3",
                     "--metrics-bind", f"127.0.0.1:{metrics_port}"], appdir)
    for _ in range(3):
        server.get()
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert re.search(r"^stogie_requests_total 3$", text, re.M), text
    assert re.search(r"^stogie_threads 3$", text, re.M), text
    assert f'stogie_worker_requests_total{{worker="{server.proc.pid}"}} 3' in text
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


# -- engine features (issue 6): access log, trusted proxies, PROXY protocol -------------------


def test_access_log_file(stogie: Callable[..., Stogie], appdir: Path) -> None:
    log = appdir / "access.log"
    server = stogie(["prodapp:application", "--access-log", str(log)], appdir)
    server.get("/logged-path?x=1")
    wait_for(lambda: log.exists() and "/logged-path?x=1" in log.read_text(), 3,
             lambda: "no access log line")
    line = log.read_text().splitlines()[-1]
    assert re.match(r'127\.0\.0\.1 - - \[[^]]+\] "GET /logged-path\?x=1 HTTP/1\.1" 200 \d+ ',
                    line), line


def test_access_log_stdout_with_format(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--access-log", "-", "--access-log-format",
                     "%h %r %>s"], appdir)
    server.get("/fmt")
    wait_for(lambda: "127.0.0.1 GET /fmt HTTP/1.1 200" in server.stdout(), 3,
             lambda: f"stdout: {server.stdout()!r}")


@pytest.mark.parametrize("workers", [None, "2"], ids=["one-process", "workers"])
def test_sigusr1_reopens_the_access_log(stogie: Callable[..., Stogie], appdir: Path,
                                        workers: str | None) -> None:
    log = appdir / "access.log"
    extra = ["--workers", workers] if workers else []
    server = stogie(["prodapp:application", "--access-log", "access.log", *extra], appdir)
    server.get("/before")
    wait_for(lambda: log.exists() and "/before" in log.read_text(), 3, lambda: "no log line")
    log.rename(appdir / "access.log.1")
    server.signal(signal.SIGUSR1)
    counter = iter(range(10**6))

    def logged_anew() -> bool:
        server.get(f"/after-{next(counter)}")
        return log.exists() and "/after-" in log.read_text()

    wait_for(logged_anew, 5, lambda: f"not reopened: {server.stderr()}")
    assert "/before" in (appdir / "access.log.1").read_text()
    assert server.proc.poll() is None
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_forwarded_allow_ips(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--forwarded-allow-ips", "127.0.0.1"], appdir)
    env = requests.get(server.url("/env"), timeout=5, headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")


def test_forwarded_headers_untrusted_by_default(stogie: Callable[..., Stogie],
                                                appdir: Path) -> None:
    server = stogie(["prodapp:application"], appdir)
    env = requests.get(server.url("/env"), timeout=5, headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).json()
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_proxy_protocol(stogie: Callable[..., Stogie], appdir: Path) -> None:
    server = stogie(["prodapp:application", "--proxy-protocol"], appdir)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 443\r\n"
                  b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    env = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert env["REMOTE_ADDR"] == "203.0.113.7"


if sys.platform != "linux":  # pragma: no cover - fork, /proc and abstract sockets
    pytestmark = pytest.mark.skip("Linux only")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_user_and_group_drop_privileges_after_binding(stogie: Callable[..., Stogie],
                                                      extra: list[str]) -> None:
    appdir = Path(tempfile.mkdtemp(prefix="stogie-user-"))
    try:
        os.chmod(appdir, 0o755)                    # workers import the app as nobody
        (appdir / "prodapp.py").write_text(APP)
        port = free_port()
        server = stogie(["prodapp:application", "--user", "nobody", "--group", "nogroup",
                         "--bind", f"127.0.0.1:{port}", "--umask", "027", *extra], appdir,
                        bind=False, port=port)
        nobody = pwd.getpwnam("nobody")
        serving = int(server.get().text.split()[0])    # the pid that answered
        status = Path(f"/proc/{serving}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
        gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
        assert uids and set(uids.groups()) == {str(nobody.pw_uid)}, status
        assert gids and set(gids.groups()) == {str(grp.getgrnam("nogroup").gr_gid)}, status
        assert "running as uid" in server.stderr()
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.stderr()
    finally:
        shutil.rmtree(appdir, ignore_errors=True)


def test_max_requests_jitter_and_bad_credentials(appdir: Path) -> None:
    args = cli.parse_args(["m:a", "--max-requests", "100", "--max-requests-jitter", "10"])
    assert {supervisor._max_requests(args) for _ in range(200)} <= set(range(100, 111))
    assert len({supervisor._max_requests(args) for _ in range(200)}) > 1
    for argv, mention in ((["--max-requests-jitter", "5"], "needs --max-requests"),
                          (["--user", "no-such-user-xyz"], "no such user"),
                          (["--group", "no-such-group-xyz"], "no such group"),
                          (["--umask", "999"], "--umask")):
        proc = subprocess.run([stogie_script(), "prodapp", *argv], cwd=appdir,
                              capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 2 and mention in proc.stderr, (argv, proc.stderr)


def test_umask_sets_the_unix_socket_mode(stogie: Callable[..., Stogie], appdir: Path) -> None:
    path = appdir / "umask.sock"
    server = stogie(["prodapp:application", "--bind", f"unix:{path}", "--umask", "077"],
                    appdir, bind=False)
    wait_for(path.exists, 10, server.stderr)
    wait_for(lambda: http_over_unix(str(path)).startswith(b"HTTP/1.1 200"), 10, server.stderr)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.stderr()


def test_reload_on_change_survives_a_syntax_error(stogie: Callable[..., Stogie],
                                                  appdir: Path) -> None:
    server = stogie(["prodapp:application", "--reload"], appdir)
    assert server.get().text.endswith(" one")
    wait_for(lambda: "stogie --reload: watching" in server.stderr(), 10, server.stderr)
    app = appdir / "prodapp.py"

    def serves(version: str) -> bool:
        return server.get().text.endswith(f" {version}")

    started = time.monotonic()
    app.write_text(APP.replace('VERSION = "one"', 'VERSION = "two"'))
    wait_for(lambda: serves("two"), 2.0, lambda: f"not reloaded in 2 s: {server.stderr()}")
    assert time.monotonic() - started < 2.5
    app.write_text(APP.replace('VERSION = "one"', 'VERSION = "three"') + "\ndef broken(:\n")
    wait_for(lambda: "reload failed" in server.stderr(), 5, server.stderr)
    assert serves("two")                       # the previous code keeps serving
    assert server.stderr().count("SyntaxError") == 1, server.stderr()
    app.write_text(APP.replace('VERSION = "one"', 'VERSION = "four"'))
    wait_for(lambda: serves("four"), 3.0, lambda: f"no recovery: {server.stderr()}")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.stderr()


def test_sighup_reload_sends_goaway_to_http2_connections(stogie: Callable[..., Stogie],
                                                         appdir: Path) -> None:
    """The old generation's workers stop gracefully on SIGHUP: their HTTP/2 connections get
    GOAWAY (NO_ERROR) and close; a new connection reaches a new worker."""
    from _h2 import H2Client

    server = stogie(["prodapp:application", "--workers", "1"], appdir)
    assert server.port is not None
    with H2Client("127.0.0.1", server.port) as before:
        first = before.get("/")
        assert first.status == 200
        server.signal(signal.SIGHUP)
        before.wait_closed(timeout=30)
        assert before.goaway == 0, server.stderr()
    wait_for(lambda: "reload complete" in server.stderr(), 15, server.stderr)
    with H2Client("127.0.0.1", server.port) as after:
        second = after.get("/")
    assert second.status == 200
    assert bytes(second.data).split()[0] != bytes(first.data).split()[0]
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
