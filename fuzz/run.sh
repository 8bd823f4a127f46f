#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds each (default 20) and prints the number of
# executions per target. Exits non-zero on the first crash (the reproducer is written to
# fuzz/artifacts/<target>/). Suitable for CI:
#
#   fuzz/run.sh            # 20 s per target
#   fuzz/run.sh 300        # longer local run
#   FUZZ_TARGETS="chunked" fuzz/run.sh 60
#
# cargo-fuzz needs nightly-only rustc flags (-Z sanitizer=..., -Z build-std is not used here).
# On a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them; the script sets it unless the active
# toolchain is already nightly. The seed corpus in fuzz/corpus/<target>/ is only read: new
# inputs go to a scratch directory (FUZZ_WORK, default a temporary one), so the repository
# stays clean.
set -euo pipefail

SECONDS_PER_TARGET="${1:-20}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
TARGETS="${FUZZ_TARGETS:-parse_head chunked conn}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/target}"
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
WORK="${FUZZ_WORK:-$(mktemp -d)}"
# Address sanitizer plus debug assertions (integer overflow checks) in an optimized build.
FLAGS=(--release --debug-assertions --sanitizer address)

cargo fuzz build "${FLAGS[@]}"
status=0
summary=""
for target in $TARGETS; do
    mkdir -p "$WORK/$target"
    log="$WORK/$target.log"
    echo "== $target: ${SECONDS_PER_TARGET}s" >&2
    if ! cargo fuzz run "${FLAGS[@]}" "$target" "$WORK/$target" "corpus/$target" -- \
            -max_total_time="$SECONDS_PER_TARGET" -max_len=16384 -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        status=1
        tail -n 60 "$log" >&2
        echo "!! $target: crash or failure (reproducer in fuzz/artifacts/$target/)" >&2
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    corpus="$(find "$WORK/$target" -type f | wc -l)"
    summary+="$(printf '%-12s %12s executions  %6s corpus entries' "$target" "$execs" "$corpus")"$'\n'
done
printf '\n%s' "$summary"
exit $status
