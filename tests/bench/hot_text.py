#!/usr/bin/env python3
"""Write hot-text.ld: the functions an HTTP probe runs, in the order they first run, for the
linker to place together at the start of the shipped binaries' code (build.rs passes the
script to rust-lld for the musl targets).

Why: between two probes keepwell sleeps, and on a busy host its code leaves the caches and the
TLB. What a probe then costs is mostly the cold misses of the ~560 lines of code it runs, spread
over ~73 pages of a 1.8 MB binary when laid out in the compiler's order; placed together they
span ~26 pages, and keepwell's CPU per probe drops by about a tenth (tests/bench/probe_overhead.md,
"The probe's code in one place").

How: a release build of the x86_64 static binary with its symbols, run under valgrind's lackey
(every instruction's address) probing a cheap C server (probe_server.c) every 100 ms for
SECONDS; each probe cycle starts where musl's connect() does. The functions run in the steady
cycles (the first few and the unfinished last one left out) are taken in first-run order and
written as input-section patterns: the symbols' crate hashes (`17h…E`, `Cs…_`) and LLVM's `.N`
suffixes become wildcards, so the script survives a rebuild elsewhere and a toolchain update;
only renamed functions fall out (the packaging test checks the section stays large).

Needs cargo with the x86_64-unknown-linux-musl target, gcc, valgrind and nm (binutils).
Usage: hot_text.py [--seconds 30] [--out hot-text.ld] [--binary UNSTRIPPED_RELEASE_BUILD]
Every process it starts is killed by its pid; every wait has a deadline.
"""
import argparse
import bisect
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = "x86_64-unknown-linux-musl"
WARM_CYCLES = 5


def log(msg):
    print(f"[hot_text] {msg}", file=sys.stderr, flush=True)


def build():
    """The release build with its symbols and line tables (nothing else differs from the
    shipped one, so the functions and their names are the shipped ones)."""
    target_dir = os.environ.get("HOT_TEXT_TARGET_DIR", "/tmp/keepwell-hot-text-target")
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir, CARGO_PROFILE_RELEASE_STRIP="false",
               CARGO_PROFILE_RELEASE_DEBUG="line-tables-only")
    log(f"cargo build --release --target {TARGET} (symbols kept) in {target_dir}")
    subprocess.run(["cargo", "build", "--release", "--locked", "--target", TARGET, "--bin",
                    "keepwell"], cwd=ROOT, env=env, check=True, timeout=1800)
    return os.path.join(target_dir, TARGET, "release", "keepwell")


