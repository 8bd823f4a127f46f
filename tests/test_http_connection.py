"""Connection management and response framing (docs/http-policy.md,
"6. Connection management" and "8. What the application may send").

Keep-alive for HTTP/1.0 and 1.1, `Connection` lists, pipelining, close semantics, the idle
keep-alive timeout and 408, automatic chunking / close-delimited bodies, bodiless responses,
Date/Server, Content-Length mismatches, hop-by-hop headers from the app, and invalid
status lines or headers from the app.
"""

from __future__ import annotations

import email.utils
import threading
import time

import pytest

from _http import (
    IMF_FIXDATE,
    Client,
    Closing,
    Recorder,
    get,
    make_app,
    parse_responses,
    path_app,
    request,
    talk,
)

NEXT = get("/next")


@pytest.fixture
def app():
    return Recorder(path_app)


@pytest.fixture
def running(serve, app):
    return serve(app, timeout=3)


def check_served(resp, path, method="GET"):
    assert (resp.status, resp.body) == (200, f"{method} {path}".encode()), resp


# ---------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------

def test_http11_is_persistent_by_default(running, app):
    with Client(running) as client:
        for path in ("/a", "/b", "/c"):
            client.send(get(path))
            resp = client.response()
            check_served(resp, path)
            assert "close" not in resp.connection_tokens
        assert client.is_open(0.3)
    assert app.paths == ["/a", "/b", "/c"]


@pytest.mark.parametrize("value", ["close", "Close", "CLOSE", "keep-alive, close",
                                   "foo, Close", "close, foo", "  close  ", "foo,close",
                                   "upgrade,  CLOSE  ,x"])
def test_http11_connection_close_tokens(running, app, value):
    result = talk(running, get("/a", headers=[("Connection", value)]) + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    check_served(resp, "/a")
    assert resp.says_close, resp
    assert app.paths == ["/a"]


def test_http11_close_in_second_connection_field(running, app):
    raw = get("/a", headers=[("Connection", "foo"), ("Connection", "close")]) + NEXT
    result = talk(running, raw)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert resp.says_close
    assert app.paths == ["/a"]


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive", "foo", "closed", "xclose",
                                   "close-ish", "upgrade", ""])
def test_http11_non_close_tokens_keep_alive(running, app, value):
    with Client(running) as client:
        client.send(get("/a", headers=[("Connection", value)]))
        resp = client.response()
        check_served(resp, "/a")
        assert not resp.says_close, resp
        client.send(get("/b"))
        check_served(client.response(), "/b")
        assert client.is_open(0.2)


def test_http10_closes_by_default(running, app):
    result = talk(running, get("/a", version="HTTP/1.0", host=None) + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    check_served(resp, "/a")
    assert "keep-alive" not in resp.connection_tokens
    assert resp.header("Keep-Alive") is None
    assert app.paths == ["/a"]


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive", "KEEP-ALIVE", "foo, keep-alive",
                                   "keep-alive, foo"])
def test_http10_keep_alive(serve, value):
    app = Recorder(path_app)
    running = serve(app, timeout=7)
    with Client(running) as client:
        for path in ("/a", "/b"):
            client.send(get(path, version="HTTP/1.0", host=None,
                            headers=[("Connection", value)]))
            resp = client.response()
            check_served(resp, path)
            assert resp.header_list("Connection") == ["Keep-Alive"], resp
            assert resp.header_list("Keep-Alive") == ["timeout=7"], resp
        assert client.is_open(0.2)
    assert app.paths == ["/a", "/b"]


