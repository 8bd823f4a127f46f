"""CherryPy's own server machinery on stogie: `cherrypy.quickstart()`, `server.*`, the engine.

CherryPy's HTTP server plugin (`cherrypy.server`, a `cherrypy._cpserver.Server`) builds the
server it starts from its `instance` setting when one is given. Naming this module's
`CPWSGIServer` there is the whole switch::

    cherrypy.config.update({"server.instance": "stogie.cherrypy.CPWSGIServer"})
    cherrypy.quickstart(Root())

(or the same entry in quickstart's `config={"global": {...}}` or a config file; an additional
server takes `server.NAME.instance`). From then on `cherrypy.engine` starts, stops and restarts
a stogie server serving `cherrypy.tree`, configured from CherryPy's `server.*` settings:
socket_host, socket_port, socket_file, socket_queue_size, socket_timeout, thread_pool,
thread_pool_max, accepted_queue_size, accepted_queue_timeout, shutdown_timeout,
max_request_header_size, max_request_body_size, protocol_version, nodelay, wsgi_version,
peercreds, peercreds_resolve, statistics, ssl_module, ssl_certificate, ssl_private_key,
ssl_certificate_chain and ssl_ciphers (rustls picks its own suites; a given list is logged as
ignored). `ssl_context` cannot be used: TLS is configured from the certificate and key files.
The settings are read when the server is built: on the engine's first start, or its first start
after `cherrypy.server.httpserver` was set back to None (as with cheroot).

Code that builds the server itself can do `cherrypy.server.httpserver = CPWSGIServer()` after
configuring `cherrypy.server`. Only this module imports CherryPy; `import stogie` does not.
"""

from __future__ import annotations

from typing import Any

import cherrypy

from stogie import server, wsgi

#: The value of CherryPy's `server.instance` setting that selects stogie.
INSTANCE = f"{__name__}.CPWSGIServer"


class CPWSGIServer(wsgi.Server):
    """A stogie WSGI server for `cherrypy.tree`, configured from a CherryPy server adapter.

    It plays the part of `cherrypy._cpwsgi_server.CPWSGIServer`: `server_adapter` is the
    `cherrypy._cpserver.Server` whose settings it takes (`cherrypy.server` by default) and its
    `error_log` goes to CherryPy's engine log.
    """

    version = f"CherryPy/{cherrypy.__version__} {wsgi.Server.version}"

    def __init__(self, server_adapter: Any = None) -> None:
        adapter = cherrypy.server if server_adapter is None else server_adapter
        self.server_adapter = adapter
        # Read by wsgi.Server.__init__ to choose the gateway, so it is set first.
        self.wsgi_version = adapter.wsgi_version
        super().__init__(
            adapter.bind_addr,
            cherrypy.tree,
            numthreads=adapter.thread_pool,
            server_name=adapter.socket_host or adapter.socket_file or None,
            max=adapter.thread_pool_max,
            request_queue_size=adapter.socket_queue_size,
            timeout=adapter.socket_timeout,
            shutdown_timeout=adapter.shutdown_timeout,
            accepted_queue_size=adapter.accepted_queue_size,
            accepted_queue_timeout=adapter.accepted_queue_timeout,
            peercreds_enabled=adapter.peercreds,
            peercreds_resolve_enabled=adapter.peercreds_resolve,
        )
        self.max_request_header_size = adapter.max_request_header_size or 0
        self.max_request_body_size = adapter.max_request_body_size or 0
        self.protocol = adapter.protocol_version
        self.nodelay = adapter.nodelay
        self.ssl_adapter = _ssl_adapter(adapter)
        self.stats["Enabled"] = bool(getattr(adapter, "statistics", False))

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """Writes to CherryPy's engine log (`cherrypy.log`), as CherryPy's own server does."""
        cherrypy.engine.log(msg, level, traceback)


def _ssl_adapter(adapter: Any) -> Any:
    """The TLS adapter `adapter`'s ssl_* settings ask for, or None for plain HTTP."""
    if getattr(adapter, "ssl_context", None) is not None:
        raise ValueError(
            "server.ssl_context cannot be used with stogie: its TLS (rustls) is configured from "
            "server.ssl_certificate and server.ssl_private_key (PEM files)"
        )
    if not adapter.ssl_certificate:
        return None
    adapter_class = server.get_ssl_adapter_class(adapter.ssl_module or "builtin")
    return adapter_class(
        adapter.ssl_certificate,
        adapter.ssl_private_key,
        adapter.ssl_certificate_chain,
        adapter.ssl_ciphers,
    )


__all__ = ["INSTANCE", "CPWSGIServer"]
