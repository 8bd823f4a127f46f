"""The Prometheus endpoint: status classes, latency histogram, bytes, in-flight requests."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import requests

from _apps import free_port

APP = (
    "def application(environ, start_response):\n"
    "    status = '404 Not Found' if environ['PATH_INFO'] == '/missing' else '200 OK'\n"
    "    start_response(status, [('Content-Length', '5')])\n"
    "    return [b'hello']\n"
)



def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


def test_metrics_series(tmp_path):
    (tmp_path / "metricsapp.py").write_text(APP)
    port, metrics_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stogie", "metricsapp:application", "--bind", f"127.0.0.1:{port}",
         "--metrics-bind", f"127.0.0.1:{metrics_port}"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{port}/", proc)
        with requests.Session() as session:
            for _ in range(4):
                session.get(f"http://127.0.0.1:{port}/ok", timeout=5)
            session.get(f"http://127.0.0.1:{port}/missing", timeout=5)
        time.sleep(1.2)  # the exporter samples every second
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(10)
    assert sample(text, "stogie_responses_2xx_total") >= 5  # includes wait_up's request
    assert sample(text, "stogie_responses_4xx_total") == 1
    assert sample(text, "stogie_bytes_in_total") > 100
    assert sample(text, "stogie_bytes_out_total") > 5 * 5
    count = sample(text, "stogie_request_duration_seconds_count")
    assert count >= 6
    assert sample(text, 'stogie_request_duration_seconds_bucket{le="+Inf"}') == count
    assert sample(text, 'stogie_request_duration_seconds_bucket{le="10"}') <= count
    assert sample(text, "stogie_request_duration_seconds_sum") >= 0
    assert "stogie_in_flight_requests" in text
    # Write-behind counters are exported (their values are exercised in test_write_batching).
    assert sample(text, "stogie_responses_batched_total") <= 6
    assert sample(text, "stogie_batched_bytes_rescued_total") >= 0