def symbols(binary):
    """(address, mangled name) of every function, sorted by address."""
    out = subprocess.run(["nm", "--defined-only", "-n", binary], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            found.append((int(parts[0], 16), parts[2]))
    if not found:
        raise SystemExit(f"hot_text: {binary} has no symbols (build it with strip = false)")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trace(binary, seconds, tmp):
    """lackey's log of BINARY probing a C server every 100 ms for SECONDS."""
    server = os.path.join(tmp, "probe_server")
    subprocess.run(["gcc", "-O2", "-o", server, os.path.join(HERE, "probe_server.c")],
                   check=True, timeout=120)
    port = free_port()
    started = []
    try:
        srv = subprocess.Popen([server, str(port)], stdin=subprocess.DEVNULL)
        started.append(srv)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("hot_text: the probe server did not start")
                time.sleep(0.02)
        log_file = os.path.join(tmp, "lackey.log")
        url = f"http://127.0.0.1:{port}/health"
        vg = subprocess.Popen(
            ["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={log_file}", binary,
             "--log-level", "warn", "--health-url", url, "--health-interval", "100ms",
             "--health-start-interval", "100ms", "--", "sleep", "100000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        started.append(vg)
        log(f"tracing for {seconds} s")
        time.sleep(seconds)
    finally:
        # TERM first: keepwell stops its child and exits (a KILL would leave `sleep` behind).
        for p in reversed(started):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
    return log_file


def hot_functions(log_file, syms):
    """Functions run in the steady probe cycles, in the order they first ran, and what one
    cycle touches: (median code lines, code pages, data lines, data pages) of 64 B and 4 KiB."""
    addresses = [a for a, _ in syms]
    mark = next((a for a, name in syms if name == "connect"), None)
    if mark is None:
        raise SystemExit("hot_text: no connect() in the binary's symbols")
    order, footprints = {}, []
    seen_in_cycle, seen, code, data = [], set(), set(), set()
    cycles = 0
    with open(log_file, errors="replace") as f:
        for line in f:
            kind = line[:2].strip()
            if kind not in ("I", "L", "S", "M"):
                continue
            try:
                address = int(line[3:].split(",", 1)[0], 16)
            except ValueError:
                continue
            if kind != "I":
                data.add(address >> 6)
                continue
            if address == mark:
                # A cycle counts once the next one starts: the last, cut off, never does.
                if cycles > WARM_CYCLES:
                    for name in seen_in_cycle:
                        order.setdefault(name, len(order))
                    footprints.append((len(code), len({c >> 6 for c in code}),
                                       len(data), len({d >> 6 for d in data})))
                cycles += 1
                seen_in_cycle, seen, code, data = [], set(), set(), set()
            code.add(address >> 6)
            i = bisect.bisect_right(addresses, address) - 1
            if i >= 0 and syms[i][1] not in seen:
                seen.add(syms[i][1])
                seen_in_cycle.append(syms[i][1])
    if len(footprints) < 5:
        raise SystemExit(f"hot_text: only {cycles} probes traced; give more --seconds")
    median = tuple(statistics.median(f[k] for f in footprints) for k in range(4))
    return list(order), len(footprints), median


def patterns(name):
    """Input-section patterns for a function, free of the build's hashes."""
    legacy = re.match(r"^(_ZN.*17h)[0-9a-f]{16}E(\.[0-9]+)?$", name)
    if legacy:
        return [legacy.group(1) + "*"]
    name = re.sub(r"\.[0-9]+$", "", name)
    if name.startswith("_R"):
        # v0 names (the standard library's): crate hashes, and the back-references whose
        # offsets depend on the hashes' lengths.
        name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)
        name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
        name = re.sub(r"\*+", "*", name)
    return [name, name + ".*"]


def write(functions, cycles, out):
    lines = []
    for name in functions:
        line = "    *(" + " ".join(".text." + p for p in patterns(name)) + ")"
        if line not in lines:
            lines.append(line)
    with open(out, "w") as f:
        f.write(
            "/* The code an HTTP probe runs, first in the binary and in the order it runs, so a\n"
            " * probe after a sleep touches a few dozen pages of code, not seventy-odd.\n"
            " * Written by tests/bench/hot_text.py (run it again after renaming what a probe\n"
            f" * runs); {len(functions)} functions seen in {cycles} probes. build.rs passes\n"
            " * this to rust-lld for the musl targets; INSERT keeps the rest of the default\n"
            " * layout. */\n"
            "SECTIONS\n{\n  .text.hot : {\n")
        f.write("\n".join(lines) + "\n")
        f.write("  }\n}\nINSERT BEFORE .text;\n")
    log(f"{out}: {len(lines)} patterns for {len(functions)} functions from {cycles} probes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--out", default=os.path.join(ROOT, "hot-text.ld"))
    ap.add_argument("--binary", help="an unstripped release build to trace instead of building")
    args = ap.parse_args()
    binary = args.binary or build()
    syms = symbols(binary)
    with tempfile.TemporaryDirectory(prefix="keepwell-hot-text.") as tmp:
        functions, cycles, touched = hot_functions(trace(binary, args.seconds, tmp), syms)
    # What this build's layout costs a probe: compare a build with hot-text.ld and one without.
    log("one probe cycle of {} touched: code {:.0f} lines in {:.0f} pages, data {:.0f} lines "
        "in {:.0f} pages (medians of {} cycles)".format(binary, *touched, cycles))
    write(functions, cycles, args.out)


if __name__ == "__main__":
    main()
