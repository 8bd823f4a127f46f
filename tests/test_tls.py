"""HTTPS with rustls: adapters, client certificates, keys and passwords, plain HTTP on the TLS
port, silent TLS clients, keep-alive and chunked bodies over TLS."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time

import pytest
import requests

from conftest import start_server

trustme = pytest.importorskip("trustme")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

from stogie import server as stogie_server  # noqa: E402
from stogie.ssl import BuiltinSSLAdapter  # noqa: E402
from stogie.ssl.builtin import BuiltinSSLAdapter as BuiltinFromModule  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("client@example.com", common_name="Test Client")
    paths = {name: str(base / f"{name}.pem") for name in
             ("ca", "cert", "key", "client_cert", "client_key", "enc_key", "other_key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    client_cert.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client_cert.private_key_pem.write_to_path(paths["client_key"])
    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    with open(paths["enc_key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"s3cret")))
    ca.issue_cert("other.example").private_key_pem.write_to_path(paths["other_key"])
    return paths


def environ_app(environ, start_response):
    body = environ["wsgi.input"].read()
    keys = {k: v for k, v in environ.items()
            if k.startswith(("SSL_", "HTTPS")) or k == "wsgi.url_scheme"}
    keys["body_len"] = len(body)
    data = json.dumps(keys).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture
def https(pki):
    started = []

    def _start(app=environ_app, **adapter_options):
        adapter = BuiltinSSLAdapter(pki["cert"], pki["key"], **adapter_options)
        running = start_server(app, ssl_adapter=adapter)
        started.append(running)
        return running

    yield _start
    for running in started:
        running.stop()


def url(running, path="/"):
    return f"https://localhost:{running.port}{path}"


def test_https_with_requests_and_environ(https, pki):
    running = https()
    env = requests.get(url(running), verify=pki["ca"], timeout=5).json()
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] in ("TLSv1.3", "TLSv1.2")
    assert env["SSL_CIPHER"] and int(env["SSL_CIPHER_USEKEYSIZE"]) >= 128
    assert env["SSL_TLS_SNI"] == "localhost"
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert env["SSL_SERVER_S_DN_O"].startswith("trustme")
    assert env["SSL_SERVER_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert env["SSL_SERVER_SAN_DNS_0"] == "localhost"


def test_https_with_http_client(https, pki):
    running = https()
    context = ssl.create_default_context(cafile=pki["ca"])
    conn = http.client.HTTPSConnection("localhost", running.port, context=context, timeout=5)
    for _ in range(3):  # keep-alive over TLS
        conn.request("POST", "/", body=b"x" * 1000)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["body_len"] == 1000
    conn.close()


def test_chunked_upload_and_streamed_response_over_tls(https, pki):
    def stream_app(environ, start_response):
        size = len(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"%d;" % size for _ in range(2000))

    running = https(stream_app)
    body = (b"a" * 10_000 for _ in range(30))
    resp = requests.post(url(running), data=body, verify=pki["ca"], timeout=10)
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.text == "300000;" * 2000


@pytest.mark.parametrize("mode", [ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL])
def test_client_certificate_presented(https, pki, mode):
    running = https(verify_mode=mode, client_ca=pki["ca"])
    resp = requests.get(url(running), verify=pki["ca"], timeout=5,
                        cert=(pki["client_cert"], pki["client_key"]))
    env = resp.json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN_CN"] == "Test Client"
    assert env["SSL_CLIENT_I_DN_O"].startswith("trustme")
    assert env["SSL_CLIENT_SAN_Email_0"] == "client@example.com"
    assert env["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert env["SSL_CLIENT_M_SERIAL"] and int(env["SSL_CLIENT_V_REMAIN"]) > 0


def test_client_certificate_optional_and_absent(https, pki):
    running = https(verify_mode=ssl.CERT_OPTIONAL, client_ca=pki["ca"])
    env = requests.get(url(running), verify=pki["ca"], timeout=5).json()
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in env


def test_client_certificate_required_and_absent(https, pki):
    running = https(verify_mode=ssl.CERT_REQUIRED, client_ca=pki["ca"])
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url(running), verify=pki["ca"], timeout=5)
    # The server keeps serving clients that do present one.
    resp = requests.get(url(running), verify=pki["ca"], timeout=5,
                        cert=(pki["client_cert"], pki["client_key"]))
    assert resp.status_code == 200


@pytest.mark.parametrize("password", [b"s3cret", "s3cret", lambda: "s3cret",
                                      lambda: b"s3cret"])
def test_encrypted_private_key(pki, password):
    adapter = BuiltinSSLAdapter(pki["cert"], pki["enc_key"], private_key_password=password)
    running = start_server(environ_app, ssl_adapter=adapter)
    try:
        assert requests.get(url(running), verify=pki["ca"], timeout=5).status_code == 200
    finally:
        running.stop()


@pytest.mark.parametrize("password,message", [
    (None, "is encrypted: give private_key_password"),
    (b"wrong", "wrong password for the private key"),
])
def test_encrypted_key_errors(pki, password, message):
    with pytest.raises(ValueError, match=message):
        BuiltinSSLAdapter(pki["cert"], pki["enc_key"], private_key_password=password)


def test_key_and_file_errors(pki, tmp_path):
    with pytest.raises(ValueError, match="does not match the certificate"):
        BuiltinSSLAdapter(pki["cert"], pki["other_key"])
    with pytest.raises(FileNotFoundError, match="certificate file not found"):
        BuiltinSSLAdapter(str(tmp_path / "missing.pem"), pki["key"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        BuiltinSSLAdapter(str(garbage), pki["key"])
    with pytest.raises(ValueError, match="need a CA bundle"):
        BuiltinSSLAdapter(pki["cert"], pki["key"], verify_mode=ssl.CERT_REQUIRED)


def test_plain_http_on_tls_port(https):
    running = https()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 85\r\n"
                    b"Content-Type: text/plain\r\nConnection: close\r\n\r\n"
                    b"The client sent a plain HTTP request, but this server only speaks HTTPS "
                    b"on this port.")


def test_silent_tls_clients_do_not_block_others(https, pki):
    running = https()
    silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", running.port))
    half.sendall(b"\x16\x03\x01\x00\xff\x01")  # the start of a ClientHello, then nothing
    try:
        started = time.monotonic()
        for _ in range(5):
            assert requests.get(url(running), verify=pki["ca"], timeout=5).status_code == 200
        assert time.monotonic() - started < 3
    finally:
        for sock in [*silent, half]:
            sock.close()


def test_minimum_version_and_alpn(https, pki):
    running = https(minimum_version="1.3")
    old = ssl.create_default_context(cafile=pki["ca"])
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), \
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw:
        old.wrap_socket(raw, server_hostname="localhost")
    context = ssl.create_default_context(cafile=pki["ca"])
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() == "TLSv1.3"
    # HTTP/2 is preferred when offered (tests/test_http2.py).
    context.set_alpn_protocols(["http/1.1", "h2"])
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"


def test_http10_only_alpn_client_is_served(https, pki):
    """`curl -0` and `openssl s_client -alpn http/1.0` offer only HTTP/1.0 in ALPN."""
    running = https()
    context = ssl.create_default_context(cafile=pki["ca"])
    context.set_alpn_protocols(["http/1.0"])
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.0"
        tls.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:80]


@pytest.mark.parametrize("offer", [["spdy/3"], ["spdy/3", "acme-tls/1"]])
def test_client_offering_no_known_alpn_protocol_gets_http11(https, pki, offer):
    """No common ALPN protocol is no reason to fail the handshake: no ALPN is selected and the
    connection speaks HTTP/1.1."""
    running = https()
    context = ssl.create_default_context(cafile=pki["ca"])
    context.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() is None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:80]


def test_file_wrapper_over_tls(https, pki, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(300_000))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # noqa: SIM115

    running = https(app)
    resp = requests.get(url(running), verify=pki["ca"], timeout=10)
    assert resp.content == path.read_bytes()


def test_adapter_lookup_and_concurrency(https, pki):
    assert stogie_server.get_ssl_adapter_class("builtin") is BuiltinSSLAdapter
    assert BuiltinFromModule is BuiltinSSLAdapter
    running = https()
    errors = []

    def client():
        try:
            with requests.Session() as session:
                for _ in range(10):
                    session.get(url(running), verify=pki["ca"], timeout=10).raise_for_status()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
