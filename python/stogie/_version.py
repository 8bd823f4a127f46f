"""`stogie --version`: the versions of stogie, its Rust engine and the rustls it links."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from collections.abc import Sequence
from typing import Any

from stogie import _core


def version_lines() -> list[str]:
    """stogie's (installed distribution), the engine's and rustls' versions, one a line.

    The engine's version and rustls' are compiled into the extension module (rustls' is read
    from Cargo.lock at build time), so they describe the code that runs. They differ from the
    distribution's only when a stale build is imported, which the output then says.
    """
    engine = _core.__version__
    try:
        dist = importlib.metadata.version("stogie")
    except importlib.metadata.PackageNotFoundError:
        dist = engine  # imported from a source tree without installing
    if _core.ABI3:
        build = "stable-ABI (abi3) build for CPython 3.9 and later"
    else:
        build = f"built for CPython {sys.version_info[0]}.{sys.version_info[1]} only"
    lines = [
        f"stogie {dist}",
        f"engine {engine} ({build})",
        f"rustls {_core.RUSTLS_VERSION}",
        f"{platform.python_implementation()} {platform.python_version()}",
    ]
    if dist != engine:
        lines.append(
            f"warning: the installed package is {dist} but the engine is {engine}; reinstall stogie"
        )
    return lines


class VersionAction(argparse.Action):
    """`--version`: prints `version_lines()` and exits (argparse's own action rewraps lines)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: Any = argparse.SUPPRESS,
        help: str = "print the versions of stogie, its engine and rustls, then exit",
    ) -> None:
        super().__init__(
            option_strings=option_strings, dest=dest, default=default, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print("\n".join(version_lines()), flush=True)  # stdout, as argparse's own action
        parser.exit()
