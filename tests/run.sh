#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then runs them all.
#
# Idempotent and fast when everything is already there. Needs root: the tests make PID
# namespaces (unshare), drop privileges (--user), and start a private dockerd for the container
# tests (tests/container.rs calls .ci/docker.sh, which installs docker.io and debootstrap).
#
# The release tests (tests/packaging.rs, tests/aarch64.rs, tests/container.rs) read the release
# in $KW_DIST when it is set (CI: the dist/ its release step wrote), else they run
# scripts/release.sh themselves (cached builds: seconds after the first).
#
# The private dockerd is shared by every checkout on this machine, so the run holds
# /tmp/keepwell-container-tests.lock (image tags and the build cache are shared).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[tests/run.sh] %s\n' "$*" >&2; }

# Debian packages: command → package.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need unshare util-linux
need nsenter util-linux
need setpriv util-linux
need python3 python3
need qemu-aarch64-static qemu-user-static # the arm64 smoke tests (tests/aarch64.rs)
need docker-registry docker-registry      # a loopback registry for the multi-arch image
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
[ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null && missing+=(python3-venv)
need redis-server redis-server           # the broker of the Celery tests (tests/celery.rs)
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
# Debian's docker-registry package starts a registry on :5000 where systemd runs; the tests
# start their own on a free loopback port and need none.

# The shipped binaries are the static musl builds, for both architectures.
installed=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! grep -qx "$target" <<<"$installed"; then
        say "adding the $target target"
        rustup target add "$target"
    fi
done

lock=/tmp/keepwell-container-tests.lock
runner=(cargo nextest run --no-fail-fast "$@")
if ! cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest not found: falling back to cargo test"
    runner=(cargo test --no-fail-fast "$@")
fi
# -o: the lock stays with flock itself, so nothing the tests start (a daemon) can keep it.
flock -n -o "$lock" true 2>/dev/null || say "waiting for $lock (another checkout runs its container tests)"
exec flock -o -w 3600 "$lock" "${runner[@]}"
