#!/usr/bin/env python3
"""Runs cheroot 11.1.2's own tests against stogie.

    python3 compat/run_cheroot_suite.py [--scratch DIR] [--reinstall] [-- PYTEST_ARGS...]

1. Creates a scratch virtualenv (default /tmp/stogie-cheroot-suite/venv) that sees the calling
   interpreter's site-packages, where stogie is installed, and installs compat/requirements.txt
   into it: cheroot 11.1.2 from PyPI (its wheel ships `cheroot/test/`) and what its tests import.
   The install is reused while requirements.txt is unchanged. Nothing is installed anywhere else.
2. Runs `test_core`, `test_conn`, `test_wsgi`, `test_server` and `test_dispatch` from the installed
   `cheroot/test/` with `-p stogie_plugin` (cheroot's fixtures build stogie servers; the tests in
   compat/exclusions.txt are deselected), `-o addopts=`, no xdist, no coverage, no re-runs.
3. Exits with pytest's status: non-zero when any test that is not excluded fails.

Extra arguments after `--` go to pytest (e.g. `-- -k keepalive -x`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
INI = HERE / "cheroot-suite.ini"
MODULES = ("test_core", "test_conn", "test_wsgi", "test_server", "test_dispatch")
DEFAULT_SCRATCH = Path("/tmp/stogie-cheroot-suite")
STAMP = "stogie-compat.stamp"
PTH_NAME = "stogie_cheroot_shim.pth"
# Executed by `site` at every start of the venv's interpreter; patches only when the plugin has
# set the flag (so pip and other tools in the venv see the real cheroot).
PTH_LINE = (
    "import os, importlib; os.environ.get('STOGIE_CHEROOT_SHIM') and "
    "importlib.import_module('stogie_shim').activate_from_env()\n"
)
PLUGINS = ("pytest_mock", "pytest_timeout", "stogie_plugin", "cheroot.test._pytest_plugin")


def log(msg: str) -> None:
    print(f"[cheroot-suite] {msg}", flush=True)


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


def check_stogie() -> None:
    """stogie must already be importable here: this script never builds or installs it."""
    probe = subprocess.run([sys.executable, "-c", "import stogie, stogie.wsgi"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"stogie is not importable by {sys.executable}; install it first "
                 f"(pip install -e .):\n{probe.stderr}")


def ensure_env(scratch: Path, reinstall: bool, requirements: Path = REQUIREMENTS,
               only_binary: str = "cheroot", say: Callable[[str], None] = log) -> Path:
    """The scratch venv with the pinned `requirements`; returns its interpreter.

    `only_binary` names the packages that must come as wheels (those whose wheel ships the test
    package that is run).
    """
    env_dir = scratch / "venv"
    python = venv_python(env_dir)
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()
    stamp = env_dir / STAMP
    if not reinstall and python.exists() and stamp.exists() and stamp.read_text() == digest:
        say(f"reusing {env_dir}")
    else:
        started = time.monotonic()
        say(f"creating {env_dir}")
        venv.EnvBuilder(system_site_packages=True, clear=True, with_pip=True).create(env_dir)
        # --ignore-installed: everything in the requirements goes into the venv even when the
        # base interpreter has it (CherryPy brings a cheroot there), so the versions are ours.
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--ignore-installed", "--only-binary", only_binary, "-r", str(requirements)],
            check=True,
        )
        stamp.write_text(digest)
        say(f"installed {requirements.name} in {time.monotonic() - started:.0f}s")
    return python


def stogie_path(scratch: Path) -> Path:
    """A directory holding only a link to the stogie package this interpreter imports.

    The scratch venv sees the base interpreter's site-packages, which may hold another stogie
    (or none, when the caller is a virtualenv); putting this directory first on PYTHONPATH makes
    the suite and the processes it starts test the caller's stogie, and nothing else of the
    caller's site-packages.
    """
    import stogie

    package = Path(stogie.__file__).resolve().parent
    link_dir = scratch / "stogie-path"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "stogie"
    if not (link.is_symlink() and link.resolve() == package):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(package, target_is_directory=True)
    return link_dir


def execute(command: list[str], env: dict[str, str], cwd: Path,
            say: Callable[[str], None] = log) -> int:
    """Runs the suite's pytest command; returns its status (128 + N when killed by signal N)."""
    started = time.monotonic()
    status = subprocess.run(command, env=env, cwd=str(cwd)).returncode
    elapsed = time.monotonic() - started
    if status < 0:
        say(f"pytest was killed by signal {-status} after {elapsed:.0f}s (a crash in stogie?)")
        return 128 - status
    say(f"pytest exited with {status} after {elapsed:.0f}s")
    return status


def cheroot_test_dir(python: Path) -> Path:
    """`cheroot/test/` of the cheroot the venv imports, which must be the pinned one."""
    out = subprocess.run(
        [str(python), "-c", "import cheroot; print(cheroot.__version__); print(cheroot.__file__)"],
        check=True, capture_output=True, text=True,
    )
    version, init = out.stdout.split()
    test_dir = Path(init).parent / "test"
    if f"cheroot=={version}" not in REQUIREMENTS.read_text().split():
        sys.exit(f"the venv imports cheroot {version} from {init}, not the pinned version; "
                 "run again with --reinstall")
    if not test_dir.is_relative_to(site_packages(python)):
        sys.exit(f"the venv imports cheroot from {init}, outside the venv; use --reinstall")
    if not (test_dir / "conftest.py").exists():
        sys.exit(f"{test_dir} has no conftest.py: is the cheroot wheel's test package missing?")
    return test_dir


def suite_env(stogie_dir: Path) -> dict[str, str]:
    """The environment a suite runs in: stogie and compat/ first on the path, and only the
    plugins the command names (nothing else installed on the machine joins the run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(stogie_dir), str(HERE), env.get("PYTHONPATH", "")) if p)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest_command(python: Path, ini: Path, test_dir: Path, plugins: tuple[str, ...],
                   targets: list[str], pytest_args: list[str]) -> list[str]:
    """pytest over `targets` with the suite's ini file and plugins, no cache, strict markers."""
    return [
        str(python), "-m", "pytest",
        "-c", str(ini), "--rootdir", str(test_dir), "-o", "addopts=",
        "-p", "no:cacheprovider", "--strict-markers", "-ra",
        *(arg for plugin in plugins for arg in ("-p", plugin)),
        *targets,
        *pytest_args,
    ]


def run_suite(python: Path, pytest_args: list[str], stogie_dir: Path) -> int:
    test_dir = cheroot_test_dir(python)
    targets = [str(test_dir / f"{module}.py") for module in MODULES]
    command = pytest_command(python, INI, test_dir, PLUGINS, targets, pytest_args)
    log(f"running {', '.join(MODULES)} from {test_dir}")
    return execute(command, suite_env(stogie_dir), test_dir)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, pytest_args = args[:split], args[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH,
                        help=f"scratch directory for the venv (default {DEFAULT_SCRATCH})")
    parser.add_argument("--reinstall", action="store_true",
                        help="recreate the venv even if its requirements are unchanged")
    options = parser.parse_args(args)
    check_stogie()
    scratch = options.scratch.resolve()
    python = ensure_env(scratch, options.reinstall)
    # Written on every run so that a change to PTH_LINE takes effect without --reinstall.
    (site_packages(python) / PTH_NAME).write_text(PTH_LINE)
    return run_suite(python, pytest_args, stogie_path(scratch))


if __name__ == "__main__":
    sys.exit(main())
