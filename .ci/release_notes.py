"""Checks that a release tag matches the version and the changelog; prints the release notes.

    python3 .ci/release_notes.py v0.1.0 > notes.md

Fails (exit 1, reason on stderr) unless the tag is `v` + Cargo.toml's version (the one place
the version is set) and CHANGELOG.md has a dated section for it (`## 0.1.0 - 2026-12-06`).
The notes printed are that section's body. Used by .github/workflows/release.yml before
anything is published; run it yourself before tagging (docs/releasing.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cargo_version() -> str:
    """`version` of Cargo.toml's [package] table (no tomllib: this runs on Python 3.9 too)."""
    text = (REPO / "Cargo.toml").read_text()
    package = re.search(r"^\[package\]$(.*?)(?=^\[)", text, re.MULTILINE | re.DOTALL)
    version = re.search(r'^version = "([^"]+)"$', package.group(1) if package else "", re.MULTILINE)
    if version is None:
        raise SystemExit("release_notes: no version in Cargo.toml's [package] table")
    return version.group(1)


def changelog_section(version: str) -> str | None:
    """The body of `## VERSION - YYYY-MM-DD` in CHANGELOG.md, or None."""
    text = (REPO / "CHANGELOG.md").read_text()
    heading = re.compile(rf"^## {re.escape(version)} - \d{{4}}-\d{{2}}-\d{{2}}$", re.MULTILINE)
    match = heading.search(text)
    if match is None:
        return None
    rest = text[match.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: following.start() if following else len(rest)].strip()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    tag = argv[0].removeprefix("refs/tags/")
    version = cargo_version()
    problems = []
    if tag != f"v{version}":
        problems.append(f"tag {tag!r} is not 'v' + Cargo.toml's version {version!r}")
    notes = changelog_section(version)
    if not notes:
        problems.append(f"CHANGELOG.md has no section '## {version} - YYYY-MM-DD' with entries")
    for problem in problems:
        print(f"release_notes: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(notes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
