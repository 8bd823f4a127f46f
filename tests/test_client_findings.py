"""Defects found by real frameworks and clients (HEAD lengths, early answers to uploads, and
the small ones), each checked with the client that found it."""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from typing import Any, Callable

import pytest

from _http import Client, parse_responses, talk

GET_BODY = b"x" * 5000


def framework_like_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """Like Flask, Pyramid or Bottle: HEAD gets the headers of GET and an empty body, with no
    Content-Length of its own when GET has none either."""
    start_response("200 OK", [("Content-Type", "text/html")])
    if environ["REQUEST_METHOD"] == "HEAD":
        return []
    return [GET_BODY[:2500], GET_BODY[2500:]]          # streamed like a template render


def whole_body_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]                                  # the body, also for HEAD


def head(running, path: str = "/") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(running.host, running.port, timeout=5)
    conn.request("HEAD", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_head_without_an_application_length_says_no_length(serve):
    running = serve(framework_like_app)
    resp = head(running)
    assert resp.status == 200
    assert resp.getheader("Content-Length") is None     # not a false "0"
    conn = http.client.HTTPConnection(running.host, running.port, timeout=5)
    conn.request("GET", "/")
    got = conn.getresponse()
    assert got.read() == GET_BODY
    conn.close()


def test_head_with_the_body_gets_its_true_length(serve):
    running = serve(whole_body_app)
    resp = head(running)
    assert resp.getheader("Content-Length") == "5"


def early_answer_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers without reading the upload (a rejection by size, auth or route)."""
    start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"no"]


UPLOAD = b"u" * (8 * 1024 * 1024)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_http_client_reads_an_early_answer_to_a_8mb_upload(serve, buffered):
    running = serve(early_answer_app, buffer_request_body=buffered)
    conn = http.client.HTTPConnection(running.host, running.port, timeout=10)
    conn.request("POST", "/upload", body=UPLOAD)     # writes the whole body before reading
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (403, b"no")
    if buffered:
        # The body was collected (spooled) before the application answered: nothing is left
        # unread, so the connection is kept.
        assert resp.getheader("Connection") is None
    else:
        assert resp.getheader("Connection") == "close"
    conn.close()


def test_urllib_reads_a_413_to_a_8mb_upload(serve):
    running = serve(early_answer_app, max_request_body_size=1024 * 1024)
    req = urllib.request.Request(running.url("/upload"), data=UPLOAD, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 413


def failing_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    raise RuntimeError("boom")


def test_a_500_says_what_happened(serve):
    running = serve(failing_app)
    result = talk(running, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = parse_responses(result.data)[0]
    assert resp.status == 500
    assert resp.body.startswith(b"The server encountered an unexpected condition")


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def __call__(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        self.lines.append((level, str(msg)))

    def about(self, text: str) -> list[tuple[int, str]]:
        return [line for line in self.lines if text in line[1]]


def bytes_app(environ: dict, start_response: Callable[..., Any]) -> bytes:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return b"forgot the list"


def test_returning_bare_bytes_is_explained(serve, caplog):
    running = serve(bytes_app)
    with caplog.at_level(logging.ERROR, logger="stogie"):
        result = talk(running, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_responses(result.data)[0].status == 500
    assert "return an iterable of bytes, e.g. [body]" in caplog.text
    assert "not int" not in caplog.text


def short_body_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"12345"]


def test_a_short_body_is_logged_once_with_the_request(serve):
    running = serve(short_body_app)
    log = Log()
    running.server.error_log = log
    result = talk(running, b"GET /short?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert result.closed and result.data.endswith(b"12345")
    warnings = log.about("Content-Length")
    assert len(warnings) == 1, log.lines
    level, text = warnings[0]
    assert level == logging.WARNING
    assert "GET /short?q=1" in text and "5 of the 10 bytes" in text


def hop_by_hop_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Upgrade", "websocket"),
                              ("Proxy-Authenticate", "Basic"), ("Content-Length", "2")])
    return [b"ok"]


def test_hop_by_hop_headers_from_the_application_are_dropped(serve):
    running = serve(hop_by_hop_app)
    with Client(running) as client:
        for _ in range(2):
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = client.response()
            assert resp.status == 200 and resp.body == b"ok"
            assert resp.header("Upgrade") is None
            assert resp.header("Proxy-Authenticate") is None


def ignores_body_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_an_unread_chunked_body_known_too_large_says_close(serve):
    """The first chunk announces 1 MiB, more than is skipped to keep the connection: the
    response says so, instead of closing without warning after a keep-alive response."""
    running = serve(ignores_body_app, buffer_request_body=False)
    result = talk(running, CHUNKED_POST + b"100000\r\n" + b"d" * 1000, timeout=5)
    resp = parse_responses(result.data)[0]
    assert resp.status == 200
    assert resp.header("Connection") == "close"
    assert result.closed


def test_a_small_unread_chunked_body_keeps_the_connection(serve):
    running = serve(ignores_body_app)
    with Client(running) as client:
        client.send(CHUNKED_POST + b"5\r\nhello\r\n0\r\n\r\n")
        first = client.response()
        assert first.header("Connection") is None
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response().status == 200
