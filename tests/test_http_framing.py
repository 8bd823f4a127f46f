"""HTTP request bodies: Content-Length, chunked, trailers, CL+TE smuggling rules, limits,
unread bodies and `Expect: 100-continue` (docs/http-policy.md, "3. Body framing").

Each smuggling case is followed by a pipelined request: "400 + close" means the server
answers once, closes, and never calls the app for anything after the bad request.
"""

from __future__ import annotations

import threading
import time

import pytest

from _http import (
    Client,
    Recorder,
    assert_error,
    chunked,
    echo_app,
    get,
    parse_responses,
    path_app,
    read_body,
    request,
    talk,
)

NEXT = get("/next")
SMUGGLED = get("/smuggled")
BAD_CL = b"Malformed Content-Length Header."
TOO_LARGE = b"The entity sent with the request exceeds the maximum allowed bytes."
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def post(body: bytes = b"", headers=(), target: str = "/echo", version: str = "HTTP/1.1",
         content_length: bool = True, **kw) -> bytes:
    return request("POST", target, version, list(headers), body,
                   content_length=content_length, **kw)


def post_chunked(raw_body: bytes, headers=(), target: str = "/echo", **kw) -> bytes:
    return request("POST", target, "HTTP/1.1",
                   [("Transfer-Encoding", "chunked"), *headers], raw_body, **kw)


@pytest.fixture
def app():
    return Recorder(echo_app)


@pytest.fixture
def running(serve, app):
    return serve(app)


def rejected(running, app, raw, status, text=None):
    result = talk(running, raw + NEXT)
    resp = assert_error(result, status, text)
    assert app.count == 0, app.calls
    return resp


def echoed(result, *bodies):
    responses = parse_responses(result.data, ["POST"] * len(bodies))
    assert [(r.status, r.body) for r in responses] == [(200, b) for b in bodies], responses
    return responses


# ---------------------------------------------------------------------------
# Content-Length
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 10, 1000, 200_000])
def test_content_length_body_is_echoed(running, app, size):
    body = bytes(i % 251 for i in range(size))
    result = talk(running, post(body) + get("/after", headers=[("Connection", "close")]))
    first, second = parse_responses(result.data, ["POST", "GET"])
    assert (first.status, first.body) == (200, body)
    assert (second.status, second.header("X-Path")) == (200, "/after")
    assert app.paths == ["/echo", "/after"]


@pytest.mark.parametrize("value", ["5", "005", "  5  ", "\t5", "5, 5", "5,5"])
def test_valid_content_length_values(running, app, value):
    raw = post(b"hello", [("Content-Length", value)], content_length=False)
    echoed(talk(running, raw + get("/after", headers=[("Connection", "close")])),
           b"hello", b"")
    assert app.calls[0].get("CONTENT_LENGTH") == "5"


def test_identical_content_length_fields_are_collapsed(running, app):
    raw = post(b"hello", [("Content-Length", "5"), ("Content-Length", "5")],
               content_length=False)
    echoed(talk(running, raw + get("/after", headers=[("Connection", "close")])),
           b"hello", b"")


@pytest.mark.parametrize("value, text", [
    ("+5", None), ("-5", None), ("", BAD_CL), ("5 5", None), ("1_0", None), ("0x5", BAD_CL),
    ("5.0", BAD_CL), ("abc", BAD_CL), ("5a", BAD_CL), ("5, 6", None), ("5,6", None),
    ("9223372036854775808", None), ("99999999999999999999999", None), ("١", None),
    ("5;", None), ("0, 5", None),
])
def test_invalid_content_length_is_400(running, app, value, text):
    raw = request("POST", "/echo", headers=[("Content-Length", value.encode("utf-8"))],
                  body=b"hello")
    rejected(running, app, raw, 400, text)


@pytest.mark.parametrize("values", [("5", "6"), ("6", "5"), ("0", "5"), ("5", "5, 6")])
def test_differing_content_length_fields_are_400(running, app, values):
    raw = request("POST", "/echo", headers=[("Content-Length", v) for v in values],
                  body=b"hello")
    rejected(running, app, raw + SMUGGLED, 400)


