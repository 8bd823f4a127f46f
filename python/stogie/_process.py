"""Process plumbing shared by the single-process command (cli.py) and the worker processes
of the supervisor (supervisor.py): loading the application, building the server from the
command line, the pid file, graceful stops and signal handlers. Imports neither of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Callable

from stogie import server, wsgi
from stogie.ssl import BuiltinSSLAdapter

logger = logging.getLogger("stogie")

#: CLI option → `wsgi.Server` constructor argument.
SERVER_ARGS = (
    ("threads", "numthreads"),
    ("max_threads", "max"),
    ("server_name", "server_name"),
    ("timeout", "timeout"),
    ("shutdown_timeout", "shutdown_timeout"),
    ("request_queue_size", "request_queue_size"),
    ("accepted_queue_size", "accepted_queue_size"),
    ("accepted_queue_timeout", "accepted_queue_timeout"),
)
#: CLI option → server attribute set before `prepare()` (engine features of issue 6).
SERVER_ATTRS = (
    ("access_log", "access_log"),
    ("access_log_format", "access_log_format"),
    ("forwarded_allow_ips", "forwarded_allow_ips"),
    ("proxy_protocol", "proxy_protocol"),
    ("max_request_header_size", "max_request_header_size"),
    ("max_request_body_size", "max_request_body_size"),
    ("buffer_request_body", "buffer_request_body"),
    ("request_body_memory_limit", "request_body_memory_limit"),
    ("request_body_spool_limit", "request_body_spool_limit"),
    ("request_body_min_rate", "request_body_min_rate"),
    ("http2", "http2"),
)


class UsageError(Exception):
    """A problem with the command line or the application; reported in one line, status 2."""


def describe_bind(addr: Any) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(addr, bytes):
        addr = os.fsdecode(addr)
    return "@" + addr[1:] if addr.startswith("\x00") else f"unix:{addr}"


# -- the application and the server -----------------------------------------------------------


def load_app(spec: str, factory: bool = False) -> Any:
    """Imports `module[:attr]` (attr defaults to `application`; dotted paths allowed).

    The current directory comes first on `sys.path`. With `factory`, the object found is called
    without arguments and its result is the application. Every failure is a UsageError.
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if not module_name:
        raise UsageError(f"invalid application {spec!r}: use MODULE:APP")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise UsageError(f"{spec!r} is not callable (--factory needs a function that "
                             "returns the application)")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"application factory {spec!r} failed: "
                             f"{type(exc).__name__}: {exc}") from None
        if isinstance(obj, type) and issubclass(obj, server.Gateway):
            return obj
        if not callable(obj):
            raise UsageError(f"application factory {spec!r} returned {type(obj).__name__}, "
                             "which is not a WSGI application")
        return obj
    if not callable(obj):
        raise UsageError(f"{spec!r} is not callable (a WSGI application is)")
    return obj


class _MultiprocessEnviron:
    """Mixin for servers in worker processes: `wsgi.multiprocess` is True."""

    def _base_environ(self) -> dict:
        env: dict = super()._base_environ()  # type: ignore[misc]
        env["wsgi.multiprocess"] = True
        return env


