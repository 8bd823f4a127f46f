"""`stogie --ssl-certificate/--ssl-private-key/--ssl-certificate-chain` serves HTTPS."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from _apps import free_port

trustme = pytest.importorskip("trustme")



APP = (
    "def application(environ, start_response):\n"
    "    body = environ['wsgi.url_scheme'].encode()\n"
    "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
    "    return [body]\n"
)


def test_cli_serves_https(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "tlsapp.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stogie", "tlsapp:application", "--bind", f"127.0.0.1:{port}",
         "--ssl-certificate", "cert.pem", "--ssl-private-key", "key.pem"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = requests.get(f"https://localhost:{port}/", verify=str(tmp_path / "ca.pem"),
                                    timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, proc.stderr.read1().decode()
                time.sleep(0.1)
        assert resp.text == "https"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("args,message", [
    (["--ssl-certificate", "cert.pem"], "--ssl-certificate and --ssl-private-key go together"),
    (["--ssl-certificate", "missing.pem", "--ssl-private-key", "k.pem"],
     "TLS certificate file not found"),
])
def test_cli_tls_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "tlsapp.py").write_text(APP)
    proc = subprocess.run(
        [sys.executable, "-m", "stogie", "tlsapp:application", "--bind",
         f"127.0.0.1:{free_port()}", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
