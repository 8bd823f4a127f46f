"""cheroot's class hooks that stogie accepts but does not use.

cheroot builds a Python `server.ConnectionClass` object for every connection and a
`ConnectionClass.RequestHandlerClass` object for every request, and frameworks replace them to
change how requests are read: CherryPy's `CPWSGIServer` sets `RequestHandlerClass` to a request
class that turns cheroot's proxy mode on. stogie reads, parses and answers requests in its Rust
engine and never instantiates either class, so both are kept only so that such code runs. Setting
them has no effect; `HTTPServer.prepare()` warns (`stogie.errors.NoEffectWarning`) when either
was replaced by a class stogie cannot use.
"""

from __future__ import annotations

import warnings
from typing import Any

from stogie._request import HTTPConnection, HTTPRequest
from stogie.errors import NoEffectWarning

#: Request classes that are accepted without a warning, by `module.qualname`, because what they
#: change is already stogie's behaviour. CherryPy's `CPWSGIHTTPRequest` only turns on cheroot's
#: proxy mode, which lets absolute-form targets (`GET http://host/path HTTP/1.1`) reach the
#: application; stogie always accepts them (RFC 9112 §3.2.2). Proxy mode's other effect, handing
#: CONNECT to the application, stogie does not have: CONNECT is answered 405 by the server
#: (docs/differences.md).
ACCEPTED_REQUEST_CLASSES = frozenset({"cherrypy._cpwsgi_server.CPWSGIHTTPRequest"})


def _name(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def warn_unused_classes(server: Any) -> None:
    """Warns when `server.ConnectionClass` or its `RequestHandlerClass` was replaced by a class
    that stogie would have to run to honour (it never runs either)."""
    connection_class = getattr(server, "ConnectionClass", HTTPConnection)
    if connection_class is not HTTPConnection:
        warnings.warn(
            f"{server}: ConnectionClass = {_name(connection_class)} has no effect: stogie's "
            "Rust engine handles connections and never instantiates ConnectionClass",
            NoEffectWarning,
            stacklevel=3,
        )
        return
    request_class = getattr(connection_class, "RequestHandlerClass", HTTPRequest)
    if request_class is not HTTPRequest and _name(request_class) not in ACCEPTED_REQUEST_CLASSES:
        warnings.warn(
            f"{server}: ConnectionClass.RequestHandlerClass = {_name(request_class)} has no "
            "effect: stogie's Rust engine parses requests and never instantiates "
            "RequestHandlerClass",
            NoEffectWarning,
            stacklevel=3,
        )