@pytest.mark.parametrize("value", ["keep-alive, close", "close, keep-alive", "close"])
def test_http10_close_wins_over_keep_alive(running, app, value):
    raw = get("/a", version="HTTP/1.0", host=None, headers=[("Connection", value)])
    result = talk(running, raw + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    check_served(resp, "/a")
    assert resp.header("Keep-Alive") is None
    assert app.paths == ["/a"]


def test_http10_keep_alive_after_http11_request(running, app):
    with Client(running) as client:
        client.send(get("/a"))
        check_served(client.response(), "/a")
        client.send(get("/b", version="HTTP/1.0", host=None))
        check_served(client.response(), "/b")
        client.wait_closed(2)


def test_client_half_close_after_full_request_still_answered(running, app):
    result = talk(running, get("/a"), shut_write=True, timeout=2)
    (resp,) = parse_responses(result.data)
    check_served(resp, "/a")
    assert result.closed


# ---------------------------------------------------------------------------
# pipelining
# ---------------------------------------------------------------------------

def test_pipelined_requests_answered_in_order(running, app):
    paths = [f"/p{i}" for i in range(10)]
    raw = b"".join(get(p) for p in paths)
    with Client(running) as client:
        client.send(raw)
        for path in paths:
            check_served(client.response(), path)
        assert client.is_open(0.2)
    assert app.paths == paths


def test_pipelined_mixed_methods_including_head(running, app):
    raw = (get("/a") + request("HEAD", "/b") + request("POST", "/c", body=b"xyz",
                                                      content_length=True)
           + request("HEAD", "/d") + get("/e", headers=[("Connection", "close")]))
    result = talk(running, raw, methods=["GET", "HEAD", "POST", "HEAD", "GET"])
    assert result.closed
    responses = result.responses
    assert [r.status for r in responses] == [200] * 5
    assert [r.body for r in responses] == [b"GET /a", b"", b"POST /c", b"", b"GET /e"]
    assert responses[1].header("Content-Length") == str(len(b"HEAD /b"))
    assert app.paths == ["/a", "/b", "/c", "/d", "/e"]


def test_pipelined_order_kept_with_slow_first_app(serve):
    def app_(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.3)
        return path_app(environ, start_response)

    app = Recorder(app_)
    running = serve(app, numthreads=4)
    raw = get("/slow") + get("/fast1") + get("/fast2", headers=[("Connection", "close")])
    result = talk(running, raw)
    responses = result.responses
    assert [r.body for r in responses] == [b"GET /slow", b"GET /fast1", b"GET /fast2"]


def test_pipelined_request_split_across_writes(running, app):
    raw = get("/a") + get("/b")
    with Client(running) as client:
        for i in range(0, len(raw), 7):
            client.send(raw[i:i + 7])
            time.sleep(0.005)
        check_served(client.response(), "/a")
        check_served(client.response(), "/b")


def test_nothing_after_close_is_served(running, app):
    raw = get("/a") + get("/b", headers=[("Connection", "close")]) + get("/c") + get("/d")
    result = talk(running, raw)
    assert result.closed
    responses = result.responses
    assert [r.body for r in responses] == [b"GET /a", b"GET /b"]
    assert app.paths == ["/a", "/b"]


# ---------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------

def test_idle_keep_alive_connection_closed_silently(serve):
    app = Recorder(path_app)
    running = serve(app, timeout=1)
    with Client(running) as client:
        client.send(get("/a"))
        check_served(client.response(), "/a")
        assert client.is_open(0.4)
        start = time.monotonic()
        leftover = client.wait_closed(3)
        assert leftover == b"", f"idle keep-alive close must be silent, got {leftover!r}"
        assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("sent", [b"", b"GET /a HTTP/1.1", b"GET /a HTTP/1.1\r\nHost: a",
                                  b"GET /a HTTP/1.1\r\nHost: a\r\n"],
                         ids=["nothing", "half-line", "half-header", "no-empty-line"])
def test_head_not_arriving_within_timeout_is_408(serve, sent):
    app = Recorder(path_app)
    running = serve(app, timeout=1)
    start = time.monotonic()
    result = talk(running, sent, timeout=4)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert resp.status == 408, resp
    assert 0.8 < result.elapsed < 3, result.elapsed
    assert time.monotonic() - start < 4
    assert app.count == 0


def test_408_is_a_total_deadline_not_per_read(serve):
    app = Recorder(path_app)
    running = serve(app, timeout=1)
    raw = get("/a", headers=[(f"X-{i}", "v") for i in range(40)])
    with Client(running) as client:
        start = time.monotonic()
        for i in range(0, len(raw) - 4, 4):     # trickle, never finishing the head
            if not client.send(raw[i:i + 4]):
                break
            if client.pending(0.1) or client.eof or time.monotonic() - start > 4:
                break
        got = client.wait_closed(3)
        elapsed = time.monotonic() - start
    (resp,) = parse_responses(got)
    assert resp.status == 408, resp
    assert elapsed < 2.5, f"slowloris kept the connection for {elapsed:.1f}s"
    assert app.count == 0


def test_partial_second_request_is_408(serve):
    app = Recorder(path_app)
    running = serve(app, timeout=1)
    with Client(running) as client:
        client.send(get("/a"))
        check_served(client.response(), "/a")
        client.send(b"GET /b HTTP/1.1\r\nHo")
        resp = client.response(timeout=4)
        assert resp.status == 408, resp
        client.wait_closed(2)
    assert app.paths == ["/a"]


# ---------------------------------------------------------------------------
# response framing: Content-Length, chunked, close-delimited
# ---------------------------------------------------------------------------

def gen_app(chunks, status="200 OK", headers=(("Content-Type", "text/plain"),)):
    def app_(environ, start_response):
        start_response(status, list(headers))
        return (c for c in chunks)
    return app_


@pytest.mark.parametrize("chunks", [[], [b""]], ids=["none", "only-empty"])
def test_generator_that_yields_nothing_gets_content_length_zero(serve, chunks):
    # Nothing was sent before the generator ended, so the length is known: 0.
    running = serve(Recorder(gen_app(chunks)))
    with Client(running) as client:
        client.send(get("/a"))
        resp = client.response()
        assert resp.header_list("Content-Length") == ["0"], resp
        assert resp.header("Transfer-Encoding") is None
        client.send(get("/b"))
        assert client.response().status == 200


@pytest.mark.parametrize("chunks", [[b"ab", b"cde"], [b"x" * 70000, b"y"], [b"a", b"", b"b"]],
                         ids=["two", "big", "empty-middle"])
def test_http11_generator_without_length_is_chunked(serve, chunks):
    app = Recorder(gen_app(chunks))
    running = serve(app)
    with Client(running) as client:
        client.send(get("/a"))
        resp = client.response()
        assert resp.status == 200
        assert resp.header_list("Transfer-Encoding") == ["chunked"], resp
        assert resp.header("Content-Length") is None
        assert resp.complete and resp.body == b"".join(chunks)
        assert resp.raw_body.endswith(b"0\r\n\r\n")
        client.send(get("/b"))        # the chunked stream ended cleanly: connection reusable
        assert client.response().status == 200
    assert app.paths == ["/a", "/b"]


def test_http11_chunked_exact_bytes(serve):
    running = serve(Recorder(gen_app([b"hello"])))
    with Client(running) as client:
        client.send(get("/"))
        resp = client.response()
    assert resp.raw_body == b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("body", [[b"abcde"], (b"abcde",), [], [b""]],
                         ids=["list", "tuple", "empty-list", "empty-bytes"])
def test_list_body_gets_computed_content_length(serve, body):
    # PEP 3333: with at most one chunk the server knows the length.
    # No validator: wsgiref.validate hides the list behind an iterator.
    running = serve(Recorder(make_app(body=body), validate=False))
    for version in ("HTTP/1.1", "HTTP/1.0"):
        with Client(running) as client:
            client.send(get("/", version=version))
            resp = client.response()
            total = b"".join(body)
            assert resp.header_list("Content-Length") == [str(len(total))], resp
            assert resp.header("Transfer-Encoding") is None
            assert resp.body == total


@pytest.mark.parametrize("headers", [[("Connection", "keep-alive")], []])
def test_http10_generator_without_length_is_close_delimited(serve, headers):
    app = Recorder(gen_app([b"abc", b"def"]))
    running = serve(app)
    raw = get("/a", version="HTTP/1.0", host=None, headers=headers)
    result = talk(running, raw + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert resp.header("Transfer-Encoding") is None
    assert resp.header("Content-Length") is None
    assert resp.framing == "close" and resp.body == b"abcdef"
    assert "keep-alive" not in resp.connection_tokens
    assert resp.header("Keep-Alive") is None
    assert app.paths == ["/a"]


def test_http10_server_protocol(serve):
    app = Recorder(gen_app([b"abc"]))
    running = serve(app, protocol="HTTP/1.0")
    result = talk(running, get("/a") + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert (resp.version, resp.status) == ("HTTP/1.0", 200)
    assert resp.header("Transfer-Encoding") is None
    assert resp.framing == "close" and resp.body == b"abc"
    assert app.paths == ["/a"]


def test_status_line_uses_server_protocol(serve):
    running = serve(Recorder(path_app), protocol="HTTP/1.0")
    result = talk(running, get("/a", version="HTTP/1.0", host=None))
    (resp,) = parse_responses(result.data)
    assert result.data.startswith(b"HTTP/1.0 200 OK\r\n")
    check_served(resp, "/a")


def test_status_line_default_is_http11_for_http10_client(running, app):
    result = talk(running, get("/a", version="HTTP/1.0", host=None))
    assert result.data.startswith(b"HTTP/1.1 200 OK\r\n")


# ---------------------------------------------------------------------------
# no body for HEAD, 1xx, 204, 304
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["list", "generator"])
def test_head_response_has_no_body(serve, kind):
    closing: list[Closing] = []

    def app_(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        if kind == "list":
            headers.append(("Content-Length", "11"))
        start_response("200 OK", headers)
        closing.append(Closing([b"hello", b" world"]))
        return closing[-1]

    app = Recorder(app_)
    running = serve(app)
    raw = request("HEAD", "/h") + get("/g", headers=[("Connection", "close")])
    result = talk(running, raw)
    assert result.closed
    head_end = result.data.index(b"\r\n\r\n") + 4
    rest = result.data[head_end:]
    # Nothing but (possibly) the next response may follow the HEAD response's head.
    assert rest == b"" or rest.startswith(b"HTTP/1.1 200 "), rest[:100]
    assert b"hello" not in result.data[:head_end + 5]
    responses = parse_responses(result.data, ["HEAD", "GET"])
    assert responses[0].status == 200
    if kind == "list":
        assert responses[0].header("Content-Length") == "11"
        assert [r.status for r in responses] == [200, 200]
        assert responses[1].body == b"hello world"
    assert all(c.closed.is_set() for c in closing)


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body(serve, status):
    closing: list[Closing] = []

    def app_(environ, start_response):
        if environ["PATH_INFO"] == "/empty":
            start_response(status, [])
            closing.append(Closing([b"must not", b" be sent"]))
            return closing[-1]
        return path_app(environ, start_response)

    app = Recorder(app_)
    running = serve(app)
    raw = get("/empty") + get("/g", headers=[("Connection", "close")])
    result = talk(running, raw)
    assert b"must not" not in result.data and b"be sent" not in result.data
    first, second = parse_responses(result.data)
    assert first.status == int(status[:3])
    assert first.header("Transfer-Encoding") is None
    assert first.header("Content-Length") in (None, "0")
    check_served(second, "/g")
    assert all(c.closed.is_set() for c in closing)


def test_1xx_status_from_app_has_no_body(serve):
    app = Recorder(make_app("103 Early Hints", body=[b"secret-body"]))
    running = serve(app)
    result = talk(running, get("/", headers=[("Connection", "close")]), timeout=2)
    assert result.data.startswith(b"HTTP/1.1 103 ")
    assert b"secret-body" not in result.data


# ---------------------------------------------------------------------------
# Date and Server
# ---------------------------------------------------------------------------

def test_date_and_server_headers(serve):
    running = serve(Recorder(path_app), server_name="stogie-test")
    result = talk(running, get("/", headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert resp.header_list("Server") == ["stogie-test"]
    dates = resp.header_list("Date")
    assert len(dates) == 1 and IMF_FIXDATE.match(dates[0]), dates
    sent = email.utils.parsedate_to_datetime(dates[0]).timestamp()
    assert abs(sent - time.time()) < 5


def test_date_and_server_on_chunked_and_http10_responses(serve):
    running = serve(Recorder(gen_app([b"x"])), server_name="srv")
    for raw in (get("/"), get("/", version="HTTP/1.0", host=None)):
        with Client(running) as client:
            client.send(raw)
            resp = client.response()
            assert resp.header_list("Server") == ["srv"]
            assert len(resp.header_list("Date")) == 1


def test_app_date_and_server_are_not_duplicated(serve):
    app = make_app(headers=[("Content-Type", "text/plain"), ("Server", "mine"),
                            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")], body=[b"ok"])
    running = serve(Recorder(app), server_name="stogie-test")
    result = talk(running, get("/", headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert resp.header_list("Server") == ["mine"]
    assert resp.header_list("Date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]


def test_server_name_change_is_live(serve):
    running = serve(Recorder(path_app), server_name="before")
    running.server.server_name = "after"
    result = talk(running, get("/", headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert resp.header_list("Server") == ["after"]


# ---------------------------------------------------------------------------
# Content-Length declared by the app vs. the body it yields
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [[b"hello"], [b"he", b"llo"], []], ids=str)
def test_body_shorter_than_content_length_closes(serve, chunks):
    app = Recorder(gen_app(chunks, headers=[("Content-Type", "text/plain"),
                                            ("Content-Length", "10")]), validate=False)
    running = serve(app)
    start = time.monotonic()
    result = talk(running, get("/a") + NEXT, timeout=4)
    assert result.closed, "client left waiting for bytes that will never come"
    assert time.monotonic() - start < 2
    if result.data:
        (resp,) = parse_responses(result.data)
        if resp.status == 200:
            assert resp.body == b"".join(chunks) and not resp.complete
    assert "/next" not in app.paths


def test_body_longer_than_content_length_is_cut_and_closed(serve):
    app = Recorder(gen_app([b"hello", b"world!"], headers=[("Content-Type", "text/plain"),
                                                         ("Content-Length", "5")]),
                   validate=False)
    running = serve(app)
    result = talk(running, get("/a") + NEXT)
    assert result.closed
    assert b"world" not in result.data
    (resp,) = parse_responses(result.data)
    assert (resp.status, resp.body) == (200, b"hello")
    assert "/next" not in app.paths


def test_single_chunk_longer_than_content_length(serve):
    app = Recorder(make_app(headers=[("Content-Type", "text/plain"), ("Content-Length", "5")],
                            body=[b"helloworld"]), validate=False)
    running = serve(app)
    result = talk(running, get("/a") + NEXT)
    assert result.closed
    assert b"world" not in result.data
    (resp,) = parse_responses(result.data)
    assert (resp.status, resp.body) in ((200, b"hello"), (500, resp.body)), resp
    assert "/next" not in app.paths


def test_exact_content_length_keeps_connection(serve):
    app = Recorder(gen_app([b"he", b"llo"], headers=[("Content-Type", "text/plain"),
                                                    ("Content-Length", "5")]))
    running = serve(app)
    with Client(running) as client:
        for _ in range(2):
            client.send(get("/"))
            resp = client.response()
            assert (resp.status, resp.body, resp.framing) == (200, b"hello", "length")
            assert resp.header("Transfer-Encoding") is None
        assert client.is_open(0.2)


# ---------------------------------------------------------------------------
# hop-by-hop headers from the app
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["close", "Close", "foo, close"])
def test_app_connection_close_is_honoured(serve, value):
    app = Recorder(make_app(headers=[("Content-Type", "text/plain"), ("Content-Length", "2"),
                                     ("Connection", value)], body=[b"ok"]))
    running = serve(app)
    result = talk(running, get("/a") + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert (resp.status, resp.body) == (200, b"ok")
    assert resp.says_close
    assert len(resp.header_list("Connection")) == 1, resp
    assert app.paths == ["/a"]


def test_app_connection_keep_alive_does_not_override_client_close(serve):
    app = Recorder(make_app(headers=[("Content-Type", "text/plain"), ("Content-Length", "2"),
                                     ("Connection", "keep-alive")], body=[b"ok"]))
    running = serve(app)
    result = talk(running, get("/a", headers=[("Connection", "close")]) + NEXT)
    assert result.closed
    (resp,) = parse_responses(result.data)
    assert resp.connection_tokens == {"close"}, resp
    assert app.paths == ["/a"]


@pytest.mark.parametrize("te", ["chunked", "gzip", "gzip, chunked", "identity"])
@pytest.mark.parametrize("kind", ["list", "generator"])
def test_app_transfer_encoding_not_passed_through(serve, te, kind):
    def app_(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", te)])
        return [b"hello"] if kind == "list" else (c for c in [b"hel", b"lo"])

    app = Recorder(app_, validate=False)
    running = serve(app)
    with Client(running) as client:
        client.send(get("/a"))
        resp = client.response()
        assert (resp.status, resp.body) == (200, b"hello"), resp
        assert resp.complete
        assert resp.header_list("Transfer-Encoding") in ([], ["chunked"]), resp
        client.send(get("/b", headers=[("Connection", "close")]))
        assert client.response().status == 200
        client.wait_closed(2)


def test_app_keep_alive_header_not_passed_through(serve):
    app = Recorder(make_app(headers=[("Content-Type", "text/plain"), ("Content-Length", "2"),
                                     ("Keep-Alive", "timeout=999")], body=[b"ok"]),
                   validate=False)
    running = serve(app, timeout=3)
    result = talk(running, get("/", headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert "timeout=999" not in resp.header_list("Keep-Alive")


# ---------------------------------------------------------------------------
# invalid status / headers from the app: 500 before anything is sent
# ---------------------------------------------------------------------------

# ("200" alone is served with its standard reason phrase: see test_conformance.py)
BAD_STATUSES = ["20", "abc", "20 OK", "2000 OK", "200OK", "OK 200", " 200 OK", "2x0 OK",
                "200 OK\r\nX-Injected: 1", "200 OK\nX-Injected: 1", "200 OK\rX-Injected: 1",
                "200 OK\x00", "", b"200 OK", 200, None]

BAD_HEADERS = [
    [("X-A", "a\r\nX-Injected: 1")],
    [("X-A", "a\nX-Injected: 1")],
    [("X-A", "a\rX-Injected: 1")],
    [("X-A", "a\x00b")],
    [("X-A\r\nX-Injected", "1")],
    [("X-A\n", "1")],
    [("X-\x00", "1")],
    [(b"X-A", "1")],
    [("X-A", b"1")],
    [("X-A", 1)],
    [(None, "1")],
    [("X-A", "\u20ac")],           # not latin-1
    [("X-\u20ac", "1")],
    [("Content-Length", "abc")],
]


def injected_app(status, headers):
    def app_(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [b"app-body-x"]
    return app_


def assert_500_nothing_of_the_app(result, app):
    assert result.closed
    assert b"X-Injected" not in result.data and b"app-body-x" not in result.data
    (resp,) = parse_responses(result.data)
    assert resp.status == 500, resp
    assert "/next" not in app.paths


@pytest.mark.parametrize("status", BAD_STATUSES, ids=repr)
def test_bad_status_from_app_is_500(serve, status):
    app = Recorder(injected_app(status, []), validate=False)
    running = serve(app)
    assert_500_nothing_of_the_app(talk(running, get("/a") + NEXT), app)


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=repr)
def test_bad_headers_from_app_are_500(serve, headers):
    app = Recorder(injected_app("200 OK", headers), validate=False)
    running = serve(app)
    assert_500_nothing_of_the_app(talk(running, get("/a") + NEXT), app)


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "599 Custom", "200 ",
                                    "299 caf\xe9", "201 Created \t tabs"])
def test_valid_statuses_from_app(serve, status):
    app = Recorder(injected_app(status, [("Content-Length", "10")]), validate=False)
    running = serve(app)
    result = talk(running, get("/a", headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert result.data.startswith(b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n")
    assert resp.body == b"app-body-x"


def test_latin1_header_value_from_app_is_sent_as_latin1(serve):
    app = Recorder(injected_app("200 OK", [("X-A", "caf\xe9"), ("Content-Length", "10")]))
    running = serve(app)
    result = talk(running, get("/a", headers=[("Connection", "close")]))
    assert b"\r\nX-A: caf\xe9\r\n" in result.data


def test_server_keeps_serving_after_app_500(serve):
    calls = []

    def app_(environ, start_response):
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/bad":
            start_response("bad status", [])
            return [b""]
        return path_app(environ, start_response)

    running = serve(app_)
    assert parse_responses(talk(running, get("/bad")).data)[0].status == 500
    (resp,) = parse_responses(talk(running, get("/ok", headers=[("Connection", "close")])).data)
    check_served(resp, "/ok")


def test_concurrent_keep_alive_connections_are_independent(serve):
    app = Recorder(path_app)
    running = serve(app, numthreads=4)
    clients = [Client(running) for _ in range(5)]
    errors: list[BaseException] = []

    def run(i: int, client: Client) -> None:
        try:
            for j in range(5):
                client.send(get(f"/c{i}/{j}"))
                check_served(client.response(), f"/c{i}/{j}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for c in clients:
        c.close()
    assert not errors, errors
    assert app.count == 25


def test_client_not_reading_the_response_is_dropped_after_timeout(serve):
    chunk = b"x" * (1 << 20)
    body = Closing(chunk for _ in range(512))       # up to 512 MiB, never all buffered
    app = Recorder(make_app(body=lambda: body))
    running = serve(app, timeout=1)
    with running.connect() as sock:
        sock.sendall(get("/"))
        # Never read: the server's write stalls and must give up after `timeout`.
        assert body.closed.wait(8), "server waited on a stalled write for more than 8s"
