"""server.error_log(msg='', level=20, traceback=False): the single logging hook.

By default it writes to the `stogie` logger of Python's logging; a subclass override or an
assigned function receives the server's messages instead.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import threading
import time

import pytest
import requests

from stogie import wsgi

from _apps import Started, hello_app


def failing_app(environ, start_response):
    if environ["PATH_INFO"] == "/ok":
        return hello_app(environ, start_response)
    raise ValueError("marker-" + environ["PATH_INFO"].strip("/"))


def stogie_records(caplog):
    return [r for r in caplog.records if r.name == "stogie"]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_error_log_signature():
    params = list(inspect.signature(wsgi.Server.error_log).parameters.values())
    assert [(p.name, p.default) for p in params[1:]] == [
        ("msg", ""), ("level", 20), ("traceback", False)]


def test_default_error_log_writes_to_stogie_logger(caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = wsgi.Server(("127.0.0.1", 0), hello_app)
    server.error_log("a warning from the test", logging.WARNING)
    server.error_log("an error from the test", level=logging.ERROR)
    recs = stogie_records(caplog)
    assert [(r.levelno, r.getMessage()) for r in recs] == [
        (logging.WARNING, "a warning from the test"), (logging.ERROR, "an error from the test")]


def test_default_level_is_info(caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = wsgi.Server(("127.0.0.1", 0), hello_app)
    server.error_log("info by default")
    recs = stogie_records(caplog)
    assert [(r.levelno, r.getMessage()) for r in recs] == [(logging.INFO, "info by default")]


def test_traceback_true_logs_the_current_exception(caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = wsgi.Server(("127.0.0.1", 0), hello_app)
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        server.error_log("with traceback", logging.ERROR, traceback=True)
    recs = stogie_records(caplog)
    assert len(recs) == 1
    assert recs[0].getMessage().startswith("with traceback")
    text = caplog.text
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError" in text


def test_traceback_false_logs_no_traceback(caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = wsgi.Server(("127.0.0.1", 0), hello_app)
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        server.error_log("without traceback", logging.ERROR)
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in stogie_records(caplog)] == ["without traceback"]


def test_app_error_logged_to_stogie_logger(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    running = serve(failing_app)
    assert requests.get(running.url("/boom1"), timeout=5).status_code == 500
    assert wait_for(lambda: any(r.levelno == logging.ERROR for r in stogie_records(caplog)))
    errors = [r for r in stogie_records(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "Traceback (most recent call last)" in caplog.text
    assert "marker-boom1" in caplog.text
    assert "failing_app" in caplog.text         # the traceback shows the app's frame


def test_successful_requests_log_nothing_at_error(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    running = serve(failing_app)
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(running.url("/ok"), timeout=5).status_code == 200
    assert not [r for r in stogie_records(caplog) if r.levelno >= logging.WARNING]


class RecordingServer(wsgi.Server):
    def __init__(self, *args, **kwargs):
        self.logged: list[tuple] = []
        self.log_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def error_log(self, msg="", level=20, traceback=False):
        with self.log_lock:
            self.logged.append((str(msg), level, traceback, sys.exc_info()[1]))


def test_subclass_override_receives_messages(caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = RecordingServer(("127.0.0.1", 0), failing_app, shutdown_timeout=1)
    started = Started(server)
    try:
        assert requests.get(started.url("/boom2"), timeout=5).status_code == 500
        assert wait_for(lambda: any(lvl == logging.ERROR for _, lvl, _, _ in server.logged))
    finally:
        started.stop()
    errors = [entry for entry in server.logged if entry[1] == logging.ERROR]
    assert len(errors) == 1
    msg, _level, tb, exc = errors[0]
    assert tb is True
    assert "marker-boom2" in msg or "marker-boom2" in str(exc)
    # The override replaced the default: nothing went to the stogie logger at ERROR.
    assert not [r for r in stogie_records(caplog) if r.levelno >= logging.ERROR]


def test_assigned_error_log_receives_messages(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="stogie")
    logged = []
    running = serve(failing_app)
    running.server.error_log = lambda msg="", level=20, traceback=False: logged.append(
        (str(msg), level, traceback, sys.exc_info()[1]))
    assert requests.get(running.url("/boom3"), timeout=5).status_code == 500
    assert wait_for(lambda: any(entry[1] == logging.ERROR for entry in logged))
    msg, _level, tb, exc = next(e for e in logged if e[1] == logging.ERROR)
    assert tb is True
    assert "marker-boom3" in msg or "marker-boom3" in str(exc)
    assert not [r for r in stogie_records(caplog) if r.levelno >= logging.ERROR]


def test_error_log_exception_does_not_kill_server(serve):
    def bad_log(msg="", level=20, traceback=False):
        raise RuntimeError("the log hook itself failed")

    running = serve(failing_app, error_log=bad_log)
    # What the client gets is not the point; the server must survive.
    with contextlib.suppress(requests.ConnectionError):
        requests.get(running.url("/boom4"), timeout=5)
    for _ in range(3):
        assert requests.get(running.url("/ok"), timeout=5).status_code == 200


@pytest.mark.parametrize("level", [logging.DEBUG, logging.CRITICAL])
def test_levels_pass_through(caplog, level):
    caplog.set_level(logging.DEBUG, logger="stogie")
    server = wsgi.Server(("127.0.0.1", 0), hello_app)
    server.error_log("level check", level)
    assert [r.levelno for r in stogie_records(caplog)] == [level]
