"""`stogie` as a subprocess sending files through wsgi.file_wrapper (sendfile), with workers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
import requests

from _apps import free_port

APP = (
    "import os\n"
    "PATH = os.environ['STOGIE_TEST_FILE']\n"
    "def application(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'application/octet-stream')])\n"
    "    return environ['wsgi.file_wrapper'](open(PATH, 'rb'))\n"
)



@pytest.mark.parametrize("extra", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_cli_serves_files_with_sendfile(tmp_path, extra):
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "blob.bin").write_bytes(data)
    (tmp_path / "fileapp.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "STOGIE_TEST_FILE": str(tmp_path / "blob.bin")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stogie", "fileapp:application", "--bind", f"127.0.0.1:{port}",
         *extra], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert resp.headers["Content-Length"] == str(len(data))
        assert hashlib.sha256(resp.content).digest() == hashlib.sha256(data).digest()
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
