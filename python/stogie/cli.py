"""`stogie MODULE:APP [options]`: serve a WSGI application from the command line.

Without `--workers` and `--max-requests` the stogie process serves by itself. With either,
`stogie.supervisor` binds once and runs worker processes that share the listening socket.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

from stogie import __version__
from stogie._config import ConfigError, settings_tokens
from stogie._config import describe as describe_settings
from stogie._process import (
    GracefulStop,
    PidFile,
    UsageError,
    describe_bind,
    drop_privileges,
    inherited_socket_address,
    load_app,
    make_server,
    prepare,
    reopen_handler,
    resolve_credentials,
    setup_logging,
    socket_address,
)
from stogie._systemd import Notifier
from stogie._version import VersionAction

logger = logging.getLogger("stogie")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

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


def parse_static(items: Sequence[str], chdir: str | None) -> list[tuple[str, str]]:
    """`--static PREFIX=DIR` items as (prefix, directory) pairs; a relative DIR is relative
    to --chdir (or the current directory) and must exist."""
    mounts = []
    for item in items:
        prefix, eq, directory = item.partition("=")
        if not eq or not prefix.startswith("/") or not directory:
            raise UsageError(f"invalid --static {item!r}: use PREFIX=DIR with a URL prefix "
                             "starting with '/', e.g. /static/=/srv/static")
        if not os.path.isdir(os.path.join(chdir or "", directory)):
            raise UsageError(f"--static {item}: {directory!r} is not a directory")
        mounts.append((prefix, directory))
    return mounts


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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"stogie: error: {message} (see stogie --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive integer"  # argparse names the type in its message

def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_non_negative_int.__name__ = "non-negative integer"


def _octal(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError(text)
    return value


_octal.__name__ = "octal mode (e.g. 007)"

_SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _byte_size(text: str) -> int:
    """A byte count: digits with an optional k, M or G suffix (powers of 1024); 0 = no limit."""
    number, suffix = text.strip(), ""
    if number and number[-1].lower() in _SIZE_SUFFIXES:
        number, suffix = number[:-1], number[-1].lower()
    if not number.isdigit():
        raise ValueError(text)
    return int(number) * _SIZE_SUFFIXES[suffix]


_byte_size.__name__ = "byte size (e.g. 65536, 64k, 1G)"


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
    parser.add_argument("app", metavar="MODULE:APP", nargs="?",
                        help="the application, e.g. myproject.wsgi:application "
                             "(APP may be dotted: mod:obj.wsgi_app)")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="read settings from this TOML file (keys named like the long "
                             "options); without it, [tool.stogie] in ./pyproject.toml is read "
                             "if present. Precedence: command line > STOGIE_CMD_ARGS > "
                             "STOGIE_<OPTION> variables > file > defaults")
    parser.add_argument("--print-config", action="store_true",
                        help="print the merged settings (command line, environment, file) as "
                             "TOML and exit")

    g = parser.add_argument_group("application")
    g.add_argument("--chdir", metavar="DIR",
                   help="change to DIR before importing the application (relative paths in "
                        "other options are then relative to DIR)")
    g.add_argument("--factory", action=argparse.BooleanOptionalAction, default=False,
                   help="APP is a callable taking no arguments that returns the application")

    g = parser.add_argument_group("listening")
    g.add_argument("--bind", default="[::1]:8000", metavar="ADDRESS",
                   help="HOST:PORT, [IPv6]:PORT, a UNIX socket path (or unix:PATH), or @name "
                        "for an abstract socket (default: [::1]:8000); ignored when systemd "
                        "passes a socket (LISTEN_FDS)")
    g.add_argument("--request-queue-size", type=int, metavar="N",
                   help="listen backlog (default 5; stogie always uses at least 1024)")
    g.add_argument("--http2", action=argparse.BooleanOptionalAction,
                   help="serve HTTP/2: h2 offered in TLS ALPN, and cleartext connections "
                        "that open with the HTTP/2 preface (default: on); --no-http2 "
                        "serves HTTP/1.x only")

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

    g = parser.add_argument_group("limits")
    g.add_argument("--max-request-header-size", type=_byte_size, metavar="BYTES",
                   help="largest request head, request line and fields (431 beyond it; "
                        "default 0: cheroot's unlimited, still capped at 64 KiB and 100 "
                        "fields). Suffixes k, M, G are accepted")
    g.add_argument("--max-request-body-size", type=_byte_size, metavar="BYTES",
                   help="largest request body (413 beyond it; default 0: unlimited). "
                        "Suffixes k, M, G are accepted: 1G is a sensible production limit")
    g.add_argument("--buffer-request-body", action=argparse.BooleanOptionalAction,
                   help="read each request body completely before the application runs, "
                        "holding no thread while it arrives (default: on); --no-buffer-"
                        "request-body lets the application stream it from the socket")
    g.add_argument("--request-body-memory-limit", type=_byte_size, metavar="BYTES",
                   help="a buffered body stays in memory up to this size, beyond it in a "
                        "temporary file in TMPDIR (default 1M)")
    g.add_argument("--request-body-spool-limit", type=_byte_size, metavar="BYTES",
                   help="bytes of buffered bodies in temporary files across the process: "
                        "503 beyond it, 413 for one body larger than it (default 1G; 0: no "
                        "temporary files)")
    g.add_argument("--request-body-min-rate", type=_byte_size, metavar="BYTES",
                   help="bytes per second a request body must keep up once --timeout has "
                        "passed, 408 below it (default 500; 0: no minimum)")

    g = parser.add_argument_group("server identity and proxies")
    g.add_argument("--server-name", metavar="NAME",
                   help="SERVER_NAME and the Server header (default stogie/VERSION)")
    g.add_argument("--forwarded-allow-ips", metavar="LIST",
                   help="comma-separated proxy addresses or networks (or '*') whose "
                        "Forwarded/X-Forwarded-For/-Proto/-Host headers set REMOTE_ADDR, "
                        "wsgi.url_scheme and HTTP_HOST (default: none)")
    g.add_argument("--proxy-protocol", action=argparse.BooleanOptionalAction,
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
    g.add_argument("--max-requests-jitter", type=_non_negative_int, metavar="N", default=0,
                   help="add a random 0..N to each worker's --max-requests, so workers are not "
                        "all replaced at once (default 0)")
    g.add_argument("--pid", metavar="FILE", help="write the (supervisor's) process id to FILE")
    g.add_argument("--reload", action="store_true",
                   help="development: reload the application when a watched file changes "
                        "(needs the watchfiles package: pip install 'stogie[reload]'); a module "
                        "that fails to import leaves the previous code serving")
    g.add_argument("--reload-dir", action="append", metavar="DIR",
                   help="watch this directory (repeatable; default: the current directory)")
    g.add_argument("--reload-include", action="append", metavar="GLOB",
                   help="reload on changes to files matching GLOB (repeatable; default *.py)")
    g.add_argument("--user", metavar="USER",
                   help="after binding, run as this user (name or uid): port 80/443 without "
                        "root workers (needs to start as root)")
    g.add_argument("--group", metavar="GROUP",
                   help="after binding, run as this group (name or gid; default: the --user's "
                        "primary group)")
    g.add_argument("--umask", type=_octal, metavar="MASK",
                   help="the process umask, octal (e.g. 007): the mode of a UNIX socket and of "
                        "files stogie creates")

    g = parser.add_argument_group("static files")
    g.add_argument("--static", action="append", metavar="PREFIX=DIR",
                   help="serve the files of DIR under the URL prefix PREFIX from the engine, "
                        "without the application (repeatable), e.g. /static/=/srv/static; "
                        "a missing file under PREFIX is a 404")

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


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
               cwd: Path | None = None) -> argparse.Namespace:
    """Parses and checks the command line, over the settings of the config file and the
    environment (see stogie._config); UsageError for what argparse cannot check."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("-c", "--config")
    config_path = first.parse_known_args(argv)[0].config
    try:
        tokens, app = settings_tokens(parser, config_path,
                                      os.environ if environ is None else environ,
                                      Path.cwd() if cwd is None else cwd)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    args = parser.parse_args([*tokens, *argv])
    if args.app is None:
        args.app = app
    if args.print_config:
        return args
    if args.app is None:
        parser.error("the application MODULE:APP is required (or `app` in the config file)")
    args.bind_addr = parse_bind(args.bind)
    args.metrics_addr = (parse_bind(args.metrics_bind, "--metrics-bind")
                         if args.metrics_bind is not None else None)
    if args.forwarded_allow_ips is not None:
        args.forwarded_allow_ips = parse_allow_ips(args.forwarded_allow_ips)
    args.static_mounts = parse_static(args.static or [], args.chdir)
    # None (not given) leaves the server's default alone; --no-proxy-protocol turns it off.
    if (args.ssl_certificate is None) != (args.ssl_private_key is None):
        raise UsageError("--ssl-certificate and --ssl-private-key go together")
    if args.ssl_certificate_chain is not None and args.ssl_certificate is None:
        raise UsageError("--ssl-certificate-chain needs --ssl-certificate")
    if args.access_log_format is not None and args.access_log is None:
        raise UsageError("--access-log-format needs --access-log")
    if args.max_threads is not None and args.max_threads == 0:
        raise UsageError("--max-threads must be -1 (fixed pool) or at least --threads")
    if args.reload and importlib.util.find_spec("watchfiles") is None:
        raise UsageError("--reload needs the watchfiles package: pip install 'stogie[reload]'")
    if (args.reload_dir or args.reload_include) and not args.reload:
        raise UsageError("--reload-dir and --reload-include go with --reload")
    if args.max_requests_jitter and args.max_requests is None:
        raise UsageError("--max-requests-jitter needs --max-requests")
    args.credentials = (resolve_credentials(args.user, args.group)
                        if args.user is not None or args.group is not None else None)
    return args


