#!/usr/bin/env bash
# Runs every fuzz target for a fixed time and appends one line per target to the report:
#   fuzz/run.sh SECONDS REPORT_FILE
# On the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags
# (-Zsanitizer=address and the sanitizer-coverage options). A crash stops the run with exit 1 and
# leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
report="${2:-/dev/stdout}"
export RUSTC_BOOTSTRAP=1
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^crmsync-fuzz$')
cargo fuzz build
status=0
for t in $targets; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    if cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        outcome="0 crashes"
    else
        outcome="FAILED (see fuzz/artifacts/$t)"
        status=1
        tail -40 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "corpus/$t" -type f | wc -l)
    line="fuzz/$t: ${seconds} s, ${runs:-?} executions (${rate:-?}/s), coverage ${cov:-?} edges, ${added:-?} new inputs, corpus ${corpus}, ${outcome}"
    echo "$line"
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $line" >>"$report"
    rm -f "$log"
done
exit $status
