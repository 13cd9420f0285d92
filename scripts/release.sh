#!/usr/bin/env bash
# scripts/release.sh — one command makes a release of keepwell (README "Install").
#
#   scripts/release.sh [--out DIR] [--allow-dirty]
#       writes DIR (default dist/):
#         keepwell-VERSION-x86_64-unknown-linux-musl      static binaries (cargo auditable)
#         keepwell-VERSION-aarch64-unknown-linux-musl
#         keepwell-VERSION-py3-none-manylinux2014_ARCH.manylinux_2_17_ARCH.musllinux_1_1_ARCH.whl
#                                                         one wheel per arch, for glibc and musl
#                                                         Pythons, carrying that same binary
#         keepwell-VERSION.tar.gz                         the sdist (builds with cargo)
#         keepwell-VERSION.crate                          what `cargo publish` would upload
#         SHA256SUMS                                      `sha256sum -c SHA256SUMS` checks them
#       Refuses a checkout with uncommitted changes unless --allow-dirty.
#
#   scripts/release.sh image REPOSITORY [--out DIR]
#       from DIR's binaries: the top-level Dockerfile's scratch image for linux/amd64 and
#       linux/arm64, pushed as REPOSITORY:VERSION-amd64 and REPOSITORY:VERSION-arm64, and the
#       multi-arch index REPOSITORY:VERSION over both; prints REPOSITORY:VERSION@sha256:... to
#       use in `FROM`/`COPY --from`. Needs a Docker engine (DOCKER_HOST) and a registry that
#       takes pushes (a loopback registry is used without TLS).
#
#   scripts/release.sh tools
#       installs the tools below (if missing) and prints where they are, one NAME=PATH a line.
#
#   scripts/release.sh pin-examples [--out DIR]
#       rewrites keepwell's lines in examples/*/requirements.txt with the hashes of DIR's
#       wheels (do it when those are the wheels you publish).
#
# What it installs, once, into $KW_CACHE (default /tmp/keepwell-cache): the rustup targets,
# cargo-auditable and rust-audit-info (cargo install --locked, pinned below), and maturin in a
# venv from scripts/release-requirements.txt (pinned with hashes). The build directory is
# $KW_CACHE/release-target unless CARGO_TARGET_DIR is set: separate from target/ so that the
# tests' plain `cargo build` and this auditable build do not rebuild each other in turn.
#
# Every binary is linked once, by cargo; maturin packs that file (its cargo call finds it fresh)
# and the script checks that each wheel holds a byte-identical copy.

set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

KW_CACHE=${KW_CACHE:-/tmp/keepwell-cache}
CARGO_AUDITABLE_VERSION=0.7.7
RUST_AUDIT_INFO_VERSION=0.5.4
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# One wheel per arch with both tag sets: pip on python:*-slim (glibc) and on alpine (musl)
# takes it. The binary is static, so neither libc is needed at all.
COMPATIBILITY=(manylinux2014 musllinux_1_1)

say() { printf '[release] %s\n' "$*" >&2; }
die() {
    printf '\n[release] FAILED: %s\n' "$*" >&2
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd=build
out=dist
allow_dirty=
repository=
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
    cmd=$1
    shift
fi
if [ "$cmd" = image ]; then
    [ $# -gt 0 ] && [[ $1 != -* ]] || die "image needs a REPOSITORY, e.g. 127.0.0.1:5000/keepwell"
    repository=$1
    shift
fi
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --allow-dirty) allow_dirty=1; shift ;;
        -h | --help) usage ;;
        *) printf '[release] unknown argument %q\n' "$1" >&2; usage ;;
    esac
done
case $cmd in build | image | pin-examples | tools) ;; *) printf '[release] unknown command %q\n' "$cmd" >&2; usage ;; esac
case $cmd in
    build) mkdir -p "$out" ;;
    image | pin-examples) [ -d "$out" ] || die "$out does not exist: run scripts/release.sh first" ;;
esac
[ ! -d "$out" ] || out=$(cd "$out" && pwd)

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"

binary_name() { echo "keepwell-$version-$1"; }
docker_arch() {
    case $1 in
        x86_64-*) echo amd64 ;;
        aarch64-*) echo arm64 ;;
        *) die "no Docker platform known for $1" ;;
    esac
}

# ---------------------------------------------------------------------------------------
# Tools

