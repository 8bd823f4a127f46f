"""pytest plugin: runs CherryPy's own test suite with CherryPy's server on stogie.

Load it with `-p stogie_cherrypy_plugin` (this directory on `sys.path`). It

- switches CherryPy to stogie the way README.md documents, before any test module is imported:
  `server.instance: 'stogie.cherrypy.CPWSGIServer'` in CherryPy's config. The suite's helper
  resets CherryPy's config between test classes, but `server.instance` lands on the
  `cherrypy.server` object, which stays. The same entry is added to the `[global]` section of
  the config files the suite writes for the CherryPy processes it starts (`helper.CPProcess`),
  and made the default of every additional server (`server.NAME.*`) the suite configures;
- fails a test during which `cherrypy.server` or an additional server ran something other than
  stogie, except where the test itself builds a cheroot server (FOREIGN_SERVERS); those are
  listed at the end;
- deselects the tests in `cherrypy-exclusions.txt` (`--run-excluded` runs only those).

`--on-cheroot` leaves CherryPy on its stock cheroot server and runs every test, for comparing
the two servers with the same settings.

Nothing here patches CherryPy's or cheroot's code: the switch is CherryPy's own setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cherrypy
import cherrypy._cpserver
import pytest
import suite_exclusions

import stogie.cherrypy

HERE = Path(__file__).resolve().parent
EXCLUSIONS_FILE = HERE / "cherrypy-exclusions.txt"
CATEGORIES = {
    "policy": "pins cheroot behaviour that http-policy.md deliberately changes",
    "upstream": "fails on CherryPy's stock cheroot 11.1.2 server too",
}
#: The config line that selects stogie, as a CherryPy config file spells it.
CONFIG_LINE = f"server.instance: {stogie.cherrypy.INSTANCE!r}\n"

#: Tests that build a cheroot server themselves, by module (or `module::server name`), with why.
FOREIGN_SERVERS = {
    "test_native.py": "builds cherrypy._cpnative_server.CPHTTPServer, a cheroot.server.HTTPServer "
    "with CherryPy's native gateway, as cherrypy.server.httpserver",
    "test_config_server.py::2": "configures 'server.2.instance' as cheroot's "
    "cherrypy._cpwsgi_server.CPWSGIServer (its main server and 'server.yetanother' run stogie)",
}


def switch_to_stogie() -> None:
    """CherryPy's `server.instance` setting, for `cherrypy.server` and every server after it."""
    cherrypy.config.update({"server.instance": stogie.cherrypy.INSTANCE})
    # Additional servers (`server.NAME.socket_port` in a config) are new Server objects: the
    # class default covers them unless a test names an instance of its own.
    cherrypy._cpserver.Server.instance = stogie.cherrypy.INSTANCE
    from cherrypy.test import helper

    template = helper.CPProcess.config_template
    if CONFIG_LINE not in template:
        helper.CPProcess.config_template = template.replace(
            "[global]\n", "[global]\n" + CONFIG_LINE, 1
        )


def running_servers() -> Iterator[tuple[str, Any]]:
    """(name, server object) of each CherryPy server adapter that is serving now."""
    adapters = {"": cherrypy.server, **getattr(cherrypy, "servers", {})}
    for name, adapter in adapters.items():
        if getattr(adapter, "running", False):
            yield name, adapter.httpserver


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-excluded",
        action="store_true",
        help="run only the tests listed in compat/cherrypy-exclusions.txt (to check their reasons)",
    )
    parser.addoption(
        "--on-cheroot",
        action="store_true",
        help="run the whole suite on CherryPy's stock cheroot server instead (for comparison)",
    )


_EXCLUSIONS = pytest.StashKey[list[suite_exclusions.Exclusion]]()
_FOREIGN = pytest.StashKey[dict[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_EXCLUSIONS] = suite_exclusions.load_exclusions(EXCLUSIONS_FILE, CATEGORIES)
    config.stash[_FOREIGN] = {}
    if config.getoption("on_cheroot"):
        return
    switch_to_stogie()
    if cherrypy.server.instance != stogie.cherrypy.INSTANCE:
        raise pytest.UsageError("server.instance did not reach cherrypy.server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("on_cheroot"):
        suite_exclusions.deselect(config, items, config.stash[_EXCLUSIONS])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if item.config.getoption("on_cheroot"):
        return result
    module = Path(str(item.path)).name
    for name, server in running_servers():
        if isinstance(server, stogie.cherrypy.CPWSGIServer):
            continue
        what = f"{type(server).__module__}.{type(server).__qualname__}"
        key = module if module in FOREIGN_SERVERS else f"{module}::{name}"
        if key not in FOREIGN_SERVERS:
            raise AssertionError(
                f"server {name or 'cherrypy.server'!r} is {what}, not stogie: the switch to "
                "stogie did not hold"
            )
        item.config.stash[_FOREIGN][item.nodeid] = f"{what} ({FOREIGN_SERVERS[key]})"
    return result


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    foreign = config.stash.get(_FOREIGN, {})
    if foreign:
        terminalreporter.section("tests that also ran a cheroot server of their own choosing")
        for nodeid, what in foreign.items():
            terminalreporter.write_line(f"  {nodeid}: {what}")
    on_cheroot = config.getoption("on_cheroot")
    suite_exclusions.report(
        terminalreporter,
        config.stash.get(_EXCLUSIONS, []),
        CATEGORIES,
        "compat/cherrypy-exclusions.txt",
        f"CherryPy {cherrypy.__version__}",
        server="cheroot (--on-cheroot)" if on_cheroot else "stogie",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    import sys

    sys.stderr.write(
        f"CherryPy {cherrypy.__version__} from {Path(cherrypy.__file__).parent}, "
        f"server.instance = {cherrypy.server.instance!r}, stogie from "
        f"{Path(stogie.cherrypy.__file__).resolve().parent}\n"
    )
