#!/usr/bin/env python3
"""stogie benchmark suite: one command sets itself up, runs every server, writes the report.

    python3 bench/run.py                      # full run: every server, every scenario, 2 rounds
    python3 bench/run.py --quick              # 2 s per load run, 1 round
    python3 bench/run.py --servers stogie,bjoern --scenarios hello_c50,echo_4k

Setup (skipped with --no-setup): installs wrk, nghttp2-client (h2load), libev-dev (bjoern) and
libuv1 (socketify) with apt when missing, creates bench/.venv with the peer servers from PyPI
and installs stogie from the repository root (maturin, release build).  The script then
re-executes itself with the virtualenv's interpreter and runs the servers one after the other,
each on bench/apps.py.

Everything listens on 127.0.0.1 only and every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
# A second stogie build (--alt-build), installed with `pip --target` and put first on the
# `stogie-alt` server's PYTHONPATH, so two builds of stogie run in the same run.
ALT_SITE = VENV / "stogie-alt"
LUA = BENCH / "lua"
#: The static_4k scenario's directory (one ~4 KiB stylesheet), served at /static/.
STATIC_DIR = BENCH / "static"
HOST = "127.0.0.1"
IN_VENV_FLAG = "STOGIE_BENCH_IN_VENV"

PEERS = [
    "cheroot",
    "bjoern",
    "granian",
    "waitress",
    "gunicorn",
    "fastwsgi",
    "socketify",
    "uWSGI",
    "pyruvate",
    "Flask",
    "matplotlib",
    "whitenoise",
    "Django",
]
APT_NEEDS = {"wrk": "wrk", "h2load": "nghttp2-client"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# scenarios and servers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    app: str  # attribute of bench.apps
    path: str = "/"
    connections: int = 50
    script: str | None = None  # file in bench/lua, prepended to report.lua
    headers: tuple[str, ...] = ()
    note: str = ""
    latency_valid: bool = True  # wrk's latency figures are meaningless when pipelining
    scheme: str = "http"
    posts: bool = False  # the load sends bodies: the readiness probe POSTs one too
    only: tuple[str, ...] = ()  # the servers this scenario compares (default: the plain ones)


SCENARIOS: list[Scenario] = [
    Scenario("hello_c50", "hello world, keep-alive, c50", "hello"),
    Scenario("hello_c1000", "hello world, keep-alive, c1000", "hello", connections=1000),
    Scenario(
        "close_c50",
        "hello world, Connection: close, c50",
        "hello",
        headers=("Connection: close",),
        note="one request per TCP connection",
    ),
    Scenario("resp_64k", "64 KiB response, c50", "big64k"),
    Scenario("stream_1m", "1 MiB generator response (16 x 64 KiB), c50", "stream1m"),
    Scenario("echo_4k", "4 KiB POST echoed back, c50", "echo", script="post4k.lua", posts=True),
    Scenario(
        "upload_1m",
        "1 MiB upload read in 64 KiB read(n), c50",
        "upload",
        script="upload1m.lua",
        posts=True,
    ),
    Scenario(
        "sleep_10ms",
        "app sleeps 10 ms, c50",
        "sleep10",
        note="ceiling with 10 worker threads is ~1000 req/s",
    ),
    Scenario(
        "pipeline_16",
        "hello world, 16-deep HTTP/1.1 pipelining, c50",
        "hello",
        script="pipeline16.lua",
        latency_valid=False,
        note="wrk times whole 16-request batches and its latency correction breaks;"
        " latency is not reported",
    ),
    Scenario(
        "flask",
        "small Flask app (route + query + jsonify), c50",
        "flask_app",
        path="/hello/bench?page=2",
    ),
    Scenario(
        "https_hello_c50",
        "hello world over HTTPS (TLS 1.3), keep-alive, c50",
        "hello",
        scheme="https",
        only=("stogie-tls", "granian-tls", "uwsgi-tls", "socketify-tls", "fastwsgi", "pyruvate"),
        note="self-signed certificate made with openssl at run time",
    ),
    Scenario(
        "workers_c50",
        "Flask app, c50: stogie --workers 1 vs 2 and the peers with 2 processes",
        "flask_app",
        path="/hello/bench?page=2",
        only=("stogie-w1", "stogie-w2", "uwsgi-p2", "fastwsgi-w2", "socketify-w2", "pyruvate"),
        note="supervisor + N worker processes sharing the socket; a Python-bound app, so"
        " a second process can use the second core (hello world is wrk-bound here:"
        " 2 workers lose to 1)",
    ),
    Scenario(
        "static_4k",
        "4 KiB CSS file from /static/, keep-alive, c50",
        "hello",
        path="/static/site.css",
        only=(
            "stogie-static",
            "stogie-whitenoise",
            "stogie-django-whitenoise",
            "granian-static",
            "stogie-static-alt",
        ),
        note="stogie --static (the engine, no Python) vs whitenoise wrapping the app under"
        " stogie (the issue's target) and as a Django project's middleware under stogie vs"
        " granian --static-path-mount; bench/static/site.css",
    ),
]
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True, eq=False)
class Server:
    name: str
    describe: str  # configuration as printed in the report
    command: Callable[[str, int, Options], list[str]]
    module: str  # import name that must exist in the venv ("bin/NAME": an executable there)
    special: bool = False  # runs only in the scenarios that name it in `only`
    pythonpath: Path | None = None  # searched before the venv's site-packages
    # scenario name -> why this server cannot run it (shown in the tables instead of figures)
    cannot: dict[str, str] = field(default_factory=dict)


def runs(server: Server, scenario: Scenario) -> bool:
    """Whether `server` takes part in `scenario`."""
    return server.name in scenario.only if scenario.only else not server.special


def _launcher(server: str, workers: int = 1) -> Callable[[str, int, Options], list[str]]:
    def build(app: str, port: int, opts: Options) -> list[str]:
        cmd = [
            str(VENV_PY),
            "-m",
            "bench.launch",
            server,
            app,
            HOST,
            str(port),
            "--threads",
            str(opts.threads),
        ]
        if server in ("stogie", "cheroot") and opts.backlog:
            cmd += ["--backlog", str(opts.backlog)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        return cmd

    return build


def _stogie_cli(app: str, port: int, opts: Options) -> list[str]:
    cmd = [
        str(VENV / "bin" / "stogie"),
        app,
        "--bind",
        f"{HOST}:{port}",
        "--threads",
        str(opts.threads),
    ]
    if opts.backlog:
        cmd += ["--request-queue-size", str(opts.backlog)]
    return cmd


def _granian(
    blocking_threads: int | None, tls: bool = False
) -> Callable[[str, int, Options], list[str]]:
    def build(app: str, port: int, opts: Options) -> list[str]:
        bt = blocking_threads if blocking_threads is not None else opts.threads
        cmd = [
            str(VENV / "bin" / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "1",
            "--blocking-threads",
            str(bt),
            "--http",
            "1",
            "--no-ws",
            "--host",
            HOST,
            "--port",
            str(port),
            app,
        ]
        if tls:
            cert, key = tls_files(opts)
            cmd += ["--ssl-certificate", str(cert), "--ssl-keyfile", str(key)]
        return cmd

    return build


def _stogie_tls(app: str, port: int, opts: Options) -> list[str]:
    cert, key = tls_files(opts)
    return [
        *_stogie_cli(app, port, opts),
        "--ssl-certificate",
        str(cert),
        "--ssl-private-key",
        str(key),
    ]


def _stogie_workers(workers: int) -> Callable[[str, int, Options], list[str]]:
    def build(app: str, port: int, opts: Options) -> list[str]:
        return [*_stogie_cli(app, port, opts), "--workers", str(workers)]

    return build


def _stogie_static(app: str, port: int, opts: Options) -> list[str]:
    return [*_stogie_cli(app, port, opts), "--static", f"/static/={STATIC_DIR}"]


def _stogie_whitenoise(app: str, port: int, opts: Options) -> list[str]:
    return _stogie_cli("bench.apps:whitenoise_app", port, opts)


def _stogie_django_whitenoise(app: str, port: int, opts: Options) -> list[str]:
    return _stogie_cli("bench.apps:django_whitenoise_app", port, opts)


def _granian_static(app: str, port: int, opts: Options) -> list[str]:
    return [
        *_granian(None)(app, port, opts),
        "--static-path-route",
        "/static",
        "--static-path-mount",
        str(STATIC_DIR),
    ]


def tls_files(opts: Options) -> tuple[Path, Path]:
    """A self-signed certificate and PKCS#8 key for 127.0.0.1, made once per run."""
    raw = opts.results_dir / "raw"  # not committed (bench/.gitignore)
    cert, key = raw / "tls-cert.pem", raw / "tls-key.pem"
    if not cert.exists():
        raw.mkdir(parents=True, exist_ok=True)
        run_checked(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={HOST}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return cert, key


def _gunicorn(app: str, port: int, opts: Options) -> list[str]:
    return [
        str(VENV / "bin" / "gunicorn"),
        "-k",
        "gthread",
        "-w",
        "1",
        "--threads",
        str(opts.threads),
        "-b",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        app,
    ]


def _uwsgi(processes: int = 1, tls: bool = False) -> Callable[[str, int, Options], list[str]]:
    """uWSGI's own HTTP/1.1 parser in the worker (no separate HTTP router process)."""

    def build(app: str, port: int, opts: Options) -> list[str]:
        address = f"{HOST}:{port}"
        if app == "bench.apps:flask_app":  # see bench/apps_eager.py
            app = "bench.apps_eager:flask_app"
        if tls:
            cert, key = tls_files(opts)
            socket_opt = ["--https-socket", f"{address},{cert},{key}"]
        else:
            socket_opt = ["--http11-socket", address]
        cmd = [
            str(VENV / "bin" / "uwsgi"),
            *socket_opt,
            "--module",
            app,
            "--home",
            str(VENV),
            "--master",
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            "--threads",
            str(opts.threads),
            "--processes",
            str(processes),
        ]
        if processes > 1:
            cmd.append("--thunder-lock")  # one accept() at a time across the processes
        if opts.backlog:
            cmd += ["--listen", str(opts.backlog)]
        return cmd

    return build


def _socketify(workers: int = 1, tls: bool = False) -> Callable[[str, int, Options], list[str]]:
    def build(app: str, port: int, opts: Options) -> list[str]:
        cmd = [
            str(VENV_PY),
            "-m",
            "socketify",
            app,
            "--host",
            HOST,
            "--port",
            str(port),
            "--interface",
            "wsgi",
            "--ws",
            "none",
            "--disable-listen-log",
            "true",
            "--workers",
            str(workers),
        ]
        if tls:
            cert, key = tls_files(opts)
            cmd += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        return cmd

    return build


NO_TLS = "no TLS"  # the server has no HTTPS listener of its own
NO_PROCESSES = "threads only"  # no multi-process mode

SERVERS: list[Server] = [
    Server(
        "stogie",
        "stogie `wsgi.Server(numthreads={threads}, request_queue_size={backlog})`"
        " via bench/launch.py",
        _launcher("stogie"),
        "stogie",
    ),
    Server("bjoern", "bjoern `bjoern.run` (1 thread, libev)", _launcher("bjoern"), "bjoern"),
    Server(
        "granian",
        "granian `--interface wsgi --workers 1 --blocking-threads {threads} --http 1 --no-ws`",
        _granian(None),
        "granian",
    ),
    Server(
        "granian-bt1",
        "granian as above with `--blocking-threads 1` (its own benchmark setting)",
        _granian(1),
        "granian",
    ),
    Server(
        "cheroot",
        "cheroot `wsgi.Server(numthreads={threads}, request_queue_size={backlog})`",
        _launcher("cheroot"),
        "cheroot",
    ),
    Server(
        "waitress",
        "waitress `serve(threads={threads})`, other settings default (connection_limit=100)",
        _launcher("waitress"),
        "waitress",
    ),
    Server(
        "gunicorn",
        "gunicorn `-k gthread -w 1 --threads {threads}` (master + 1 worker)",
        _gunicorn,
        "gunicorn",
    ),
    Server(
        "fastwsgi",
        "fastwsgi `server.init(app, host, port)` (1 thread, libuv), tcp_nodelay=1, backlog 1024"
        " via bench/launch.py",
        _launcher("fastwsgi"),
        "fastwsgi",
        cannot={"https_hello_c50": NO_TLS},
    ),
    Server(
        "socketify",
        "socketify `python -m socketify APP --interface wsgi --ws none` (1 thread, uWebSockets"
        " + libuv)",
        _socketify(),
        "socketify",
    ),
    Server(
        "uwsgi",
        "uWSGI `--http11-socket --master --threads {threads} --processes 1 --disable-logging"
        " --listen {backlog}`",
        _uwsgi(),
        "bin/uwsgi",
    ),
    Server(
        "pyruvate",
        "pyruvate `serve(app, addr, {threads})` (max_reuse_count=0: one request per connection,"
        " see README) via bench/launch.py",
        _launcher("pyruvate"),
        "pyruvate",
        cannot={"https_hello_c50": NO_TLS, "workers_c50": NO_PROCESSES},
    ),
    Server(
        "stogie-cli",
        "stogie command line `stogie MODULE:APP --bind HOST:PORT --threads"
        " {threads} --request-queue-size {backlog}` (opt-in)",
        _stogie_cli,
        "stogie",
    ),
    Server(
        "stogie-alt",
        "stogie as `stogie`, from the second build (`--alt-build`)",
        _launcher("stogie"),
        "stogie",
        pythonpath=ALT_SITE,
    ),
    Server(
        "stogie-tls",
        "stogie command line as above with `--ssl-certificate --ssl-private-key` (rustls)",
        _stogie_tls,
        "stogie",
        special=True,
    ),
    Server(
        "granian-tls",
        "granian as above with `--ssl-certificate --ssl-keyfile`",
        _granian(None, tls=True),
        "granian",
        special=True,
    ),
    Server(
        "uwsgi-tls",
        "uWSGI as above with `--https-socket ADDR,CERT,KEY` instead of `--http11-socket`",
        _uwsgi(tls=True),
        "bin/uwsgi",
        special=True,
    ),
    Server(
        "socketify-tls",
        "socketify as above with `--ssl-certfile --ssl-keyfile`",
        _socketify(tls=True),
        "socketify",
        special=True,
    ),
    Server(
        "stogie-w1",
        "stogie command line as above with `--workers 1`",
        _stogie_workers(1),
        "stogie",
        special=True,
    ),
    Server(
        "stogie-w2",
        "stogie command line as above with `--workers 2`",
        _stogie_workers(2),
        "stogie",
        special=True,
    ),
    Server(
        "stogie-static",
        "stogie command line as above with `--static /static/=bench/static` (served by the"
        " engine)",
        _stogie_static,
        "stogie",
        special=True,
    ),
    Server(
        "stogie-static-alt",
        "stogie-static from the second build (`--alt-build`/`--alt-ref`), for A/B runs",
        _stogie_static,
        "stogie",
        pythonpath=ALT_SITE,
        special=True,
    ),
    Server(
        "stogie-whitenoise",
        "stogie command line as above serving `WhiteNoise(hello, root=bench/static,"
        " prefix='static/')`",
        _stogie_whitenoise,
        "whitenoise",
        special=True,
    ),
    Server(
        "stogie-django-whitenoise",
        "stogie command line as above serving a Django project (DEBUG off; SecurityMiddleware,"
        " WhiteNoiseMiddleware, CommonMiddleware) whose STATIC_ROOT is bench/static",
        _stogie_django_whitenoise,
        "django",
        special=True,
    ),
    Server(
        "granian-static",
        "granian as above with `--static-path-route /static --static-path-mount bench/static`",
        _granian_static,
        "granian",
        special=True,
    ),
    Server(
        "uwsgi-p2",
        "uWSGI as above with `--processes 2 --thunder-lock` ({threads} threads each)",
        _uwsgi(processes=2),
        "bin/uwsgi",
        special=True,
    ),
    Server(
        "fastwsgi-w2",
        "fastwsgi as above with `workers=2` (two forked processes, one loop each)",
        _launcher("fastwsgi", workers=2),
        "fastwsgi",
        special=True,
    ),
    Server(
        "socketify-w2",
        "socketify as above with `--workers 2` (two forked processes)",
        _socketify(workers=2),
        "socketify",
        special=True,
    ),
]
SERVER_BY_NAME = {s.name: s for s in SERVERS}
DEFAULT_SERVERS = [
    s.name for s in SERVERS if s.name not in ("stogie-cli", "stogie-alt", "stogie-static-alt")
]


@dataclass
class Options:
    servers: list[str]
    scenarios: list[str]
    duration: float
    rounds: int
    warmup: float
    threads: int
    backlog: int
    wrk_timeout: str
    results_dir: Path
    quiet_wait: float = 20.0
    quiet_threshold: float = 25.0


# --------------------------------------------------------------------------------------------
# setup (runs with whatever python3 started us; stdlib only)
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_checked(cmd: list[str], **kwargs: Any) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def python_headers_present() -> bool:
    import sysconfig

    include = sysconfig.get_paths().get("include") or ""
    return Path(include, "Python.h").exists()


def venv_module_present() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import ensurepip, venv"], check=False, capture_output=True
    )
    return probe.returncode == 0


