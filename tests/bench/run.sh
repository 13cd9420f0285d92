#!/usr/bin/env bash
# keepwell benchmarks (issue 5, item 6): keepwell against Debian's tini, dumb-init and
# catatonit for supervision, and against curl for checks, side by side in one run.
#
#   tests/bench/run.sh            full run (about 3 minutes), writes tests/bench/results.md
#   tests/bench/run.sh --quick    fewer iterations, for trying the script out
#   RESULTS=/tmp/r.md tests/bench/run.sh   write the results elsewhere
#
# Needs root (PID namespaces via unshare, nsenter) and Debian (apt-get). Everything runs on
# loopback; every loop is bounded; every process it starts is killed by its pid at the end.
# Benchmarks are numbers to read, not assertions: the script exits 0 even when a target is
# missed, and says so in the "Targets" table.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '[tests/bench/run.sh] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { say "run as root: the benchmarks make PID namespaces"; exit 2; }

need=()
for pair in tini:tini tini-static:tini dumb-init:dumb-init catatonit:catatonit \
            hyperfine:hyperfine curl:curl /usr/bin/time:time wrk:wrk file:file \
            unshare:util-linux nsenter:util-linux python3:python3; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "building the static release binary"
cargo build --release --target x86_64-unknown-linux-musl
bin=target/x86_64-unknown-linux-musl/release/keepwell
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/keepwell
fi

exec python3 tests/bench/bench.py "$bin" "${RESULTS:-tests/bench/results.md}" "$@"
