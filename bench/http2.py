"""HTTP/2 benchmark: stogie over h2c (prior knowledge) against granian's HTTP/2 and stogie's own
HTTP/1.1, all driven by h2load (Debian's nghttp2-client) at the same number of requests in
flight, reported as server CPU-µs per request (bench/README.md, "HTTP/2").

    python3 -m bench.http2 [--seconds 6] [--rounds 3] [--clients 16] [--streams 8]

h2load opens `--clients` connections; over HTTP/2 each carries `--streams` concurrent streams,
over HTTP/1.1 (`h2load --h1`, no pipelining) `--clients × --streams` connections carry one
request each, so both protocols have the same requests in flight."""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import run

APP = "bench.apps:hello"
RESULTS = run.REPO / "bench" / "results"


@dataclass
class Target:
    name: str
    protocol: str  # "h2" or "h1"
    tls: bool = False

    def command(self, port: int, opts: run.Options) -> list[str]:
        if self.name.startswith("granian"):
            cmd = run._granian(None, tls=self.tls)(APP, port, opts)
            cmd[cmd.index("--http") + 1] = "2"
            return cmd
        if self.tls:
            return run._stogie_tls(APP, port, opts)
        return run._stogie_cli(APP, port, opts)


TARGETS = [
    Target("stogie-h2c", "h2"),
    Target("granian-h2c", "h2"),
    Target("stogie-h1", "h1"),
]
#: With --tls: HTTP/2 negotiated by ALPN, HTTP/1.1 over TLS.
TLS_TARGETS = [
    Target("stogie-h2-tls", "h2", tls=True),
    Target("granian-h2-tls", "h2", tls=True),
    Target("stogie-h1-tls", "h1", tls=True),
]


def h2load(port: int, protocol: str, seconds: float, clients: int, streams: int,
           tls: bool = False) -> int:
    """Runs h2load for `seconds`; returns the requests that succeeded."""
    url = f"{'https' if tls else 'http'}://{run.HOST}:{port}/"
    if protocol == "h2":
        cmd = ["h2load", "-c", str(clients), "-m", str(streams)]
    else:
        cmd = ["h2load", "--h1", "-c", str(clients * streams), "-m", "1"]
    # No warm-up period: the server's CPU is counted over the whole run, so every request
    # h2load made counts too.
    cmd += ["-t", "1", "-D", f"{seconds:g}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    found = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not found:
        raise RuntimeError(f"h2load output not understood:\n{out[-2000:]}")
    return int(found.group(1))


def wait_listening(proc: subprocess.Popen[bytes], port: int, name: str) -> None:
    """Until the server accepts connections (granian with `--http 2` answers no HTTP/1 probe,
    so h2load itself checks the answers)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")
        try:
            socket.create_connection((run.HOST, port), timeout=1).close()
            time.sleep(0.3)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen within 60 s")


def measure(target: Target, args: argparse.Namespace, opts: run.Options) -> dict[str, float]:
    port = run.free_port()
    proc = subprocess.Popen(target.command(port, opts), cwd=run.REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(proc, port, target.name)
        busy = run.wait_for_quiet(opts)
        before = run.tree_cpu_seconds(proc.pid)
        started = time.monotonic()
        done = h2load(port, target.protocol, args.seconds, args.clients, args.streams,
                      target.tls)
        elapsed = time.monotonic() - started
        cpu = run.tree_cpu_seconds(proc.pid).total - before.total
    finally:
        run.stop_server(proc)
    return {"requests": done, "rps": done / args.seconds, "cpu_us": 1e6 * cpu / max(done, 1),
            "elapsed": elapsed, "other_load": busy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--tls", action="store_true",
                        help="over TLS (ALPN h2; HTTP/1.1 over TLS for stogie-h1-tls)")
    parser.add_argument("--no-build", action="store_true",
                        help="use the stogie already installed in bench/.venv")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        run.run_checked(["apt-get", "install", "-y", "-qq", "nghttp2-client"])
    run.ensure_venv()
    note = "the stogie already in bench/.venv" if args.no_build else run.install_stogie()
    targets = TLS_TARGETS if args.tls else TARGETS
    out_dir = RESULTS / f"http2-{'tls-' if args.tls else ''}{time.strftime('%Y%m%d-%H%M%S')}"
    opts = run.Options(servers=[t.name for t in targets], scenarios=["hello"],
                       duration=args.seconds, rounds=args.rounds, warmup=1,
                       threads=args.threads, backlog=0, wrk_timeout="5s", results_dir=out_dir)
    rows: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    for rnd in range(args.rounds):
        for target in targets:
            result = measure(target, args, opts)
            rows[target.name].append(result)
            run.log(f"round {rnd + 1} {target.name}: {result['cpu_us']:.1f} CPU-µs/req, "
                    f"{result['rps']:.0f} req/s, other load {result['other_load']:.0f} %")
    lines = [
        f"# HTTP/2: h2load, {args.clients} connections × {args.streams} streams "
        f"(HTTP/1.1: {args.clients * args.streams} connections), hello world, "
        f"{args.seconds:g} s × {args.rounds} rounds{', TLS' if args.tls else ''}",
        "",
        f"Build: {note}.",
        "",
        f"| server | CPU-µs/req per round | median | req/s (median) | ÷ {targets[0].name} |",
        "|---|---|---:|---:|---:|",
    ]
    median = {name: sorted(r["cpu_us"] for r in results)[len(results) // 2]
              for name, results in rows.items()}
    for name, results in rows.items():
        rps = sorted(r["rps"] for r in results)[len(results) // 2]
        per_round = ", ".join(f"{r['cpu_us']:.1f}" for r in results)
        lines.append(f"| {name} | {per_round} | {median[name]:.1f} | {rps:.0f} | "
                     f"{median[name] / median[targets[0].name]:.2f} |")
    loads = [r["other_load"] for results in rows.values() for r in results]
    lines += ["", f"Other load on the machine before each measurement: "
              f"{min(loads):.0f}-{max(loads):.0f} %."]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\n(written to {Path(out_dir).relative_to(run.REPO)}/results.md)")


if __name__ == "__main__":
    main()
