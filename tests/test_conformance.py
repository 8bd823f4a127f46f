"""Conformance findings from external suites (issue 12) and the parser's remaining waits
(issue 22, items 2 and 3), each on raw sockets against a real server.

Rejections are checked as in the other protocol tests: exactly one error response in cheroot's
`simple_response` shape, the connection closed, and nothing after the bad request served.
"Promptly" means well inside the server's `timeout` (5 s here): the verdict must not wait for
bytes that the client never sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from _http import (
    Client,
    Recorder,
    assert_error,
    echo_app,
    get,
    parse_responses,
    request,
    talk,
)
from conftest import Running, start_server

TIMEOUT = 5  # the server's `timeout`: the deadline a stalled parse would hit
PROMPT = 2.0  # a verdict that came from the bytes, not from a deadline
NEXT = get("/next")
INVALID_HOST = b"Invalid Host header."
BAD_CHUNKED = b"Malformed chunked request body."
METHOD_TOO_LONG = b"The request method is longer than any method this server implements."
URI_TOO_LONG = b"The Request-URI sent with the request exceeds the maximum allowed bytes."
TOO_LARGE = b"The entity sent with the request exceeds the maximum allowed bytes."
CRLF_REQUIRED = b"HTTP requires CRLF terminators"


@pytest.fixture(scope="module")
def app() -> Recorder:
    """Echoes the request body it reads to the end (so chunked framing errors surface)."""
    return Recorder(echo_app)


@pytest.fixture(scope="module")
def running(app: Recorder) -> Iterator[Running]:
    server = start_server(app, timeout=TIMEOUT)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_recorder(app: Recorder) -> None:
    with app.lock:
        app.calls.clear()


def post_chunked(raw_body: bytes, target: str = "/echo") -> bytes:
    return request("POST", target, headers=[("Transfer-Encoding", "chunked")], body=raw_body)


def post_cl(length: str, body: bytes, target: str = "/echo") -> bytes:
    return request("POST", target, headers=[("Content-Length", length)], body=body)


# ---------------------------------------------------------------------------
# issue 12.1: an empty Host (RFC 9110 §4.2.1, RFC 9112 §3.2)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: :\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: \r\n\r\n",
        b"GET http://:80/ HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GET http://:80 HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GET https://:443/x?y HTTP/1.1\r\nHost: example.test\r\n\r\n",
    ],
    ids=[
        "empty",
        "empty-no-space",
        "port-only",
        "colon-only",
        "empty-http10",
        "absolute-form-port-only",
        "absolute-form-no-path",
        "absolute-form-https",
    ],
)
def test_empty_host_is_400_and_close(running: Running, app: Recorder, raw: bytes) -> None:
    result = talk(running, raw + NEXT)
    assert_error(result, 400, INVALID_HOST)
    assert app.count == 0, app.calls


def test_http10_without_host_is_still_served(running: Running, app: Recorder) -> None:
    # Guard (passes before and after): only an *empty* Host is refused.
    result = talk(running, b"GET /ten HTTP/1.0\r\n\r\n")
    (resp,) = parse_responses(result.data)
    assert (resp.version, resp.status) == ("HTTP/1.1", 200), resp
    assert app.paths == ["/ten"]


# ---------------------------------------------------------------------------
# issue 12.2: chunk extensions (RFC 9112 §7.1.1)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_line",
    [
        b"5;",
        b"5;bad[=x",
        b"5;=",
        b"5;a b",
        b"5;a=",
        b"5;a=b c",
        b'5;a="open',
        b'5;a="x"y',
        b"5;;a",
        b"5;a;",
        b"5 ;",
        b"5;a ",
        b"5;a=(b)",
    ],
    ids=[
        "bare-semicolon",
        "bad-name-char",
        "no-name",
        "space-in-name",
        "no-value",
        "space-in-token-value",
        "unterminated-quote",
        "text-after-quote",
        "empty-first",
        "empty-last",
        "bws-then-nothing",
        "trailing-bws",
        "value-not-token",
    ],
)
def test_malformed_chunk_extension_is_400_and_close(
    running: Running, app: Recorder, size_line: bytes
) -> None:
    raw = post_chunked(size_line + b"\r\nhello\r\n0\r\n\r\n")
    result = talk(running, raw + NEXT)
    assert_error(result, 400, BAD_CHUNKED)
    # The body is collected before the application runs: refused there, the app never runs.
    assert app.paths == []


def test_malformed_chunk_extension_is_refused_before_the_line_ends(running: Running) -> None:
    # `5;` then CR: the CR proves the extension empty; no LF and no data are awaited.
    with Client(running) as client:
        client.send(post_chunked(b"5;\r"))
        assert_error(client.wait_closed(PROMPT), 400, BAD_CHUNKED)


@pytest.mark.parametrize(
    "size_line",
    [
        b"5;name",
        b"5;name=value",
        b'5 ; name = "quoted \\" value"',
        b'5;a;b=1;c="x"',
        b"5\t;\tname\t=\ttoken",
        b'5;a=""',
        b'5;a="caf\xe9"',
    ],
    ids=[
        "name",
        "name-value",
        "bws-quoted-escape",
        "several",
        "tabs",
        "empty-quoted",
        "obs-text-quoted",
    ],
)
def test_valid_chunk_extensions_keep_working(
    running: Running, app: Recorder, size_line: bytes
) -> None:
    # Guard (passes before and after): well-formed extensions are ignored, the body decoded.
    raw = post_chunked(size_line + b"\r\nhello\r\n0" + size_line[1:] + b"\r\n\r\n")
    result = talk(running, raw + get("/after", headers=[("Connection", "close")]))
    first, second = parse_responses(result.data, ["POST", "GET"])
    assert (first.status, first.body) == (200, b"hello"), first
    assert (second.status, second.header("X-Path")) == (200, "/after"), second
    assert app.paths == ["/echo", "/after"]


# ---------------------------------------------------------------------------
# issue 12.3: a method longer than any implemented (RFC 9112 §3)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"M" * 100_000 + b" / HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGE" + b"T" * 9000,
        b"\r\n" + b"X" * 65 + b" /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["100k-method", "unterminated", "65-byte-method-long-target"],
)
def test_long_method_is_501_and_close(running: Running, app: Recorder, raw: bytes) -> None:
    result = talk(running, raw)
    assert_error(result, 501, METHOD_TOO_LONG)
    assert result.elapsed < PROMPT
    assert app.count == 0


def test_long_target_keeps_414(running: Running, app: Recorder) -> None:
    # Guard (passes before and after): a method of 64 bytes is not "too long"; the target is.
    raw = b"X" * 64 + b" /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: example.test\r\n\r\n"
    result = talk(running, raw)
    assert_error(result, 414, URI_TOO_LONG)
    assert app.count == 0


# ---------------------------------------------------------------------------
# issue 12.4: a status of three digits and no reason
# ---------------------------------------------------------------------------


def status_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the status given as the (percent-decoded) path: `/204`, `/200%20Fine`."""
    status = environ["PATH_INFO"][1:]
    start_response(status, [("Content-Length", "0")])
    return []