tools() {
    mkdir -p "$KW_CACHE"
    # One installer at a time: CI and a developer may run this together.
    exec 8>"$KW_CACHE/release-tools.lock"
    flock -w 1800 8 || die "could not lock $KW_CACHE/release-tools.lock within 30 minutes"

    local installed target
    installed=$(rustup target list --installed)
    for target in "${TARGETS[@]}"; do
        grep -qx "$target" <<<"$installed" || { say "rustup target add $target"; rustup target add "$target"; }
    done

    local crate version bin
    for spec in "cargo-auditable $CARGO_AUDITABLE_VERSION cargo-auditable" \
        "rust-audit-info $RUST_AUDIT_INFO_VERSION rust-audit-info"; do
        read -r crate version bin <<<"$spec"
        local root="$KW_CACHE/cargo-tools/$crate-$version"
        if [ ! -x "$root/bin/$bin" ]; then
            say "cargo install --locked $crate@$version (once; cached in $root)"
            cargo install --quiet --locked --version "$version" --root "$root" "$crate" ||
                die "cargo install $crate@$version failed"
        fi
        PATH="$root/bin:$PATH"
    done

    # The venv's name carries the requirements' hash: a new pin gets a new venv.
    local pins venv
    pins=$(sha256sum scripts/release-requirements.txt | cut -c1-12)
    venv="$KW_CACHE/release-venv-$pins"
    if [ ! -x "$venv/bin/maturin" ]; then
        say "installing maturin into $venv (once)"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --require-hashes -r scripts/release-requirements.txt ||
            { rm -rf "$venv"; die "pip install -r scripts/release-requirements.txt failed"; }
    fi
    PATH="$venv/bin:$PATH"
    export PATH
    exec 8>&-
}

# ---------------------------------------------------------------------------------------
# build: dist/

