"""The command line: `stogie MODULE:APP --bind HOST:PORT --threads N` and `python -m stogie`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from _apps import free_port, stogie_script

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

APP_MODULE = textwrap.dedent("""
    import json
    import threading
    import time

    _lock = threading.Lock()
    _state = {"active": 0, "max": 0}


    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/sleep":
            with _lock:
                _state["active"] += 1
                _state["max"] = max(_state["max"], _state["active"])
            time.sleep(0.4)
            with _lock:
                _state["active"] -= 1
        if path == "/max":
            body = json.dumps(_state).encode()
        else:
            body = b"cli app: " + path.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]


    def other(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"other app"]


    not_callable = "just a string"
""")


@pytest.fixture
def appdir(tmp_path):
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    return tmp_path


class CliServer:
    def __init__(self, argv: list[str], cwd: Path, port: int, log_dir: Path) -> None:
        self.port = port
        self.out = open(log_dir / f"stdout-{port}.txt", "w+")  # noqa: SIM115 - closed in close()
        self.err = open(log_dir / f"stderr-{port}.txt", "w+")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
        env["PYTHONDONTWRITEBYTECODE"] = "1"      # keep examples/ clean
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.out, stderr=self.err, env=env,
                                     stdin=subprocess.DEVNULL)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early with {self.proc.returncode}: "
                                     f"{self.output()}")
            try:
                with socket.create_connection((host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not answer within {timeout}s: {self.output()}")

    def output(self) -> tuple[str, str]:
        self.out.flush()
        self.err.flush()
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()

    def stop(self, sig: int, timeout: float = 5.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"no exit within {timeout}s of signal {sig}: {self.output()}") from None
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.out.close()
        self.err.close()


@pytest.fixture
def cli(tmp_path_factory):
    started: list[CliServer] = []
    log_dir = tmp_path_factory.mktemp("cli-logs")

    def start(args: list[str], cwd: Path, port: int, module: bool = False) -> CliServer:
        argv = [sys.executable, "-m", "stogie"] if module else [stogie_script()]
        server = CliServer(argv + args, cwd, port, log_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


CLEAN_SIGINT = (0, 130, -signal.SIGINT)
CLEAN_SIGTERM = (0, 143, -signal.SIGTERM)


def assert_released(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_console_script_serves_app(cli, appdir):
    port = free_port()
    server = cli(["cliapp:other", "--bind", f"127.0.0.1:{port}", "--threads", "2"], appdir, port)
    server.wait_ready()
    r = requests.get(server.url("/anything"), timeout=5)
    assert (r.status_code, r.text) == (200, "other app")
    rc, elapsed = server.stop(signal.SIGINT)
    out, err = server.output()
    assert rc in CLEAN_SIGINT, (rc, out, err)
    assert "Traceback" not in err + out
    assert elapsed < 5
    assert_released(port)


def test_console_script_sigterm(cli, appdir):
    port = free_port()
    server = cli(["cliapp:application", "--bind", f"127.0.0.1:{port}"], appdir, port)
    server.wait_ready()
    with requests.Session() as s:                       # an idle keep-alive connection stays
        assert s.get(server.url("/x"), timeout=5).text == "cli app: /x"
        rc, _ = server.stop(signal.SIGTERM)
    out, err = server.output()
    assert rc in CLEAN_SIGTERM, (rc, out, err)
    assert "Traceback" not in err + out
    assert_released(port)


def test_default_attribute_is_application(cli, appdir):
    port = free_port()
    server = cli(["cliapp", "--bind", f"127.0.0.1:{port}"], appdir, port)
    server.wait_ready()
    assert requests.get(server.url("/default"), timeout=5).text == "cli app: /default"
    rc, _ = server.stop(signal.SIGINT)
    assert rc in CLEAN_SIGINT


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_python_m_stogie(cli, appdir, sig):
    port = free_port()
    server = cli(["cliapp:application", "--bind", f"127.0.0.1:{port}", "--threads", "3"],
                 appdir, port, module=True)
    server.wait_ready()
    assert requests.get(server.url("/m"), timeout=5).text == "cli app: /m"
    rc, elapsed = server.stop(sig)
    out, err = server.output()
    assert rc in (CLEAN_SIGINT if sig == signal.SIGINT else CLEAN_SIGTERM), (rc, out, err)
    assert "Traceback" not in err + out
    assert elapsed < 5
    assert_released(port)


@pytest.mark.parametrize("threads, expected", [(1, 1), (3, 3)])
def test_threads_option(cli, appdir, threads, expected):
    port = free_port()
    server = cli(["cliapp:application", "--bind", f"127.0.0.1:{port}",
                  "--threads", str(threads)], appdir, port)
    server.wait_ready()
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: requests.get(server.url("/sleep"), timeout=10).text,
                              range(3)))
    assert texts == ["cli app: /sleep"] * 3
    state = json.loads(requests.get(server.url("/max"), timeout=5).text)
    assert state["max"] == expected
    server.stop(signal.SIGINT)


def test_ipv6_bind(cli, appdir):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6")
    server = cli(["cliapp:application", "--bind", f"[::1]:{port}"], appdir, port)
    deadline = time.monotonic() + 15
    while True:
        try:
            r = requests.get(f"http://[::1]:{port}/six", timeout=2)
            break
        except requests.ConnectionError:
            assert server.proc.poll() is None, server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
    assert r.text == "cli app: /six"
    rc, _ = server.stop(signal.SIGINT)
    assert rc in CLEAN_SIGINT


def test_examples_hello(cli):
    hello = EXAMPLES / "hello.py"
    assert hello.exists(), "examples/hello.py is missing"
    source = hello.read_text()
    assert "from stogie import wsgi" in source
    port = free_port()
    server = cli(["hello:my_crazy_app", "--bind", f"127.0.0.1:{port}"], EXAMPLES, port)
    server.wait_ready()
    r = requests.get(server.url("/"), timeout=5)
    assert r.status_code == 200
    assert r.content.startswith(b"Hello world!")
    assert r.headers["Content-Type"].lower().startswith("text/plain")
    rc, _ = server.stop(signal.SIGINT)
    assert rc in CLEAN_SIGINT


@pytest.mark.parametrize("target, name", [
    ("no_such_module_for_stogie_xyz:app", "no_such_module_for_stogie_xyz"),
    ("cliapp:missing_attribute", "missing_attribute"),
    ("cliapp:not_callable", "not_callable"),
], ids=["no-module", "no-attribute", "not-callable"])
@pytest.mark.parametrize("module", [False, True], ids=["script", "python-m"])
def test_bad_application(appdir, target, name, module):
    argv = [sys.executable, "-m", "stogie"] if module else [stogie_script()]
    port = free_port()
    proc = subprocess.run(argv + [target, "--bind", f"127.0.0.1:{port}"], cwd=appdir,
                          check=False, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    mentions = [line for line in proc.stderr.splitlines() if name in line]
    assert len(mentions) == 1, proc.stderr


def test_missing_argument_is_usage_error(appdir):
    proc = subprocess.run([stogie_script()], cwd=appdir, check=False, capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_help(appdir):
    proc = subprocess.run([stogie_script(), "--help"], cwd=appdir, check=False, capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 0
    for option in ("--bind", "--threads"):
        assert option in proc.stdout
