"""A CherryPy application served by stogie instead of cheroot."""

from __future__ import annotations

import threading

import pytest
import requests

cherrypy = pytest.importorskip("cherrypy")

from stogie import wsgi  # noqa: E402


class Root:
    @cherrypy.expose
    def index(self):
        return "Hello from CherryPy"

    @cherrypy.expose
    def greet(self, name="nobody"):
        return f"hello {name}"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def info(self):
        request = cherrypy.request
        return {"method": request.method, "path": request.path_info,
                "remote": request.remote.ip, "scheme": request.scheme}

    @cherrypy.expose
    def upload(self, data):
        return f"{data.filename}:{len(data.file.read())}"


@pytest.fixture
def cherry_server():
    # The few lines README.md documents: mount the app, keep CherryPy's own server off,
    # start the engine, serve cherrypy.tree with stogie.
    cherrypy.config.update({"environment": "embedded", "log.screen": False})
    cherrypy.tree.mount(Root(), "/")
    cherrypy.server.unsubscribe()
    cherrypy.engine.start()
    server = wsgi.Server(("127.0.0.1", 0), cherrypy.tree, numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.bind_addr[1]}"
    server.stop()
    thread.join(10)
    cherrypy.engine.exit()
    cherrypy.tree.apps.clear()


def test_cherrypy_pages(cherry_server):
    assert requests.get(cherry_server + "/", timeout=5).text == "Hello from CherryPy"
    assert requests.get(cherry_server + "/greet?name=ana", timeout=5).text == "hello ana"
    resp = requests.post(cherry_server + "/greet", data={"name": "bo"}, timeout=5)
    assert resp.text == "hello bo"
    assert requests.get(cherry_server + "/missing", timeout=5).status_code == 404


def test_cherrypy_request_facts(cherry_server):
    info = requests.get(cherry_server + "/info", timeout=5).json()
    assert info == {"method": "GET", "path": "/info", "remote": "127.0.0.1", "scheme": "http"}


def test_cherrypy_upload_and_keep_alive(cherry_server):
    with requests.Session() as session:
        for size in (0, 10, 200_000):
            files = {"data": ("f.bin", b"x" * size)}
            resp = session.post(cherry_server + "/upload", files=files, timeout=10)
            assert resp.text == f"f.bin:{size}"
