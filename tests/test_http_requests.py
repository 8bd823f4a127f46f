"""HTTP request heads: request line, header fields, Host, limits, and the statuses the
server sends by itself (docs/http-policy.md; the error texts are cheroot's, see its section 7).

Every rejected request is followed on the same connection by a valid pipelined request:
"400 + close" means that second request is never served (the app is never called).
"""

from __future__ import annotations

import pytest

from _http import (
    HOST,
    Recorder,
    assert_error,
    get,
    parse_responses,
    path_app,
    request,
    talk,
)

NEXT = get("/next")  # the pipelined request that must never be served after an error

MALFORMED_LINE = b"Malformed Request-Line"
BAD_METHOD_CASE = (
    b"Malformed method name: According to RFC 2616 (section 5.1.1) and its successors "
    b"RFC 7230 (section 3.1.1) and RFC 7231 (section 4.1) method names are case-sensitive "
    b"and uppercase."
)
MALFORMED_URI = b"Malformed Request-URI"
FRAGMENT = b"Illegal #fragment in Request-URI."
INVALID_PATH = (
    b"Invalid path in Request-URI: request-target must contain origin-form which starts "
    b"with absolute-path (URI starting with a slash \"/\")."
)
CRLF_REQUIRED = b"HTTP requires CRLF terminators"
URI_TOO_LONG = b"The Request-URI sent with the request exceeds the maximum allowed bytes."
HEADERS_TOO_LARGE = b"The headers sent with the request exceed the maximum allowed bytes."
CANNOT_FULFILL = b"Cannot fulfill request"
ILLEGAL_HEADER = b"Illegal header line."


@pytest.fixture
def app():
    return Recorder(path_app)


@pytest.fixture
def running(serve, app):
    return serve(app)


def served(result, *paths, methods=()):
    """The responses are 200s for exactly these paths, in order."""
    responses = parse_responses(result.data, methods)
    assert [r.status for r in responses] == [200] * len(paths), responses
    return responses


def rejected(running, app, raw, status, text=None):
    """`raw` followed by a valid request: one error response, close, app never called."""
    result = talk(running, raw + NEXT)
    resp = assert_error(result, status, text)
    assert app.count == 0, app.calls
    return resp


# ---------------------------------------------------------------------------
# request line
# ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                    "FOO", "PURGE", "M-SEARCH", "X_Y"])
def test_uppercase_methods_reach_the_app(running, app, method):
    result = talk(running, request(method, "/m", headers=[("Connection", "close")]))
    (resp,) = served(result, "/m")
    assert resp.body == f"{method} /m".encode()
    assert app.calls[0]["REQUEST_METHOD"] == method


@pytest.mark.parametrize("method", ["get", "GeT", "Get", "pOST", "gET"])
def test_lower_or_mixed_case_method_is_400(running, app, method):
    rejected(running, app, request(method, "/"), 400, BAD_METHOD_CASE)


@pytest.mark.parametrize("line", [b"GET /", b"GET", b"GET/HTTP/1.1"])
def test_request_line_without_three_parts(running, app, line):
    rejected(running, app, line + b"\r\nHost: a\r\n\r\n", 400, MALFORMED_LINE)


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1",          # two spaces
    b"GET /  HTTP/1.1",
    b"GET / HTTP/1.1 ",          # trailing space
    b" GET / HTTP/1.1",          # leading space
    b"GET\t/\tHTTP/1.1",         # tabs are not separators
    b"GET / HTTP/1.1 extra",
    b"GET / / HTTP/1.1",
    b"G(T / HTTP/1.1",           # method is not a token
    b"G@T / HTTP/1.1",
    b"\x00GET / HTTP/1.1",
])
def test_malformed_request_line_is_400(running, app, line):
    rejected(running, app, line + b"\r\nHost: a\r\n\r\n", 400)


def test_one_empty_line_before_request_line_is_ignored(running, app):
    result = talk(running, b"\r\n" + get("/a", headers=[("Connection", "close")]))
    (resp,) = served(result, "/a")
    assert resp.body == b"GET /a"
    assert app.count == 1