def test_content_length_body_smuggling_payload_is_not_parsed(running, app):
    # The body looks like a request; it must be delivered as data, never served.
    body = SMUGGLED
    result = talk(running, post(body) + get("/after", headers=[("Connection", "close")]))
    echoed(result, body, b"")
    assert app.paths == ["/echo", "/after"]


# ---------------------------------------------------------------------------
# max_request_body_size
# ---------------------------------------------------------------------------

def test_content_length_over_limit_is_413(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    rejected(running, app, post(b"x" * 101), 413, TOO_LARGE)


def test_content_length_over_limit_is_413_without_sending_body(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    raw = request("POST", "/echo", headers=[("Content-Length", "1000000")])
    result = talk(running, raw)
    assert_error(result, 413, TOO_LARGE)
    assert app.count == 0


def test_content_length_at_limit_is_served(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    echoed(talk(running, post(b"x" * 100, [("Connection", "close")])), b"x" * 100)


def test_chunked_body_over_limit_is_413(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    raw = post_chunked(chunked(b"x" * 60, b"y" * 60))
    result = talk(running, raw + NEXT)
    assert_error(result, 413, TOO_LARGE)
    assert app.count <= 1 and "/next" not in app.paths


def test_chunked_declared_chunk_over_limit_is_413(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    raw = post_chunked(b"ffffff\r\n" + b"x" * 50)     # the rest never comes
    result = talk(running, raw, timeout=3)
    assert_error(result, 413, TOO_LARGE)
    assert result.elapsed < 2.5


def test_chunked_body_at_limit_is_served(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=100)
    raw = post_chunked(chunked(b"x" * 50, b"y" * 50), [("Connection", "close")])
    echoed(talk(running, raw), b"x" * 50 + b"y" * 50)


def test_limit_zero_is_unlimited(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=0)
    body = b"z" * 300_000
    echoed(talk(running, post(body, [("Connection", "close")])), body)


# ---------------------------------------------------------------------------
# chunked request bodies
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw_body, body", [
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"0\r\n\r\n", b""),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),          # 16 digits
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b"5;a=\"b c;d\"\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\t;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a;b=1;c\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),                         # CRLF inside data
    (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nA: 1\r\nB: \t2\t\r\nC:\r\n\r\n", b"hello"),
], ids=["one", "two", "empty", "upper-hex", "lower-hex", "leading-zeros", "16-digits",
        "extension", "quoted-ext", "space-before-ext", "tab-before-ext", "many-ext",
        "crlf-in-data", "trailer", "trailers"])
def test_valid_chunked_body(running, app, raw_body, body):
    raw = post_chunked(raw_body) + get("/after", headers=[("Connection", "close")])
    result = talk(running, raw)
    first, second = parse_responses(result.data, ["POST", "GET"])
    assert (first.status, first.body) == (200, body)
    assert (second.status, second.header("X-Path")) == (200, "/after")
    assert app.paths == ["/echo", "/after"]


@pytest.mark.parametrize("te", ["chunked", "CHUNKED", "Chunked", " chunked ", "chunked,"])
def test_transfer_encoding_chunked_is_case_insensitive(running, app, te):
    raw = request("POST", "/echo", headers=[("Transfer-Encoding", te), ("Connection", "close")],
                  body=chunked(b"hello"))
    echoed(talk(running, raw), b"hello")


def test_trailers_are_consumed_not_merged(serve):
    seen = []

    def app_(environ, start_response):
        body = read_body(environ)
        seen.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    app = Recorder(app_)
    running = serve(app)
    raw = post_chunked(chunked(b"hi", trailers=b"X-Trailer: t\r\nHost: evil\r\n"))
    result = talk(running, raw + get("/after", headers=[("Connection", "close")]))
    echoed(result, b"hi", b"")
    assert "HTTP_X_TRAILER" not in seen[0]
    assert seen[0]["HTTP_HOST"] == "example.test"
    assert app.paths == ["/echo", "/after"]


def test_chunked_smuggling_payload_in_data_is_not_parsed(running, app):
    raw = post_chunked(chunked(SMUGGLED)) + get("/after", headers=[("Connection", "close")])
    echoed(talk(running, raw), SMUGGLED, b"")
    assert app.paths == ["/echo", "/after"]


@pytest.mark.parametrize("raw_body", [
    b"g\r\nhello\r\n0\r\n\r\n",                       # not hex
    b"5x\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",                        # empty size
    b" 5\r\nhello\r\n0\r\n\r\n",                      # space before size
    b"5 \r\nhello\r\n0\r\n\r\n",                      # whitespace not followed by ';'
    b"5 x\r\nhello\r\n0\r\n\r\n",
    b"00000000000000005\r\nhello\r\n0\r\n\r\n",       # 17 digits
    b"5\nhello\r\n0\r\n\r\n",                         # bare LF after size
    b"5\rhello\r\n0\r\n\r\n",                         # bare CR after size
    b"5\r\nhelloXX0\r\n\r\n",                         # data not followed by CRLF
    b"5\r\nhello\n0\r\n\r\n",                         # data followed by bare LF
    b"5\r\nhello world\r\n0\r\n\r\n",                 # more data than declared
    b"5;a\rb\r\nhello\r\n0\r\n\r\n",                  # CR inside an extension
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",                  # LF inside an extension
    b"5;a\x00\r\nhello\r\n0\r\n\r\n",                 # NUL inside an extension
    b"5;" + b"e" * 8000 + b"\r\nhello\r\n0\r\n\r\n",  # unbounded extension
    b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",        # trailer without colon
    b"5\r\nhello\r\n0\r\nX : 1\r\n\r\n",              # space before colon in trailer
    b"5\r\nhello\r\n0\r\nX: 1\n\r\n",                 # bare LF in trailer
    b"5\r\nhello\r\n0\r\nX: 1\r\n folded\r\n\r\n",    # obs-fold in trailer
    b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n",          # NUL in trailer value
    b"5\r\nhello\r\n0\r\n\n",                         # bare LF as final line
    b"5\r\nhello\r\n0\r\nX: " + b"t" * 70000 + b"\r\n\r\n",   # unbounded trailers
], ids=["not-hex", "hex-then-junk", "minus", "plus", "0x", "empty-size", "space-before",
        "space-no-ext", "space-junk", "17-digits", "lf-after-size", "cr-after-size",
        "no-crlf-after-data", "lf-after-data", "too-much-data", "cr-in-ext", "lf-in-ext",
        "nul-in-ext", "huge-ext", "trailer-no-colon", "trailer-space-colon", "trailer-lf",
        "trailer-fold", "trailer-nul", "final-lf", "huge-trailer"])
def test_malformed_chunked_body_is_400_and_close(running, app, raw_body):
    # The app reads the body; the framing error still becomes a 400 (client garbage never
    # gets a 5xx), and nothing after it on the connection is served.
    result = talk(running, post_chunked(raw_body) + NEXT)
    assert_error(result, 400)
    assert "/next" not in app.paths
    assert app.count <= 1


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_malformed_chunked_body_unread_by_app_is_never_parsed_as_request(serve, buffered):
    app = Recorder(path_app)
    running = serve(app, buffer_request_body=buffered)
    raw = post_chunked(b"zz\r\n" + SMUGGLED) + NEXT
    result = talk(running, raw)
    assert result.closed
    responses = parse_responses(result.data, ["POST"])
    if buffered:
        # Collected before the application runs: refused there.
        assert [r.status for r in responses] == [400]
        assert app.paths == []
    else:
        assert responses and responses[0].status in (200, 400)
        assert app.paths == ["/echo"]


# ---------------------------------------------------------------------------
# Transfer-Encoding rules (RFC 9112 §6.1, §6.3)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("te", [["gzip"], ["identity"], ["chunked, gzip"], ["chunked, chunked"],
                                ["chunked", "chunked"], ["chunked", "gzip"], ["xchunked"],
                                ["chunked;q=1"], [""], ["chunked, identity"], ["\"chunked\""]],
                         ids=str)
