#!/usr/bin/env python3
"""Per-request cost breakdown of stogie's hello world, on a fixed number of requests.

    python3 bench/profile.py                   # stat + syscalls + record, 200 000 requests each
    python3 bench/profile.py callgrind         # instruction counts under valgrind (5 000 requests)
    python3 bench/profile.py stat syscalls --server bjoern   # same breakdown for a peer

Modes (each starts a fresh server on 127.0.0.1, warms it up, then attaches to its PID while
``h2load --h1 -n N -c C -t 1`` sends exactly N keep-alive requests to bench.apps:hello, or to
``--app``/``--path``, e.g. ``--app flask_app --path '/hello/bench?page=2'``; ``--static``
profiles stogie's static files instead: the engine answers /static/site.css from bench/static
(the static_4k scenario of bench/run.py) and the application is never called):

  stat       server CPU from /proc (user/system split) and ``perf stat`` software counters
             (task-clock, context switches, page faults, syscalls); hardware counters are
             requested too but are "not supported" on many VMs.
  syscalls   ``perf trace -s``: count and time of every syscall, summed over threads, per request.
  record     ``perf record -e cpu-clock --call-graph dwarf``; writes perf.data and text reports
             (flat by symbol, by shared object, and caller graphs).
  callgrind  ``valgrind --tool=callgrind`` with instrumentation switched on only for the
             measured requests (callgrind_control); Ir per request + callgrind_annotate output.

Output: bench/profiles/<timestamp>/ (summary.txt plus the tools' own files).  The script only
records; reading the profile is left to the server engineer.  It needs bench/.venv (made by
bench/run.py; run that once, or this script builds it the same way) and installs linux-perf,
valgrind and nghttp2-client with apt when missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    ALT_SITE,
    BENCH,
    HOST,
    REPO,
    STATIC_DIR,
    VENV,
    VENV_PY,
    ensure_system_packages,
    ensure_venv,
    free_port,
    install_stogie,
    log,
    raise_fd_limit,
    stop_server,
    tree_cpu_seconds,
    wait_ready,
)

MODES = ["stat", "syscalls", "record", "callgrind"]
STATIC_PREFIX = "/static/"
STATIC_PATH = STATIC_PREFIX + "site.css"
APT_TOOLS = {"perf": "linux-perf", "valgrind": "valgrind", "h2load": "nghttp2-client"}


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in APT_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=env)


def server_env(server: str) -> dict[str, str]:
    # stogie-alt: the second build of bench/run.py --alt-build, imported first
    path = f"{ALT_SITE}:{REPO}" if server == "stogie-alt" else str(REPO)
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    return env


def server_cmd(
    server: str, port: int, threads: int, app: str = "hello", static: bool = False
) -> list[str]:
    mount = ["--static", f"{STATIC_PREFIX}={STATIC_DIR}"] if static else []
    return [
        str(VENV_PY),
        "-m",
        "bench.launch",
        "stogie" if server == "stogie-alt" else server,
        f"bench.apps:{app}",
        HOST,
        str(port),
        "--threads",
        str(threads),
        *mount,
    ]


def start(cmd: list[str], logfile: Path, server: str) -> subprocess.Popen[bytes]:
    with open(logfile, "wb") as fh:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=server_env(server),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# --http2: h2load speaks HTTP/2 (cleartext, prior knowledge) instead of HTTP/1.1.
HTTP2 = False


def h2load(
    port: int,
    requests: int,
    conns: int,
    out: Path | None = None,
    path: str = "/",
    body: Path | None = None,
) -> str:
    cmd = [
        "h2load",
        *(["-m", "8"] if HTTP2 else ["--h1"]),
        *(["-d", str(body)] if body is not None else []),
        "-t",
        "1",
        "-c",
        str(conns),
        "-n",
        str(requests),
        f"http://{HOST}:{port}{path}",
    ]
    # bounded: h2load's own timeouts plus an overall limit
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    text = " ".join(cmd) + "\n" + res.stdout + res.stderr
    if out is not None:
        out.write_text(text)
    return text


def h2load_done(text: str) -> int:
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done", text)
    return int(match.group(1)) if match else 0


def attach(tool_cmd: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        tool_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    time.sleep(1.0)  # let perf attach to every thread
    return proc


def detach(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace") if out else ""


def ready_server(
    server: str,
    args: argparse.Namespace,
    outdir: Path,
    mode: str,
    wrapper: list[str] | None = None,
    timeout: float = 60,
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = (wrapper or []) + server_cmd(server, port, args.threads, args.app, args.static)
    proc = start(cmd, outdir / f"server-{mode}.log", server)
    problem = wait_ready(proc, port, args.path, timeout=timeout)
    if problem:
        stop_server(proc)
        sys.exit(f"{mode}: {problem} (see {outdir / f'server-{mode}.log'})")
    return proc, port


def mode_stat(args: argparse.Namespace, outdir: Path, summary: list[str]) -> None:
    proc, port = ready_server(args.server, args, outdir, "stat")
    try:
        h2load(port, args.warmup, args.connections, path=args.path, body=args.body)
        events = (
            "task-clock,context-switches,cpu-migrations,page-faults,"
            "raw_syscalls:sys_enter,cycles,instructions"
        )
        cpu0 = tree_cpu_seconds(proc.pid)
        perf = attach(["perf", "stat", "-e", events, "-p", str(proc.pid)])
        text = h2load(
            port, args.requests, args.connections, outdir / "h2load-stat.txt", path=args.path,
            body=args.body,
        )
        perf_out = detach(perf)
        cpu1 = tree_cpu_seconds(proc.pid)
    finally:
        stop_server(proc)
    (outdir / "perf-stat.txt").write_text(perf_out)
    done = h2load_done(text) or args.requests
    summary.append(f"[stat] {done} requests, {args.connections} connections")
    summary.append(
        f"  server CPU from /proc: {(cpu1.total - cpu0.total) / done * 1e6:.2f} µs/req"
        f" (user {(cpu1.user - cpu0.user) / done * 1e6:.2f},"
        f" system {(cpu1.system - cpu0.system) / done * 1e6:.2f});"
        " includes perf's attach overhead"
    )
    for line in perf_out.splitlines():
        match = re.match(r"\s*([\d,.]+)\s+(msec\s+)?(\S+)", line)
        if not match or match.group(3) in ("seconds",):
            continue
        value = float(match.group(1).replace(",", ""))
        unit = "µs" if match.group(2) else ""
        per_req = value * 1000 / done if unit else value / done
        summary.append(f"  {match.group(3):28s} {per_req:10.3f} {unit}/req")
    if "not supported" in perf_out:
        summary.append("  (some hardware counters are not supported on this machine)")
    summary.append(
        "  h2load: "
        + next((ln.strip() for ln in text.splitlines() if ln.startswith("finished")), "?")
    )


def mode_syscalls(args: argparse.Namespace, outdir: Path, summary: list[str]) -> None:
    proc, port = ready_server(args.server, args, outdir, "syscalls")
    try:
        h2load(port, args.warmup, args.connections, path=args.path, body=args.body)
        perf = attach(["perf", "trace", "-s", "-p", str(proc.pid)])
        text = h2load(
            port, args.requests, args.connections, outdir / "h2load-syscalls.txt", path=args.path,
            body=args.body,
        )
        perf_out = detach(perf)
    finally:
        stop_server(proc)
    (outdir / "perf-trace-summary.txt").write_text(perf_out)
    done = h2load_done(text) or args.requests
    calls: dict[str, int] = {}
    msec: dict[str, float] = {}
    for line in perf_out.splitlines():
        match = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+\d+\s+([\d.]+)\s", line)
        if match and match.group(1) != "syscall":
            calls[match.group(1)] = calls.get(match.group(1), 0) + int(match.group(2))
            msec[match.group(1)] = msec.get(match.group(1), 0.0) + float(match.group(3))
    summary.append(f"[syscalls] {done} requests (perf trace slows the server; counts are exact)")
    summary.append(f"  total syscalls per request: {sum(calls.values()) / done:.2f}")
    for name in sorted(calls, key=lambda n: -calls[n]):
        summary.append(
            f"  {name:20s} {calls[name] / done:8.3f}/req"
            f"   {msec[name] * 1000 / done:8.2f} µs/req in-syscall (traced)"
        )


def mode_record(args: argparse.Namespace, outdir: Path, summary: list[str]) -> None:
    proc, port = ready_server(args.server, args, outdir, "record")
    data = outdir / "perf.data"
    try:
        h2load(port, args.warmup, args.connections, path=args.path, body=args.body)
        perf = attach(
            [
                "perf",
                "record",
                "-e",
                "cpu-clock",
                "-F",
                str(args.frequency),
                "--call-graph",
                args.call_graph,
                "-p",
                str(proc.pid),
                "-o",
                str(data),
            ]
        )
        text = h2load(
            port, args.requests, args.connections, outdir / "h2load-record.txt", path=args.path,
            body=args.body,
        )
        detach(perf)
    finally:
        stop_server(proc)
    reports = {
        "perf-report-flat.txt": ["--no-children", "--sort", "symbol", "-g", "none"],
        "perf-report-dso.txt": ["--no-children", "--sort", "dso", "-g", "none"],
        "perf-report-callers.txt": ["--children", "--percent-limit", "2"],
    }
    for name, extra in reports.items():
        res = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
        (outdir / name).write_text(res.stdout + res.stderr)
    done = h2load_done(text) or args.requests
    summary.append(f"[record] {done} requests; perf.data + perf-report-{{flat,dso,callers}}.txt")
    flat = (outdir / "perf-report-flat.txt").read_text().splitlines()
    top = [ln for ln in flat if re.match(r"\s+\d+\.\d+%", ln)][:15]
    summary += ["  top symbols (self):"] + [f"  {ln.strip()}" for ln in top]


def mode_callgrind(args: argparse.Namespace, outdir: Path, summary: list[str]) -> None:
    out = outdir / "callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc, port = ready_server(args.server, args, outdir, "callgrind", wrapper=wrapper, timeout=300)
    try:
        warmup = min(args.warmup, 500)
        h2load(port, warmup, min(args.connections, 10), path=args.path, body=args.body)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(proc.pid)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        text = h2load(
            port,
            args.callgrind_requests,
            min(args.connections, 10),
            outdir / "h2load-callgrind.txt",
            path=args.path,
            body=args.body,
        )
        subprocess.run(
            ["callgrind_control", "-i", "off", str(proc.pid)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120
        )
    finally:
        stop_server(proc)
    dumps = sorted(outdir.glob("callgrind.out*"))
    done = h2load_done(text) or args.callgrind_requests
    summary.append(f"[callgrind] {done} requests; files: {', '.join(d.name for d in dumps)}")
    for dump in dumps:
        incl = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(dump)],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        (outdir / f"{dump.name}.inclusive.txt").write_text(incl.stdout + incl.stderr)
        res = subprocess.run(
            ["callgrind_annotate", "--threshold=99", str(dump)],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        (outdir / f"{dump.name}.annotate.txt").write_text(res.stdout + res.stderr)
        match = re.search(r"([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS", res.stdout)
        if match:
            total = int(match.group(1).replace(",", ""))
            summary.append(f"  {dump.name}: {total:,} Ir = {total / done:,.0f} Ir/request")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "modes",
        nargs="*",
        choices=[*MODES, "all"],
        default=[],
        help="default: stat syscalls record; 'all' adds callgrind",
    )
    parser.add_argument(
        "--server",
        default="stogie",
        choices=["stogie", "stogie-alt", "cheroot", "bjoern", "waitress"],
        help="stogie-alt: the second build made by bench/run.py --alt-build (not rebuilt here)",
    )
    parser.add_argument("--app", default="hello", help="application in bench/apps.py")
    parser.add_argument(
        "--path", default=None, help=f"request target (default /, or {STATIC_PATH} with --static)"
    )
    parser.add_argument(
        "--http2",
        action="store_true",
        help="stogie only: h2load sends HTTP/2 (h2c prior knowledge, 8 streams at a time per"
        " connection) instead of HTTP/1.1",
    )
    parser.add_argument(
        "--post-bytes",
        type=int,
        default=0,
        help="POST a body of this many bytes with each request (e.g. --app echo --post-bytes"
        " 4096, the echo_4k scenario)",
    )
    parser.add_argument(
        "--static",
        action="store_true",
        help=f"stogie only: serve bench/static at {STATIC_PREFIX} from the engine (the static_4k"
        " scenario)",
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--callgrind-requests", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=20_000, help="warm-up requests")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--frequency", type=int, default=999, help="perf record -F")
    parser.add_argument(
        "--call-graph",
        default="dwarf,16384",
        help="perf record --call-graph (dwarf works without frame pointers)",
    )
    parser.add_argument(
        "--stogie-ref",
        default=None,
        metavar="REV",
        help="build stogie from this git commit instead of the work tree",
    )
    parser.add_argument(
        "--no-setup",
        action="store_true",
        help="use bench/.venv as it is (no apt, no pip, no rebuild)",
    )
    args = parser.parse_args(argv)
    if args.static and args.server not in ("stogie", "stogie-alt"):
        parser.error("--static is stogie's engine path: use --server stogie or stogie-alt")
    if args.path is None:
        args.path = STATIC_PATH if args.static else "/"
    modes = args.modes or ["stat", "syscalls", "record"]
    if "all" in modes:
        modes = MODES

    if not args.no_setup:
        ensure_system_packages()
        ensure_tools()
        ensure_venv()
        # Cargo profile `profiling`: the release build with line tables (Cargo.toml).
        if args.server == "stogie" and not install_stogie(args.stogie_ref, "--profile profiling"):
            sys.exit("stogie does not build; nothing to profile")
    elif not VENV_PY.exists():
        sys.exit(f"{VENV_PY} missing: run bench/run.py once, or drop --no-setup")
    raise_fd_limit()
    what = "static" if args.static else args.app
    outdir = BENCH / "profiles" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.server}-{what}"
    outdir.mkdir(parents=True, exist_ok=True)
    global HTTP2
    HTTP2 = args.http2
    args.body = None
    if args.post_bytes > 0:
        args.body = outdir / "body.bin"
        args.body.write_bytes(b"x" * args.post_bytes)
    summary = [
        (
            f"{args.server} bench.apps:{args.app}"
            f"{f' --static {STATIC_PREFIX}={STATIC_DIR}' if args.static else ''} {args.path},"
            f" {args.threads} threads, "
            f"h2load --h1 -t1 -c{args.connections}; modes {' '.join(modes)}"
        ),
        "",
    ]
    runners = {
        "stat": mode_stat,
        "syscalls": mode_syscalls,
        "record": mode_record,
        "callgrind": mode_callgrind,
    }
    for mode in modes:
        log(f"profile mode {mode} -> {outdir}")
        runners[mode](args, outdir, summary)
        summary.append("")
    (outdir / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    log(f"wrote {outdir}")


if __name__ == "__main__":
    main()
