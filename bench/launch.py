"""Start one server on one application, for the servers that have no command line we use.

    python -m bench.launch SERVER MODULE:APP HOST PORT [--threads N] [--backlog N]

SERVER is one of: stogie, cheroot, bjoern, waitress, fastwsgi, pyruvate.  stogie and cheroot
are started through the very same ``wsgi.Server((host, port), app, numthreads=N, ...).safe_start()``
call, since stogie's ``wsgi`` module is a drop-in for cheroot's.  The settings chosen for each
peer, and why, are in bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable


def load_app(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr or "application")  # type: ignore[no-any-return]


def serve_wsgi_server(module_name: str, app: Callable[..., Any], host: str, port: int,
                      threads: int, backlog: int | None,
                      static: list[tuple[str, str]] | None = None) -> None:
    wsgi = importlib.import_module(f"{module_name}.wsgi")
    kwargs: dict[str, Any] = {"numthreads": threads}
    if backlog is not None:
        kwargs["request_queue_size"] = backlog
    server = wsgi.Server((host, port), app, **kwargs)
    if static:
        server.static = static  # stogie only: files answered by the engine
    server.safe_start()


def serve_fastwsgi(app: Callable[..., Any], host: str, port: int, workers: int) -> None:
    """fastwsgi on one libuv loop per process; ``workers`` > 1 forks that many processes."""
    import fastwsgi

    # Nagle off, as every other server here (and stogie) does: 64 KiB responses cost about
    # 10 % more CPU with Nagle on, the fastwsgi default.
    fastwsgi.server.tcp_nodelay = 1
    fastwsgi.server.backlog = 1024
    fastwsgi.server.init(app, host, port, fastwsgi.LL_ERROR, workers)
    fastwsgi.server.run()


def serve_pyruvate(app: Callable[..., Any], host: str, port: int, threads: int) -> None:
    """pyruvate with N worker threads.  max_reuse_count stays at its default 0 (a connection
    per request): pyruvate 1.6.1 answers "Connection: keep-alive" with a larger value but
    still closes the socket after the response (see bench/README.md)."""
    import pyruvate

    pyruvate.serve(app, f"{host}:{port}", threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "server", choices=["stogie", "cheroot", "bjoern", "waitress", "fastwsgi", "pyruvate"]
    )
    parser.add_argument("app", help="MODULE:APP")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=None,
                        help="listen backlog (request_queue_size for stogie/cheroot)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, for the servers that fork them (fastwsgi)")
    parser.add_argument("--static", action="append", default=[], metavar="PREFIX=DIR",
                        help="stogie only: serve DIR's files at PREFIX from the engine")
    args = parser.parse_args(argv)
    static = [(prefix, directory) for prefix, _, directory in
              (item.partition("=") for item in args.static)]
    if static and (args.server != "stogie" or not all(d for _, d in static)):
        parser.error("--static PREFIX=DIR is for stogie only")

    app = load_app(args.app)
    if args.server in ("stogie", "cheroot"):
        serve_wsgi_server(args.server, app, args.host, args.port, args.threads, args.backlog,
                          static)
    elif args.server == "bjoern":
        import bjoern

        bjoern.run(app, args.host, args.port)
    elif args.server == "waitress":
        import waitress

        kwargs: dict[str, Any] = {"threads": args.threads, "_quiet": True}
        if args.backlog is not None:
            kwargs["backlog"] = args.backlog
        waitress.serve(app, host=args.host, port=args.port, **kwargs)
    elif args.server == "fastwsgi":
        serve_fastwsgi(app, args.host, args.port, args.workers)
    elif args.server == "pyruvate":
        serve_pyruvate(app, args.host, args.port, args.threads)
    sys.exit(0)


if __name__ == "__main__":
    main()
