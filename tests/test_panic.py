"""A Rust panic while serving never crosses into Python nor kills the server: it is a 500 and a
logged error, and the next request is served. The panic is injected with
STOGIE_PANIC_TEST_PATH, which the engine reads when it is created."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_engine_panic_is_a_500_and_the_server_keeps_serving():
    script = textwrap.dedent("""
        import socket, sys, threading
        sys.path.insert(0, %r)
        from conftest import start_server, hello_app
        logged = []
        running = start_server(hello_app)
        running.server.error_log = lambda msg="", level=20, traceback=False: logged.append(
            (msg, level))
        def get(path):
            with running.connect() as sock:
                sock.sendall(f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
                             .encode())
                return sock.recv(4096).split(b"\\r\\n")[0]
        print(get("/boom").decode(), get("/ok").decode(), get("/boom").decode(), get("/").decode())
        print(logged[0][1], "internal error in stogie: fault injected for /boom" in logged[0][0])
        running.stop()
    """) % os.path.dirname(__file__)
    env = {**os.environ, "STOGIE_PANIC_TEST_PATH": "/boom", "RUST_BACKTRACE": "0"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    statuses, log_line = proc.stdout.strip().splitlines()
    assert statuses == ("HTTP/1.1 500 Internal Server Error HTTP/1.1 200 OK "
                        "HTTP/1.1 500 Internal Server Error HTTP/1.1 200 OK")
    assert log_line == "40 True"
