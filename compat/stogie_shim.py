"""Points cheroot's public server classes at stogie's, so cheroot's tests build stogie servers.

cheroot's test suite reaches its servers in three ways: `from cheroot import wsgi` then
`wsgi.Server(...)`, `from ..server import HTTPServer, Gateway` (its conftest and test_server),
and `cheroot.testing.config`, a dict keyed by the class objects `cheroot.wsgi.Server` and
`cheroot.server.HTTPServer` that is built when `cheroot.testing` is first imported. Replacing the
module attributes before any of those modules is imported covers all three with the same class
objects, which is what keeps the `config[factory]` lookups working.

Used by the pytest plugin (`stogie_plugin`) and, for subprocesses started by the tests, by a
`.pth` line that `run_cheroot_suite.py` writes into its scratch virtualenv, which calls
`activate_from_env()` (a no-op unless `STOGIE_CHEROOT_SHIM` is set in the environment).
"""

from __future__ import annotations

import os
import sys
import traceback

#: Set by the plugin for the processes the tests start: the directory that holds the `stogie`
#: package. The scratch venv's .pth line patches only when it is set.
SHIM_ENV = "STOGIE_CHEROOT_SHIM"
#: Exit status of a subprocess whose patch failed (it must not go on to test cheroot itself).
SHIM_FAILED_EXIT = 97

#: cheroot.wsgi names that are replaced by the stogie.wsgi object of the same name.
WSGI_NAMES = (
    "Server", "Gateway", "Gateway_10", "Gateway_u0", "PathInfoDispatcher", "wsgi_gateways",
    "WSGIServer", "WSGIGateway", "WSGIGateway_10", "WSGIGateway_u0", "WSGIPathInfoDispatcher",
)

#: cheroot.server names that are replaced by the stogie.server object of the same name.
SERVER_NAMES = ("HTTPServer", "Gateway")

_patched = False


def patch_cheroot() -> None:
    """Replaces cheroot's server classes by stogie's; idempotent."""
    global _patched
    if _patched:
        return
    if "cheroot.testing" in sys.modules:
        raise RuntimeError(
            "cheroot.testing was imported before the stogie shim: its `config` is keyed by "
            "cheroot's own classes, so its fixtures would build cheroot servers"
        )
    import cheroot.server
    import cheroot.wsgi

    import stogie.server
    import stogie.wsgi

    for name in WSGI_NAMES:
        setattr(cheroot.wsgi, name, getattr(stogie.wsgi, name))
    for name in SERVER_NAMES:
        setattr(cheroot.server, name, getattr(stogie.server, name))
    _patched = True


def patched() -> bool:
    """Whether `patch_cheroot()` has run in this interpreter."""
    return _patched


def activate_from_env() -> None:
    """Patches this interpreter if the plugin asked for it (see SHIM_ENV); runs from a .pth line.

    `.pth` lines run while `site` is still adding directories, before the base interpreter's
    site-packages (where stogie is installed) are on sys.path; hence the directory in SHIM_ENV.
    A failure ends the process: a subprocess that tested cheroot instead would pass silently.
    """
    stogie_dir = os.environ.get(SHIM_ENV)
    if not stogie_dir:
        return
    try:
        if stogie_dir not in sys.path:
            sys.path.append(stogie_dir)
        patch_cheroot()
    except BaseException:  # noqa: BLE001  (reported, then the process ends)
        traceback.print_exc()
        sys.stderr.write(f"stogie shim: could not patch cheroot (from {SHIM_ENV}={stogie_dir!r})\n")
        sys.stderr.flush()
        os._exit(SHIM_FAILED_EXIT)
