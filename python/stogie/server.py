"""The HTTP server: cheroot's `HTTPServer` API over stogie's Rust engine.

Python binds the listening socket (cheroot's bind forms live here), keeps the attributes users
and frameworks read and write, and hands everything else to the engine: accepting, parsing,
keep-alive, bodies and responses all run in Rust with the GIL released.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Union

from stogie import _core, _inert
from stogie._core import __version__
from stogie._request import HTTPConnection, HTTPRequest, gateway_application
from stogie._settings import AccessLogSettings, EngineSettings

logger = logging.getLogger("stogie")

BindAddr = Union[tuple, str, bytes]

#: Attributes the engine reads while serving; assigning one pushes it to the engine.
_ENGINE_ATTRS = frozenset({
    "timeout", "max_request_header_size", "max_request_body_size", "protocol", "server_name",
    "nodelay", "software", "version", "wsgi_app", "gateway", "ssl_adapter",
    "peercreds_enabled", "peercreds_resolve_enabled", "keep_alive_conn_limit",
    "accepted_queue_size", "accepted_queue_timeout", "proxy_protocol", "forwarded_allow_ips",
    "access_log", "access_log_format", "thread_idle_timeout", "buffer_request_body",
    "request_body_memory_limit", "request_body_spool_limit", "request_body_min_rate", "static",
    "http2",
})

#: Bind hosts meaning "every interface": SERVER_NAME is then the machine's name.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "::0", "::0.0.0.0"})

#: The listen backlog is at least this, whatever `request_queue_size` says: cheroot's default
#: of 5 drops connections under any real load.
MIN_LISTEN_BACKLOG = 1024

_running: weakref.WeakSet[HTTPServer] = weakref.WeakSet()


@atexit.register
def _stop_running_servers() -> None:
    # Worker threads must be gone before the interpreter finalizes.
    for server in list(_running):
        server.stop()


def _report(server: HTTPServer, msg: str, level: int, exc: BaseException) -> None:
    """Called by the engine: logs `exc` through `server.error_log` with its traceback."""
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - raised only to make it the current exception
        server.error_log(msg, level, traceback=True)


def _interrupt(server: HTTPServer, exc: BaseException) -> None:
    """Called by the engine when the application raised KeyboardInterrupt or SystemExit."""
    server.interrupt = exc


class _StopSentinel:
    """`interrupt` while a stop caused by an interrupt is in progress."""


class Gateway:
    """Base class for gateways of the native (non-WSGI) server API."""

    def __init__(self, req: Any) -> None:
        self.req = req

    def respond(self) -> None:
        raise NotImplementedError


class HTTPServer:
    """An HTTP server (cheroot.server.HTTPServer's API). `wsgi.Server` is the WSGI one."""

    protocol = "HTTP/1.1"
    version = f"stogie/{__version__}"
    software: str | None = None
    ready = False
    request_queue_size = 5
    timeout: float = 10
    shutdown_timeout: float = 5
    expiration_interval = 0.5
    max_request_header_size = 0
    max_request_body_size = 0
    #: Read each request body completely before the application runs, without holding a
    #: thread (a slow upload cannot tie up the pool); False: the application reads the body
    #: from the socket as it arrives. See docs/configuration.md, "Request bodies".
    buffer_request_body = True
    #: A buffered body is kept in memory up to this many bytes, beyond it in a temporary file.
    request_body_memory_limit = 1024 * 1024
    #: Bytes of buffered bodies in temporary files across the server: beyond it, 503 (or 413
    #: for a body that alone is larger). 0: bodies beyond the memory limit get a 413.
    request_body_spool_limit = 1024 * 1024 * 1024
    #: A body must arrive at this many bytes per second once `timeout` has passed (408 below
    #: it); 0: no minimum.
    request_body_min_rate = 500
    #: Serve HTTP/2: `h2` offered in TLS's ALPN (before `http/1.1`), and a cleartext
    #: connection that opens with the HTTP/2 preface (prior knowledge). Read when the server
    #: starts. See docs/http2.md.
    http2 = True
    nodelay = True
    reuse_port = False
    #: Idle keep-alive connections hold no thread in stogie, so they are not limited by
    #: default (cheroot's default is 10).
    keep_alive_conn_limit: int | None = None
    ssl_adapter: Any = None
    #: Peers whose X-Forwarded-*/Forwarded headers are believed: IPs, CIDRs, or "*".
    forwarded_allow_ips: Any = None
    #: Connections start with a PROXY protocol (v1 or v2) header from a load balancer.
    proxy_protocol = False
    #: Threads the pool grew beyond `numthreads` (up to `max`) exit after this many idle seconds.
    thread_idle_timeout: float = 30
    #: Access log: None (off), a file path, or "-" for standard output.
    access_log: Any = None
    #: Apache-style format string; None is the combined format.
    access_log_format: str | None = None
    peercreds_enabled = False
    peercreds_resolve_enabled = False
    _static: tuple[tuple[str, str], ...] = ()
    gateway: Any = None
    #: cheroot's per-connection class, kept for code that reads or replaces it (CherryPy's
    #: CPWSGIServer sets `ConnectionClass.RequestHandlerClass`). It has no effect: the Rust
    #: engine handles connections and requests and never instantiates it or its
    #: RequestHandlerClass; `prepare()` warns (errors.NoEffectWarning) if either was replaced.
    ConnectionClass: type = HTTPConnection
    minthreads: int | None = None
    maxthreads: int | None = None
    socket: socket.socket | None = None
    _engine: _core.Engine | None = None
    _interrupt: BaseException | None = None
    _bind_addr: BindAddr = ("127.0.0.1", 8080)

    def __init__(
        self,
        bind_addr: BindAddr,
        gateway: Any,
        minthreads: int = 10,
        maxthreads: int | float = -1,
        server_name: str | None = None,
        peercreds_enabled: bool = False,
        peercreds_resolve_enabled: bool = False,
        reuse_port: bool = False,
    ) -> None:
        self.bind_addr = bind_addr
        self.gateway = gateway
        self._min_threads, self._max_threads = thread_limits(minthreads, maxthreads)
        self.server_name = server_name if server_name else self.version
        self.peercreds_enabled = peercreds_enabled
        self.peercreds_resolve_enabled = peercreds_resolve_enabled and peercreds_enabled
        self.reuse_port = reuse_port
        self.clear_stats()

    # -- attributes -------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "nodelay" and self.__dict__.get("socket") is not None:
            self._apply_nodelay()
        if name in _ENGINE_ATTRS and self.__dict__.get("_engine") is not None:
            self._configure_engine()

    def __str__(self) -> str:
        return f"{self.__module__}.{self.__class__.__name__}({self.bind_addr!r})"

    @property
    def bind_addr(self) -> BindAddr:
        """The address to listen on: (host, port), a UNIX socket path, or '\\x00name'."""
        return self._bind_addr

    @bind_addr.setter
    def bind_addr(self, value: BindAddr) -> None:
        _check_bind_addr(value)
        self._bind_addr = value

    @property
    def static(self) -> tuple[tuple[str, str], ...]:
        """Static files served by the engine, without the application: (URL prefix,
        directory) pairs. Assign a dict `{"/static/": "/srv/static"}` or pairs; each prefix
        starts with '/' (a '/' is added at its end), each directory must exist (a relative one
        is made absolute now). Everything under a prefix is the directory's: a missing file is
        a 404, never passed to the application. See docs/configuration.md."""
        return self._static

    @static.setter
    def static(self, value: Any) -> None:
        self._static = static_mounts(value)

    @property
    def interrupt(self) -> BaseException | None:
        """Set to an exception to stop the server; `serve()` re-raises it."""
        return self._interrupt

    @interrupt.setter
    def interrupt(self, interrupt: BaseException) -> None:
        self._interrupt = _StopSentinel()  # type: ignore[assignment]
        if isinstance(interrupt, KeyboardInterrupt):
            self.error_log("Keyboard Interrupt: shutting down")
        if isinstance(interrupt, SystemExit):
            self.error_log("SystemExit raised: shutting down")
        self.stop()
        self._interrupt = interrupt

    # -- logging and statistics -------------------------------------------------------------

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """The single logging hook: writes to the `stogie` logger. Override or replace it."""
        logger.log(level, msg, exc_info=traceback)

    def clear_stats(self) -> dict:
        """Resets `stats` (cheroot's keys; values may be callables taking the dict)."""
        self._start_time: float | None = None
        self._run_time = 0.0

        def engine_stat(key: str) -> Any:
            return lambda s: self._engine_stats().get(key, 0)

        self.stats = {
            "Enabled": False,
            "Bind Address": lambda s: repr(self.bind_addr),
            "Run time": lambda s: (not s["Enabled"]) and -1 or self.runtime(),
            "Accepts": engine_stat("accepts"),
            "Accepts/sec": lambda s: s["Accepts"](s) / max(self.runtime(), 1e-9),
            "Queue": lambda s: 0,
            "Threads": engine_stat("threads"),
            "Threads Idle": engine_stat("idle_threads"),
            "Socket Errors": engine_stat("socket_errors"),
            "Requests": engine_stat("requests"),
            "Bytes Read": engine_stat("bytes_in"),
            "Bytes Written": engine_stat("bytes_out"),
            "Static Responses": engine_stat("static_responses"),
            "Work Time": lambda s: self._engine_stats().get("latency_sum_us", 0) / 1e6,
            "Read Throughput": lambda s: s["Bytes Read"](s) / max(s["Work Time"](s), 1e-9),
            "Write Throughput": lambda s: s["Bytes Written"](s) / max(s["Work Time"](s), 1e-9),
            "Worker Threads": {},
        }
        logging.statistics = getattr(logging, "statistics", {})  # type: ignore[attr-defined]
        logging.statistics[f"stogie HTTPServer {id(self)}"] = self.stats  # type: ignore
        return self.stats

    def _engine_stats(self) -> dict:
        return self._engine.stats() if self._engine is not None else {}

    def runtime(self) -> float:
        if self._start_time is None:
            return self._run_time
        return self._run_time + (time.time() - self._start_time)

    def reopen_access_log(self) -> None:
        """Writes out buffered lines and reopens the access log file (after rotation)."""
        if self._engine is not None:
            self._engine.reopen_access_log()

    # -- lifecycle --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Binds the socket and starts the worker threads; `ready` is True afterwards."""
        _inert.warn_unused_classes(self)
        if self.software is None:
            self.software = f"{self.version} Server"
        sock = self._listening_socket()
        self.socket = sock
        self._apply_nodelay(sock)
        try:
            self._engine = _core.Engine(
                os.dup(sock.fileno()), self, self._application(), self._base_environ(),
                _report, _interrupt, self._min_threads, self._max_threads,
            )
            self._configure_engine()
            self._engine.start()
        except BaseException:
            # A setting was refused: release what was bound, leave the server unprepared.
            if self._engine is not None:
                self._engine.stop(0.0)
                self._engine = None
            sock.close()
            self.socket = None
            raise
        self._interrupt = None
        self._start_time = time.time()
        _running.add(self)
        self.ready = True

    def serve(self) -> None:
        """Serves until `stop()`; re-raises an `interrupt` that stopped the server."""
        engine = self._engine
        if engine is None:
            raise RuntimeError("call prepare() before serve()")
        engine.serve()
        while isinstance(self._interrupt, _StopSentinel):
            time.sleep(0.01)
        if self._interrupt is not None:
            raise self._interrupt

    def start(self) -> None:
        """`prepare()` then `serve()`; blocks until stopped."""
        self.prepare()
        self.serve()

    def safe_start(self) -> None:
        """`start()`, stopping cleanly on KeyboardInterrupt or SystemExit (then re-raised)."""
        try:
            self.start()
        except KeyboardInterrupt as exc:
            if not self.interrupt:
                self.interrupt = exc
            raise
        except SystemExit as exc:
            if not self.interrupt:
                self.interrupt = exc
            raise

    def stop(self) -> None:
        """Stops serving, from any thread; returns within about `shutdown_timeout`."""
        if not self.ready:
            return
        self.ready = False
        # Stop listening at once (the engine closes its own copy first thing): a client that
        # connects from now on is refused, which it can retry safely elsewhere, instead of
        # being accepted by the kernel and reset later. Requests in flight still finish.
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        engine = self._engine
        if engine is not None:
            engine.stop(float(self.shutdown_timeout))
        if self._start_time is not None:
            self._run_time += time.time() - self._start_time
            self._start_time = None
        _running.discard(self)

    @contextmanager
    def _run_in_thread(self) -> Iterator[threading.Thread]:
        """Serves in a daemon thread for the duration of the block."""
        self.prepare()
        thread = threading.Thread(target=self.serve, daemon=True)
        thread.start()
        try:
            yield thread
        finally:
            self.stop()

    # -- engine plumbing --------------------------------------------------------------------

    def _application(self) -> Any:
        """The callable the engine runs per request: the gateway, through a `req` object."""
        return gateway_application(self, self.gateway)

    def _uses_unicode_paths(self) -> bool:
        return False

    def _base_environ(self) -> dict:
        """The environ entries that are the same for every request."""
        addr = self.bind_addr
        port = str(addr[1]) if isinstance(addr, tuple) else ""
        return {
            "ACTUAL_SERVER_PROTOCOL": self.protocol,
            "SCRIPT_NAME": "",
            "SERVER_NAME": self._environ_server_name(),
            "SERVER_PORT": port,
            "SERVER_SOFTWARE": self.software,
            "wsgi.errors": sys.stderr,
            "wsgi.file_wrapper": _core.FileWrapper,
            "wsgi.input_terminated": True,
            "wsgi.multiprocess": False,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.url_scheme": "https" if self.ssl_adapter is not None else "http",
            "wsgi.version": (1, 0),
        }

    def _environ_server_name(self) -> str:
        """SERVER_NAME is a host name (CGI, RFC 3875 §4.1.14): `server_name` when it was set to
        one, else the address the server is bound to, or the machine's name when it listens on
        every interface or a UNIX socket. (`server_name` defaults to `version`, which is what
        the `Server` header shows, as in cheroot; a version string is no host name.)"""
        name = str(self.server_name or "")
        if name and name != self.version:
            return name
        addr = self.bind_addr
        if isinstance(addr, tuple) and str(addr[0]) not in _WILDCARD_HOSTS:
            host = str(addr[0])
            return f"[{host}]" if ":" in host else host
        return socket.gethostname()

    def _configure_engine(self) -> None:
        engine = self._engine
        if engine is None:
            return
        if self.protocol not in ("HTTP/1.1", "HTTP/1.0"):
            raise ValueError(f"protocol must be 'HTTP/1.1' or 'HTTP/1.0', not {self.protocol!r}")
        _check_server_name(str(self.server_name or ""))
        engine.configure(self._engine_settings())
        engine.set_application(self._application(), self._base_environ(),
                               self._uses_unicode_paths())
        adapter = self.ssl_adapter
        tls = adapter.engine_settings() if adapter is not None else None
        if tls != self.__dict__.get("_tls_applied"):
            engine.set_tls(tls)
            object.__setattr__(self, "_tls_applied", tls)
        path = None if self.access_log is None else os.fspath(self.access_log)
        log = AccessLogSettings(path, self.access_log_format)
        if log != self.__dict__.get("_access_log_applied"):
            engine.set_access_log(log)
            object.__setattr__(self, "_access_log_applied", log)
        if self.static != self.__dict__.get("_static_applied", ()):
            engine.set_static(list(self.static))
            object.__setattr__(self, "_static_applied", self.static)

    def _engine_settings(self) -> EngineSettings:
        return EngineSettings(
            timeout=float(self.timeout),
            max_request_header_size=int(self.max_request_header_size or 0),
            max_request_body_size=int(self.max_request_body_size or 0),
            protocol=self.protocol,
            server_name=str(self.server_name or ""),
            peercreds=bool(self.peercreds_enabled),
            peercreds_resolve=bool(self.peercreds_resolve_enabled),
            keep_alive_conn_limit=self.keep_alive_conn_limit,
            accepted_queue_size=int(getattr(self, "accepted_queue_size", -1)),
            accepted_queue_timeout=float(getattr(self, "accepted_queue_timeout", 10)),
            proxy_protocol=bool(self.proxy_protocol),
            thread_idle_timeout=float(self.thread_idle_timeout),
            forwarded_allow_ips=tuple(_ip_list(self.forwarded_allow_ips)),
            buffer_request_body=bool(self.buffer_request_body),
            request_body_memory_limit=_non_negative(self, "request_body_memory_limit"),
            request_body_spool_limit=_non_negative(self, "request_body_spool_limit"),
            request_body_min_rate=_non_negative(self, "request_body_min_rate"),
            http2=bool(self.http2),
        )

    def _listening_socket(self) -> socket.socket:
        sock = listening_socket(self.bind_addr, self.request_queue_size, self.reuse_port)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self._bind_addr = sock.getsockname()[:2]   # the port chosen for port 0
        return sock

    def _apply_nodelay(self, sock: socket.socket | None = None) -> None:
        """TCP_NODELAY on the listening socket: accepted connections inherit it (Linux), which
        saves a system call per connection."""
        sock = sock or self.socket
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(bool(self.nodelay)))

