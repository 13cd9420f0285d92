#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then runs them all.
#
# Idempotent and fast when everything is already there. Needs root: the tests make PID
# namespaces (unshare), drop privileges (--user), and start a private dockerd for the container
# tests (tests/container.rs calls .ci/docker.sh, which installs docker.io and debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[tests/run.sh] %s\n' "$*" >&2; }

missing=()
for tool in unshare nsenter setpriv; do
    command -v "$tool" >/dev/null || missing+=(util-linux)
done
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The Celery tests start Debian's Redis as the broker (tests/celery.rs).
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The shipped binary is the static musl build; the container tests build it.
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    say "adding the x86_64-unknown-linux-musl target"
    rustup target add x86_64-unknown-linux-musl
fi

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --no-fail-fast "$@"
fi
say "cargo-nextest not found: falling back to cargo test"
exec cargo test --no-fail-fast "$@"