def test_chunked_not_last_or_repeated_is_400(running, app, te):
    raw = request("POST", "/echo", headers=[("Transfer-Encoding", v) for v in te],
                  body=chunked(b"hello"))
    rejected(running, app, raw + SMUGGLED, 400)


@pytest.mark.parametrize("te", [["gzip, chunked"], ["deflate, chunked"], ["gzip", "chunked"],
                                ["identity, chunked"], ["x-custom, chunked"]], ids=str)
def test_other_coding_before_chunked_is_501(running, app, te):
    raw = request("POST", "/echo", headers=[("Transfer-Encoding", v) for v in te],
                  body=chunked(b"hello"))
    rejected(running, app, raw + SMUGGLED, 501)


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
@pytest.mark.parametrize("cl", ["0", "5", "100"])
def test_transfer_encoding_with_content_length_is_400(running, app, order, cl):
    fields = [("Content-Length", cl), ("Transfer-Encoding", "chunked")]
    if order == "te-first":
        fields.reverse()
    raw = request("POST", "/echo", headers=fields, body=chunked(b"hello") + SMUGGLED)
    rejected(running, app, raw, 400)


@pytest.mark.parametrize("te", ["chunked", "gzip", "identity"])
def test_transfer_encoding_in_http10_is_400(running, app, te):
    raw = request("POST", "/echo", "HTTP/1.0",
                  headers=[("Transfer-Encoding", te), ("Connection", "keep-alive")],
                  body=chunked(b"hello"), host=None)
    rejected(running, app, raw + SMUGGLED, 400)


