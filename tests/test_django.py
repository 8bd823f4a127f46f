"""A Django application on stogie: SERVER_NAME must be a host name, so that an HTTP/1.0
request without Host (Django falls back to SERVER_NAME) is not refused as DisallowedHost."""

from __future__ import annotations

import socket
import sys
import types

import pytest

django = pytest.importorskip("django")   # in the test extra; skipped only outside it

from django.conf import settings  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from _http import parse_responses, talk  # noqa: E402


def host_view(request):  # type: ignore[no-untyped-def]
    return HttpResponse(request.get_host(), content_type="text/plain")


@pytest.fixture(scope="module")
def django_app():  # type: ignore[no-untyped-def]
    urls = types.ModuleType("stogie_test_django_urls")
    urls.urlpatterns = [path("", host_view)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1", socket.gethostname(), "www.example.test"],
            ROOT_URLCONF=urls.__name__,
            SECRET_KEY="stogie-tests",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_http10_without_host_is_served(serve, django_app):
    running = serve(django_app)
    result = talk(running, b"GET / HTTP/1.0\r\n\r\n")
    resp = parse_responses(result.data)[0]
    assert resp.status == 200, resp.body
    assert resp.body == f"127.0.0.1:{running.port}".encode()
    assert resp.header("Server", "").startswith("stogie/")    # the Server header is unchanged


def test_server_name_set_explicitly_is_used(serve, django_app):
    running = serve(django_app, server_name="www.example.test")
    resp = parse_responses(talk(running, b"GET / HTTP/1.0\r\n\r\n").data)[0]
    assert resp.status == 200
    assert resp.body == f"www.example.test:{running.port}".encode()


def test_unix_socket_gives_the_machine_name(serve, tmp_path):
    seen: dict = {}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen["name"] = environ["SERVER_NAME"]
        start_response("200 OK", [("Content-Length", "0")])
        return []

    address = str(tmp_path / "s.sock")
    serve(app, bind_addr=address)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while sock.recv(4096):
            pass
    assert seen["name"] == socket.gethostname()
