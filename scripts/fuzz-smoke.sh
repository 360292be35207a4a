#!/usr/bin/env bash
# A short, bounded fuzz run for CI (docs/fuzzing.md): builds every target in fuzz/ and
# runs each for FUZZ_SMOKE_SECONDS (default 25) starting from its committed corpus
# (fuzz/corpus/<target>, left unchanged: new inputs go to a scratch directory). Any
# crash, panic, failed property, leak or input slower than FUZZ_SMOKE_TIMEOUT seconds
# fails the run; the input that did it is left in fuzz/artifacts/<target>/.
#
# Needs only the stable Rust toolchain and a C/C++ compiler: targets are built without
# a sanitizer (`-s none`; Rust's own checks, debug assertions and libFuzzer's
# instrumentation), which stable rustc supports. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SMOKE_SECONDS:-25}"
timeout="${FUZZ_SMOKE_TIMEOUT:-10}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

started=$(date +%s)
cargo fuzz build -s none
built=$(date +%s)
echo "fuzz-smoke: built the targets in $((built - started)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" "$scratch/$target"
    echo "fuzz-smoke: $target for ${seconds} s over $(ls "corpus/$target" | wc -l) corpus inputs"
    log="$scratch/$target.log"
    if ! cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
        -dict=dicts/fleetauth.dict -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz-smoke: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done
echo "fuzz-smoke: done in $(($(date +%s) - started)) s"
