"""`stogie MODULE:APP [options]`: serve a WSGI application from the command line."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

from stogie import __version__, wsgi


class UsageError(Exception):
    """A problem with the command line or the application; reported in one line."""


def parse_bind(text: str) -> Any:
    """HOST:PORT, [IPv6]:PORT, @abstract, or a UNIX socket path."""
    if text.startswith("@"):
        return "\x00" + text[1:]
    if "/" in text or ":" not in text:
        return text
    parsed = urllib.parse.urlparse("//" + text)
    try:
        port = parsed.port
    except ValueError as exc:
        raise UsageError(f"invalid --bind {text!r}: {exc}") from None
    if parsed.hostname is None or port is None:
        raise UsageError(f"invalid --bind {text!r}: use HOST:PORT, [IPv6]:PORT, a path or @name")
    return (parsed.hostname, port)


def load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(app):
        raise UsageError(f"{spec!r} is not callable (a WSGI application is)")
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stogie", description="Serve a WSGI application with stogie.")
    parser.add_argument("app", metavar="MODULE:APP",
                        help="the application, e.g. myproject.wsgi:application")
    parser.add_argument("--bind", default="[::1]:8000", metavar="ADDRESS",
                        help="HOST:PORT, [IPv6]:PORT, a UNIX socket path, or @abstract "
                             "(default: [::1]:8000)")
    parser.add_argument("--chdir", metavar="PATH", help="change to this directory first")
    parser.add_argument("--server-name", help="the SERVER_NAME and Server header value")
    parser.add_argument("--threads", type=int, metavar="N", help="worker threads (default 10)")
    parser.add_argument("--max-threads", type=int, metavar="N",
                        help="let the pool grow up to N threads while all are busy")
    parser.add_argument("--timeout", type=float, help="socket timeout in seconds (default 10)")
    parser.add_argument("--shutdown-timeout", type=float,
                        help="seconds to let requests finish on stop (default 5)")
    parser.add_argument("--request-queue-size", type=int, help="listen backlog")
    parser.add_argument("--accepted-queue-size", type=int)
    parser.add_argument("--accepted-queue-timeout", type=float)
    parser.add_argument("--version", action="version", version=f"stogie {__version__}")
    return parser


def make_server(args: argparse.Namespace) -> wsgi.Server:
    if args.chdir:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            raise UsageError(f"cannot change to {args.chdir!r}: {exc.strerror}") from None
        sys.path.insert(0, os.getcwd())
    app = load_app(args.app)
    options: dict[str, Any] = {}
    for name, key in [("threads", "numthreads"), ("max_threads", "max"),
                      ("server_name", "server_name"), ("timeout", "timeout"),
                      ("shutdown_timeout", "shutdown_timeout"),
                      ("request_queue_size", "request_queue_size"),
                      ("accepted_queue_size", "accepted_queue_size"),
                      ("accepted_queue_timeout", "accepted_queue_timeout")]:
        value = getattr(args, name)
        if value is not None:
            options[key] = value
    try:
        return wsgi.Server(parse_bind(args.bind), app, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        server = make_server(args)
        server.prepare()
    except UsageError as exc:
        print(f"stogie: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stogie: error: cannot listen on {args.bind}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    print(f"stogie {__version__} serving {args.app} on {server.bind_addr!r}", file=sys.stderr)
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()
    except SystemExit:
        server.stop()
    finally:
        server.stop()
    return 0