@pytest.mark.parametrize("prefix", [b"\r\n\r\n", b"\r\n\r\n\r\n"])
def test_second_empty_line_before_request_line_is_400(running, app, prefix):
    rejected(running, app, prefix + get("/a"), 400)


@pytest.mark.parametrize("prefix", [b"\n", b"\r\n\n", b"\r"])
def test_bare_lf_or_cr_before_request_line_is_400(running, app, prefix):
    rejected(running, app, prefix + get("/a"), 400)


def test_request_line_ending_in_bare_lf_is_400(running, app):
    rejected(running, app, b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, CRLF_REQUIRED)


def test_request_line_with_bare_cr_is_400(running, app):
    rejected(running, app, b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400)


@pytest.mark.parametrize("target", [b"/a\x00b", b"/a\x01", b"/\x1b[0m", b"/a\x7f", b"/a\tb",
                                    b"/a\rb"])
def test_control_characters_in_target_are_400(running, app, target):
    rejected(running, app, request("GET", target), 400)


@pytest.mark.parametrize("target", [b"/caf\xe9", b"/\xff", b"/\x80", b"/\xe4\xbd\xa0"])
def test_non_ascii_bytes_in_target_are_400(running, app, target):
    rejected(running, app, request("GET", target), 400, MALFORMED_URI)


@pytest.mark.parametrize("target", ["/a#frag", "/#", "/a?b=c#d", "/a#b#c"])
def test_fragment_in_target_is_400(running, app, target):
    rejected(running, app, request("GET", target), 400, FRAGMENT)


@pytest.mark.parametrize("target", ["a", "a/b", "example.test", "?q=1"])
def test_target_not_origin_form_is_400(running, app, target):
    rejected(running, app, request("GET", target), 400)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_asterisk_form_only_with_options(running, app, method):
    rejected(running, app, request(method, "*"), 400)


def test_options_asterisk_is_served(running, app):
    result = talk(running, request("OPTIONS", "*", headers=[("Connection", "close")]))
    served(result, "/*")
    assert app.calls[0]["REQUEST_METHOD"] == "OPTIONS"
    assert app.calls[0]["REQUEST_URI"] == "*"


@pytest.mark.parametrize("target, path, query", [
    ("http://example.test/p?q=1", "/p", "q=1"),
    ("http://example.test:8080/a/b", "/a/b", ""),
    ("http://EXAMPLE.test/x?", "/x", ""),
])
def test_absolute_form_is_accepted(running, app, target, path, query):
    result = talk(running, get(target, headers=[("Connection", "close")]))
    served(result, path)
    assert app.calls[0]["PATH_INFO"] == path
    assert app.calls[0]["QUERY_STRING"] == query


@pytest.mark.parametrize("target", ["example.test:80", "example.test:443"])
def test_authority_form_without_connect_is_400(running, app, target):
    rejected(running, app, request("GET", target), 400)


@pytest.mark.parametrize("target", ["example.test:443", "/", "*"])
def test_connect_is_405(running, app, target):
    rejected(running, app, request("CONNECT", target), 405)


# ---------------------------------------------------------------------------
# version
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_http10_and_11_are_served(running, app, version):
    result = talk(running, request("GET", "/v", version, headers=[("Connection", "close")]))
    (resp,) = served(result, "/v")
    assert resp.version == "HTTP/1.1"   # server.protocol
    assert app.calls[0]["SERVER_PROTOCOL"] == version


@pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/1.9"])
def test_higher_minor_version_is_served_as_11(running, app, version):
    # Served as 1.1: persistent by default, so two requests on one connection are both answered.
    raw = request("GET", "/a", version) + request("GET", "/b", version,
                                                  headers=[("Connection", "close")])
    result = talk(running, raw)
    responses = served(result, "/a", "/b")
    assert [r.body for r in responses] == [b"GET /a", b"GET /b"]
    assert result.closed


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"])
def test_other_major_version_is_505(running, app, version):
    text = CANNOT_FULFILL if version in ("HTTP/2.0", "HTTP/3.0") else None
    rejected(running, app, request("GET", "/", version), 505, text)


