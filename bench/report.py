"""Turn bench/results/<timestamp>/results.json into results.md and chart.png.

    python -m bench.report bench/results/<timestamp>/results.json   # regenerate a report

Per server and scenario the figures are the median over rounds (requests/s, server CPU
microseconds per request, p50, p99); socket errors and non-2xx responses are summed over the
rounds; peak RSS is the largest VmHWM sum seen.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REFERENCE = "stogie"
GRANIAN_DEFAULT = "granian"  # the --blocking-threads 10 configuration the target names


@dataclass
class Agg:
    server: str
    scenario: str
    rounds: int = 0
    requests: int = 0
    unsupported: str = ""  # the server cannot run this scenario (why)
    failed: list[str] = field(default_factory=list)
    rps: float | None = None
    cpu: float | None = None
    cpu_rounds: list[float] = field(default_factory=list)
    rps_rounds: list[float] = field(default_factory=list)
    p50: float | None = None
    p99: float | None = None
    socket_errors: int = 0
    non_2xx: int = 0
    rss: float | None = None
    wrk_cpu: float | None = None
    other_busy: float | None = None
    sys_pct: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_spread_pct(self) -> float | None:
        if len(self.cpu_rounds) < 2 or not self.cpu:
            return None
        return 100 * (max(self.cpu_rounds) - min(self.cpu_rounds)) / self.cpu


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str], Agg]:
    out: dict[tuple[str, str], Agg] = {}
    for rec in records:
        key = (rec["server"], rec["scenario"])
        agg = out.setdefault(key, Agg(*key))
        agg.rounds += 1
        if rec.get("unsupported"):
            agg.unsupported = rec["unsupported"]
            continue
        if not rec["ok"]:
            agg.failed.append(f"r{rec['round']}: {rec['error']}")
            continue
        if rec.get("note"):
            agg.notes.append(f"r{rec['round']}: {rec['note']}")
        agg.rps_rounds.append(rec["rps"])
        agg.requests += rec["requests"]
        if rec["cpu_us_per_req"] is not None:
            agg.cpu_rounds.append(rec["cpu_us_per_req"])
        agg.socket_errors += rec["socket_errors"]
        agg.non_2xx += rec["non_2xx"]
        agg.rss = max(agg.rss or 0.0, rec["peak_rss_mib"])
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec["ok"]:
            by_key.setdefault((rec["server"], rec["scenario"]), []).append(rec)
    for key, agg in out.items():
        recs = by_key.get(key, [])
        agg.rps = _median(agg.rps_rounds)
        agg.cpu = _median(agg.cpu_rounds)
        agg.p50 = _median([r["p50_ms"] for r in recs if r["p50_ms"] is not None])
        agg.p99 = _median([r["p99_ms"] for r in recs if r["p99_ms"] is not None])
        agg.wrk_cpu = _median([r["wrk_cpu_us_per_req"] for r in recs
                               if r["wrk_cpu_us_per_req"] is not None])
        agg.other_busy = _median([r["other_busy_pct"] for r in recs])
        agg.sys_pct = _median([100 * (1 - r["cpu_user_us_per_req"] / r["cpu_us_per_req"])
                               for r in recs
                               if r.get("cpu_user_us_per_req") is not None
                               and r["cpu_us_per_req"]])
    return out


# --------------------------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------------------------


def fnum(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.{digits}f}"


def fratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


CONTENDED_PCT = 10.0


def _other(value: float | None) -> str:
    """Other load on the machine during the run; flagged when it may have skewed the run."""
    if value is None:
        return "–"
    text = f"{max(0.0, value):.0f}"
    return f"{text} ⚠" if value > CONTENDED_PCT else text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def cell_status(agg: Agg | None) -> str | None:
    """What a table shows instead of a figure (None: the figures are meaningful)."""
    if agg is None:
        return "–"
    if agg.unsupported:
        return agg.unsupported
    if agg.notes:  # "stalled: ...", "ignores close: ..."
        return agg.notes[0].split(": ", 1)[-1].split(":", 1)[0]
    if agg.rps is None:
        return "failed" if agg.failed else "–"
    return None


# --------------------------------------------------------------------------------------------
# stogie against the best peer in each scenario
# --------------------------------------------------------------------------------------------

ERROR_SHARE_LIMIT = 0.01  # a peer with more socket errors than this share of its requests


@dataclass
class Standing:
    scenario: str
    stogie: str  # the stogie configuration compared (stogie, stogie-tls, stogie-w1/-w2)
    stogie_agg: Agg
    peer: str | None = None
    peer_agg: Agg | None = None
    excluded: list[str] = field(default_factory=list)  # peers left out, with the reason

    @property
    def ratio(self) -> float | None:
        return ratio(self.stogie_agg.cpu, self.peer_agg.cpu if self.peer_agg else None)

    @property
    def verdict(self) -> str:
        """"first" (≤ 1.0), "tie" (above 1.0 but the rounds overlap) or "behind"."""
        value = self.ratio
        if value is None or self.peer_agg is None:
            return "n/a"
        if value <= 1.0:
            return "first"
        if min(self.stogie_agg.cpu_rounds) <= max(self.peer_agg.cpu_rounds):
            return "tie"
        return "behind"


def peer_problem(agg: Agg) -> str | None:
    """Why a peer's CPU per request cannot count as the best (None: it can)."""
    status = cell_status(agg)
    if status is not None:
        return status
    if agg.cpu is None:
        return "no CPU figure"
    if agg.non_2xx:
        return f"{agg.non_2xx} non-2xx responses"
    if agg.socket_errors > ERROR_SHARE_LIMIT * max(1, agg.requests):
        return f"{agg.socket_errors} socket errors"
    return None


