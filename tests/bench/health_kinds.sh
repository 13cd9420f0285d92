#!/usr/bin/env bash
# The cost of a health check by kind (issue 10, "Measure"): file:, a command, gRPC, against a
# grpc-health-probe-style Python client and `celery inspect ping`, side by side in one run;
# and the binary's size with and without the grpc feature.
#
#   tests/bench/health_kinds.sh            full run (about 2 minutes)
#   tests/bench/health_kinds.sh --quick    fewer calls, for trying the script out
#   RESULTS=/tmp/r.md tests/bench/health_kinds.sh
#
# Needs Debian (apt-get for redis-server and GNU time) and PyPI (the venv of
# tests/support/health-requirements.txt). Everything runs on loopback; every process it
# starts is stopped by its pid at the end. Numbers to read, not assertions.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '[tests/bench/health_kinds.sh] %s\n' "$*" >&2; }

need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

target=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/keepwell
work=$(mktemp -d /tmp/keepwell-bench-kinds.XXXXXX)
trap 'rm -rf "$work"' EXIT
say "building the static release binary without gRPC, then with it (the default)"
cargo build --release --target x86_64-unknown-linux-musl --no-default-features --bin keepwell
cp "$target" "$work/keepwell-no-grpc"
cargo build --release --target x86_64-unknown-linux-musl --bin keepwell
cp "$target" "$work/keepwell"

# The same pins as the tests' venv (tests/common/venv.rs), in a venv of the benchmark's own.
venv=${KEEPWELL_BENCH_VENV:-/tmp/keepwell-bench-venv}
pins=tests/support/health-requirements.txt
if ! cmp -s "$pins" "$venv/.pins" 2>/dev/null; then
    say "making $venv from $pins"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --no-input -r "$pins"
    cp "$pins" "$venv/.pins"
fi

/usr/bin/python3 tests/bench/health_kinds.py "$work/keepwell" "$work/keepwell-no-grpc" \
    "$venv" "${RESULTS:-tests/bench/health_kinds.md}" "$@"
