#!/usr/bin/env python3
"""Runs CherryPy 18.10.0's own test suite with CherryPy's server on stogie.

    python3 compat/run_cherrypy_suite.py [--scratch DIR] [--reinstall] [-- PYTEST_ARGS...]

1. Creates a scratch virtualenv (default /tmp/stogie-cherrypy-suite/venv) like
   run_cheroot_suite.py does and installs compat/cherrypy-requirements.txt into it: CherryPy
   18.10.0 from PyPI (its wheel ships `cherrypy/test/`) and what its tests import. The calling
   interpreter's stogie is put first on PYTHONPATH (nothing else of its site-packages).
2. Runs every test module of the installed `cherrypy/test/` with `-p stogie_cherrypy_plugin`,
   which selects stogie through CherryPy's `server.instance` setting (README.md's switch) and
   deselects the tests in compat/cherrypy-exclusions.txt; `-o addopts=`, no xdist, no coverage.
3. Exits with pytest's status: non-zero when any test that is not excluded fails.

Extra arguments after `--` go to pytest (e.g. `-- -k test_states -x`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from run_cheroot_suite import (
    check_stogie,
    ensure_env,
    execute,
    pytest_command,
    stogie_path,
    suite_env,
)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "cherrypy-requirements.txt"
INI = HERE / "cherrypy-suite.ini"
DEFAULT_SCRATCH = Path("/tmp/stogie-cherrypy-suite")
# pytest-services provides the `watcher_getter` fixture of the memcached session tests (which
# then skip: no memcached here).
PLUGINS = ("pytest_timeout", "pytest_services.plugin", "stogie_cherrypy_plugin")


def log(msg: str) -> None:
    print(f"[cherrypy-suite] {msg}", flush=True)


def cherrypy_test_dir(python: Path) -> Path:
    """`cherrypy/test/` of the CherryPy the venv imports, which must be the pinned one."""
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import cherrypy; print(cherrypy.__version__); print(cherrypy.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    version, init = out.stdout.split()
    if f"CherryPy=={version}" not in REQUIREMENTS.read_text().split():
        sys.exit(
            f"the venv imports CherryPy {version} from {init}, not the pinned version; "
            "run again with --reinstall"
        )
    test_dir = Path(init).parent / "test"
    if not (test_dir / "helper.py").exists():
        sys.exit(f"{test_dir} has no helper.py: is the CherryPy wheel's test package missing?")
    return test_dir


def run_suite(python: Path, pytest_args: list[str], stogie_dir: Path) -> int:
    test_dir = cherrypy_test_dir(python)
    env = suite_env(stogie_dir)
    # cheroot's webtest client (which CherryPy's tests use) otherwise waits for a key press on
    # a failed assertion, and fails on pytest's captured stdin instead of reporting it.
    env["WEBTEST_INTERACTIVE"] = "false"
    command = pytest_command(python, INI, test_dir, PLUGINS, [str(test_dir)], pytest_args)
    log(f"running {test_dir}")
    return execute(command, env, test_dir, say=log)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, pytest_args = args[:split], args[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scratch",
        type=Path,
        default=DEFAULT_SCRATCH,
        help=f"scratch directory for the venv (default {DEFAULT_SCRATCH})",
    )
    parser.add_argument(
        "--reinstall",
        action="store_true",
        help="recreate the venv even if its requirements are unchanged",
    )
    options = parser.parse_args(args)
    check_stogie()
    scratch = options.scratch.resolve()
    python = ensure_env(scratch, options.reinstall, REQUIREMENTS, only_binary="CherryPy", say=log)
    return run_suite(python, pytest_args, stogie_path(scratch))


if __name__ == "__main__":
    sys.exit(main())