def standings(aggs: dict[tuple[str, str], Agg], servers: list[str],
              scenarios: list[str]) -> list[Standing]:
    out = []
    for sc in scenarios:
        mine = [(a.cpu, s) for s in servers
                if s.startswith(REFERENCE) and s != f"{REFERENCE}-alt"
                and (a := aggs.get((s, sc))) and cell_status(a) is None and a.cpu is not None]
        if not mine:
            continue
        main = [m for m in mine if m[1] == REFERENCE]
        _, name = min(main or mine)
        standing = Standing(sc, name, aggs[(name, sc)])
        found = []
        for srv in servers:
            agg = aggs.get((srv, sc))
            if srv.startswith(REFERENCE) or agg is None:
                continue
            problem = peer_problem(agg)
            if problem:
                standing.excluded.append(f"{srv} ({problem})")
            else:
                found.append((agg.cpu, srv))
        if found:
            _, standing.peer = min(found)
            standing.peer_agg = aggs[(standing.peer, sc)]
        out.append(standing)
    return out


def _rounds(agg: Agg) -> str:
    return ", ".join(fnum(v, 1) for v in agg.cpu_rounds)


def render_standings(rows: list[Standing]) -> list[str]:
    lines = ["## stogie against the best peer in each scenario (CPU µs per request)", ""]
    lines.append("The best peer is the non-stogie server with the lowest median CPU µs/req in "
                 "the scenario, leaving out runs that stalled, failed, could not run, answered "
                 f"non-2xx or had socket errors on more than {ERROR_SHARE_LIMIT:.0%} of its "
                 "requests. Verdict: **first** = stogie ÷ best peer ≤ 1.00; **tie** = above 1.00"
                 " but stogie's best round is at or below the peer's worst round (the gap is "
                 "inside the round-to-round spread); **behind** otherwise.")
    lines.append("")
    table_rows = []
    for st in rows:
        peer = st.peer_agg
        table_rows.append([
            st.scenario, st.stogie, fnum(st.stogie_agg.cpu, 1), _rounds(st.stogie_agg),
            st.peer or "–", fnum(peer.cpu if peer else None, 1),
            _rounds(peer) if peer else "–", fratio(st.ratio), f"**{st.verdict}**",
        ])
    lines += table(["scenario", "stogie as", "CPU µs/req", "rounds", "best peer", "CPU µs/req",
                    "rounds", "stogie ÷ best peer", "verdict"], table_rows)
    lines.append("")
    for verdict, text in (("tie", "Ties (within the round spread)"),
                          ("behind", "Behind the best peer")):
        names = [f"{st.scenario} ({fratio(st.ratio)} {st.peer})" for st in rows
                 if st.verdict == verdict]
        lines.append(f"* {text}: {', '.join(names) if names else 'none'}.")
    excluded = [f"{st.scenario}: {', '.join(st.excluded)}" for st in rows if st.excluded]
    if excluded:
        lines.append("* Peers not eligible as best peer: " + "; ".join(excluded) + ".")
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------------
# targets from the issue
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    stogie: str
    reference: str
    verdict: str  # "met", "missed" or "n/a"
    margin: float | None = None  # stogie's figure ÷ the bound it is held to
    better: str = "≤"  # "≤": the margin must be ≤ 1 ; "≥": it must be ≥ 1


