#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and prints, per
# target, the executions and crashes.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60). Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). The corpus grows in
# fuzz/corpus/<target> (not committed); fuzz/seeds/<target> is read as extra
# input. Crashes land in fuzz/artifacts/<target>/; minimise one with
# `cargo +nightly fuzz tmin <target> <file>` and commit it to
# fuzz/seeds/<target>/ once fixed: hostile/tests/fuzz_seeds.rs replays seeds.
# FUZZ_SANITIZER=address turns AddressSanitizer on (the code is safe Rust,
# so the default `none` trades it for two to three times the executions).
# FUZZ_RUNS=N stops each target after N executions (SECONDS still caps it).
# FUZZ_SKIP_BUILD=1 runs the targets as last built (two runs of this script
# on different targets can then share the machine without rebuilding).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

if [ -z "${FUZZ_SKIP_BUILD:-}" ]; then
    cargo +nightly fuzz build --sanitizer "$sanitizer" --debug-assertions
fi
bin="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

mkdir -p logs
printf '%-20s %14s %10s %8s %s\n' target executions exec/s crashes corpus
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="logs/$target.log"
    before=$(find "artifacts/$target" -type f | wc -l)
    runs=()
    if [ -n "${FUZZ_RUNS:-}" ]; then
        runs=(-runs="$FUZZ_RUNS")
    fi
    set +e
    "$bin/$target" "corpus/$target" "seeds/$target" "${runs[@]}" \
        -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    code=$?
    set -e
    after=$(find "artifacts/$target" -type f | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    crashes=$((after - before))
    if [ "$code" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="exit$code"
    fi
    printf '%-20s %14s %10s %8s %s\n' "$target" "${execs:-?}" "${rate:-?}" "$crashes" "$corpus"
    if [ "$crashes" != 0 ]; then
        status=1
        grep -m3 -E 'panicked|ERROR|SUMMARY' "$log" | sed 's/^/    /' || true
    fi
done
exit "$status"