def make_server(args: argparse.Namespace, app: Any, bind_addr: Any = None,
                multiprocess: bool = False) -> server.HTTPServer:
    """The server for `app`, configured from the command line (not prepared yet).

    A `stogie.server.Gateway` subclass (the native, non-WSGI API) is served with
    `server.HTTPServer`; anything else is a WSGI application for `wsgi.Server`.
    """
    addr = args.bind_addr if bind_addr is None else bind_addr
    options = {key: getattr(args, name) for name, key in SERVER_ARGS
               if getattr(args, name) is not None}
    native = isinstance(app, type) and issubclass(app, server.Gateway)
    base: type[server.HTTPServer] = server.HTTPServer if native else wsgi.Server
    cls: Any = type(base.__name__, (_MultiprocessEnviron, base), {}) if multiprocess else base
    try:
        if native:
            srv = cls(addr, app, minthreads=options.pop("numthreads", 10),
                      maxthreads=options.pop("max", -1),
                      server_name=options.pop("server_name", None))
            for key, value in options.items():
                setattr(srv, key, value)
        else:
            srv = cls(addr, app, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    for name, attr in SERVER_ATTRS:
        value = getattr(args, name)
        if value is not None:
            setattr(srv, attr, value)
    try:
        srv.static = getattr(args, "static_mounts", None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.ssl_certificate is not None:
        try:
            srv.ssl_adapter = BuiltinSSLAdapter(args.ssl_certificate, args.ssl_private_key,
                                                args.ssl_certificate_chain)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    return srv


def inherited_socket_address() -> Any:
    """The address of the socket systemd passed (LISTEN_FDS), or None."""
    try:
        sock = server.inherited_socket()
    except OSError:
        return None                               # not a socket: let the server complain
    if sock is None:
        return None
    try:
        return socket_address(sock)
    finally:
        sock.detach()


def socket_address(sock: socket.socket) -> Any:
    """A bound socket's address in `bind_addr` form."""
    name = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return tuple(name[:2])
    return os.fsdecode(name) if isinstance(name, bytes) else name


# -- process plumbing -------------------------------------------------------------------------


def setup_logging(level: str) -> None:
    """stogie's log (the `stogie` logger, which `error_log` writes to) goes to stderr."""
    log = logging.getLogger("stogie")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
    for old in [h for h in log.handlers if getattr(h, "_stogie_cli", False)]:
        log.removeHandler(old)
    handler._stogie_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


class PidFile:
    """`--pid FILE`: written atomically, removed at exit if it still names this process."""

    def __init__(self, path: str | None) -> None:
        self.path = os.path.abspath(path) if path else None
        self.pid: int | None = None

    def write(self) -> None:
        if self.path is None:
            return
        self.pid = os.getpid()
        tmp = f"{self.path}.{self.pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.pid}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise UsageError(f"cannot write --pid file {self.path!r}: "
                             f"{exc.strerror or exc}") from None

    def remove(self) -> None:
        if self.path is None or self.pid != os.getpid():
            return
        with suppress(OSError):
            with open(self.path) as f:
                if f.read().strip() != str(self.pid):
                    return
            os.unlink(self.path)


class GracefulStop:
    """SIGTERM/SIGINT handler: stops `srv` from a helper thread (never inside the handler).

    Signals that arrive before `serving()` are remembered and acted on then; later ones are
    ignored while the stop is in progress. `request()` may also be called from any thread.
    """

    def __init__(self, srv: server.HTTPServer, log_level: int = logging.INFO,
                 on_stop: Callable[[], None] | None = None) -> None:
        self.server = srv
        self.log_level = log_level
        self.on_stop = on_stop
        self.requested = False
        self.signal_name: str | None = None
        self._serving = False
        self._once = threading.Lock()           # acquired (never released) by the first stop
        self._thread: threading.Thread | None = None

    def install(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        for signum in signals:
            signal.signal(signum, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.request()

    def request(self) -> None:
        self.requested = True
        if self._serving:
            self._start()

    def serving(self) -> None:
        self._serving = True
        if self.requested:
            self._start()

    def _start(self) -> None:
        if self._once.acquire(blocking=False):
            thread = threading.Thread(target=self._stop, name="stogie-stop")
            thread.start()
            self._thread = thread

    def _stop(self) -> None:
        if self.on_stop is not None:
            self.on_stop()
        if self.signal_name:
            logger.log(self.log_level, "%s: stopping (requests in progress get %gs)",
                       self.signal_name, float(self.server.shutdown_timeout))
        self.server.stop()

    def join(self) -> None:
        if not self._once.locked():
            return
        while self._thread is None:
            time.sleep(0.001)
        self._thread.join()


def prepare(srv: server.HTTPServer, args: argparse.Namespace) -> None:
    """`srv.prepare()`; a refused setting or an unusable address is a UsageError."""
    try:
        srv.prepare()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.bind}: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def reopen_handler(srv: server.HTTPServer) -> Callable[[int, Any], None]:
    """SIGUSR1: write out and reopen the access log (after logrotate moved it)."""

    def reopen() -> None:
        try:
            srv.reopen_access_log()
        except Exception as exc:  # noqa: BLE001 - keep serving; say why
            logger.error("cannot reopen the access log: %s", exc)
        else:
            logger.debug("access log reopened")

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=reopen, name="stogie-reopen").start()

    return handler


def resolve_credentials(user: str | None, group: str | None) -> tuple[int, int]:
    """(uid, gid) for `--user`/`--group` (names or numbers); the group defaults to the user's
    primary group. A UsageError names what does not exist."""
    import grp
    import pwd

    uid, gid = os.getuid(), os.getgid()
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise UsageError(f"--user {user!r}: no such user") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f"--group {group!r}: no such group") from None
    return uid, gid


def drop_privileges(credentials: tuple[int, int]) -> None:
    """Becomes `credentials` (uid, gid) for good, after binding; every thread follows (glibc
    applies set*id to the whole process). A UsageError says why it is not possible."""
    uid, gid = credentials
    if (os.getuid(), os.getgid()) == (uid, gid):
        return
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except PermissionError:
        raise UsageError("--user/--group: changing user needs to start as root") from None
    logger.info("running as uid %d, gid %d", uid, gid)
