"""pytest plugin: runs cheroot's own test modules against stogie.

Load it with `-p stogie_plugin` (this directory on `sys.path`). It

- points cheroot's server classes at stogie's (see `stogie_shim`) before cheroot's test fixtures
  are imported, so `cheroot.testing`'s fixtures, the suite's `http_server` fixture and the tests'
  own `wsgi.Server(...)` calls all build stogie servers;
- replaces the two helpers that start those servers (`cheroot.testing.cheroot_server` and the
  conftest's `make_http_server`) by equivalents that fail the test at once when the server thread
  dies before the server is ready (cheroot's wait for `ready` would spin forever);
- binds the `wsgi_server`/`native_server` fixtures' servers to 0.0.0.0 rather than cheroot's
  first choice '::'. On '::' cheroot's test client connects to ::1 and sends `Host: ::1:PORT`, an
  IPv6 literal without brackets, which RFC 9110 §7.2 does not allow and http-policy.md answers
  with 400 ("invalid Host"); on 0.0.0.0 it sends `Host: 127.0.0.1:PORT`. IPv6 and dual-stack
  serving are still exercised by test_wsgi (`('::', port)`) and test_server's bind tests;
- deselects the tests listed in `exclusions.txt`, and lists them with their reasons at the end
  (`--run-excluded` runs only those instead, to check that their reasons still hold);
- registers the `flaky` marker without re-running anything (pytest-rerunfailures is not used:
  a flaky test is a failure here).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import stogie_shim
import suite_exclusions

HERE = Path(__file__).resolve().parent
EXCLUSIONS_FILE = HERE / "exclusions.txt"
CATEGORIES = {
    "internals": "reaches into cheroot's private internals",
    "policy": "pins cheroot behaviour that http-policy.md deliberately changes",
}

stogie_shim.patch_cheroot()

import cheroot.server  # noqa: E402  (after the shim on purpose)
import cheroot.testing  # noqa: E402
import cheroot.wsgi  # noqa: E402

import stogie.server  # noqa: E402
import stogie.wsgi  # noqa: E402

# Subprocesses started by the tests (test_server's thread-leak check) patch themselves through
# the scratch venv's .pth line, which needs this directory importable and where stogie lives.
os.environ[stogie_shim.SHIM_ENV] = str(Path(stogie.server.__file__).resolve().parent.parent)
_pythonpath = os.environ.get("PYTHONPATH", "")
if str(HERE) not in _pythonpath.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), _pythonpath) if p)

STARTUP_POLL = 0.05


def _start_in_thread(server: Any) -> threading.Thread:
    """Runs `server.safe_start()` in a thread and returns once the server is ready.

    Raises when the thread ends first (for example `prepare()` raised), instead of waiting for a
    `ready` that will never come.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.safe_start()
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=run)
    thread.start()
    while not server.ready:
        if not thread.is_alive():
            thread.join()
            cause = failure[0] if failure else None
            raise RuntimeError(
                f"{type(server).__module__}.{type(server).__qualname__} stopped before it was "
                f"ready: {cause!r}"
            ) from cause
        time.sleep(STARTUP_POLL)
    return thread


@contextmanager
def serving(server_factory: Any) -> Iterator[tuple[threading.Thread, Any]]:
    """Stands in for `cheroot.testing.cheroot_server`: same contract, fails fast, IPv4 first."""
    conf = dict(cheroot.testing.config[server_factory])
    port = conf.pop("bind_addr")[-1]
    server = None
    for host in (cheroot.testing.ANY_INTERFACE_IPV4, cheroot.testing.ANY_INTERFACE_IPV6):
        try:
            server = server_factory(bind_addr=(host, port), **conf)
        except OSError:
            continue
        break
    if server is None:
        raise RuntimeError(f"could not construct {server_factory!r} on '0.0.0.0' or '::'")
    server.shutdown_timeout = 0
    thread = _start_in_thread(server)
    try:
        yield thread, server
    finally:
        server.stop()
        thread.join()


def start_http_server(bind_addr: Any) -> Any:
    """Stands in for the suite conftest's `make_http_server`: same contract, fails fast."""
    server = cheroot.server.HTTPServer(bind_addr=bind_addr, gateway=cheroot.server.Gateway)
    _start_in_thread(server)
    return server


cheroot.testing.cheroot_server = serving  # type: ignore[assignment]


def pytest_plugin_registered(plugin: object, manager: object) -> None:
    if getattr(plugin, "__name__", None) == "cheroot.test.conftest":
        plugin.make_http_server = start_http_server  # type: ignore[attr-defined]


# -- exclusions (compat/suite_exclusions.py) ---------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-excluded", action="store_true",
        help="run only the tests listed in compat/exclusions.txt (to check their reasons)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flaky: pytest-rerunfailures marker; not re-run here")
    config.stash[_EXCLUSIONS] = suite_exclusions.load_exclusions(EXCLUSIONS_FILE, CATEGORIES)
    if cheroot.wsgi.Server is not stogie.wsgi.Server or set(cheroot.testing.config) != {
        stogie.wsgi.Server, stogie.server.HTTPServer,
    }:
        raise pytest.UsageError("the stogie shim is not in effect; cheroot would test itself")


_EXCLUSIONS = pytest.StashKey[list[suite_exclusions.Exclusion]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    suite_exclusions.deselect(config, items, config.stash[_EXCLUSIONS])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    suite_exclusions.report(terminalreporter, config.stash.get(_EXCLUSIONS, []), CATEGORIES,
                            "compat/exclusions.txt", "cheroot 11.1.2")


def pytest_sessionstart(session: pytest.Session) -> None:
    where = Path(cheroot.testing.__file__).parent
    ours = Path(stogie.server.__file__).resolve().parent
    sys.stderr.write(f"stogie shim: cheroot {cheroot.__version__} from {where} -> stogie "
                     f"{stogie.server.__version__} from {ours}\n")
