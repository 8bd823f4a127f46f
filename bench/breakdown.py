#!/usr/bin/env python3
"""Where two servers spend their time on the same load: system calls and perf per request.

    bench/.venv/bin/python bench/breakdown.py close_c50 stogie bjoern
    bench/.venv/bin/python bench/breakdown.py stream_1m stogie fastwsgi --modes strace,stat

For each server (started as bench/run.py starts it, on the scenario's application) and each
mode, one wrk run of the scenario's load (`--seconds`, default 4) after a 1 s warm-up:

* `cpu`: server CPU µs per request from /proc (no tracer attached), as in bench/run.py;
* `strace`: `strace -c -f` attached to every thread of the server's processes; system calls
  per request by name (tracing slows the server a lot: the counts are exact, the times not);
* `stat`: `perf stat` software events (task-clock, context switches, migrations, page
  faults, `raw_syscalls:sys_enter`) per request;
* `record`: `perf record -e cpu-clock -g`, then the top symbols (self time, kernel and user)
  of `perf report --no-children`.

The servers alternate within each mode, so both see the same minutes of a shared machine.
Output: a summary on stdout and everything in bench/profiles/breakdown-<timestamp>/
(git-ignored). Needs bench/.venv (made by bench/run.py), strace and linux-perf.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    REPO,
    SCENARIO_BY_NAME,
    SERVER_BY_NAME,
    VENV,
    Options,
    Scenario,
    Server,
    free_port,
    process_tree,
    run_wrk,
    stop_server,
    tree_cpu_seconds,
    wait_ready,
    wrk_command,
)

MODES = ("cpu", "strace", "stat", "record")
PERF_EVENTS = "task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter"


def thread_ids(root: int) -> list[int]:
    """Every thread of the server's process tree (strace and perf attach per thread)."""
    tids = []
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            tids += [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    return tids


def start(server: Server, scenario: Scenario, opts: Options, log: Path) -> tuple[
    subprocess.Popen[bytes], int
]:
    port = free_port()
    cmd = server.command(f"bench.apps:{scenario.app}", port, opts)
    pythonpath = f"{server.pythonpath}:{REPO}" if server.pythonpath else str(REPO)
    env = {"PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1",
           "PATH": f"{VENV / 'bin'}:/usr/bin:/bin"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    problem = wait_ready(proc, port, scenario.path, scheme=scenario.scheme,
                         posts=scenario.posts)
    if problem:
        stop_server(proc)
        sys.exit(f"{server.name}: {problem}")
    return proc, port


def tracer(mode: str, tids: list[int], out: Path) -> list[str]:
    ids = ",".join(map(str, tids))
    if mode == "strace":
        return ["strace", "-c", "-f", "-qq", "-o", str(out / "strace.txt"), "-p", ids]
    if mode == "stat":
        return ["perf", "stat", "-e", PERF_EVENTS, "-o", str(out / "perf-stat.txt"), "-t", ids]
    return ["perf", "record", "-q", "-e", "cpu-clock", "-g", "-o", str(out / "perf.data"),
            "-t", ids]


def parse_strace(text: str) -> dict[str, int]:
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]) and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls


def parse_perf_stat(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        match = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?([\w:-]+)", line)
        if match and match.group(2) != "seconds":  # not the "seconds time elapsed" lines
            values[match.group(2)] = float(match.group(1).replace(",", ""))
    return values


def perf_top(out: Path) -> str:
    report = subprocess.run(
        ["perf", "report", "-i", str(out / "perf.data"), "--stdio", "--no-children",
         "--sort", "dso,sym", "--percent-limit", "1.5", "-g", "none"],
        check=False, capture_output=True, text=True,
    ).stdout
    (out / "perf-report.txt").write_text(report)
    return "\n".join(line for line in report.splitlines() if line.strip()
                     and not line.startswith("#"))


def measure(server: Server, scenario: Scenario, mode: str, opts: Options, seconds: float,
            out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    proc, port = start(server, scenario, opts, out / "server.log")
    try:
        raw = opts.results_dir / "raw"
        run_wrk(wrk_command(scenario, port, 1.0, raw, opts), 1.0)
        attached = None
        if mode != "cpu":
            attached = subprocess.Popen(tracer(mode, thread_ids(proc.pid), out),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # let the tracer attach to every thread
        cpu0 = tree_cpu_seconds(proc.pid)
        text, summary = run_wrk(wrk_command(scenario, port, seconds, raw, opts), seconds)
        cpu1 = tree_cpu_seconds(proc.pid)
        if attached is not None:
            attached.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                attached.wait(timeout=60)
        (out / "wrk.txt").write_text(text)
        if summary is None or not summary["requests"]:
            return f"{server.name}: no wrk summary"
        requests = summary["requests"]
        errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
        head = (f"{server.name:10s} {mode:6s} {requests:8d} requests, {errors} socket errors,"
                f" {(cpu1.total - cpu0.total) / requests * 1e6:7.1f} CPU-us/req"
                f" (kernel {(cpu1.system - cpu0.system) / requests * 1e6:.1f})")
        if mode == "strace":
            calls = parse_strace((out / "strace.txt").read_text())
            per = sorted(((n / requests, name) for name, n in calls.items()), reverse=True)
            total = sum(calls.values()) / requests
            head += f"\n    syscalls/req {total:.2f}: " + ", ".join(
                f"{name} {value:.2f}" for value, name in per if value >= 0.01)
        elif mode == "stat":
            values = parse_perf_stat((out / "perf-stat.txt").read_text())
            head += "\n    per request: " + ", ".join(
                f"{name} {value / requests * (1000 if name == 'task-clock' else 1):.2f}"
                + (" us" if name == "task-clock" else "")
                for name, value in values.items())
        elif mode == "record":
            head += "\n" + "\n".join("    " + line for line in perf_top(out).splitlines()[:25])
        return head
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=list(SCENARIO_BY_NAME))
    parser.add_argument("servers", nargs="+", choices=list(SERVER_BY_NAME))
    parser.add_argument("--modes", default="cpu,strace,stat,record",
                        help=f"comma list from {', '.join(MODES)}")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=1, help="alternations per mode")
    parser.add_argument("--threads", type=int, default=10)
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(__file__).resolve().parent / "profiles" / f"breakdown-{stamp}"
    opts = Options(servers=args.servers, scenarios=[args.scenario], duration=args.seconds,
                   rounds=1, warmup=1.0, threads=args.threads, backlog=1024,
                   wrk_timeout="2s", results_dir=base)
    (base / "raw").mkdir(parents=True, exist_ok=True)
    scenario = SCENARIO_BY_NAME[args.scenario]
    lines = [f"# {args.scenario}: {scenario.title}; wrk {args.seconds:g} s per run"]
    print(lines[0], flush=True)
    for mode in args.modes.split(","):
        for rep in range(args.repeat):
            for name in args.servers:
                line = measure(SERVER_BY_NAME[name], scenario, mode, opts, args.seconds,
                               base / f"{mode}-{rep}-{name}")
                print(line, flush=True)
                lines.append(line)
    (base / "summary.txt").write_text("\n".join(lines) + "\n")
    print(f"details: {base}")


if __name__ == "__main__":
    main()
