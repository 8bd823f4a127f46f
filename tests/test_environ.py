"""The WSGI environ, key by key: cheroot's Gateway_10, tightened by the HTTP policy.

Every request goes to `wsgiref.validate.validator(environ_app)`: a PEP 3333 violation in the
environ (or a missing close()) turns into an AssertionError inside the app and so a 500.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest
import requests

from _apps import environ_app, read_response, validated_environ_app


def raw_environ(running, request: bytes) -> dict:
    """Send one raw request on a fresh connection, return the environ the app saw."""
    with running.connect() as sock:
        sock.sendall(request)
        resp = read_response(sock)
    assert resp.status == 200, (resp.status_line, resp.body[:2000])
    return json.loads(resp.body)


def get_environ(running, target: str = "/", headers: list[tuple[str, str]] | None = None,
                method: str = "GET", body: bytes = b"", version: str = "HTTP/1.1") -> dict:
    head = f"{method} {target} {version}\r\nHost: example.test\r\n"
    for name, value in headers or []:
        head += f"{name}: {value}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    head += "Connection: close\r\n\r\n"
    return raw_environ(running, head.encode("latin-1") + body)


@pytest.fixture
def running(serve):
    return serve(validated_environ_app)


def test_basic_get_environ(running):
    with running.connect() as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /foo/bar?a=1&b=%20x HTTP/1.1\r\nHost: example.test\r\n"
                     b"Connection: close\r\n\r\n")
        resp = read_response(sock)
    assert resp.status == 200, resp.body
    env = json.loads(resp.body)
    server = running.server
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/foo/bar"
    assert env["QUERY_STRING"] == "a=1&b=%20x"
    assert env["REQUEST_URI"] == "/foo/bar?a=1&b=%20x"
    # No server_name given: a host name (the bound address), not the version string that
    # server.server_name and the Server header default to.
    assert server.server_name == server.version
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(running.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["ACTUAL_SERVER_PROTOCOL"] == server.protocol == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"] == server.software
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["HTTP_HOST"] == "example.test"
    assert env["HTTP_CONNECTION"] == "close"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.version:type"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
                "wsgi.input_terminated"):
        assert env[key + ":type"] == "bool", key
    assert env["wsgi.errors:ok"] is True
    assert env["wsgi.input:ok"] is True
    # No body-describing keys for a request without a body.
    assert "CONTENT_TYPE" not in env["__keys__"]
    assert "CONTENT_LENGTH" not in env["__keys__"]
    assert "HTTP_CONTENT_TYPE" not in env["__keys__"]
    assert "HTTP_CONTENT_LENGTH" not in env["__keys__"]


CGI_KEYS = {
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "ACTUAL_SERVER_PROTOCOL",
    "SERVER_SOFTWARE", "REMOTE_ADDR", "REMOTE_PORT",
}
WSGI_KEYS = {
    "wsgi.version", "wsgi.url_scheme", "wsgi.input", "wsgi.errors", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated",
}


def test_environ_key_set(running):
    env = get_environ(running, "/keys", [("X-Extra", "1")])
    keys = set(env["__keys__"])
    http = {k for k in keys if k.startswith("HTTP_")}
    assert http == {"HTTP_HOST", "HTTP_X_EXTRA", "HTTP_CONNECTION"}
    cgi = {k for k in keys if "." not in k} - http
    assert cgi == CGI_KEYS
    assert keys >= WSGI_KEYS


def test_post_environ_key_set(running):
    env = get_environ(running, "/keys", [("Content-Type", "text/plain")], method="POST",
                      body=b"body")
    cgi = {k for k in env["__keys__"] if "." not in k and not k.startswith("HTTP_")}
    assert cgi == CGI_KEYS | {"CONTENT_TYPE", "CONTENT_LENGTH"}


def test_wsgi_errors_is_sys_stderr(serve):
    seen = {}

    def app(environ, start_response):
        seen["same"] = environ["wsgi.errors"] is sys.stderr
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []

    running = serve(app)
    assert requests.get(running.url(), timeout=5).status_code == 200
    assert seen == {"same": True}


def test_server_defaults_are_strings(running):
    server = running.server
    assert isinstance(server.server_name, str) and server.server_name
    assert isinstance(server.software, str) and server.software
    assert server.protocol == "HTTP/1.1"


def test_all_cgi_values_are_str(running):
    env = get_environ(running, "/x?y", [("X-A", "b")])
    for key in env["__keys__"]:
        if "." not in key:
            assert isinstance(env.get(key), str), key


def test_server_name_from_constructor(serve):
    running = serve(validated_environ_app, server_name="www.example.test")
    env = get_environ(running)
    assert running.server.server_name == "www.example.test"
    assert env["SERVER_NAME"] == "www.example.test"


def test_server_name_changed_after_start(serve):
    running = serve(validated_environ_app)
    running.server.server_name = "later.example.test"
    assert get_environ(running)["SERVER_NAME"] == "later.example.test"


def test_software_attribute(serve):
    running = serve(validated_environ_app, software="Custom/9.9")
    assert get_environ(running)["SERVER_SOFTWARE"] == "Custom/9.9"


def test_http10_request_protocols(running):
    env = get_environ(running, "/old", version="HTTP/1.0")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["ACTUAL_SERVER_PROTOCOL"] == "HTTP/1.1"


def test_requests_client(running):
    r = requests.get(running.url("/via/requests"), params={"q": "a b"}, timeout=5)
    assert r.status_code == 200
    env = r.json()
    assert env["PATH_INFO"] == "/via/requests"
    assert env["QUERY_STRING"] == "q=a+b"
    assert env["REQUEST_URI"] == "/via/requests?q=a+b"
    assert env["HTTP_HOST"] == f"127.0.0.1:{running.port}"


@pytest.mark.parametrize("target, path_info", [
    ("/a%20b", "/a b"),
    ("/a%2Fb", "/a%2Fb"),
    ("/a%2fb/c", "/a%2Fb/c"),
    ("/x%2F%41y", "/x%2FAy"),
    ("/%E4%BD%A0", "/\u00e4\u00bd\u00a0"),           # UTF-8 bytes as latin-1 "bytes in str"
    ("/caf%C3%A9", "/caf\u00c3\u00a9"),
    ("/%FF", "/\u00ff"),
    ("/plus+sign", "/plus+sign"),
    ("/a/../b//c/./d", "/a/../b//c/./d"),             # no normalisation
    ("/%25", "/%"),
])
def test_path_info_decoding(running, target, path_info):
    env = get_environ(running, target + "?k=%41")
    assert env["PATH_INFO"] == path_info
    assert env["REQUEST_URI"] == target + "?k=%41"
    assert env["QUERY_STRING"] == "k=%41"


@pytest.mark.parametrize("target, query", [
    ("/p", ""),
    ("/p?", ""),
    ("/p?x=%41+b&y", "x=%41+b&y"),
    ("/p?a=1?b=2", "a=1?b=2"),
    ("/p?%E4%BD%A0=%2F", "%E4%BD%A0=%2F"),
])
def test_query_string_is_raw(running, target, query):
    env = get_environ(running, target)
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == query
    assert env["REQUEST_URI"] == target


def test_absolute_form_target(running):
    env = get_environ(running, "http://example.test/abs/path?z=9")
    assert env["PATH_INFO"] == "/abs/path"
    assert env["QUERY_STRING"] == "z=9"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_request_method(running, method):
    env = get_environ(running, "/m", method=method)
    assert env["REQUEST_METHOD"] == method


def test_unknown_uppercase_method_reaches_app(serve):
    # validator() warns about unknown methods, so use the bare app here.
    running = serve(environ_app)
    assert get_environ(running, "/m", method="PURGE")["REQUEST_METHOD"] == "PURGE"


def test_options_asterisk(running):
    env = get_environ(running, "*", method="OPTIONS")
    assert env["REQUEST_METHOD"] == "OPTIONS"
    assert env["PATH_INFO"] == "/*"


def test_content_type_and_length(running):
    env = get_environ(running, "/post", [("Content-Type", "text/plain; charset=utf-8")],
                      method="POST", body=b"hello")
    assert env["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env["__keys__"]
    assert "HTTP_CONTENT_LENGTH" not in env["__keys__"]


def test_content_length_without_type(running):
    env = get_environ(running, "/post", method="POST", body=b"abc")
    assert env["CONTENT_LENGTH"] == "3"
    assert "CONTENT_TYPE" not in env["__keys__"]


def test_content_type_without_body(running):
    env = get_environ(running, "/", [("Content-Type", "application/json")])
    assert env["CONTENT_TYPE"] == "application/json"
    assert "CONTENT_LENGTH" not in env["__keys__"]


def test_chunked_request_environ(running):
    env = raw_environ(running, b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                               b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert env["wsgi.input_terminated"] is True
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert env["REQUEST_METHOD"] == "POST"


def test_input_terminated_for_content_length_body(running):
    env = get_environ(running, "/post", method="POST", body=b"xyz")
    assert env["wsgi.input_terminated"] is True


def test_http_header_names(running):
    env = get_environ(running, "/", [
        ("X-Custom-Header", "v1"),
        ("user-agent", "lower/1.0"),
        ("ACCEPT-LANGUAGE", "en"),
        ("X-Empty", ""),
        ("X-Digits-123", "d"),
    ])
    assert env["HTTP_X_CUSTOM_HEADER"] == "v1"
    assert env["HTTP_USER_AGENT"] == "lower/1.0"
    assert env["HTTP_ACCEPT_LANGUAGE"] == "en"
    assert env["HTTP_X_EMPTY"] == ""
    assert env["HTTP_X_DIGITS_123"] == "d"


def test_header_value_whitespace_trimmed(running):
    raw = (b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad:   padded value \t \r\n"
           b"X-Tab:\tt\t\r\nConnection: close\r\n\r\n")
    env = raw_environ(running, raw)
    assert env["HTTP_X_PAD"] == "padded value"
    assert env["HTTP_X_TAB"] == "t"


def test_header_value_latin1(running):
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9 \xff\r\nConnection: close\r\n\r\n"
    env = raw_environ(running, raw)
    assert env["HTTP_X_LATIN"] == "caf\u00e9 \u00ff"


@pytest.mark.parametrize("order", ["underscore-first", "underscore-last"])
def test_underscore_header_dropped(running, order):
    dashed = ("X-Forwarded-For", "10.0.0.1")
    under = ("X_Forwarded_For", "6.6.6.6")
    headers = [under, dashed] if order == "underscore-first" else [dashed, under]
    env = get_environ(running, "/", headers)
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"


def test_underscore_only_header_dropped(running):
    env = get_environ(running, "/", [("X_Only", "1"), ("Foo_Bar", "2")])
    assert "HTTP_X_ONLY" not in env["__keys__"]
    assert "HTTP_FOO_BAR" not in env["__keys__"]


def test_repeated_list_header_joined(running):
    env = get_environ(running, "/", [("Accept", "text/html"), ("X-Other", "o"),
                                     ("Accept", "application/json")])
    assert env["HTTP_ACCEPT"] == "text/html, application/json"


def test_repeated_other_header_joined(running):
    env = get_environ(running, "/", [("X-Multi", "1"), ("X-Multi", "2"), ("x-multi", "3")])
    assert env["HTTP_X_MULTI"] == "1, 2, 3"


def test_repeated_cookie_joined_with_semicolon(running):
    env = get_environ(running, "/", [("Cookie", "a=1"), ("Cookie", "b=2; c=3")])
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3"


def test_single_cookie_unchanged(running):
    env = get_environ(running, "/", [("Cookie", "a=1; b=2")])
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_keep_alive_requests_get_fresh_environ(running):
    with running.connect() as sock:
        sock.sendall(b"GET /one?1 HTTP/1.1\r\nHost: h\r\nX-First: yes\r\n\r\n")
        first = read_response(sock)
        sock.sendall(b"GET /two?2 HTTP/1.1\r\nHost: h\r\n\r\n")
        second = read_response(sock)
        assert first.status == second.status == 200
        env1, env2 = json.loads(first.body), json.loads(second.body)
        assert (env1["PATH_INFO"], env1["QUERY_STRING"]) == ("/one", "1")
        assert (env2["PATH_INFO"], env2["QUERY_STRING"]) == ("/two", "2")
        assert env1["HTTP_X_FIRST"] == "yes"
        assert "HTTP_X_FIRST" not in env2["__keys__"]
        assert env1["REMOTE_PORT"] == env2["REMOTE_PORT"] == str(sock.getsockname()[1])


def test_wsgi_errors_is_writable(serve):
    seen = {}

    def app(environ, start_response):
        errors = environ["wsgi.errors"]
        errors.write("stogie wsgi.errors test line\n")
        errors.writelines(["a\n", "b\n"])
        errors.flush()
        seen["ok"] = True
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    running = serve(app)
    assert requests.get(running.url(), timeout=5).text == "ok"
    assert seen == {"ok": True}


def test_environ_is_a_fresh_mutable_dict(serve):
    """The app may mutate its environ; the next request must not see the changes."""
    def app(environ, start_response):
        leaked = environ.get("test.leak", "")
        environ["test.leak"] = "leaked"
        environ["PATH_INFO"] = "/mutated"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [leaked.encode()]

    running = serve(app)
    with requests.Session() as s:
        assert s.get(running.url(), timeout=5).text == ""
        assert s.get(running.url(), timeout=5).text == ""


def test_ipv6_remote_addr(serve):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    running = serve(validated_environ_app, bind_addr=("::1", 0))
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(("::1", running.port))
        sock.sendall(b"GET /six HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
        resp = read_response(sock)
        client_port = sock.getsockname()[1]
    env = json.loads(resp.body)
    assert env["REMOTE_ADDR"] == "::1"
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["SERVER_PORT"] == str(running.port)
    assert env["PATH_INFO"] == "/six"
