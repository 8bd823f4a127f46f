"""The WSGI applications every server in the benchmark runs (import path ``bench.apps:NAME``).

All responses carry a Content-Length so no server has to fall back to chunked encoding or
connection close.  The Flask application is built lazily (module ``__getattr__``) so that the
other scenarios do not pay Flask's import in their memory figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from flask import Flask

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO = b"Hello, World!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]

KIB = 1024
CHUNK_64K = b"x" * (64 * KIB)
STREAM_PIECES = 16  # 16 x 64 KiB = 1 MiB
READ_SIZE = 64 * KIB


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Hello world: one bytes object with Content-Length (also used for Connection: close
    and for the pipelining scenario)."""
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


def big64k(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A 64 KiB response body in one bytes object."""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(CHUNK_64K)))],
    )
    return [CHUNK_64K]


def _stream() -> Iterator[bytes]:
    for _ in range(STREAM_PIECES):
        yield CHUNK_64K


def stream1m(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A 1 MiB response produced by a generator in 64 KiB pieces."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(STREAM_PIECES * len(CHUNK_64K))),
        ],
    )
    return _stream()


def _content_length(environ: Environ) -> int:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the whole request body with one ``read(n)`` and send it back."""
    body = environ["wsgi.input"].read(_content_length(environ))
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Consume the request body in 64 KiB ``read(n)`` calls; answer with the byte count."""
    remaining = _content_length(environ)
    stream = environ["wsgi.input"]
    total = 0
    while remaining > 0:
        data = stream.read(min(READ_SIZE, remaining))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def sleep10(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A slow application: blocks its worker thread for 10 ms (stands in for I/O)."""
    time.sleep(0.010)
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


def _make_flask_app() -> Flask:
    from flask import Flask, jsonify, request

    app = Flask("bench_flask")

    @app.route("/hello/<name>")
    def greet(name: str) -> Any:
        return jsonify(
            message=f"Hello, {name}!",
            page=request.args.get("page", "1", type=str),
            agent=request.headers.get("User-Agent", ""),
        )

    @app.route("/")
    def index() -> Any:
        return "index"

    return app


def _make_whitenoise_app() -> Any:
    """`hello` behind WhiteNoise serving bench/static at /static/ (the static_4k scenario)."""
    from pathlib import Path

    from whitenoise import WhiteNoise

    return WhiteNoise(hello, root=str(Path(__file__).parent / "static"), prefix="static/")


def _make_django_whitenoise_app() -> Any:
    """A Django project as `startproject` lays it out for production (DEBUG off), with
    WhiteNoise's middleware serving STATIC_ROOT (here bench/static, as `collectstatic` would
    fill it) at /static/: the deployment `--static` replaces (issue 16's use case). A static
    request passes SecurityMiddleware and stops at WhiteNoiseMiddleware, as in a real project."""
    import sys
    import types
    from pathlib import Path

    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse
    from django.urls import path

    urls = types.ModuleType("bench_django_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("", lambda request: HttpResponse(b"Hello, World!", content_type="text/plain"))
    ]
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=urls.__name__,
        SECRET_KEY="stogie-bench",
        INSTALLED_APPS=["django.contrib.staticfiles"],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "django.middleware.common.CommonMiddleware",
        ],
        STATIC_URL="/static/",
        STATIC_ROOT=str(Path(__file__).parent / "static"),
    )
    django.setup()
    return get_wsgi_application()


_LAZY: dict[str, Any] = {}
_FACTORIES: dict[str, Callable[[], Any]] = {
    "flask_app": _make_flask_app,
    "whitenoise_app": _make_whitenoise_app,
    "django_whitenoise_app": _make_django_whitenoise_app,
}


def __getattr__(name: str) -> Any:
    """Build ``flask_app``, ``whitenoise_app`` and ``django_whitenoise_app`` on first access
    (PEP 562), so only their scenarios import Flask, WhiteNoise and Django."""
    if name in _FACTORIES:
        if name not in _LAZY:
            _LAZY[name] = _FACTORIES[name]()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


BIG_10M = b"b" * (10 * 1024 * KIB)


def slow_clients(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """bench/slow_clients.py: ``GET /big`` is a 10 MiB response (one bytes object), a POST
    reads its whole body, anything else is hello world."""
    if environ["REQUEST_METHOD"] == "POST":
        upload(environ, lambda status, headers: None)
    elif environ.get("PATH_INFO") == "/big":
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG_10M)))],
        )
        return [BIG_10M]
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]
