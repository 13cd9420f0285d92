#!/usr/bin/env bash
# Run every fuzz target of fuzz/ for FUZZ_SECONDS each (README "Fuzzed"). CI runs them
# briefly (the default, 5 s) so that the targets keep building and a regression in how
# keepwell takes outside input shows; for a real search give each a budget:
#   FUZZ_SECONDS=600 bash .ci/fuzz.sh [TARGET...]
#
# No AddressSanitizer (`-s none`: stable Rust; the code under test is safe Rust), but debug
# assertions and overflow checks on (`-a`). cargo-fuzz, the build and the corpus live under
# /tmp, so later runs on this machine neither reinstall nor rebuild nor start from nothing; a
# fresh machine installs and builds them (a few minutes). Crashes are kept in
# fuzz/artifacts/TARGET/; each becomes a unit test in the crate once fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-5}
tools=/tmp/keepwell-cargo-fuzz
target_dir=/tmp/keepwell-fuzz-target
corpora=${FUZZ_CORPUS:-/tmp/keepwell-fuzz-corpus}

if ! [ -x "$tools/bin/cargo-fuzz" ]; then
    echo "[fuzz] installing cargo-fuzz into $tools" >&2
    cargo install --locked --quiet --root "$tools" cargo-fuzz
fi
export PATH="$tools/bin:$PATH"

cargo fuzz build -s none -a --target-dir "$target_dir"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

printf '%-16s %14s %12s %8s\n' target executions exec/s corpus
status=0
for target in "${targets[@]}"; do
    corpus="$corpora/$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    log=$(mktemp)
    # -max_len: above the 64 KiB keepwell reads of any answer, so its bounds are reached.
    if ! cargo fuzz run -s none -a --target-dir "$target_dir" "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        status=1
        echo "[fuzz] $target FAILED; its log:" >&2
        grep -v '^#[0-9]' "$log" | tail -60 >&2
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    printf '%-16s %14s %12s %8s\n' "$target" "${executions:-?}" "${rate:-?}" "$(ls "$corpus" | wc -l)"
    rm -f "$log"
done
exit "$status"
