"""Behind a proxy: X-Forwarded-*/Forwarded from trusted peers, and the PROXY protocol."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from conftest import exchange


def environ_app(environ, start_response):
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST")
    body = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def seen(raw_reply: bytes) -> dict:
    head, _, body = raw_reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), raw_reply
    return json.loads(body)


PROXIED = (b"GET / HTTP/1.1\r\nHost: internal:8000\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n"
           b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\n"
           b"Connection: close\r\n\r\n")


def test_trusted_proxy_headers_are_applied(serve):
    running = serve(environ_app, forwarded_allow_ips=["127.0.0.1"])
    assert seen(exchange(running, PROXIED)) == {
        "REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "", "wsgi.url_scheme": "https",
        "HTTP_HOST": "www.example.com"}


def test_client_cannot_forge_through_a_trusted_proxy_chain(serve):
    # The proxies are trusted; the client's own X-Forwarded-For entry (6.6.6.6) is left of the
    # address the last trusted proxy saw, so it is not believed.
    running = serve(environ_app, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8")
    raw = (b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1\r\n"
           b"Connection: close\r\n\r\n")
    assert seen(exchange(running, raw))["REMOTE_ADDR"] == "198.51.100.7"


@pytest.mark.parametrize("allow", [None, ["10.0.0.0/8"]])
def test_untrusted_peers_headers_are_ignored(serve, allow):
    running = serve(environ_app, forwarded_allow_ips=allow)
    result = seen(exchange(running, PROXIED))
    assert result["REMOTE_ADDR"] == "127.0.0.1"
    assert result["REMOTE_PORT"] != ""
    assert result["wsgi.url_scheme"] == "http"
    assert result["HTTP_HOST"] == "internal:8000"


def test_standard_forwarded_header(serve):
    running = serve(environ_app, forwarded_allow_ips=["*"])
    raw = (b"GET / HTTP/1.1\r\nHost: h\r\n"
           b"Forwarded: for=\"[2001:db8::17]:4711\";proto=https;host=a.example\r\n"
           b"Connection: close\r\n\r\n")
    assert seen(exchange(running, raw)) == {
        "REMOTE_ADDR": "2001:db8::17", "REMOTE_PORT": "", "wsgi.url_scheme": "https",
        "HTTP_HOST": "a.example"}


def test_invalid_allow_list_is_a_clear_error(serve):
    with pytest.raises(ValueError, match="forwarded_allow_ips: invalid address"):
        serve(environ_app, forwarded_allow_ips=["not-an-ip"])


GET = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def test_proxy_protocol_v1(serve):
    running = serve(environ_app, proxy_protocol=True)
    raw = b"PROXY TCP4 192.0.2.10 192.0.2.1 40000 80\r\n" + GET
    result = seen(exchange(running, raw))
    assert (result["REMOTE_ADDR"], result["REMOTE_PORT"]) == ("192.0.2.10", "40000")


def test_proxy_protocol_v2_split_across_packets(serve):
    running = serve(environ_app, proxy_protocol=True)
    header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + struct.pack("!H", 36)
              + socket.inet_pton(socket.AF_INET6, "2001:db8::5")
              + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 5555, 443))
    with running.connect() as sock:
        sock.sendall(header[:7])
        sock.sendall(header[7:] + GET)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    result = seen(data)
    assert (result["REMOTE_ADDR"], result["REMOTE_PORT"]) == ("2001:db8::5", "5555")


def test_missing_proxy_header_is_rejected(serve):
    calls = []

    def app(environ, start_response):
        calls.append(1)
        return environ_app(environ, start_response)

    running = serve(app, proxy_protocol=True)
    reply = exchange(running, GET)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert reply.endswith(b"Invalid PROXY protocol header.")
    assert calls == []


def test_refused_setting_releases_the_socket():
    import os

    from stogie import wsgi
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        srv = wsgi.Server(("127.0.0.1", 0), environ_app)
        srv.forwarded_allow_ips = ["bad"]
        with pytest.raises(ValueError):
            srv.prepare()
        assert not srv.ready and srv.socket is None
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_unix_socket_peer_trusted_only_by_star(tmp_path):
    from conftest import start_server

    path = str(tmp_path / "s.sock")
    # With "*" every hop is trusted, so the leftmost address is the client.
    for allow, expected in ((["*"], "6.6.6.6"), (["127.0.0.1"], "")):
        running = start_server(environ_app, path, forwarded_allow_ips=allow)
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
                sock.sendall(PROXIED)
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            assert seen(data)["REMOTE_ADDR"] == expected
        finally:
            running.stop()
