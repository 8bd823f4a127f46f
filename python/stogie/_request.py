"""cheroot's `HTTPRequest`/`HTTPConnection` view of a request, for custom gateways.

The stock WSGI gateways run entirely in the Rust engine. A user's gateway class (a `Gateway`
subclass overriding `get_environ()` or `respond()`, or a native `server.Gateway`) instead gets a
`req` object with the attributes cheroot gives gateways; its writes go through the same native
response machinery, so framing and HTTP rules are unchanged.
"""

from __future__ import annotations

from typing import Any, Callable


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


def _header_name(key: str) -> bytes | None:
    """`HTTP_X_FOO` -> `X-Foo`; CONTENT_TYPE/CONTENT_LENGTH -> their header names."""
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = key
    elif key.startswith("HTTP_"):
        name = key[5:]
    else:
        return None
    return _latin1("-".join(part.capitalize() for part in name.split("_")))


class HTTPConnection:
    """The client connection as a gateway sees it."""

    def __init__(self, server: Any, environ: dict) -> None:
        self.server = server
        self.remote_addr = environ.get("REMOTE_ADDR", "")
        self.remote_port = environ.get("REMOTE_PORT", "")
        self.peer_pid = environ.get("X_REMOTE_PID")
        self.peer_uid = environ.get("X_REMOTE_UID")
        self.peer_gid = environ.get("X_REMOTE_GID")
        self.peer_user = environ.get("X_REMOTE_USER")
        self.peer_group = environ.get("X_REMOTE_GROUP")
        self.ssl_env: dict = {}


class HTTPRequest:
    """One request, with cheroot's `HTTPRequest` attributes and response methods."""

    def __init__(self, server: Any, environ: dict, start_response: Callable[..., Any]) -> None:
        self.server = server
        self.environ = environ
        self.conn = HTTPConnection(server, environ)
        self._start_response = start_response
        self._write: Callable[[bytes], None] | None = None
        self.scheme = _latin1(environ.get("wsgi.url_scheme", "http"))
        self.method = _latin1(environ["REQUEST_METHOD"])
        self.uri = _latin1(environ.get("REQUEST_URI", ""))
        self.path = _latin1(environ.get("PATH_INFO", ""))
        self.qs = _latin1(environ.get("QUERY_STRING", ""))
        self.request_protocol = _latin1(environ.get("SERVER_PROTOCOL", "HTTP/1.1"))
        self.response_protocol = _latin1(server.protocol)
        self.inheaders = {
            name: _latin1(value)
            for key, value in environ.items()
            if isinstance(value, str) and (name := _header_name(key)) is not None
        }
        self.rfile = environ["wsgi.input"]
        self.status = b""
        self.outheaders: list[tuple[bytes, bytes]] = []
        self.sent_headers = False
        self.ready = True
        self.started_request = True
        self.close_connection = False
        self.chunked_read = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        self.chunked_write = False

    def send_headers(self) -> None:
        """Sends `status` and `outheaders` (the server adds framing, Date and Server)."""
        status = self.status.decode("latin-1") if isinstance(self.status, bytes) else self.status
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.outheaders]
        self._write = self._start_response(status, headers)
        self._write(b"")
        self.sent_headers = True

    def ensure_headers_sent(self) -> None:
        if not self.sent_headers:
            self.send_headers()

    def write(self, chunk: bytes) -> None:
        self.ensure_headers_sent()
        assert self._write is not None
        if chunk:
            self._write(chunk)

    def simple_response(self, status: str, msg: str = "") -> None:
        """A plain-text response (cheroot's error page shape)."""
        body = msg.encode("latin-1")
        self.status = status.encode("latin-1") if isinstance(status, str) else status
        self.outheaders = [(b"Content-Length", str(len(body)).encode()),
                           (b"Content-Type", b"text/plain")]
        self.write(body)


#: cheroot's `HTTPConnection.RequestHandlerClass`, for code that reads or replaces it; stogie
#: never instantiates it from there (see `HTTPServer.ConnectionClass`).
HTTPConnection.RequestHandlerClass = HTTPRequest  # type: ignore[attr-defined]


def gateway_application(server: Any, gateway: type) -> Callable[..., Any]:
    """A WSGI callable that runs `gateway(req).respond()` for each request."""

    def application(environ: dict, start_response: Callable[..., Any]) -> tuple:
        req = HTTPRequest(server, environ, start_response)
        gateway(req).respond()
        req.ensure_headers_sent()
        return ()

    return application
