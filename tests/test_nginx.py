"""A real nginx in front of stogie on loopback: the environ the application sees."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time

import pytest
import requests

from _apps import free_port

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not installed (.ci/run installs it)")

CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host public.example;
        }}
    }}
}}
"""



def environ_app(environ, start_response):
    body_len = len(environ["wsgi.input"].read())
    keys = ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "REQUEST_METHOD", "PATH_INFO",
            "QUERY_STRING", "HTTP_X_FORWARDED_FOR")
    data = json.dumps({**{k: environ.get(k) for k in keys}, "body_len": body_len}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture
def behind_nginx(serve, tmp_path):
    def start(allow):
        running = serve(environ_app, forwarded_allow_ips=allow)
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(CONF.format(dir=tmp_path, upstream=running.port, port=port))
        proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)],
                                stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    started: list[subprocess.Popen] = []
    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def post_from(base: str, source: str, forged: str) -> dict:
    """POST through nginx from the loopback address `source`, with a forged X-Forwarded-For."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5, source_address=(source, 0))
    try:
        conn.request("POST", "/a/b?x=1", body=b"z" * 5000, headers={"X-Forwarded-For": forged})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_trusted_nginx_sets_client_scheme_and_host(behind_nginx):
    base = behind_nginx(["127.0.0.1"])
    for _ in range(3):  # nginx keeps its upstream connections alive
        env = post_from(base, "127.0.0.2", forged="203.0.113.5")
        # nginx (trusted) appended the address it saw; the client's forged entry is ignored.
        assert env == {"REMOTE_ADDR": "127.0.0.2", "wsgi.url_scheme": "https",
                       "HTTP_HOST": "public.example", "REQUEST_METHOD": "POST",
                       "PATH_INFO": "/a/b", "QUERY_STRING": "x=1",
                       "HTTP_X_FORWARDED_FOR": "203.0.113.5, 127.0.0.2", "body_len": 5000}


def test_untrusted_nginx_headers_are_ignored(behind_nginx):
    base = behind_nginx(None)
    env = requests.get(base + "/", timeout=5).json()
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"].startswith("127.0.0.1:")