def evaluate_targets(aggs: dict[tuple[str, str], Agg], servers: list[str]) -> list[Target]:
    peers = [s for s in servers if not s.startswith(REFERENCE)]

    def get(server: str, scenario: str) -> Agg | None:
        agg = aggs.get((server, scenario))
        return agg if agg and agg.rps is not None else None

    def best_peer(scenario: str, metric: Callable[[Agg], float | None],
                  lowest: bool) -> tuple[str | None, float | None]:
        found = [(metric(a), s) for s in peers
                 if (a := get(s, scenario)) and metric(a) and not a.notes]  # skip stalled
        if not found:
            return None, None
        value, name = (min if lowest else max)(found)
        return name, value

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "missed")

    targets: list[Target] = []
    me = get(REFERENCE, "hello_c50")
    bj = get("bjoern", "hello_c50")
    gr = get(GRANIAN_DEFAULT, "hello_c50")
    ok = None
    if me and me.cpu is not None and bj and bj.cpu and gr and gr.cpu:
        ok = me.cpu <= bj.cpu and me.cpu <= 0.5 * gr.cpu
    targets.append(Target(
        "hello c50: CPU/req ≤ bjoern's and ≤ 0.5× granian's (--blocking-threads 10)",
        f"{fnum(me.cpu if me else None)} µs",
        f"bjoern {fnum(bj.cpu if bj else None)} µs; 0.5× granian "
        f"{fnum(0.5 * gr.cpu if gr and gr.cpu else None)} µs", verdict(ok),
        max(me.cpu / bj.cpu, me.cpu / (0.5 * gr.cpu))
        if me and me.cpu is not None and bj and bj.cpu and gr and gr.cpu else None))

    me = get(REFERENCE, "hello_c1000")
    bj = get("bjoern", "hello_c1000")
    ok = None
    if me and me.rps is not None and bj and bj.rps:
        ok = me.rps >= bj.rps and me.socket_errors == 0
    targets.append(Target(
        "hello c1000: req/s ≥ bjoern's, no socket errors",
        f"{fnum(me.rps if me else None)} req/s, {me.socket_errors if me else '–'} errors",
        f"bjoern {fnum(bj.rps if bj else None)} req/s", verdict(ok),
        ratio(me.rps if me else None, bj.rps if bj else None), "≥"))

    me = get(REFERENCE, "close_c50")
    bj = get("bjoern", "close_c50")
    ok = None if not (me and me.cpu and bj and bj.cpu) else me.cpu <= bj.cpu
    targets.append(Target("Connection: close: CPU/req ≤ bjoern's",
                          f"{fnum(me.cpu if me else None)} µs",
                          f"bjoern {fnum(bj.cpu if bj else None)} µs", verdict(ok),
                          ratio(me.cpu if me else None, bj.cpu if bj else None)))

    for scenario, factor, label in (("resp_64k", 0.8, "64 KiB response"),
                                    ("stream_1m", 0.8, "1 MiB streamed response"),
                                    ("echo_4k", 1.0, "4 KiB echo"),
                                    ("upload_1m", 1.0, "1 MiB upload")):
        me = get(REFERENCE, scenario)
        name, best = best_peer(scenario, lambda a: a.cpu, lowest=True)
        ok = None if not (me and me.cpu and best) else me.cpu <= factor * best
        bound = f"{factor}× " if factor != 1.0 else ""
        targets.append(Target(
            f"{label}: CPU/req ≤ {bound}best peer's",
            f"{fnum(me.cpu if me else None)} µs",
            f"{bound}{name} {fnum(best * factor if best else None)} µs" if name else "–",
            verdict(ok), ratio(me.cpu if me else None, best * factor if best else None)))

    me = get(REFERENCE, "sleep_10ms")
    ok = None if not (me and me.rps is not None) else me.rps >= 900
    targets.append(Target("sleep 10 ms (10 threads, c50): ≥ 900 req/s",
                          f"{fnum(me.rps if me else None)} req/s", "900 req/s", verdict(ok),
                          ratio(me.rps if me else None, 900.0), "≥"))

    me = get(REFERENCE, "flask")
    name, best = best_peer("flask", lambda a: a.rps, lowest=False)
    ok = None if not (me and me.rps is not None and best) else me.rps >= best
    targets.append(Target("Flask: req/s ≥ best peer's", f"{fnum(me.rps if me else None)} req/s",
                          f"{name} {fnum(best)} req/s" if name else "–", verdict(ok),
                          ratio(me.rps if me else None, best), "≥"))

    me = get("stogie-static", "static_4k")
    wn = get("stogie-whitenoise", "static_4k")
    ok = None if not (me and me.cpu and wn and wn.cpu) else me.cpu <= wn.cpu / 5
    targets.append(Target("static 4 KiB file: --static CPU/req ≤ 1/5 of whitenoise under stogie",
                          f"{fnum(me.cpu if me else None)} µs",
                          f"whitenoise/5 {fnum(wn.cpu / 5 if wn and wn.cpu else None)} µs",
                          verdict(ok),
                          ratio(me.cpu if me else None, wn.cpu / 5 if wn and wn.cpu else None)))

    me = get(REFERENCE, "hello_c50")
    bj = get("bjoern", "hello_c50")
    ok = None if not (me and me.p99 is not None and bj and bj.p99) else me.p99 <= bj.p99
    targets.append(Target("hello c50: p99 latency ≤ bjoern's",
                          f"{fnum(me.p99 if me else None, 2)} ms",
                          f"bjoern {fnum(bj.p99 if bj else None, 2)} ms", verdict(ok),
                          ratio(me.p99 if me else None, bj.p99 if bj else None)))
    return targets


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------


