"""A real Flask application served by stogie, driven with `requests`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time

import pytest
import requests

from _apps import read_response

flask = pytest.importorskip("flask")

UPLOAD = os.urandom(2 * 1024 * 1024 + 7)


def make_app() -> flask.Flask:
    app = flask.Flask("stogie_flask_test")
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    app.stream_gate = threading.Event()
    app.stream_waited = []

    @app.get("/")
    def index():
        return "index page"

    @app.get("/hello/<name>")
    def hello(name):
        return flask.jsonify(name=name, args=flask.request.args.to_dict(flat=False),
                             path=flask.request.path,
                             user_agent=flask.request.headers.get("User-Agent"))

    @app.post("/form")
    def form():
        return flask.jsonify(form=flask.request.form.to_dict(flat=False),
                             content_type=flask.request.content_type)

    @app.post("/upload")
    def upload():
        f = flask.request.files["file"]
        data = f.read()
        return flask.jsonify(
            field=flask.request.form.get("description"),
            filename=f.filename,
            mimetype=f.mimetype,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            files=sorted(flask.request.files),
        )

    @app.post("/json")
    def echo_json():
        payload = flask.request.get_json()
        return flask.jsonify(received=payload, doubled=[x * 2 for x in payload["numbers"]]), 201

    @app.get("/stream")
    def stream():
        count = int(flask.request.args.get("n", "5"))

        @flask.stream_with_context
        def generate():
            prefix = flask.request.args.get("prefix", "line")   # needs the request context
            yield f"{prefix} 0\n"
            # Wait until the client has seen the first line: proves nothing is buffered.
            app.stream_waited.append(app.stream_gate.wait(5))
            for i in range(1, count):
                yield f"{prefix} {i}\n"

        return flask.Response(generate(), mimetype="text/plain")

    @app.get("/generator")
    def plain_generator():
        def generate():
            for i in range(1000):
                yield b"%04d," % i
        return flask.Response(generate(), mimetype="text/csv")

    @app.get("/cookies/set")
    def set_cookies():
        resp = flask.make_response("set")
        resp.set_cookie("first", "1")
        resp.set_cookie("second", "2")
        return resp

    @app.get("/cookies/get")
    def get_cookies():
        return flask.jsonify(dict(flask.request.cookies))

    @app.get("/redirect")
    def redirect():
        return flask.redirect(flask.url_for("index"))

    @app.get("/error")
    def error():
        raise RuntimeError("flask view failed")

    @app.route("/methods", methods=["GET", "PUT", "DELETE", "PATCH"])
    def methods():
        return flask.jsonify(method=flask.request.method, body=flask.request.get_data(as_text=True))

    @app.get("/abort")
    def do_abort():
        flask.abort(418)

    return app


@pytest.fixture
def app():
    return make_app()


@pytest.fixture
def running(serve, app):
    return serve(app)


def test_index_and_route_params(running):
    r = requests.get(running.url("/"), timeout=5)
    assert (r.status_code, r.text) == (200, "index page")
    assert r.headers["Content-Type"].startswith("text/html")
    r = requests.get(running.url("/hello/w%C3%B6rld"), params={"a": ["1", "2"], "b": "x y"},
                     headers={"User-Agent": "stogie-test/1"}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"name": "w\u00f6rld", "args": {"a": ["1", "2"], "b": ["x y"]},
                        "path": "/hello/w\u00f6rld", "user_agent": "stogie-test/1"}


def test_form_post(running):
    r = requests.post(running.url("/form"),
                      data={"name": "Ada Lovelace", "lang": ["en", "fr"], "empty": "",
                            "sym": "a&b=c%d+e"}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["form"] == {"name": ["Ada Lovelace"], "lang": ["en", "fr"], "empty": [""],
                            "sym": ["a&b=c%d+e"]}
    assert body["content_type"] == "application/x-www-form-urlencoded"


def test_file_upload(running):
    r = requests.post(
        running.url("/upload"),
        files={"file": ("data.bin", io.BytesIO(UPLOAD), "application/octet-stream")},
        data={"description": "two megabytes"},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {
        "field": "two megabytes",
        "filename": "data.bin",
        "mimetype": "application/octet-stream",
        "size": len(UPLOAD),
        "sha256": hashlib.sha256(UPLOAD).hexdigest(),
        "files": ["file"],
    }


def test_file_upload_chunked(running):
    """The same multipart body sent with Transfer-Encoding: chunked."""
    boundary = "stogieboundary1234"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="description"\r\n\r\n'
        "chunked upload\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="c.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + UPLOAD[:300_000] + f"\r\n--{boundary}--\r\n".encode()

    def gen():
        for i in range(0, len(body), 50_000):
            yield body[i:i + 50_000]

    r = requests.post(running.url("/upload"), data=gen(), timeout=30,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200, r.text[:500]
    result = r.json()
    assert result["field"] == "chunked upload"
    assert result["filename"] == "c.txt"
    assert result["size"] == 300_000
    assert result["sha256"] == hashlib.sha256(UPLOAD[:300_000]).hexdigest()


def test_json(running):
    r = requests.post(running.url("/json"), json={"numbers": [1, 2, 3], "text": "h\u00e9"},
                      timeout=5)
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"received": {"numbers": [1, 2, 3], "text": "h\u00e9"},
                        "doubled": [2, 4, 6]}


def test_streamed_response(running, app):
    with requests.get(running.url("/stream"), params={"n": "4", "prefix": "row"},
                      stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in r.headers
        lines = r.iter_lines()
        assert next(lines) == b"row 0"
        app.stream_gate.set()
        rest = list(lines)
    assert rest == [b"row 1", b"row 2", b"row 3"]
    assert app.stream_waited == [True], "the first chunk was held back until the body ended"


def test_generator_response(running):
    r = requests.get(running.url("/generator"), timeout=10)
    assert r.status_code == 200
    assert r.content == b"".join(b"%04d," % i for i in range(1000))


def test_cookies_round_trip(running):
    with requests.Session() as s:
        r = s.get(running.url("/cookies/set"), timeout=5)
        assert r.text == "set"
        assert len(r.raw.headers.getlist("Set-Cookie")) == 2
        assert s.get(running.url("/cookies/get"), timeout=5).json() == {"first": "1",
                                                                        "second": "2"}
    # Two separate Cookie header lines are joined into one environ value.
    with running.connect() as sock:
        sock.sendall(b"GET /cookies/get HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n"
                     b"Connection: close\r\n\r\n")
        resp = read_response(sock)
    assert resp.status == 200
    assert json.loads(resp.body) == {"a": "1", "b": "2"}


def test_redirect_and_errors(running):
    r = requests.get(running.url("/redirect"), allow_redirects=False, timeout=5)
    assert r.status_code == 302
    assert r.headers["Location"] in ("/", running.url("/"))
    assert requests.get(running.url("/redirect"), timeout=5).text == "index page"
    assert requests.get(running.url("/nope"), timeout=5).status_code == 404
    assert requests.get(running.url("/abort"), timeout=5).status_code == 418
    assert requests.get(running.url("/error"), timeout=5).status_code == 500
    assert requests.post(running.url("/"), timeout=5).status_code == 405


def test_methods_and_head(running):
    for method in ("PUT", "PATCH", "DELETE"):
        r = requests.request(method, running.url("/methods"), data="payload", timeout=5)
        assert r.json() == {"method": method, "body": "payload"}
    r = requests.head(running.url("/"), timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len("index page"))


def test_keep_alive_session(running):
    with requests.Session() as s:
        t0 = time.monotonic()
        for i in range(50):
            r = s.get(running.url(f"/hello/n{i}"), timeout=5)
            assert r.json()["name"] == f"n{i}"
        assert time.monotonic() - t0 < 10