def ensure_system_packages() -> None:
    missing = [pkg for binary, pkg in APT_NEEDS.items() if shutil.which(binary) is None]
    if not Path("/usr/include/ev.h").exists():
        missing.append("libev-dev")  # bjoern builds against libev
    if ctypes.util.find_library("uv") is None:
        missing.append("libuv1")  # socketify's prebuilt library links libuv.so.1
    if shutil.which("cc") is None:
        missing.append("gcc")
    if not python_headers_present():
        missing.append("python3-dev")
    if not venv_module_present():
        missing.append("python3-venv")
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing system packages {missing}; run as root or install them yourself")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_checked(["apt-get", "update"], env=env)
    run_checked(["apt-get", "install", "-y", *missing], env=env)


def ensure_venv() -> None:
    if not VENV_PY.exists():
        run_checked([sys.executable, "-m", "venv", str(VENV)])
        run_checked([str(VENV_PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    marker = VENV / ".bench-peers"
    wanted = "\n".join(PEERS)
    if not marker.exists() or marker.read_text() != wanted:
        run_checked([str(VENV_PY), "-m", "pip", "install", "-q", *PEERS])
        marker.write_text(wanted)


def export_ref(ref: str) -> Path:
    """Check out ``ref`` of the repository (git archive) under bench/.venv/src-<sha>."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest = VENV / f"src-{sha}"
    if not dest.exists():
        tmp = VENV / f"src-{sha}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", sha],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(dest)
    return dest


def install_stogie(ref: str | None = None, maturin_args: str = "", alt: bool = False) -> str:
    """pip-install stogie into the venv (maturin, release profile unless ``maturin_args`` name
    another, e.g. ``--profile profiling``).

    Without ``ref`` the repository's work tree is built (``pip install <repo root>``); with
    ``ref`` that commit is exported first, so a server being edited meanwhile cannot leave the
    benchmark with a half-changed build.  With ``alt`` the build goes to ALT_SITE (the
    `stogie-alt` server) instead of the venv.  Returns a note for the report ("" on failure)."""
    build_log = VENV / ("stogie-alt-build.log" if alt else "stogie-build.log")
    env = dict(os.environ)
    source = REPO
    if ref:
        source = export_ref(ref)
        env["CARGO_TARGET_DIR"] = str(VENV / "cargo-target")  # keeps incremental builds
    if alt:  # other features or profile: a target dir of its own keeps both builds incremental
        env["CARGO_TARGET_DIR"] = str(VENV / "cargo-target-alt")
    if maturin_args:
        env["MATURIN_PEP517_ARGS"] = maturin_args
    cmd = [str(VENV_PY), "-m", "pip", "install", "--force-reinstall", "--no-deps", str(source)]
    if alt:
        shutil.rmtree(ALT_SITE, ignore_errors=True)
        cmd[-1:-1] = ["--target", str(ALT_SITE)]
    log(
        "$ "
        + (f"MATURIN_PEP517_ARGS={maturin_args!r} " if maturin_args else "")
        + " ".join(cmd)
        + f"   (log: {build_log})"
    )
    with open(build_log, "w") as fh:
        rc = subprocess.run(
            cmd, check=False, stdout=fh, stderr=subprocess.STDOUT, env=env
        ).returncode
    if rc != 0:
        tail = build_log.read_text(errors="replace").splitlines()[-15:]
        log("stogie build FAILED; benchmarking the peers only. Last lines:\n  " + "\n  ".join(tail))
        return ""
    what = f"commit {source.name[4:]}" if ref else "the work tree"
    return f"pip install (maturin {maturin_args or 'release'}) of {what}"


def server_log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the command name (which may contain spaces and parentheses)
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


@dataclass(frozen=True)
class CpuTimes:
    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def tree_cpu_seconds(root: int) -> CpuTimes:
    """utime+stime (all threads) + cutime+cstime (reaped children) over the process tree."""
    user = system = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # stat fields 14..17 (1-based) = utime stime cutime cstime; fields[] starts at field 3
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return CpuTimes(user / CLK_TCK, system / CLK_TCK)


def tree_status(root: int) -> dict[str, int]:
    """Peak RSS (VmHWM, summed), current RSS, thread and process counts over the tree."""
    hwm = rss = threads = procs = 0
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        procs += 1
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "VmHWM":
                hwm += int(value.split()[0])
            elif key == "VmRSS":
                rss += int(value.split()[0])
            elif key == "Threads":
                threads += int(value)
    return {"vmhwm_kib": hwm, "vmrss_kib": rss, "threads": threads, "processes": procs}


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds over all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


_QUIET_STATE = {"limit": -1.0}


def wait_for_quiet(opts: Options) -> float:
    """Wait (bounded) until the machine is mostly idle; returns the last busy % seen.

    After a wait that timed out (someone else keeps the CPU busy) the next waits are cut to
    3 s until the machine is seen quiet again, so a persistently shared machine does not add
    the full wait to every measurement."""
    if _QUIET_STATE["limit"] < 0:
        _QUIET_STATE["limit"] = opts.quiet_wait
    deadline = time.monotonic() + _QUIET_STATE["limit"]
    while True:
        busy0, tot0 = machine_busy_seconds()
        time.sleep(0.5)
        busy1, tot1 = machine_busy_seconds()
        pct = 100 * (busy1 - busy0) / (tot1 - tot0) if tot1 > tot0 else 0.0
        if pct <= opts.quiet_threshold:
            _QUIET_STATE["limit"] = opts.quiet_wait
            return pct
        if time.monotonic() >= deadline:
            if opts.quiet_wait > 0:
                log(
                    f"machine still {pct:.0f}% busy after waiting {_QUIET_STATE['limit']:g} s;"
                    " measuring anyway"
                )
            _QUIET_STATE["limit"] = min(3.0, opts.quiet_wait)
            return pct


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# one measurement
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_probe(port: int, path: str, scheme: str = "http", posts: bool = False) -> bool:
    """One request; True once the server answers it.  `posts`: send a 5-byte POST body
    (socketify drops a GET to the echo application: it cannot send an empty body with
    Content-Length: 0)."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as raw:
            sock: socket.socket = raw
            if scheme == "https":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
            if posts:
                head = "POST" + head[3:] + "Content-Length: 5\r\n\r\nhello"
            else:
                head += "\r\n"
            sock.sendall(head.encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def closes_after_close_request(port: int, path: str) -> bool:
    """Whether the server closes the connection after answering a request that carries
    `Connection: close` (RFC 9112 section 9.6).  A server that keeps it open makes wrk reuse
    the connection, which turns the close scenario into a keep-alive one."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if not sock.recv(65536):
                    return True
    except TimeoutError:  # still open after 2 s
        return False
    except OSError:
        return True  # reset: not kept open for reuse either
    return False


def wait_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    path: str,
    timeout: float = 60,
    scheme: str = "http",
    posts: bool = False,
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"server exited with code {proc.returncode} before answering"
        if http_probe(port, path, scheme, posts):
            return ""
        time.sleep(0.1)
    return f"server did not answer within {timeout:.0f} s"


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the group made by start_new_session
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # children left in our group (workers)
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=5)


def wrk_script(scenario: Scenario, raw: Path) -> Path:
    path = raw / f"wrk-{scenario.name}.lua"
    if not path.exists():
        parts = []
        if scenario.script:
            parts.append((LUA / scenario.script).read_text())
        parts.append((LUA / "report.lua").read_text())
        path.write_text("\n".join(parts))
    return path


def wrk_command(
    scenario: Scenario, port: int, seconds: float, raw: Path, opts: Options
) -> list[str]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{scenario.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        opts.wrk_timeout,
        "-s",
        str(wrk_script(scenario, raw)),
    ]
    for header in scenario.headers:
        cmd += ["-H", header]
    cmd.append(f"{scenario.scheme}://{HOST}:{port}{scenario.path}")
    return cmd


def run_wrk(cmd: list[str], seconds: float) -> tuple[str, dict[str, Any] | None]:
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 60)
        text = out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        return f"wrk timed out: {exc}", None
    for line in text.splitlines():
        if line.startswith("BENCHJSON "):
            return text, json.loads(line[len("BENCHJSON ") :])
    return text, None


@dataclass
class Record:
    server: str
    scenario: str
    round: int
    ok: bool = False
    error: str = ""
    note: str = ""
    unsupported: str = ""  # why the server cannot run this scenario (nothing was measured)
    command: list[str] = field(default_factory=list)
    wrk_command: list[str] = field(default_factory=list)
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    mb_per_s: float = 0.0
    cpu_s: float = 0.0
    cpu_us_per_req: float | None = None
    cpu_user_us_per_req: float | None = None
    wrk_cpu_us_per_req: float | None = None
    machine_busy_pct: float = 0.0
    other_busy_pct: float = 0.0
    load_before_pct: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    socket_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    peak_rss_mib: float = 0.0
    threads: int = 0
    processes: int = 0
    started_at: str = ""


def measure(server: Server, scenario: Scenario, rnd: int, opts: Options) -> Record:
    raw = opts.results_dir / "raw"
    tag = f"r{rnd}-{scenario.name}-{server.name}"
    if scenario.name in server.cannot:
        reason = server.cannot[scenario.name]
        return Record(server.name, scenario.name, rnd, unsupported=reason, error=reason)
    load_before = wait_for_quiet(opts)
    port = free_port()
    app = f"bench.apps:{scenario.app}"
    cmd = server.command(app, port, opts)
    rec = Record(
        server.name, scenario.name, rnd, command=cmd, started_at=time.strftime("%Y-%m-%dT%H:%M:%S")
    )
    pythonpath = f"{server.pythonpath}:{REPO}" if server.pythonpath else str(REPO)
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    with open(raw / f"server-{tag}.log", "wb") as server_log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        problem = wait_ready(
            proc, port, scenario.path, scheme=scenario.scheme, posts=scenario.posts
        )
        if problem:
            stop_server(proc)
            last = server_log_tail(raw / f"server-{tag}.log")
            rec.error = problem + (f" — log: {last}" if last else "")
            return rec
        if "Connection: close" in scenario.headers and not closes_after_close_request(
            port, scenario.path
        ):
            rec.note = (
                "ignores close: the server kept the connection open after answering a request"
                " with Connection: close, so wrk reused it (a keep-alive figure)"
            )
        if opts.warmup > 0:
            run_wrk(wrk_command(scenario, port, opts.warmup, raw, opts), opts.warmup)
            time.sleep(0.3)
        wcmd = wrk_command(scenario, port, opts.duration, raw, opts)
        rec.wrk_command = wcmd
        cpu0, gen0, (busy0, tot0) = (
            tree_cpu_seconds(proc.pid),
            children_cpu_seconds(),
            machine_busy_seconds(),
        )
        text, summary = run_wrk(wcmd, opts.duration)
        cpu1, gen1, (busy1, tot1) = (
            tree_cpu_seconds(proc.pid),
            children_cpu_seconds(),
            machine_busy_seconds(),
        )
        status = tree_status(proc.pid)
        (raw / f"wrk-{tag}.txt").write_text(" ".join(wcmd) + "\n\n" + text)
        if proc.poll() is not None:
            rec.error = f"server exited (code {proc.returncode}) during the load run"
        if summary is None:
            rec.error = rec.error or "no wrk summary: " + text.strip()[-300:]
            return rec
        rec.requests = summary["requests"]
        rec.duration_s = summary["duration_us"] / 1e6
        rec.rps = rec.requests / rec.duration_s if rec.duration_s else 0.0
        rec.mb_per_s = summary["bytes"] / rec.duration_s / 2**20 if rec.duration_s else 0.0
        rec.cpu_s = cpu1.total - cpu0.total
        wall = tot1 - tot0
        rec.machine_busy_pct = 100 * (busy1 - busy0) / wall if wall else 0.0
        rec.other_busy_pct = (
            100 * ((busy1 - busy0) - rec.cpu_s - (gen1 - gen0)) / wall if wall else 0.0
        )
        rec.load_before_pct = load_before
        if rec.requests:
            rec.cpu_us_per_req = rec.cpu_s / rec.requests * 1e6
            rec.cpu_user_us_per_req = (cpu1.user - cpu0.user) / rec.requests * 1e6
            rec.wrk_cpu_us_per_req = (gen1 - gen0) / rec.requests * 1e6
        if rec.requests and scenario.latency_valid:
            rec.p50_ms = summary["p50_us"] / 1000
            rec.p90_ms = summary["p90_us"] / 1000
            rec.p99_ms = summary["p99_us"] / 1000
            rec.max_ms = summary["max_us"] / 1000
        rec.errors = {k: summary[k] for k in ("connect", "read", "write", "timeout")}
        rec.socket_errors = sum(rec.errors.values())
        rec.non_2xx = summary["status"]
        rec.peak_rss_mib = status["vmhwm_kib"] / 1024
        rec.threads = status["threads"]
        rec.processes = status["processes"]
        rec.ok = rec.requests > 0 and not rec.error
        if rec.ok and not rec.note and rec.requests <= scenario.connections:
            rec.note = (
                f"stalled: {rec.requests} responses on {scenario.connections} connections"
                f" in {rec.duration_s:.0f} s (at most one per connection); the CPU and"
                " req/s figures are not meaningful"
            )
        return rec
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------------------------
# orchestration
# --------------------------------------------------------------------------------------------


def module_available(module: str, pythonpath: Path | None = None) -> bool:
    if pythonpath is not None and not pythonpath.is_dir():
        return False
    if module.startswith("bin/"):  # uWSGI is a program embedding Python, not a module
        return os.access(VENV / module, os.X_OK)
    env = dict(os.environ, PYTHONPATH=str(pythonpath)) if pythonpath else None
    probe = subprocess.run(
        [str(VENV_PY), "-c", f"import {module}"], check=False, capture_output=True, env=env
    )
    return probe.returncode == 0


def package_versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        f"for n in {['stogie', *PEERS]!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    probe = subprocess.run([str(VENV_PY), "-c", code], check=False, capture_output=True, text=True)
    return json.loads(probe.stdout) if probe.returncode == 0 else {}


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(["wrk", "--version"], check=False, capture_output=True, text=True)
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        check=False,
        capture_output=True,
        text=True,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": " ".join((wrk_version.stdout + wrk_version.stderr).split()[:2]),
        "repo_commit": (git.stdout.strip() or "(no commit)") + _dirty_note(),
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def _dirty_note() -> str:
    """stogie is built from the work tree: say so when it differs from the commit."""
    status = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--",
            "src",
            "python",
            "Cargo.toml",
            "Cargo.lock",
            "pyproject.toml",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    return " (work tree has uncommitted server changes)" if status.stdout.strip() else ""


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run_benchmarks(opts: Options, build_note: str) -> Path:
    from bench import report

    raise_fd_limit()
    raw = opts.results_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    servers = []
    for name in opts.servers:
        srv = SERVER_BY_NAME[name]
        if module_available(srv.module, srv.pythonpath):
            servers.append(srv)
        else:
            log(f"skipping {name}: `import {srv.module}` fails in {srv.pythonpath or VENV}")
    scenarios = [SCENARIO_BY_NAME[n] for n in opts.scenarios]
    total = sum(runs(sv, sc) for sv in servers for sc in scenarios) * opts.rounds
    per = opts.duration + opts.warmup + 2
    log(
        f"{len(servers)} servers x {len(scenarios)} scenarios x {opts.rounds} rounds = {total}"
        f" load runs, about {total * per / 60:.0f} min; results in {opts.results_dir}"
    )
    threads_desc = {
        s.name: s.describe.format(threads=opts.threads, backlog=opts.backlog) for s in servers
    }
    meta = {
        "timestamp": opts.results_dir.name,
        "machine": machine_info(),
        "versions": package_versions(),
        "stogie_build": build_note,
        "options": {
            "duration_s": opts.duration,
            "rounds": opts.rounds,
            "warmup_s": opts.warmup,
            "threads": opts.threads,
            "backlog": opts.backlog,
            "wrk_timeout": opts.wrk_timeout,
            "quiet_wait_s": opts.quiet_wait,
            "quiet_threshold_pct": opts.quiet_threshold,
            "load_generator": "wrk -t1 (one thread), loopback",
        },
        "servers": threads_desc,
        "scenarios": {s.name: {**asdict(s)} for s in scenarios},
        "complete": False,
    }
    out = opts.results_dir / "results.json"
    records: list[Record] = []

    def save() -> None:  # after every measurement, so an interrupted run keeps its data
        out.write_text(
            json.dumps({"meta": meta, "records": [asdict(r) for r in records]}, indent=1)
        )

    done = 0
    try:
        for rnd in range(opts.rounds):
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            for scenario in scenarios:
                for server in order:
                    if not runs(server, scenario):
                        continue
                    done += 1
                    rec = measure(server, scenario, rnd, opts)
                    records.append(rec)
                    save()
                    prefix = f"[{done}/{total}] r{rnd} {scenario.name:12s} {server.name:12s}"
                    if rec.unsupported:
                        log(f"{prefix} not run: {rec.unsupported}")
                    elif rec.ok:
                        log(
                            f"{prefix} {rec.rps:10.0f} req/s  {rec.cpu_us_per_req or 0:8.1f}"
                            f" CPU-us/req  p99 {rec.p99_ms or 0:8.2f} ms  sockerr"
                            f" {rec.socket_errors}  non2xx {rec.non_2xx}  other-load"
                            f" {rec.other_busy_pct:4.0f}%"
                        )
                    else:
                        log(f"{prefix} FAILED: {rec.error}")
        meta["complete"] = True
    except KeyboardInterrupt:
        log("interrupted: writing the report for the runs finished so far")
    finally:
        save()
        if records:
            report.write_report(out)
    return opts.results_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list from {', '.join(SERVER_BY_NAME)} (default: all but stogie-cli)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help=f"comma list from {', '.join(SCENARIO_BY_NAME)} (default: all)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per load run (default 8; 2 with --quick)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds; server order alternates each round (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="warm-up seconds before each load run (default 1.5; 1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short development run: --duration 2 --rounds 1 --warmup 1",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=10,
        help="worker threads for the threaded servers (default 10)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=1024,
        help="request_queue_size passed to stogie and cheroot (default 1024;"
        " 0 keeps their own default)",
    )
    parser.add_argument("--wrk-timeout", default="2s", help="wrk --timeout (default 2s)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each run wait up to this many seconds for the machine to"
        " be idle (shared machine; default 20, 0 disables)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=25.0,
        help="machine busy %% counted as idle for --quiet-wait (default 25)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="output folder (default bench/results/<timestamp>)",
    )
    parser.add_argument(
        "--no-setup",
        action="store_true",
        help="skip apt, venv and stogie installation (use bench/.venv as is)",
    )
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="do not rebuild/reinstall stogie (peers are still checked)",
    )
    parser.add_argument(
        "--stogie-ref",
        default=None,
        metavar="REV",
        help="build stogie from this git commit (e.g. HEAD) instead of the"
        " work tree; useful while the server is being edited",
    )
    parser.add_argument(
        "--alt-build",
        default=None,
        metavar="ARGS",
        help="build stogie a second time with these maturin arguments (e.g."
        " --alt-build='--features abi3' for the stable-ABI build) for the stogie-alt"
        " server; '' builds it like stogie",
    )
    parser.add_argument(
        "--alt-ref",
        default=None,
        metavar="REV",
        help="build stogie-alt from this commit (default: as --stogie-ref)",
    )
    parser.add_argument("--list", action="store_true", help="list servers and scenarios")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    def split(value: str, known: dict[str, Any], default: list[str]) -> list[str]:
        if value == "all":
            return list(default)
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            sys.exit(f"unknown name(s) {unknown}; choose from {list(known)}")
        return names

    duration = args.duration if args.duration is not None else (2.0 if args.quick else 8.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 1.5)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Options(
        servers=split(args.servers, SERVER_BY_NAME, DEFAULT_SERVERS),
        scenarios=split(args.scenarios, SCENARIO_BY_NAME, list(SCENARIO_BY_NAME)),
        duration=duration,
        rounds=max(1, rounds),
        warmup=max(0.0, warmup),
        threads=args.threads,
        backlog=args.backlog,
        wrk_timeout=args.wrk_timeout,
        results_dir=(args.results_dir or BENCH / "results" / stamp).resolve(),
        quiet_wait=max(0.0, args.quiet_wait),
        quiet_threshold=args.quiet_threshold,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        for srv in SERVERS:
            desc = srv.describe.format(threads=args.threads, backlog=args.backlog)
            print(f"server   {srv.name:12s} {desc}")
        for sc in SCENARIOS:
            print(f"scenario {sc.name:12s} {sc.title}")
        return
    opts = options_from(args)  # validate names before any setup work
    if os.environ.get(IN_VENV_FLAG) != "1":
        build_note = "not rebuilt (--no-setup)"
        if not args.no_setup:
            ensure_system_packages()
            ensure_venv()
            if args.no_build:
                build_note = "not rebuilt (--no-build)"
            elif "stogie" in ",".join(opts.servers):
                build_note = (
                    install_stogie(args.stogie_ref) or "pip install FAILED; stogie results missing"
                )
                if {"stogie-alt", "stogie-static-alt"} & set(opts.servers):
                    alt_note = install_stogie(
                        args.alt_ref or args.stogie_ref, args.alt_build or "", alt=True
                    )
                    build_note += "; stogie-alt: " + (alt_note or "pip install FAILED")
        elif not VENV_PY.exists():
            sys.exit(f"{VENV_PY} missing; run without --no-setup once")
        env = dict(os.environ, **{IN_VENV_FLAG: "1", "STOGIE_BENCH_BUILD": build_note})
        argv_out = [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]]
        if args.results_dir is None:
            argv_out += ["--results-dir", str(opts.results_dir)]
        os.execve(str(VENV_PY), argv_out, env)
    sys.path.insert(0, str(REPO))
    outdir = run_benchmarks(opts, os.environ.get("STOGIE_BENCH_BUILD", "unknown"))
    log(f"done: {outdir / 'results.md'}, {outdir / 'chart.png'}, {outdir / 'results.json'}")
    print((outdir / "results.md").read_text())


if __name__ == "__main__":
    main()
