"""The WSGI server (cheroot.wsgi's API): `Server`, the gateway classes, `PathInfoDispatcher`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from stogie import server

WSGIApp = Callable[..., Iterable[bytes]]


class Gateway(server.Gateway):
    """Base class of the WSGI gateways.

    The stock gateways run natively in the Rust engine. A subclass that overrides
    `get_environ()`, `respond()`, `start_response()` or `write()` is honoured: its methods run
    for every request, with a `req` object carrying cheroot's `HTTPRequest` attributes.
    """

    version: Any = None

    def __init__(self, req: Any) -> None:
        super().__init__(req)
        self.started_response = False
        self.env = self.get_environ()
        self.remaining_bytes_out: int | None = None

    def get_environ(self) -> dict:
        """The request's environ, as the native gateway built it."""
        return self.req.environ if self.req is not None else {}

    def respond(self) -> None:
        """Calls the application and writes what it returns."""
        response = self.req.server.wsgi_app(self.env, self.start_response)
        try:
            for chunk in filter(None, response):
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            close = getattr(response, "close", None)
            if close is not None:
                close()

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Callable:
        """PEP 3333 `start_response`, with cheroot's checks and messages."""
        if self.started_response and not exc_info:
            raise RuntimeError("WSGI start_response called a second time with no exc_info.")
        self.started_response = True
        if exc_info and self.req.sent_headers:
            raise exc_info[1].with_traceback(exc_info[2])
        if not isinstance(status, str):
            raise TypeError("WSGI response status is not of type str.")
        outheaders = []
        for name, value in headers:
            if not isinstance(name, str):
                raise TypeError(f"WSGI response header key {name!r} is not of type str.")
            if not isinstance(value, str):
                raise TypeError(f"WSGI response header value {value!r} is not of type str.")
            if name.lower() == "content-length":
                self.remaining_bytes_out = int(value)
            outheaders.append((name.encode("latin-1"), value.encode("latin-1")))
        self.req.status = status.encode("latin-1")
        self.req.outheaders = outheaders
        return self.write

    def write(self, chunk: bytes) -> None:
        """The `write()` callable: sends the headers first if needed."""
        if not self.started_response:
            raise RuntimeError("WSGI write called before start_response.")
        self.req.write(chunk)

    @classmethod
    def gateway_map(cls) -> dict:
        """Every gateway version this module knows, including `('u', 0)`."""
        found: dict = {}
        pending = list(cls.__subclasses__())
        while pending:
            sub = pending.pop()
            if sub.version is not None:
                found.setdefault(sub.version, sub)
            pending.extend(sub.__subclasses__())
        return found


class Gateway_10(Gateway):
    """PEP 3333 gateway: PATH_INFO and other values are latin-1 "bytes as str"."""

    version = (1, 0)


class Gateway_u0(Gateway_10):
    """`('u', 0)` gateway: PATH_INFO decoded as UTF-8 (latin-1 when it is not UTF-8)."""

    version = ("u", 0)


wsgi_gateways = {(1, 0): Gateway_10, ("u", 0): Gateway_u0}


class Server(server.HTTPServer):
    """A WSGI server; same constructor as cheroot.wsgi.Server."""

    wsgi_version: Any = (1, 0)
    wsgi_app: WSGIApp | None = None

    def __init__(
        self,
        bind_addr: server.BindAddr,
        wsgi_app: WSGIApp | None,
        numthreads: int = 10,
        server_name: str | None = None,
        max: int | float = -1,
        request_queue_size: int = 5,
        timeout: float = 10,
        shutdown_timeout: float = 5,
        accepted_queue_size: int = -1,
        accepted_queue_timeout: float = 10,
        peercreds_enabled: bool = False,
        peercreds_resolve_enabled: bool = False,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(
            bind_addr,
            gateway=wsgi_gateways[self.wsgi_version],
            minthreads=numthreads,
            maxthreads=max,
            server_name=server_name,
            peercreds_enabled=peercreds_enabled,
            peercreds_resolve_enabled=peercreds_resolve_enabled,
            reuse_port=reuse_port,
        )
        self.wsgi_app = wsgi_app
        self.request_queue_size = request_queue_size
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.accepted_queue_size = accepted_queue_size
        self.accepted_queue_timeout = accepted_queue_timeout

    @property
    def numthreads(self) -> int:
        """The number of worker threads started by `prepare()`."""
        return self._min_threads

    @numthreads.setter
    def numthreads(self, value: int) -> None:
        self._min_threads, self._max_threads = server.thread_limits(
            value, max(value, self._max_threads))

    def _application(self) -> Any:
        if self.gateway not in (Gateway_10, Gateway_u0):
            return super()._application()
        app = self.wsgi_app
        return app if app is not None else _no_application

    def _uses_unicode_paths(self) -> bool:
        gateway = self.gateway
        return isinstance(gateway, type) and issubclass(gateway, Gateway_u0)

    def _base_environ(self) -> dict:
        env = super()._base_environ()
        if self._uses_unicode_paths():
            env["wsgi.version"] = ("u", 0)
            env["wsgi.url_encoding"] = "utf-8"
        return env


def _no_application(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    body = b"No WSGI application is configured (server.wsgi_app is None)."
    start_response("500 Internal Server Error",
                   [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class PathInfoDispatcher:
    """Routes by the longest matching PATH_INFO prefix, moving it into SCRIPT_NAME."""

    def __init__(self, apps: dict | Iterable[tuple[str, WSGIApp]]) -> None:
        items = list(apps.items()) if isinstance(apps, dict) else list(apps)
        items.sort(key=lambda item: len(item[0]), reverse=True)
        self.apps = [(prefix.rstrip("/"), app) for prefix, app in items]

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"] or "/"
        for prefix, app in self.apps:
            if path.startswith(prefix + "/") or path == prefix:
                environ = environ.copy()
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", "0")])
        return [b""]


WSGIServer = Server
WSGIGateway = Gateway
WSGIGateway_10 = Gateway_10
WSGIGateway_u0 = Gateway_u0
WSGIPathInfoDispatcher = PathInfoDispatcher

__all__ = [
    "Gateway", "Gateway_10", "Gateway_u0", "PathInfoDispatcher", "Server", "WSGIGateway",
    "WSGIGateway_10", "WSGIGateway_u0", "WSGIPathInfoDispatcher", "WSGIServer", "wsgi_gateways",
]