@pytest.mark.parametrize("version", ["HTTP/1", "HTTP/01.1", "HTTP/1.01", "HTTP/10.0",
                                     "http/1.1", "Http/1.1", "HTTP/1.1.1", "HTTP/11",
                                     "HTTP/a.b", "HTTP/1.x", "HTTPS/1.1", "HTTP1.1", "HTTP/",
                                     "HTTP/-1.1", "HTTP/1.1\t"])
def test_malformed_version_is_400(running, app, version):
    rejected(running, app, request("GET", "/", version), 400)


@pytest.mark.parametrize("version", ["HTTP/ 1.1", "HTTP /1.1"])
def test_version_with_inner_space_is_400(running, app, version):
    rejected(running, app, request("GET", "/", version), 400)


def test_http2_preface_with_http2_off_gets_505(serve, app):
    """With HTTP/2 off the preface is an HTTP/1 request line of version 2.0 (with HTTP/2 on,
    it opens HTTP/2: tests/test_http2.py)."""
    running = serve(app, http2=False)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    result = talk(running, preface, timeout=3)
    assert result.closed, "HTTP/2 preface must not hang the connection"
    assert_error(result, 505)
    assert app.count == 0


# ---------------------------------------------------------------------------
# header fields
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    b"Host: a\nX-A: b\r\n",            # bare LF ending a field line
    b"Host: a\r\nX-A: b\n",            # bare LF before the final CRLF
    b"Host: a\r\nX-A: b\r\n\n",        # bare LF as the empty line
    b"Host: a\r\nX-A: b\rc\r\n",       # bare CR in a value
    b"Host: a\r\nX-A\r: b\r\n",        # bare CR in a name
    b"Host: a\r\n\rX-A: b\r\n",        # bare CR starting a line
], ids=["lf-line", "lf-last", "lf-empty-line", "cr-value", "cr-name", "cr-line"])
def test_bare_cr_or_lf_in_head_is_400(running, app, fields):
    raw = b"GET / HTTP/1.1\r\n" + fields
    if not raw.endswith(b"\n\n"):
        raw += b"\r\n"
    rejected(running, app, raw, 400)


@pytest.mark.parametrize("line", [
    b"Host : a", b"X-A : b", b"X-A\t: b", b"X-A  :b",
], ids=["host-space", "space", "tab", "two-spaces"])
def test_whitespace_before_colon_is_400(running, app, line):
    fields = line + b"\r\n" if line.startswith(b"Host") else b"Host: a\r\n" + line + b"\r\n"
    rejected(running, app, b"GET / HTTP/1.1\r\n" + fields + b"\r\n", 400)


def test_line_without_colon_is_400(running, app):
    rejected(running, app, b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n", 400,
             ILLEGAL_HEADER)


@pytest.mark.parametrize("name", [b"", b"X A", b"X(A)", b"X\"A", b"X@A", b"X/A", b"X[A]",
                                  b"X=A", b"X{A}", b"X\xc4A", b"X\x00A", b"X\x7fA"])
def test_field_name_not_a_token_is_400(running, app, name):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n"
    rejected(running, app, raw, 400)


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x01b", b"\x1b[31m", b"a\x7fb", b"a\x0bb",
                                   b"a\x0cb", b"\x00"])
def test_control_characters_in_value_are_400(running, app, value):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + value + b"\r\n\r\n"
    rejected(running, app, raw, 400)


@pytest.mark.parametrize("fold", [b" folded", b"\tfolded", b"  ", b"\t"])
def test_obsolete_line_folding_is_400(running, app, fold):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n" + fold + b"\r\n\r\n"
    rejected(running, app, raw, 400)


@pytest.mark.parametrize("first", [b" Host: a", b"\tHost: a"])
def test_first_field_line_starting_with_whitespace_is_400(running, app, first):
    rejected(running, app, b"GET / HTTP/1.1\r\n" + first + b"\r\n\r\n", 400)


@pytest.mark.parametrize("sent, seen", [
    (b"plain", "plain"),
    (b"  padded \t ", "padded"),
    (b"\t tabbed\t", "tabbed"),
    (b"in\tside", "in\tside"),
    (b"a  b", "a  b"),
    (b"", ""),
    (b"caf\xe9", "caf\xe9"),
    (b"\x80\xff", "\x80\xff"),
])
def test_valid_field_values(running, app, sent, seen):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Val:" + sent + b"\r\nConnection: close\r\n\r\n"
    served(talk(running, raw), "/")
    assert app.calls[0]["HTTP_X_VAL"] == seen