def render_markdown(data: dict[str, Any], aggs: dict[tuple[str, str], Agg],
                    servers: list[str], scenarios: list[str]) -> str:
    meta = data["meta"]
    opts = meta["options"]
    mach = meta["machine"]
    versions = meta.get("versions", {})
    wrk = mach["wrk"] if isinstance(mach["wrk"], str) else " ".join(mach["wrk"][0].split()[:2])
    lines = [f"# stogie benchmark run {meta['timestamp']}", ""]
    lines.append(
        f"Machine: {mach['cores']} × {mach['cpu']}, Linux {mach['kernel']}, Python "
        f"{mach['python']}, {wrk}; repo commit {mach['repo_commit']}; "
        f"stogie build: {meta.get('stogie_build', '?')}.")
    lines.append(
        f"Load: {opts['load_generator']}, {opts['duration_s']:g} s per run after "
        f"{opts['warmup_s']:g} s warm-up, {opts['rounds']} round(s) with the server order "
        f"reversed every other round, wrk --timeout {opts['wrk_timeout']}. Figures are medians "
        "over rounds; errors are summed over rounds.")
    lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append("")
    lines.append("**CPU µs/req** = utime+stime of the server process, all its threads and "
                 "children (from /proc/PID/stat) during the load run ÷ completed requests. The "
                 "2 cores are shared by server and wrk, so req/s is capped by the load generator"
                 " for the fast servers; CPU µs/req is the figure to compare.")
    lines.append("")

    has_ref = any(k[0] == REFERENCE and a.rps is not None for k, a in aggs.items())
    lines += ["## Targets (from the issue)", ""]
    if not has_ref:
        lines += ["stogie was not measured in this run, so every target is n/a.", ""]
    rows = [[t.text, t.stogie, t.reference,
             "–" if t.margin is None else f"{t.margin:.2f} ({t.better} 1 needed)",
             f"**{t.verdict}**"]
            for t in evaluate_targets(aggs, servers)]
    lines += table(["target", "stogie", "reference", "stogie ÷ bound", "verdict"], rows)
    lines.append("")
    lines.append("A margin within a few percent of 1 is inside the run-to-run noise: compare it "
                 "with the *spread* column of the scenario tables below.")
    lines.append("")
    lines += render_standings(standings(aggs, servers, scenarios))

    def matrix(title: str, metric: Callable[[Agg], float | None], digits: int) -> None:
        lines.extend([f"## {title}", ""])
        rows = []
        for srv in servers:
            row = [srv]
            for sc in scenarios:
                agg = aggs.get((srv, sc))
                status = cell_status(agg)
                row.append(status if status is not None or agg is None
                           else fnum(metric(agg), digits))
            rows.append(row)
        lines.extend(table(["server", *scenarios], rows))
        lines.append("")

    matrix("Server CPU µs per request (lower is better)", lambda a: a.cpu, 1)
    matrix("Requests per second", lambda a: a.rps, 0)

    lines += ["## Per scenario", ""]
    lines.append("Ratio columns: **stogie CPU ÷ this** below 1 means stogie spends less CPU per "
                 "request than that server; **stogie req/s ÷ this** above 1 means stogie served "
                 "more. *spread* = (max−min)/median of CPU µs/req across rounds (drift). "
                 "*kernel %* = share of the server's CPU spent in the kernel (stime). "
                 "*wrk µs/req* = the load generator's own CPU per request. *other %* = CPU busy "
                 "on the machine outside server and wrk, as % of both cores (interference from "
                 f"other work; runs above {CONTENDED_PCT:g} % are flagged ⚠ and suspect).")
    lines.append("")
    titles = {name: sc["title"] for name, sc in meta["scenarios"].items()}
    notes_by_sc = {name: sc.get("note", "") for name, sc in meta["scenarios"].items()}
    for sc in scenarios:
        lines += [f"### {sc} — {titles.get(sc, '')}", ""]
        if notes_by_sc.get(sc):
            lines += [f"*{notes_by_sc[sc]}*", ""]
        ref = aggs.get((REFERENCE, sc))
        rows = []
        notes = []
        for srv in servers:
            agg = aggs.get((srv, sc))
            if agg is None:
                continue
            if agg.unsupported:
                rows.append([srv, f"not run: {agg.unsupported}"] + ["–"] * 12)
                continue
            if agg.rps is None:
                rows.append([srv, "failed"] + ["–"] * 12)
                notes += [f"{srv}: failed round — {f}" for f in agg.failed]
                continue
            spread = agg.cpu_spread_pct
            if agg.notes:  # stalled etc.: the per-request figures mean nothing
                rows.append([srv, fnum(agg.rps, 0), cell_status(agg) or ""] + ["–"] * 6
                            + [str(agg.socket_errors), str(agg.non_2xx), fnum(agg.rss, 1)]
                            + ["–"] * 3)
                notes += [f"{srv}: failed round — {f}" for f in agg.failed]
                notes += [f"{srv}: {n}" for n in agg.notes]
                continue
            rows.append([
                srv, fnum(agg.rps, 0), fnum(agg.cpu, 1), fnum(agg.sys_pct, 0),
                fratio(ratio(ref.cpu, agg.cpu) if ref else None),
                fratio(ratio(ref.rps, agg.rps) if ref else None),
                fnum(agg.p50, 2), fnum(agg.p99, 2), str(agg.socket_errors), str(agg.non_2xx),
                fnum(agg.rss, 1), "–" if spread is None else f"{spread:.0f}%",
                fnum(agg.wrk_cpu, 1),
                _other(agg.other_busy),
            ])
            notes += [f"{srv}: failed round — {f}" for f in agg.failed]
            notes += [f"{srv}: {n}" for n in agg.notes]
        lines += table(["server", "req/s", "CPU µs/req", "kernel %", "stogie CPU ÷ this",
                        "stogie req/s ÷ this", "p50 ms", "p99 ms", "socket errors", "non-2xx",
                        "peak RSS MiB", "spread", "wrk µs/req", "other %"], rows)
        if notes:
            lines.append("")
            lines += [f"* {n}" for n in notes]
        lines.append("")

    lines += ["## Server configurations", ""]
    lines += [f"* **{name}**: {desc}" for name, desc in meta["servers"].items()]
    lines.append("")
    lines += [("Chart: `chart.png` (per scenario: CPU µs/req bars, req/s bars on the right axis)."
              " Raw data: `results.json`; wrk output and server logs in `raw/` (not committed).")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# chart
# --------------------------------------------------------------------------------------------


def _kilo(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def render_chart(path: Path, aggs: dict[tuple[str, str], Agg], servers: list[str],
                 scenarios: list[str], titles: dict[str, str], stamp: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ncols = 2
    nrows = (len(scenarios) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(15, 3.4 * nrows), squeeze=False)
    width = 0.4
    for idx, sc in enumerate(scenarios):
        ax = axes[idx // ncols][idx % ncols]
        present = [s for s in servers if (s, sc) in aggs]  # the servers this scenario ran
        xs = list(range(len(present)))
        found = [aggs[(s, sc)] for s in present]
        labels = [cell_status(a) for a in found]
        stalled = [label not in (None, "–") for label in labels]
        cpu = [0.0 if st else (a.cpu or 0.0) for a, st in zip(found, stalled)]
        rps = [0.0 if st else (a.rps or 0.0) for a, st in zip(found, stalled)]
        colors = ["#d62728" if s.startswith(REFERENCE) else "#1f77b4" for s in present]
        bars = ax.bar([x - width / 2 for x in xs], cpu, width, color=colors,
                      label="CPU µs/req (left)")
        for bar, value in zip(bars, cpu):
            if value:
                ax.annotate(f"{value:.1f}" if value < 100 else f"{value:.0f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        positive = [v for v in cpu if v > 0]
        if positive:  # headroom for the labels; bottom low enough that small bars still show
            ax.set_ylim(min(positive) / 4, max(positive) * 2.5)
        ax.set_ylabel("server CPU µs/req (log)")
        for x, label in zip(xs, labels):
            if label not in (None, "–"):
                ax.annotate(label, (x, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", fontsize=7, color="#d62728", rotation=90,
                            va="bottom")
        ax.set_xticks(xs)
        ax.set_xticklabels(present, fontsize=8, rotation=25)
        ax.set_title(f"{sc}: {titles.get(sc, '')}", fontsize=9)
        ax2 = ax.twinx()
        bars2 = ax2.bar([x + width / 2 for x in xs], rps, width, color="#7f7f7f", alpha=0.55,
                        label="req/s (right)")
        for bar, value in zip(bars2, rps):
            if value:
                ax2.annotate(_kilo(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                             ha="center", va="bottom", fontsize=7, color="#404040")
        ax2.set_ylabel("req/s")
        if max(rps) > 0:
            ax2.set_ylim(0, max(rps) * 1.15)
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _kilo(v)))
        if idx == 0:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=2)
    for idx in range(len(scenarios), nrows * ncols):
        axes[idx // ncols][idx % ncols].axis("off")
    fig.suptitle(f"stogie benchmark {stamp} — server CPU µs per request (colour) and req/s "
                 "(grey); stogie in red", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results_json: Path) -> None:
    data = json.loads(results_json.read_text())
    records = data["records"]
    measured = {r["server"] for r in records}
    servers = [s for s in data["meta"]["servers"] if s in measured]  # order of --servers
    servers.sort(key=lambda s: not s.startswith(REFERENCE))  # stable: stogie rows first
    scenarios = [s for s in data["meta"]["scenarios"] if any(r["scenario"] == s for r in records)]
    aggs = aggregate(records)
    outdir = results_json.parent
    (outdir / "results.md").write_text(render_markdown(data, aggs, servers, scenarios))
    titles = {name: sc["title"] for name, sc in data["meta"]["scenarios"].items()}
    try:
        render_chart(outdir / "chart.png", aggs, servers, scenarios, titles,
                     data["meta"]["timestamp"])
    except ImportError as exc:
        print(f"no chart: {exc}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.report bench/results/<timestamp>/results.json")
    write_report(Path(sys.argv[1]))
