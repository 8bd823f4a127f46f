"""`stogie MODULE:APP [options]`: serve a WSGI application from the command line.

Without `--workers` and `--max-requests` the stogie process serves by itself. With either,
`stogie.supervisor` binds once and runs worker processes that share the listening socket.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Callable, NoReturn

from stogie import __version__, server, wsgi
from stogie._version import VersionAction
from stogie.ssl import BuiltinSSLAdapter

logger = logging.getLogger("stogie")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

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
)


class UsageError(Exception):
    """A problem with the command line or the application; reported in one line, status 2."""


# -- parsing ----------------------------------------------------------------------------------


def parse_bind(text: str, option: str = "--bind") -> Any:
    """HOST:PORT, [IPv6]:PORT, a UNIX socket path (`unix:PATH` too) or @abstract."""
    if text.startswith("unix:"):
        text = text[len("unix:"):]
        if not text:
            raise UsageError(f"invalid {option} 'unix:': a socket path is missing")
        return text
    if text.startswith("@"):
        return "\x00" + text[1:]
    if text.isdigit():
        raise UsageError(f"invalid {option} {text!r}: give HOST:PORT, e.g. 127.0.0.1:{text} "
                         f"or [::]:{text}")
    if "/" in text or ":" not in text:
        return text
    parsed = urllib.parse.urlparse("//" + text)
    try:
        port = parsed.port
    except ValueError as exc:
        raise UsageError(f"invalid {option} {text!r}: {exc}") from None
    if parsed.hostname is None or port is None:
        raise UsageError(f"invalid {option} {text!r}: use HOST:PORT, [IPv6]:PORT, a path "
                         "or @name")
    return (parsed.hostname, port)


def parse_allow_ips(text: str) -> list[str]:
    """`--forwarded-allow-ips`: comma-separated addresses or networks, or `*`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError("--forwarded-allow-ips: give addresses, networks (CIDR) or '*'")
    if "*" in items:
        return ["*"]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(f"--forwarded-allow-ips: {item!r} is not an IP address or "
                             "network") from None
    return items