def test_value_without_space_after_colon(running, app):
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Val:v\r\nConnection: close\r\n\r\n"
    served(talk(running, raw), "/")
    assert app.calls[0]["HTTP_X_VAL"] == "v"


@pytest.mark.parametrize("fields", [
    [("X_Forwarded_For", "evil"), ("X-Forwarded-For", "good")],
    [("X-Forwarded-For", "good"), ("X_Forwarded_For", "evil")],
])
def test_underscore_name_never_overwrites_dashed_name(running, app, fields):
    served(talk(running, get("/", headers=fields + [("Connection", "close")])), "/")
    assert app.calls[0]["HTTP_X_FORWARDED_FOR"] == "good"


def test_underscore_name_is_dropped(running, app):
    served(talk(running, get("/", headers=[("X_Only", "v"), ("Connection", "close")])), "/")
    env = app.calls[0]
    assert "HTTP_X_ONLY" not in env
    assert "v" not in env.values()


@pytest.mark.parametrize("fields, key, joined", [
    ([("X-A", "1"), ("X-A", "2"), ("X-A", "3")], "HTTP_X_A", "1, 2, 3"),
    ([("x-a", "1"), ("X-A", "2")], "HTTP_X_A", "1, 2"),
    ([("Accept", "text/html"), ("Accept", "*/*")], "HTTP_ACCEPT", "text/html, */*"),
    ([("Cookie", "a=1"), ("Cookie", "b=2")], "HTTP_COOKIE", "a=1; b=2"),
])
def test_repeated_fields_are_joined_in_order(running, app, fields, key, joined):
    served(talk(running, get("/", headers=fields + [("Connection", "close")])), "/")
    assert app.calls[0][key] == joined


# ---------------------------------------------------------------------------
# Host
# ---------------------------------------------------------------------------

def test_http11_without_host_is_400(running, app):
    rejected(running, app, get("/", host=None), 400)


def test_http10_without_host_is_served(running, app):
    served(talk(running, get("/h", version="HTTP/1.0", host=None)), "/h")


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("second", ["example.test", "other.test"])
def test_two_host_fields_are_400(running, app, version, second):
    rejected(running, app, get("/", version=version, headers=[("Host", second)]), 400)


@pytest.mark.parametrize("host", ["a b", "a/b", "a:b", "a@b", "[::1", "::1", "http://a",
                                  "a:80:80", "a\\b", "a?b", "a#b", "[]"])
def test_invalid_host_is_400(running, app, host):
    rejected(running, app, get("/", host=host), 400)


@pytest.mark.parametrize("host", ["example.test", "example.test:8080", "127.0.0.1",
                                  "127.0.0.1:80", "[::1]", "[::1]:8080", "localhost",
                                  "xn--bcher-kva.example", "a-b.c_d"])
def test_valid_host_is_served(running, app, host):
    served(talk(running, get("/", host=host, headers=[("Connection", "close")])), "/")
    assert app.calls[0]["HTTP_HOST"] == host


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def test_request_line_over_8k_is_414(running, app):
    rejected(running, app, get("/" + "a" * 9000), 414, URI_TOO_LONG)


def test_request_line_under_8k_is_served(running, app):
    target = "/" + "a" * 8000
    served(talk(running, get(target, headers=[("Connection", "close")])), target)


def test_request_line_over_header_limit_is_414(serve):
    app = Recorder(path_app)
    running = serve(app, max_request_header_size=200)
    rejected(running, app, get("/" + "a" * 300), 414, URI_TOO_LONG)


def test_request_line_over_8k_is_414_even_with_a_larger_header_limit(serve):
    app = Recorder(path_app)
    running = serve(app, max_request_header_size=1_000_000)
    rejected(running, app, get("/" + "a" * 9000), 414, URI_TOO_LONG)


