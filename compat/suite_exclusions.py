"""Exclusion lists for the upstream suites run against stogie (compat/README.md).

An exclusion file has one `PATTERN | CATEGORY | REASON` line per excluded test (`#` comments and
blank lines are skipped): PATTERN is the test file name and node id, where `*` matches anything;
CATEGORY is one of the categories the suite's plugin defines; REASON says why the test does not
apply to stogie. The suites' pytest plugins (`stogie_plugin`, `stogie_cherrypy_plugin`) call
`deselect()` from `pytest_collection_modifyitems` and `report()` from `pytest_terminal_summary`.
A line that matches no collected test of a collected module is an error, which keeps a list
honest when the upstream suite changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Exclusion:
    pattern: str
    category: str
    reason: str
    line: int
    regex: re.Pattern[str] = field(init=False)
    matched: int = 0

    def __post_init__(self) -> None:
        self.regex = re.compile(".*".join(re.escape(part) for part in self.pattern.split("*")))

    @property
    def module(self) -> str:
        return self.pattern.split("::", 1)[0]


def load_exclusions(path: Path, categories: Mapping[str, str]) -> list[Exclusion]:
    """Parses `PATTERN | CATEGORY | REASON` lines; `*` in PATTERN matches anything."""
    found = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        if len(parts) != 3 or not all(parts) or parts[1] not in categories:
            raise pytest.UsageError(
                f"{path}:{number}: expected 'PATTERN | {'|'.join(categories)} | REASON': {raw!r}"
            )
        found.append(Exclusion(parts[0], parts[1], parts[2], number))
    return found


def short_id(item: pytest.Item) -> str:
    """`test_conn.py::test_x[param]`, whatever the rootdir."""
    return f"{Path(str(item.path)).name}::{item.nodeid.split('::', 1)[1]}"


def deselect(config: pytest.Config, items: list[pytest.Item], exclusions: list[Exclusion]) -> None:
    """Deselects the excluded tests (only those with `--run-excluded`); counts the matches."""
    kept, dropped = [], []
    for item in items:
        name = short_id(item)
        hit = next((ex for ex in exclusions if ex.regex.fullmatch(name)), None)
        if hit is None:
            kept.append(item)
        else:
            hit.matched += 1
            dropped.append(item)
    collected_modules = {Path(str(item.path)).name for item in items}
    stale = [ex for ex in exclusions if ex.matched == 0 and ex.module in collected_modules]
    if stale and not config.getoption("keyword") and not config.getoption("markexpr"):
        listing = "\n".join(f"  line {ex.line}: {ex.pattern}" for ex in stale)
        raise pytest.UsageError(f"exclusions that match no collected test:\n{listing}")
    if config.getoption("run_excluded"):
        kept, dropped = dropped, kept
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def report(
    terminalreporter: Any,
    exclusions: list[Exclusion],
    categories: Mapping[str, str],
    list_name: str,
    suite: str,
    server: str = "stogie",
) -> None:
    """Lists the excluded tests with their reasons, then one line of counts for `suite`."""
    used = [ex for ex in exclusions if ex.matched]
    if used:
        terminalreporter.section(f"excluded ({list_name})")
        for category, meaning in categories.items():
            group = [ex for ex in used if ex.category == category]
            if not group:
                continue
            count = sum(ex.matched for ex in group)
            terminalreporter.write_line(f"{category} ({meaning}): {count} tests")
            for ex in group:
                terminalreporter.write_line(f"  {ex.pattern} [{ex.matched}] - {ex.reason}")
    stats = terminalreporter.stats
    # One count per test: a test whose call and teardown both report (an xfail test whose
    # teardown also fails, say) is counted once.
    counts = {
        key: len({getattr(report, "nodeid", id(report)) for report in stats.get(key, [])})
        for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    }
    excluded = sum(ex.matched for ex in used)
    terminalreporter.section(f"{suite} suite on {server}")
    terminalreporter.write_line(
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
        f"{counts['skipped']} skipped, {counts['xfailed']} xfailed, {counts['xpassed']} xpassed, "
        f"{excluded} excluded"
    )