@pytest.fixture(scope="module")
def status_server() -> Iterator[Running]:
    server = start_server(status_app, timeout=TIMEOUT)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "code, line",
    [
        ("204", b"HTTP/1.1 204 No Content\r\n"),
        ("304", b"HTTP/1.1 304 Not Modified\r\n"),
        ("200", b"HTTP/1.1 200 OK\r\n"),
        ("404", b"HTTP/1.1 404 Not Found\r\n"),
        ("299", b"HTTP/1.1 299 \r\n"),
        ("599", b"HTTP/1.1 599 \r\n"),
    ],
)
def test_status_without_reason_gets_the_standard_phrase(
    status_server: Running, code: str, line: bytes
) -> None:
    with Client(status_server) as client:
        client.send(get("/" + code) + get("/200%20Fine"))
        first = client.response()
        assert first.head.startswith(line), first.head
        assert first.status == int(code) and first.body == b""
        second = client.response()  # the connection was kept
        assert second.head.startswith(b"HTTP/1.1 200 Fine\r\n"), second.head


@pytest.mark.parametrize("status", ["20", "2000", "204%09No", "600", "099", "abc", "204x"])
def test_other_malformed_statuses_stay_500(status_server: Running, status: str) -> None:
    # Guard (passes before and after): only exactly three digits get a phrase added.
    result = talk(status_server, get("/" + status, headers=[("Connection", "close")]))
    (resp,) = parse_responses(result.data)
    assert resp.status == 500, resp