def _non_negative(server: HTTPServer, name: str) -> int:
    value = getattr(server, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (bytes), not {value!r}")
    return value


def _check_bind_addr(value: BindAddr) -> None:
    if isinstance(value, tuple) and value[0] in ("", None):
        raise ValueError(
            "Host values of '' or None are not allowed. Use '0.0.0.0' (IPv4) or '::' "
            "(IPv6) instead to listen on all active interfaces."
        )


def listening_socket(bind_addr: BindAddr, request_queue_size: int = 5,
                     reuse_port: bool = False) -> socket.socket:
    """A listening socket for `bind_addr` with the server's binding rules: the socket systemd
    passed (socket activation) when there is one, else a new one bound and listening with a
    backlog of at least `MIN_LISTEN_BACKLOG`."""
    inherited = inherited_socket()
    if inherited is not None:
        return inherited
    _check_bind_addr(bind_addr)
    if isinstance(bind_addr, (str, bytes)):
        sock = _bind_unix(bind_addr)
    else:
        sock = _bind_inet(bind_addr, reuse_port)
    sock.listen(max(int(request_queue_size), MIN_LISTEN_BACKLOG))
    return sock


def _bind_inet(addr: tuple, reuse_port: bool) -> socket.socket:
    host, port = addr[0], addr[1]
    if reuse_port and not port:
        raise ValueError("reuse_port needs a fixed port, not port 0")
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
    except socket.gaierror:
        family = socket.AF_INET6 if ":" in str(host) else socket.AF_INET
        sockaddr = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
        infos = [(family, socket.SOCK_STREAM, 0, "", sockaddr)]
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and host in ("::", "::0", "::0.0.0.0"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot bind to {addr!r}")


def _bind_unix(path: str | bytes) -> socket.socket:
    name = os.fsdecode(path) if isinstance(path, bytes) else path
    if not name.startswith("\x00"):
        with suppress(FileNotFoundError):
            os.unlink(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        raise
    return sock


def static_mounts(value: Any) -> tuple[tuple[str, str], ...]:
    """`static` as (prefix, absolute directory) pairs, checked: None or empty for none, a
    mapping of prefix to directory, or an iterable of (prefix, directory) pairs."""
    if not value:
        return ()
    if isinstance(value, (str, bytes)):
        raise ValueError("static: give {URL prefix: directory} or (URL prefix, directory) "
                         f"pairs, not the string {value!r}")
    items = value.items() if hasattr(value, "items") else value
    mounts: list[tuple[str, str]] = []
    for item in items:
        try:
            prefix, directory = item
        except (TypeError, ValueError):
            raise ValueError(f"static: {item!r} is not a (URL prefix, directory) pair") from None
        if not isinstance(prefix, str) or not prefix.startswith("/") or "\x00" in prefix:
            raise ValueError(f"static: the URL prefix {prefix!r} must be a string starting "
                             "with '/', e.g. '/static/'")
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        path = os.path.abspath(os.fspath(directory))
        if not os.path.isdir(path):
            raise ValueError(f"static: the directory {os.fspath(directory)!r} for {prefix!r} "
                             "does not exist or is not a directory")
        if any(prefix == known for known, _ in mounts):
            raise ValueError(f"static: the URL prefix {prefix!r} is given twice")
        mounts.append((prefix, path))
    return tuple(mounts)


def _ip_list(value: Any) -> list[str]:
    """`forwarded_allow_ips` as a list: None, a comma-separated string, or an iterable."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value]


def inherited_socket() -> socket.socket | None:
    """The first socket passed by systemd socket activation (fd 3), when it was passed to this
    process (`LISTEN_PID` is its pid and `LISTEN_FDS` at least 1); else None."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    return socket.socket(fileno=3)


def _check_server_name(name: str) -> None:
    """`server_name` goes into every response's `Server` header: a control character there
    (a CR or LF above all, which would end the header early) is refused before serving."""
    bad = next((c for c in name if (c < " " and c != "\t") or c == "\x7f"), None)
    if bad is not None:
        raise ValueError(
            f"server_name {name!r} contains the control character {bad!r}, which the Server"
            " response header cannot carry; use printable characters only"
        )


def thread_limits(minthreads: int, maxthreads: int | float) -> tuple[int, int]:
    """cheroot's ThreadPool argument rules; a pool without an upper bound does not grow."""
    if minthreads < 1:
        raise ValueError(f"min={minthreads!r} must be > 0")
    if maxthreads == float("inf"):
        return minthreads, minthreads
    if not isinstance(maxthreads, int) or isinstance(maxthreads, bool) or maxthreads == 0:
        raise TypeError(
            "Expected an integer or the infinity value for the `max` argument but got "
            f"{maxthreads!r}."
        )
    if maxthreads < 0:
        return minthreads, minthreads
    if maxthreads < minthreads:
        raise ValueError(f"max={maxthreads!r} must be > min={minthreads!r}")
    return minthreads, maxthreads


__all__ = [
    "Gateway", "HTTPConnection", "HTTPRequest", "HTTPServer", "get_ssl_adapter_class",
    "inherited_socket", "listening_socket",
]


def get_ssl_adapter_class(name: str = "builtin") -> Any:
    """cheroot's adapter lookup: 'builtin' is stogie's rustls adapter."""
    if name.lower() != "builtin":
        raise ValueError(f"unknown TLS adapter {name!r}: stogie has 'builtin' (rustls)")
    from stogie.ssl import BuiltinSSLAdapter
    return BuiltinSSLAdapter
