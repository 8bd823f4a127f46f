"""`stogie --version` and the one place the version is set (Cargo.toml)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import stogie
from stogie import _core

from _apps import stogie_script

REPO = Path(__file__).resolve().parent.parent


def cargo_version() -> str:
    """`version` of the [package] table in Cargo.toml (the first `version =` line)."""
    text = (REPO / "Cargo.toml").read_text()
    match = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
    assert match, "Cargo.toml has no version line"
    return match.group(1)


def locked_rustls() -> str:
    text = (REPO / "Cargo.lock").read_text()
    found = re.findall(r'^name = "rustls"\nversion = "([^"]+)"$', text, re.MULTILINE)
    assert len(found) == 1, found
    return found[0]


def pep440(cargo: str) -> str:
    """maturin's spelling of a Cargo version in Python metadata (0.2.0-rc.1 -> 0.2.0rc1)."""
    pre = {"alpha": "a", "beta": "b", "rc": "rc"}
    base, _, tag = cargo.partition("-")
    if not tag:
        return base
    kind, _, number = tag.partition(".")
    return f"{base}{pre.get(kind, kind)}{number or 0}"


@pytest.mark.parametrize("module", [False, True], ids=["script", "python-m"])
def test_version_option(module: bool) -> None:
    argv = [sys.executable, "-m", "stogie"] if module else [stogie_script()]
    proc = subprocess.run(
        [*argv, "--version"], check=False, capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"stogie {importlib.metadata.version('stogie')}"
    assert lines[1].startswith(f"engine {_core.__version__} (")
    assert lines[2] == f"rustls {_core.RUSTLS_VERSION}"
    assert re.fullmatch(r"rustls 0\.\d+\.\d+", lines[2])
    assert lines[3].endswith(f" {sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}")
    assert not any(line.startswith("warning") for line in lines), lines
    assert proc.stderr == ""


def test_versions_agree() -> None:
    """The package metadata, the engine and `stogie.__version__` all come from Cargo.toml."""
    if not (REPO / "Cargo.toml").exists():
        pytest.skip("not run from a source tree")
    assert _core.__version__ == cargo_version()
    assert stogie.__version__ == cargo_version()
    assert importlib.metadata.version("stogie") == pep440(cargo_version())


def test_rustls_version_is_the_locked_one() -> None:
    if not (REPO / "Cargo.lock").exists():
        pytest.skip("not run from a source tree")
    assert locked_rustls() == _core.RUSTLS_VERSION