def test_transfer_encoding_in_http10_with_content_length_is_400(running, app):
    body = chunked(b"hello")
    raw = request("POST", "/echo", "HTTP/1.0",
                  headers=[("Transfer-Encoding", "chunked"), ("Content-Length", len(body)),
                           ("Connection", "keep-alive")], body=body, host=None)
    rejected(running, app, raw + SMUGGLED, 400)


# ---------------------------------------------------------------------------
# bodies the application does not read
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_unread_body_is_drained_and_never_parsed(serve, framing):
    app = Recorder(path_app)
    running = serve(app)
    payload = SMUGGLED * 3
    if framing == "length":
        first = post(payload, target="/upload")
    else:
        first = post_chunked(chunked(payload[:20], payload[20:]), target="/upload")
    result = talk(running, first + get("/after", headers=[("Connection", "close")]))
    responses = parse_responses(result.data, ["POST", "GET"])
    assert [(r.status, r.body) for r in responses] == [(200, b"POST /upload"),
                                                       (200, b"GET /after")]
    assert app.paths == ["/upload", "/after"]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_partly_read_body_is_drained(serve, framing):
    def app_(environ, start_response):
        environ["wsgi.input"].read(3)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    app = Recorder(app_)
    running = serve(app)
    payload = b"abc" + SMUGGLED
    first = post(payload) if framing == "length" else post_chunked(chunked(payload))
    result = talk(running, first + get("/after", headers=[("Connection", "close")]))
    responses = parse_responses(result.data, ["POST", "GET"])
    assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]
    assert app.paths == ["/echo", "/after"]


def test_large_unread_body_closes_the_connection(serve):
    """Streamed bodies: an early answer to a body that mostly never comes."""
    app = Recorder(path_app)
    running = serve(app, timeout=5, buffer_request_body=False)
    head = request("POST", "/upload", headers=[("Content-Length", "10000000")])
    with Client(running) as client:
        client.send(head + b"x" * 1000)       # most of the body never comes
        start = time.monotonic()
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"POST /upload")
        assert resp.says_close, resp
        client.wait_closed(3)
        assert time.monotonic() - start < 4
    assert app.paths == ["/upload"]


# ---------------------------------------------------------------------------
# incomplete bodies
# ---------------------------------------------------------------------------

class BodyOutcome:
    """App that reads the whole body and records what happened."""

    def __init__(self) -> None:
        self.outcome: list[object] = []
        self.done = threading.Event()

    def __call__(self, environ, start_response):
        try:
            body = read_body(environ)
        except Exception as exc:
            self.outcome.append(exc)
            self.done.set()
            raise
        self.outcome.append(body)
        self.done.set()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


