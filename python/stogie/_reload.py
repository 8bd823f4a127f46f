"""`stogie --reload`: a watcher process that asks the supervisor to reload (SIGHUP) when a
watched file changes. The supervisor's reload starts new workers and stops the old ones only
once the new ones serve, so a module that fails to import (a syntax error mid-edit) leaves the
previous code serving until the next good save.

Run as `python -m stogie._reload SUPERVISOR_PID --dir DIR ... --include GLOB ...`.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = Path(path).name
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern)
               for pattern in patterns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stogie-reload")
    parser.add_argument("supervisor", type=int)
    parser.add_argument("--dir", action="append", default=[])
    parser.add_argument("--include", action="append", default=[])
    args = parser.parse_args(argv)
    import watchfiles

    dirs = args.dir or [os.getcwd()]
    patterns = args.include or ["*.py"]
    announced = False
    for changes in watchfiles.watch(*dirs, rust_timeout=500, yield_on_timeout=True,
                                    debounce=200, step=50):
        if not announced:                             # the first yield: watching from now on
            print(f"stogie --reload: watching {', '.join(dirs)}", file=sys.stderr, flush=True)
            announced = True
        if os.getppid() != args.supervisor:          # the supervisor is gone
            return 0
        changed = sorted({path for _, path in changes if _matches(path, patterns)})
        if changed:
            print(f"stogie --reload: changed: {', '.join(changed[:3])}"
                  f"{' ...' if len(changed) > 3 else ''}", file=sys.stderr, flush=True)
            try:
                os.kill(args.supervisor, signal.SIGHUP)
            except ProcessLookupError:
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