def test_header_limit_is_read_live(serve):
    app = Recorder(path_app)
    running = serve(app)
    running.server.max_request_header_size = 300
    rejected(running, app, get("/", headers=[("X-A", "v" * 400)]), 431, HEADERS_TOO_LARGE)


def test_header_block_over_limit_is_431(serve):
    app = Recorder(path_app)
    running = serve(app, max_request_header_size=500)
    fields = [(f"X-{i}", "v" * 50) for i in range(20)]
    rejected(running, app, get("/", headers=fields), 431, HEADERS_TOO_LARGE)


def test_header_block_under_limit_is_served(serve):
    app = Recorder(path_app)
    running = serve(app, max_request_header_size=2000)
    fields = [(f"X-{i}", "v" * 50) for i in range(10)] + [("Connection", "close")]
    served(talk(running, get("/", headers=fields)), "/")


def test_unlimited_header_size_still_caps_at_64k(running, app):
    fields = [(f"X-{i}", "v" * 1000) for i in range(70)]   # ~70 KiB, 71 fields
    rejected(running, app, get("/", headers=fields), 431, HEADERS_TOO_LARGE)


def test_unlimited_header_size_allows_32k(running, app):
    fields = [(f"X-{i}", "v" * 1000) for i in range(32)] + [("Connection", "close")]
    served(talk(running, get("/", headers=fields)), "/")
    assert app.calls[0]["HTTP_X_31"] == "v" * 1000


def test_100_fields_are_served(running, app):
    fields = [(f"X-{i}", "v") for i in range(98)] + [("Connection", "close")]  # +Host = 100
    served(talk(running, get("/", headers=fields)), "/")


def test_more_than_100_fields_is_431(running, app):
    fields = [(f"X-{i}", "v") for i in range(100)]  # +Host = 101
    rejected(running, app, get("/", headers=fields), 431)


def test_single_huge_field_is_431(running, app):
    rejected(running, app, get("/", headers=[("X-Big", "v" * 70000)]), 431)


# ---------------------------------------------------------------------------
# status codes the server sends by itself, and their shape
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("expect", ["foo", "100-continue-x", "200-ok", "100-continue, foo"])
def test_unknown_expectation_is_417(running, app, expect):
    rejected(running, app, get("/", headers=[("Expect", expect)]), 417)


def test_error_response_exact_shape(running, app):
    result = talk(running, request("GET", "/\xff".encode("latin-1")))
    assert result.closed
    head, _, body = result.data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert lines[1:3] == [b"Content-Length: 21", b"Content-Type: text/plain"]
    assert set(lines[3:]) <= {b"Connection: close"}
    assert body == MALFORMED_URI


def test_error_status_line_uses_server_protocol(serve):
    app = Recorder(path_app)
    running = serve(app, protocol="HTTP/1.0")
    result = talk(running, request("GET", b"/\xff") + NEXT)
    assert_error(result, 400, MALFORMED_URI, protocol="HTTP/1.0")
    assert app.count == 0


def test_error_after_a_served_request(running, app):
    raw = get("/ok") + get("/bad#frag") + NEXT
    result = talk(running, raw)
    first, second = parse_responses(result.data)
    assert (first.status, first.body) == (200, b"GET /ok")
    assert second.status == 400 and second.body == FRAGMENT
    assert result.closed
    assert app.paths == ["/ok"]


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # TLS ClientHello
    b"\x00\x01\x02\x03\r\n\r\n",
    b"\xff\xfe\xfd\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"GET /%%%%%%% HTTP/1.1\r\nHost: %%%\r\n\r\n",
    b"\r\n" * 10,
    b":" * 100 + b"\r\n\r\n",
])
def test_client_garbage_never_gets_5xx(running, app, garbage):
    result = talk(running, garbage, timeout=3)
    assert result.closed
    for resp in parse_responses(result.data):
        assert 400 <= resp.status < 500, resp


def test_valid_request_gets_exact_body(running, app):
    result = talk(running, get("/x?y=1", headers=[("Connection", "close")]))
    (resp,) = served(result, "/x")
    assert resp.body == b"GET /x"
    assert app.calls[0]["QUERY_STRING"] == "y=1"
    assert app.calls[0]["HTTP_HOST"] == HOST