def describe_bind(addr: Any) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(addr, bytes):
        addr = os.fsdecode(addr)
    return "@" + addr[1:] if addr.startswith("\x00") else f"unix:{addr}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"stogie: error: {message} (see stogie --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive integer"  # argparse names the type in its message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stogie",
        usage="stogie MODULE:APP [options]",
        description="Serve a WSGI application with stogie. MODULE is imported from the current "
                    "directory (or --chdir); APP defaults to 'application'.",
        epilog="Signals: SIGTERM and SIGINT stop gracefully (requests in progress get "
               "--shutdown-timeout seconds to finish); SIGUSR1 reopens the access log; with "
               "--workers, SIGHUP reloads the application (new workers import it afresh, old "
               "ones finish their requests) and a worker that dies is restarted. "
               "Docs: docs/configuration.md and docs/deployment.md.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34),
    )
    parser.add_argument("app", metavar="MODULE:APP",
                        help="the application, e.g. myproject.wsgi:application "
                             "(APP may be dotted: mod:obj.wsgi_app)")
    parser.add_argument("--version", action=VersionAction)

    g = parser.add_argument_group("application")
    g.add_argument("--chdir", metavar="DIR",
                   help="change to DIR before importing the application (relative paths in "
                        "other options are then relative to DIR)")
    g.add_argument("--factory", action="store_true",
                   help="APP is a callable taking no arguments that returns the application")

    g = parser.add_argument_group("listening")
    g.add_argument("--bind", default="[::1]:8000", metavar="ADDRESS",
                   help="HOST:PORT, [IPv6]:PORT, a UNIX socket path (or unix:PATH), or @name "
                        "for an abstract socket (default: [::1]:8000); ignored when systemd "
                        "passes a socket (LISTEN_FDS)")
    g.add_argument("--request-queue-size", type=int, metavar="N",
                   help="listen backlog (default 5; stogie always uses at least 1024)")

    g = parser.add_argument_group("threads and timeouts (per worker process)")
    g.add_argument("--threads", type=_positive_int, metavar="N",
                   help="worker threads (default 10)")
    g.add_argument("--max-threads", type=int, metavar="N",
                   help="let the pool grow up to N threads while every thread is busy "
                        "(default -1: fixed at --threads)")
    g.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="socket timeout and keep-alive idle time (default 10)")
    g.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                   help="seconds requests in progress get to finish on stop (default 5)")
    g.add_argument("--accepted-queue-size", type=int, metavar="N",
                   help="requests that may wait for a free thread before 503s start "
                        "(default -1: unlimited)")
    g.add_argument("--accepted-queue-timeout", type=float, metavar="SECONDS",
                   help="how long a request beyond --accepted-queue-size waits before "
                        "a 503 (default 10)")

    g = parser.add_argument_group("server identity and proxies")
    g.add_argument("--server-name", metavar="NAME",
                   help="SERVER_NAME and the Server header (default stogie/VERSION)")
    g.add_argument("--forwarded-allow-ips", metavar="LIST",
                   help="comma-separated proxy addresses or networks (or '*') whose "
                        "Forwarded/X-Forwarded-For/-Proto/-Host headers set REMOTE_ADDR, "
                        "wsgi.url_scheme and HTTP_HOST (default: none)")
    g.add_argument("--proxy-protocol", action="store_true",
                   help="expect a PROXY protocol (v1/v2) header on every connection")

    g = parser.add_argument_group("TLS")
    g.add_argument("--ssl-certificate", metavar="PEM",
                   help="serve HTTPS with this certificate (with --ssl-private-key)")
    g.add_argument("--ssl-private-key", metavar="PEM", help="the certificate's private key")
    g.add_argument("--ssl-certificate-chain", metavar="PEM",
                   help="intermediate certificates sent after the certificate")

    g = parser.add_argument_group("processes")
    g.add_argument("--workers", type=_positive_int, metavar="N",
                   help="run N worker processes under a supervisor that restarts them, "
                        "reloads them on SIGHUP and recycles them (--max-requests); without "
                        "it, stogie serves in its own process")
    g.add_argument("--max-requests", type=_positive_int, metavar="N",
                   help="replace a worker process after about N requests (implies a "
                        "supervisor, with --workers 1 unless given)")
    g.add_argument("--pid", metavar="FILE", help="write the (supervisor's) process id to FILE")

    g = parser.add_argument_group("logging and metrics")
    g.add_argument("--log-level", default="info", choices=LOG_LEVELS, type=str.lower,
                   metavar="LEVEL",
                   help="stogie's own log on stderr: debug, info, warning, error or critical "
                        "(default info)")
    g.add_argument("--access-log", metavar="PATH|-",
                   help="write an access log line per request to PATH, or stdout with '-' "
                        "(default: no access log)")
    g.add_argument("--access-log-format", metavar="FMT",
                   help="access log line in Apache directives: %%h %%l %%u %%t %%r %%s %%>s "
                        "%%b %%B %%D %%T %%m %%U %%q %%H %%{Header}i (default: the "
                        "combined format)")
    g.add_argument("--metrics-bind", metavar="ADDRESS",
                   help="serve Prometheus metrics at http://ADDRESS/metrics (HOST:PORT, "
                        "[IPv6]:PORT, a UNIX path or @name)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses and checks the command line; UsageError for values argparse cannot check."""
    args = build_parser().parse_args(argv)
    args.bind_addr = parse_bind(args.bind)
    args.metrics_addr = (parse_bind(args.metrics_bind, "--metrics-bind")
                         if args.metrics_bind is not None else None)
    if args.forwarded_allow_ips is not None:
        args.forwarded_allow_ips = parse_allow_ips(args.forwarded_allow_ips)
    if not args.proxy_protocol:
        args.proxy_protocol = None      # not given: leave the server's default alone
    if (args.ssl_certificate is None) != (args.ssl_private_key is None):
        raise UsageError("--ssl-certificate and --ssl-private-key go together")
    if args.ssl_certificate_chain is not None and args.ssl_certificate is None:
        raise UsageError("--ssl-certificate-chain needs --ssl-certificate")
    if args.access_log_format is not None and args.access_log is None:
        raise UsageError("--access-log-format needs --access-log")
    if args.max_threads is not None and args.max_threads == 0:
        raise UsageError("--max-threads must be -1 (fixed pool) or at least --threads")
    return args


def uses_supervisor(args: argparse.Namespace) -> bool:
    """Worker processes are used with --workers (any N) or --max-requests."""
    return args.workers is not None or args.max_requests is not None


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
    if args.ssl_certificate is not None:
        try:
            srv.ssl_adapter = BuiltinSSLAdapter(args.ssl_certificate, args.ssl_private_key,
                                                args.ssl_certificate_chain)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    return srv


def inherited_socket_address() -> Any:
    """The address of the socket systemd passed (LISTEN_FDS), or None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    try:
        sock = socket.socket(fileno=3)
    except OSError:
        return None                               # not a socket: let the server complain
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

    def __init__(self, srv: server.HTTPServer, log_level: int = logging.INFO) -> None:
        self.server = srv
        self.log_level = log_level
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


def error(message: str) -> int:
    print(f"stogie: error: {message}", file=sys.stderr, flush=True)
    return 2


# -- single-process mode ----------------------------------------------------------------------


def serve_in_process(args: argparse.Namespace) -> int:
    """Serves in this process until SIGTERM/SIGINT; the exit status."""
    app = load_app(args.app, args.factory)
    inherited = inherited_socket_address()
    srv = make_server(args, app, bind_addr=inherited)
    metrics = None
    pidfile = PidFile(args.pid)
    if args.metrics_addr is not None:
        from stogie import metrics as metrics_module
        try:
            sock = metrics_module.bind_socket(args.metrics_addr)
        except OSError as exc:
            raise UsageError(f"cannot listen on --metrics-bind {args.metrics_bind}: "
                             f"{exc.strerror or exc}") from None
        pid = os.getpid()
        metrics = metrics_module.MetricsEndpoint(sock, lambda: metrics_module.render(
            [(pid, srv._engine_stats())], extra=[("workers", "gauge", "Serving processes.", 1)]))
    stopper = GracefulStop(srv)
    stopper.install()
    signal.signal(signal.SIGHUP, lambda signum, frame: logger.warning(
        "SIGHUP ignored: reloading needs worker processes (--workers N)"))
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        prepare(srv, args)
    except UsageError:
        if metrics is not None:
            metrics.close()
        raise
    signal.signal(signal.SIGUSR1, reopen_handler(srv))
    stop_metrics = metrics.start_thread() if metrics is not None else None
    try:
        pidfile.write()
        logger.info("stogie %s serving %s on %s%s (pid %d)", __version__, args.app,
                    describe_bind(srv.bind_addr), " (socket from systemd)" if inherited else "",
                    os.getpid())
        if metrics is not None:
            logger.info("metrics on %s/metrics", describe_bind(socket_address(metrics.sock)))
        stopper.serving()
        with suppress(KeyboardInterrupt):
            srv.serve()
    finally:
        stopper.join()
        srv.stop()
        if stop_metrics is not None:
            stop_metrics()
        pidfile.remove()
    return 0


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as exc:
        return error(str(exc))
    setup_logging(args.log_level)
    if args.chdir:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            return error(f"cannot change to --chdir {args.chdir!r}: {exc.strerror or exc}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if uses_supervisor(args):
            from stogie.supervisor import Supervisor
            return Supervisor(args).run()
        return serve_in_process(args)
    except UsageError as exc:
        return error(str(exc))
    except KeyboardInterrupt:                     # Ctrl-C before serving, e.g. in a slow import
        return 130