def uses_supervisor(args: argparse.Namespace) -> bool:
    """Worker processes are used with --workers (any N), --max-requests or --reload (the
    supervisor's reload is what keeps the old code serving when the new one cannot import)."""
    return args.workers is not None or args.max_requests is not None or args.reload


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
    notifier = Notifier()
    stopper = GracefulStop(srv, on_stop=notifier.stopping)
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
    stop_watchdog = None
    try:
        pidfile.write()
        logger.info("stogie %s serving %s on %s%s (pid %d)", __version__, args.app,
                    describe_bind(srv.bind_addr), " (socket from systemd)" if inherited else "",
                    os.getpid())
        if metrics is not None:
            logger.info("metrics on %s/metrics", describe_bind(socket_address(metrics.sock)))
        if args.credentials is not None:
            drop_privileges(args.credentials)
        notifier.ready(f"serving on {describe_bind(srv.bind_addr)}")
        stop_watchdog = notifier.watchdog_thread()
        stopper.serving()
        with suppress(KeyboardInterrupt):
            srv.serve()
    finally:
        if stop_watchdog is not None:
            stop_watchdog.set()
        stopper.join()
        notifier.stopping()
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
    if args.print_config:
        print(describe_settings(args, build_parser()), end="")
        return 0
    setup_logging(args.log_level)
    if args.umask is not None:
        os.umask(args.umask)
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