# ---------------------------------------------------------------------------
# issue 12.5: Content-Length with leading zeros (RFC 9110 §8.6: 1*DIGIT)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    ["005", "0" * 30 + "5", "0" * 25 + "000000000000000005"],
    ids=["005", "30-zeros", "25-zeros-18-digits"],
)
def test_content_length_with_leading_zeros(running: Running, app: Recorder, length: str) -> None:
    result = talk(
        running, post_cl(length, b"hello") + get("/after", headers=[("Connection", "close")])
    )
    first, second = parse_responses(result.data, ["POST", "GET"])
    assert (first.status, first.body) == (200, b"hello"), first
    assert (second.status, second.header("X-Path")) == (200, "/after"), second
    assert app.paths == ["/echo", "/after"]


def test_content_length_still_fits_in_63_bits(running: Running, app: Recorder) -> None:
    # Guard: leading zeros aside, 19 digits are still too many.
    result = talk(running, post_cl("0000" + "1" * 19, b"hello"))
    assert_error(result, 400, b"Malformed Content-Length Header.")
    assert app.count == 0


# ---------------------------------------------------------------------------
# issue 22.2: a bare CR is a 400 at the byte after it (RFC 9112 §2.2)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\rHost: x\r\r",
        b"GET / HTTP/1.1\rX",
        b"GET / HTTP/1.1\r\r",
        b"GET /a\rb HTTP/1.1\r\n",
        b"\r\nGET\r/",
    ],
    ids=["cr-only-line-ends", "cr-then-letter", "cr-cr", "cr-in-target", "cr-in-method"],
)
def test_bare_cr_in_request_line_is_400_at_once(
    running: Running, app: Recorder, raw: bytes
) -> None:
    result = talk(running, raw)
    assert_error(result, 400, CRLF_REQUIRED)
    assert result.elapsed < PROMPT
    assert app.count == 0


def test_bare_cr_waits_only_for_the_next_byte(running: Running, app: Recorder) -> None:
    with Client(running) as client:
        client.send(b"GET / HTTP/1.1\r")
        assert client.is_open(0.5), "a CR at the end of what arrived may still be a CRLF"
        client.send(b"X")
        assert_error(client.wait_closed(PROMPT), 400, CRLF_REQUIRED)
    assert app.count == 0


def test_bare_cr_in_incomplete_fields_is_400_at_once(running: Running, app: Recorder) -> None:
    # Guard (the field block was already checked while incomplete): same verdict in a field.
    result = talk(running, b"GET / HTTP/1.1\r\nHost: x\rX-A: 1")
    assert_error(result, 400)
    assert result.elapsed < PROMPT


# ---------------------------------------------------------------------------
# issue 22.3: impossible chunk sizes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        b"ffffffffffffffff\r\n",
        b"10000000001\r\n",
        b"100000000000\r\n",
        b"0000fffffffffff",
        b"ffffffffffff",
    ],
    ids=["16-f", "2^40+1", "12-digits", "leading-zeros-unterminated", "12-f-unterminated"],
)
def test_chunk_size_over_one_tib_is_400_at_once(
    running: Running, app: Recorder, size: bytes
) -> None:
    # Nothing after these bytes comes: the verdict is from the size's digits alone.
    result = talk(running, post_chunked(size), timeout=TIMEOUT - 1)
    assert_error(result, 400, BAD_CHUNKED)
    assert result.elapsed < PROMPT
    assert app.paths == []  # refused while the body was collected


def test_chunk_size_at_one_tib_waits_for_its_data(running: Running) -> None:
    # Guard: 2^40 itself (with leading zeros, 16 digits) is a valid size: no verdict.
    with Client(running) as client:
        client.send(post_chunked(b"0000010000000000\r\n" + b"x" * 10))
        assert client.is_open(1.0)


@pytest.mark.parametrize(
    "size",
    [b"ffffffffffffffff\r\n", b"ffffffffffff", b"1000"],
    ids=["16-f", "12-f-unterminated", "4096-unterminated"],
)
def test_chunk_size_over_the_body_limit_is_413_at_once(
    serve: Callable[..., Running], size: bytes
) -> None:
    # `16-f` is a guard (a 413 once the size line is in, before and after); the unterminated
    # sizes are refused as their digits arrive, no longer only at the line's end.
    app = Recorder(echo_app)
    limited = serve(app, timeout=TIMEOUT, max_request_body_size=100)
    result = talk(limited, post_chunked(size), timeout=TIMEOUT - 1)
    assert_error(result, 413, TOO_LARGE)
    assert result.elapsed < PROMPT
