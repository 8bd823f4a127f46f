"""The access log: Apache combined format by default, custom formats, rotation."""

from __future__ import annotations

import os
import re
import time

import pytest
import requests

from conftest import exchange, hello_app

COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"GET /hello\?x=1 HTTP/1\.1" 200 13 "https://ref\.example/" "tester/1\.0"$')


def read_lines(path, count, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"expected {count} access log lines in {path}")


def test_combined_format(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path))
    requests.get(running.url("/hello?x=1"), timeout=5,
                 headers={"Referer": "https://ref.example/", "User-Agent": "tester/1.0"})
    (line,) = read_lines(path, 1)
    assert COMBINED.match(line), line


def test_errors_and_injection_attempts_are_logged_safely(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path))
    exchange(running, b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: a\"b\\c\xff\r\n"
                      b"Connection: close\r\n\r\n")
    exchange(running, b"BAD REQUEST LINE\r\n\r\n")
    first, second = read_lines(path, 2)
    assert first.endswith(r'"GET /a HTTP/1.1" 200 13 "-" "a\"b\\c\xff"'), first
    assert second.endswith('"-" 400 36 "-" "-"'), second  # 'Malformed Request-Line: bad protocol'


def test_custom_format(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path),
                    access_log_format="%m %U %q %s %B %{X-Request-Id}i %D")
    requests.get(running.url("/p?q=1"), headers={"X-Request-Id": "abc"}, timeout=5)
    (line,) = read_lines(path, 1)
    method, path_, query, status, size, rid, micros = line.split(" ")
    assert (method, path_, query, status, size, rid) == ("GET", "/p", "?q=1", "200", "13", "abc")
    assert int(micros) >= 0


def test_bad_format_is_a_clear_error(serve, tmp_path):
    with pytest.raises(ValueError, match="unsupported access log directive %Z"):
        serve(hello_app, access_log=str(tmp_path / "a.log"), access_log_format="%Z")


def test_reopen_after_rotation(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path))
    requests.get(running.url("/one"), timeout=5)
    read_lines(path, 1)
    os.rename(path, tmp_path / "access.log.1")
    running.server.reopen_access_log()
    requests.get(running.url("/two"), timeout=5)
    (line,) = read_lines(path, 1)
    assert '"GET /two HTTP/1.1"' in line
    with open(tmp_path / "access.log.1") as f:
        assert '"GET /one HTTP/1.1"' in f.read()


def test_off_by_default(serve, tmp_path, capfd):
    running = serve(hello_app)
    requests.get(running.url(), timeout=5)
    time.sleep(0.3)
    assert "GET / HTTP/1.1" not in capfd.readouterr().out


def test_client_after_trusted_proxy_headers_and_the_peer(serve, tmp_path):
    """`%h` is the client that trusted proxy headers name (REMOTE_ADDR); `%{peer}h` the
    connection's peer, here the proxy."""
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path), access_log_format="%h %{peer}h %U",
                    forwarded_allow_ips="127.0.0.1")
    with requests.Session() as session:
        session.get(running.url("/proxied"), headers={"X-Forwarded-For": "203.0.113.9"},
                    timeout=5)
        session.get(running.url("/direct"), timeout=5)
    assert read_lines(path, 2) == ["203.0.113.9 127.0.0.1 /proxied",
                                   "127.0.0.1 127.0.0.1 /direct"]


def test_untrusted_proxy_headers_do_not_change_h(serve, tmp_path):
    path = tmp_path / "access.log"
    running = serve(hello_app, access_log=str(path), access_log_format="%h %{peer}h")
    requests.get(running.url(), headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
    assert read_lines(path, 1) == ["127.0.0.1 127.0.0.1"]