build() {
    if [ -z "$allow_dirty" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
        git status --short >&2
        die "the checkout has uncommitted changes (above): commit them, or pass --allow-dirty"
    fi
    tools
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$KW_CACHE/release-target}
    # One release at a time per build directory: the .crate and wheels are read back from it.
    mkdir -p "$CARGO_TARGET_DIR"
    exec 7>"$CARGO_TARGET_DIR/.keepwell-release.lock"
    flock -w 1800 7 || die "another release holds $CARGO_TARGET_DIR for 30 minutes"

    # What `cargo auditable build` sets up, exported for every cargo call below, maturin's
    # included: cargo-auditable as the rustc wrapper of this crate, which links the dependency
    # list (compressed JSON, section .dep-v0) into the binary; the JSON says which cargo flags
    # its own `cargo metadata` call must repeat.
    RUSTC_WORKSPACE_WRAPPER=$(command -v cargo-auditable)
    export RUSTC_WORKSPACE_WRAPPER
    export CARGO_AUDITABLE_ORIG_ARGS='{"offline":false,"locked":true,"frozen":false,"config":[]}'

    local started=$SECONDS target
    local -a target_args=()
    for target in "${TARGETS[@]}"; do target_args+=(--target "$target"); done
    # One cargo for both targets: it links them in parallel (each link is one LTO job).
    say "cargo build --release --locked ${target_args[*]} (with cargo-auditable)"
    cargo build --release --locked "${target_args[@]}" --bin keepwell

    # Only what an earlier release wrote goes: --out may name a directory that holds more.
    rm -f "$out"/keepwell-* "$out/SHA256SUMS"
    for target in "${TARGETS[@]}"; do
        local bin="$CARGO_TARGET_DIR/$target/release/keepwell"
        rust-audit-info "$bin" >/dev/null || die "$bin carries no dependency list (.dep-v0)"
        install -m 0755 "$bin" "$out/$(binary_name "$target")"
    done

    local wheels="$CARGO_TARGET_DIR/keepwell-wheels"
    rm -rf "$wheels"
    for target in "${TARGETS[@]}"; do
        say "maturin build --target $target --compatibility ${COMPATIBILITY[*]}"
        maturin build --quiet --release --locked --target "$target" \
            --compatibility "${COMPATIBILITY[@]}" --out "$wheels/$target" >&2
        local wheel
        wheel=$(echo "$wheels/$target"/*.whl)
        [ -f "$wheel" ] || die "maturin wrote no wheel for $target"
        # The wheel must carry the very binary shipped beside it.
        python3 - "$wheel" "$out/$(binary_name "$target")" <<'PY' || die "the wheel for $target does not hold the release binary"
import sys, zipfile
wheel, binary = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    inside = [n for n in z.namelist() if n.endswith(".data/scripts/keepwell")]
    sboms = [n for n in z.namelist() if "/sboms/" in n and n.endswith(".json")]
    assert len(inside) == 1, f"{wheel}: {inside}"
    assert sboms, f"{wheel} has no SBOM under .dist-info/sboms/"
    same = z.read(inside[0]) == open(binary, "rb").read()
sys.exit(0 if same else 1)
PY
        cp "$wheel" "$out/"
    done

    say "maturin sdist"
    maturin sdist --out "$wheels/sdist" >&2
    cp "$wheels/sdist/keepwell-$version.tar.gz" "$out/"

    # cargo package: the crate as crates.io would get it. No warning may pass (missing
    # metadata, test targets left out by `exclude`, ...). The build from the unpacked crate is
    # checked by tests/packaging.rs (`cargo install --path`), so no verify build here.
    say "cargo package"
    local log="$CARGO_TARGET_DIR/cargo-package.log"
    cargo package --locked --no-verify ${allow_dirty:+--allow-dirty} 2>"$log" ||
        { cat "$log" >&2; die "cargo package failed"; }
    if grep -q '^warning' "$log"; then
        cat "$log" >&2
        die "cargo package warned (above): fix Cargo.toml"
    fi
    cp "$CARGO_TARGET_DIR/package/keepwell-$version.crate" "$out/"

    (cd "$out" && sha256sum -- keepwell-* >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
    say "wrote $out in $((SECONDS - started)) s:"
    (cd "$out" && ls -l -- keepwell-* SHA256SUMS) >&2
}

# ---------------------------------------------------------------------------------------
# image REPOSITORY: the scratch image for both architectures and its index

image() {
    local docker=docker
    [ -x /usr/bin/docker ] && docker=/usr/bin/docker
    # The classic builder (no buildx here) builds one platform per call; a context per
    # architecture that holds only `keepwell` keeps every step a plain COPY, which it can
    # build for a foreign platform.
    export DOCKER_BUILDKIT=0
    local -a insecure=()
    case $repository in 127.* | localhost:* | localhost/*) insecure=(--insecure) ;; esac
    local -a images=()
    local target arch ctx
    for target in "${TARGETS[@]}"; do
        arch=$(docker_arch "$target")
        [ -x "$out/$(binary_name "$target")" ] || die "$out/$(binary_name "$target") is missing: run scripts/release.sh first"
        ctx="$out/.image-$arch"
        rm -rf "$ctx"
        mkdir -p "$ctx"
        cp "$out/$(binary_name "$target")" "$ctx/keepwell"
        say "docker build --platform linux/$arch -t $repository:$version-$arch"
        "$docker" build -q --platform "linux/$arch" -f Dockerfile -t "$repository:$version-$arch" "$ctx" >/dev/null
        rm -rf "$ctx"
        "$docker" push -q "$repository:$version-$arch" >/dev/null
        images+=("$repository:$version-$arch")
    done
    say "docker manifest create $repository:$version over ${images[*]}"
    "$docker" manifest rm "$repository:$version" >/dev/null 2>&1 || true
    "$docker" manifest create "${insecure[@]}" "$repository:$version" "${images[@]}" >/dev/null
    for target in "${TARGETS[@]}"; do
        arch=$(docker_arch "$target")
        local -a variant=()
        [ "$arch" = arm64 ] && variant=(--variant v8)
        "$docker" manifest annotate "$repository:$version" "$repository:$version-$arch" --os linux --arch "$arch" "${variant[@]}"
    done
    local digest
    digest=$("$docker" manifest push "${insecure[@]}" --purge "$repository:$version")
    [[ $digest == sha256:* ]] || die "docker manifest push printed no digest: $digest"
    echo "$repository:$version@$digest"
}

# ---------------------------------------------------------------------------------------
# pin-examples: keepwell's hashes in the examples' requirements

pin_examples() {
    local -a wheels=("$out"/keepwell-"$version"-*.whl)
    [ -f "${wheels[0]}" ] || die "no keepwell $version wheel in $out: run scripts/release.sh first"
    local req
    for req in examples/*/requirements.txt; do
        grep -q '^keepwell==' "$req" || continue
        python3 - "$req" "$version" "${wheels[@]}" <<'PY'
import hashlib, sys
req, version, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = open(req).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith("keepwell=="))
end = start + 1
while end < len(lines) and lines[end].startswith("    --hash="):
    end += 1
hashes = sorted(hashlib.sha256(open(w, "rb").read()).hexdigest() for w in wheels)
block = [f"keepwell=={version} \\"] + [f"    --hash=sha256:{h} \\" for h in hashes]
block[-1] = block[-1].removesuffix(" \\")
lines[start:end] = block
open(req, "w").write("\n".join(lines) + "\n")
PY
        say "pinned keepwell $version in $req"
    done
}

case $cmd in
    build) build ;;
    image) image ;;
    pin-examples) pin_examples ;;
    tools)
        tools
        for tool in cargo-auditable rust-audit-info maturin; do echo "$tool=$(command -v "$tool")"; done
        ;;
esac