@pytest.mark.parametrize("framing, partial", [
    ("length", b"hello"),
    ("chunked", b"a\r\nhello"),
    ("chunked", b"5\r\nhello\r\n"),
    ("chunked", b"5\r\nhello\r\n0\r\n"),
    ("chunked", b"5\r\nhello\r\n0\r\nX-T: 1\r\n"),
], ids=["length", "mid-chunk", "no-last-chunk", "no-final-crlf", "mid-trailers"])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_client_half_close_mid_body_is_an_error_for_the_app(serve, framing, partial, buffered):
    outcome = BodyOutcome()
    running = serve(Recorder(outcome), timeout=2, buffer_request_body=buffered)
    if framing == "length":
        head = request("POST", "/", headers=[("Content-Length", "10")])
    else:
        head = request("POST", "/", headers=[("Transfer-Encoding", "chunked")])
    result = talk(running, head + partial, shut_write=True, timeout=4)
    if buffered:
        # Collected before the application runs: an incomplete body never reaches it.
        assert result.data == b"" and not outcome.done.is_set(), outcome.outcome
    else:
        assert outcome.done.wait(4), "app never finished"
        assert isinstance(outcome.outcome[0], Exception), (
            f"a short body was presented as complete: {outcome.outcome[0]!r}")
    assert result.closed
    for resp in parse_responses(result.data, ["POST"]):
        assert resp.status != 200, resp


def test_client_stalling_mid_body_times_out(serve):
    """Streamed bodies: the application's read times out."""
    outcome = BodyOutcome()
    running = serve(Recorder(outcome), timeout=1, buffer_request_body=False)
    head = request("POST", "/", headers=[("Content-Length", "10")])
    with Client(running) as client:
        client.send(head + b"hello")
        assert outcome.done.wait(4), "app read never returned"
        assert isinstance(outcome.outcome[0], Exception), outcome.outcome
        client.wait_closed(4)


def test_client_stalling_mid_buffered_body_gets_408(serve):
    """Buffered bodies: a body that stops arriving is answered 408 once `timeout` has passed
    (plus one second per `request_body_min_rate` bytes received); the app never runs."""
    outcome = BodyOutcome()
    running = serve(Recorder(outcome), timeout=1)
    head = request("POST", "/", headers=[("Content-Length", "10")])
    with Client(running) as client:
        start = time.monotonic()
        client.send(head + b"hello")
        data = client.wait_closed(5)
        elapsed = time.monotonic() - start
    [resp] = parse_responses(data, ["POST"])
    assert resp.status == 408, resp
    assert 0.9 <= elapsed < 2.5, elapsed
    assert not outcome.done.is_set()


def test_trickled_body_below_the_minimum_rate_gets_408(serve):
    """One byte every 0.3 s keeps every read alive, but the body as a whole is too slow:
    408 after `timeout` plus the time the bytes received earned (500 B/s: nothing here)."""
    outcome = BodyOutcome()
    running = serve(Recorder(outcome), timeout=1, request_body_min_rate=500)
    head = request("POST", "/", headers=[("Content-Length", "100")])
    with Client(running) as client:
        client.send(head)
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 4:
            if not client.send(b"x") or not client.is_open(0.3):
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, "a body trickled at 3 B/s kept the connection for 4 s"
        assert elapsed < 2.5, elapsed
    assert not outcome.done.is_set()


def test_steady_slow_body_above_the_minimum_rate_completes(serve):
    """A body arriving at 2 kB/s for longer than `timeout` is not cut (min rate 500 B/s)."""
    outcome = BodyOutcome()
    running = serve(Recorder(outcome), timeout=0.5, request_body_min_rate=500)
    head = request("POST", "/", headers=[("Content-Length", "4000")])
    with Client(running) as client:
        client.send(head)
        for _ in range(20):
            client.send(b"y" * 200)
            time.sleep(0.1)
        resp = client.response("POST")
    assert resp.status == 200, resp
    assert outcome.outcome == [b"y" * 4000]


# ---------------------------------------------------------------------------
# Expect: 100-continue
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("expect", ["100-continue", "100-Continue", "100-CONTINUE"])
def test_100_continue_is_sent_when_app_reads(running, app, expect):
    head = request("POST", "/echo", headers=[("Expect", expect), ("Content-Length", "5")])
    with Client(running) as client:
        client.send(head)
        assert client.read_exactly(len(CONTINUE), timeout=3) == CONTINUE
        client.send(b"hello")
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"hello")
        assert not resp.says_close
        client.send(get("/after"))
        assert client.response().header("X-Path") == "/after"


def test_body_sent_without_waiting_for_100_continue(running, app):
    # A client may send the body at once; the interim response (if any) precedes the final one.
    raw = post(b"hello", [("Expect", "100-continue")]) + get("/after")
    with Client(running) as client:
        client.send(raw)
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"hello")
        assert [r.head for r in resp.interim] in ([], [CONTINUE])
        assert client.response().header("X-Path") == "/after"
    assert app.paths == ["/echo", "/after"]


def test_body_limit_is_read_live(serve):
    app = Recorder(echo_app)
    running = serve(app)
    running.server.max_request_body_size = 10
    rejected(running, app, post(b"x" * 11), 413, TOO_LARGE)


def test_100_continue_waits_for_first_read(serve):
    go = threading.Event()

    def app_(environ, start_response):
        go.wait(5)
        body = read_body(environ)
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    running = serve(Recorder(app_))
    head = request("POST", "/", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
    with Client(running) as client:
        client.send(head)
        assert client.pending(0.4) == b"", "100 Continue sent before the app read the body"
        go.set()
        assert client.read_exactly(len(CONTINUE), timeout=3) == CONTINUE
        client.send(b"hello")
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"hello")


def test_100_continue_with_chunked_body(running, app):
    head = request("POST", "/echo", headers=[("Expect", "100-continue"),
                                             ("Transfer-Encoding", "chunked")])
    with Client(running) as client:
        client.send(head)
        assert client.read_exactly(len(CONTINUE), timeout=3) == CONTINUE
        client.send(chunked(b"abc", b"def"))
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"abcdef")


def test_no_100_continue_when_app_does_not_read(serve):
    app = Recorder(path_app)
    running = serve(app)
    head = request("POST", "/no-read", headers=[("Expect", "100-continue"),
                                                ("Content-Length", "5")])
    with Client(running) as client:
        client.send(head)
        resp = client.response("POST")
        assert (resp.status, resp.body) == (200, b"POST /no-read")
        assert resp.interim == [], "100 Continue sent although the app never read"
        assert resp.says_close, resp
        assert client.wait_closed(3) == b""
    assert app.paths == ["/no-read"]


def test_no_100_continue_for_http10(running, app):
    raw = request("POST", "/echo", "HTTP/1.0",
                  headers=[("Expect", "100-continue"), ("Content-Length", "5")],
                  body=b"hello", host=None)
    result = talk(running, raw)
    assert b" 100 " not in result.data.split(b"\r\n", 1)[0]
    (resp,) = parse_responses(result.data, ["POST"])
    assert resp.interim == []
    assert (resp.status, resp.body) == (200, b"hello")


def test_413_is_sent_before_any_100_continue(serve):
    app = Recorder(echo_app)
    running = serve(app, max_request_body_size=10)
    head = request("POST", "/echo", headers=[("Expect", "100-continue"),
                                             ("Content-Length", "11")])
    result = talk(running, head)
    assert not result.data.startswith(b"HTTP/1.1 100")
    assert_error(result, 413, TOO_LARGE)
    assert app.count == 0


def test_expect_on_http10_server(serve):
    app = Recorder(echo_app)
    running = serve(app, protocol="HTTP/1.0")
    head = request("POST", "/echo", headers=[("Expect", "100-continue"),
                                             ("Content-Length", "2")])
    with Client(running) as client:
        client.send(head)
        # A 1.0 server (min(request, server) is 1.0) never sends 100 Continue; the app's read
        # then waits for the body, which the client sends after a pause.
        first = client.pending(0.4)
        assert first in (b"", b"HTTP/1.0 100 Continue\r\n\r\n"), first
        client.send(b"ok")
        resp = client.response("POST")
        assert (resp.version, resp.status, resp.body) == ("HTTP/1.0", 200, b"ok")
