#!/usr/bin/env python3
"""CPU and system calls per HTTP probe: keepwell's supervisor probe against the floor, a bare
blocking C loop (probe_loop.c), side by side in one run.

Every prober runs at the same time, each against its own copy of a cheap C app
(probe_server.c) that answers 200 and counts the requests it served: each KEEPWELL binary
given (say main's build and this branch's) as PID 1 of a fresh PID namespace supervising
`sleep`, probing with --health-interval (and start interval) INTERVAL; the C loop with the
same pause between probes. After a warm-up, CPU is read from /proc/PID/stat (utime+stime of
all threads, in clock ticks) and from /proc/PID/task/*/schedstat (run time in ns), and the
probes from each server's count, over ROUNDS windows of PROBES probes each. Then `strace -c -f`
is attached to each prober in turn for STRACE_PROBES probes to count system calls per probe
(strace slows the prober, so CPU is not read while it is attached).

Needs gcc, strace and unshare (util-linux), and root (a PID namespace). Usage:
    probe_overhead.py [LABEL=]KEEPWELL... [--probes N] [--rounds R] [--interval-ms MS]
                      [--strace-probes N] [--results FILE] [--label TEXT]
Every process it starts is killed by its pid at the end; every wait has a deadline.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")

started = []


def log(msg):
    print(f"[probe_overhead] {msg}", file=sys.stderr, flush=True)


def popen(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"probe_overhead: timed out after {seconds} s waiting for {what}")


def served(port):
    """The probes the server on PORT has answered (its /count request not included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /count HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b"\r\n\r\n", 1)[1])


def cpu(pid):
    """(utime+stime seconds of the whole process from /proc/PID/stat, run-time seconds summed
    over its threads' schedstat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    run_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return ticks / CLK_TCK, run_ns / 1e9


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def ns_init_pid(unshare):
    """The host pid of the namespace's PID 1: the only child of `unshare --fork`."""
    def child():
        try:
            with open(f"/proc/{unshare.pid}/task/{unshare.pid}/children") as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except FileNotFoundError:
            return None
    return wait_for(child, 10, "keepwell to start in its namespace")


def measure(arms, probes):
    """One window: CPU and probes of every arm, each read when that arm has made PROBES more."""
    start = {}
    for name, arm in arms.items():
        start[name] = (served(arm["port"]), cpu(arm["pid"]), time.monotonic())
    result = {}
    deadline = time.monotonic() + probes * arms_interval(arms) * 3 + 60
    while len(result) < len(arms):
        if time.monotonic() > deadline:
            raise SystemExit(f"probe_overhead: the probers fell behind: {start} {result}")
        for name, arm in arms.items():
            if name in result:
                continue
            n = served(arm["port"])
            if n - start[name][0] >= probes:
                (n0, (t0, r0), w0), (t1, r1) = start[name], cpu(arm["pid"])
                done = n - n0
                result[name] = {"probes": done, "seconds": time.monotonic() - w0,
                                "us_stat": (t1 - t0) / done * 1e6,
                                "us_sched": (r1 - r0) / done * 1e6}
        time.sleep(0.05)
    return result


def arms_interval(arms):
    return max(arm["interval_s"] for arm in arms.values())


def syscalls(arm, probes, tmp):
    """`strace -c -f` attached to the prober for about PROBES probes: calls per probe by
    syscall. Each probe makes exactly one connect(), so the trace counts its own probes."""
    out = os.path.join(tmp, f"strace-{arm['pid']}.txt")
    tracer = popen(["strace", "-c", "-f", "-o", out, "-p", str(arm["pid"])],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n0 = served(arm["port"])
    wait_for(lambda: served(arm["port"]) - n0 >= probes, probes * arm["interval_s"] * 5 + 30,
             f"{probes} probes under strace")
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    traced = calls.get("connect", 0)
    if traced == 0:
        raise SystemExit(f"probe_overhead: strace saw no probe of pid {arm['pid']} ({out})")
    return {"probes": traced,
            "per_probe": {k: v / traced for k, v in sorted(calls.items())},
            "total_per_probe": sum(calls.values()) / traced}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("keepwell", nargs="+", help="[LABEL=]PATH of a keepwell binary")
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--strace-probes", type=int, default=200)
    ap.add_argument("--results", default=None)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    binaries = {}
    for given in args.keepwell:
        label, _, path = given.rpartition("=")
        path = os.path.abspath(path)
        label = label or os.path.basename(path)
        if label in binaries or label == "c_loop":
            raise SystemExit(f"probe_overhead: the label {label!r} is given twice (or is "
                             "c_loop); name each binary LABEL=PATH")
        if not os.access(path, os.X_OK):
            raise SystemExit(f"probe_overhead: {path} is not an executable keepwell")
        binaries[label] = path
    tmp = tempfile.mkdtemp(prefix="keepwell-probe-bench.")
    load_before = os.getloadavg()

    for tool in ("gcc", "strace", "unshare"):
        if not shutil.which(tool):
            raise SystemExit(f"probe_overhead: {tool} is missing (apt-get install gcc strace "
                             "util-linux)")
    for name in ("probe_loop", "probe_server"):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", os.path.join(tmp, name),
                        os.path.join(HERE, f"{name}.c")], check=True)

    interval = args.interval_ms
    names = list(binaries) + ["c_loop"]
    ports = {name: free_port() for name in names}
    for port in ports.values():
        popen([os.path.join(tmp, "probe_server"), str(port)])
    for port in ports.values():
        wait_for(lambda p=port: try_served(p), 10, f"the app on port {port}")

    arms = {}
    for label, path in binaries.items():
        errlog = open(os.path.join(tmp, f"keepwell-{label}.log"), "w")
        unshare = popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", path,
                         "--health-url", f"http://127.0.0.1:{ports[label]}/health",
                         "--health-interval", f"{interval}ms",
                         "--health-start-interval", f"{interval}ms", "--", "sleep", "100000"],
                        stdout=errlog, stderr=errlog)
        pid = ns_init_pid(unshare)
        KEEPWELL_PIDS.append(pid)
        arms[label] = {"pid": pid, "port": ports[label], "interval_s": interval / 1000,
                       "binary": path}
    loop = popen([os.path.join(tmp, "probe_loop"), str(ports["c_loop"]), "/health",
                  str(interval)])
    arms["c_loop"] = {"pid": loop.pid, "port": ports["c_loop"], "interval_s": interval / 1000}
    for name, arm in arms.items():
        wait_for(lambda a=arm: served(a["port"]) >= 30, 60, f"{name}'s warm-up probes")

    rounds = []
    for i in range(args.rounds):
        r = measure(arms, args.probes)
        for label in binaries:
            r[label]["ratio_stat"] = r[label]["us_stat"] / r["c_loop"]["us_stat"]
            r[label]["ratio_sched"] = r[label]["us_sched"] / r["c_loop"]["us_sched"]
        rounds.append(r)
        log(f"round {i + 1}: " + "; ".join(
            f"{name} {r[name]['us_stat']:.0f} / {r[name]['us_sched']:.0f} µs"
            + (f" ({r[name]['ratio_sched']:.2f}×)" if name != "c_loop" else "")
            for name in names) + " (stat / schedstat)")
    memory = {label: status_kib(arms[label]["pid"]) for label in binaries}
    kw_threads = {label: threads(arms[label]["pid"]) for label in binaries}
    traces = {name: syscalls(arm, args.strace_probes, tmp) for name, arm in arms.items()}
    load_after = os.getloadavg()

    def med(arm, key):
        return statistics.median(r[arm][key] for r in rounds)

    lines = []
    emit = lines.append
    emit(f"### Probe overhead{': ' + args.label if args.label else ''}")
    emit("")
    emit(f"`python3 tests/bench/probe_overhead.py {' '.join(args.keepwell)} --probes "
         f"{args.probes} --rounds {args.rounds} --interval-ms {interval} --strace-probes "
         f"{args.strace_probes}`; load average {load_before[0]:.2f} before, "
         f"{load_after[0]:.2f} after; {os.cpu_count()} CPUs.")
    emit("")
    emit("| prober | binary | threads | CPU/probe, stat | CPU/probe, schedstat | "
         "× C loop (schedstat) | syscalls/probe | VmRSS / VmHWM |")
    emit("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        trace = traces[name]
        if name == "c_loop":
            emit(f"| C loop | | 1 | {med(name, 'us_stat'):.0f} µs | "
                 f"{med(name, 'us_sched'):.0f} µs | 1.00× | {trace['total_per_probe']:.2f} | |")
        else:
            emit(f"| keepwell {name} | {os.path.getsize(binaries[name]):,} B | "
                 f"{kw_threads[name]} | {med(name, 'us_stat'):.0f} µs | "
                 f"{med(name, 'us_sched'):.0f} µs | **{med(name, 'ratio_sched'):.2f}×** | "
                 f"{trace['total_per_probe']:.2f} | {memory[name]['VmRSS']} / "
                 f"{memory[name]['VmHWM']} KiB |")
    emit("")
    emit(f"Medians of {args.rounds} rounds; per round (CPU µs per probe, schedstat; probes):")
    emit("")
    emit("| round | " + " | ".join(names) + " |")
    emit("| --- |" + " --- |" * len(names))
    for i, r in enumerate(rounds, 1):
        emit(f"| {i} | " + " | ".join(
            f"{r[name]['us_sched']:.0f} µs ({r[name]['probes']})" for name in names) + " |")
    emit("")
    emit("System calls per probe (`strace -c -f -p PID`, over "
         + ", ".join(f"{traces[n]['probes']} probes of {n}" for n in names) + "):")
    emit("")
    calls = sorted(set().union(*(traces[n]["per_probe"] for n in names)))
    emit("| syscall | " + " | ".join(names) + " |")
    emit("| --- |" + " --- |" * len(names))
    for c in calls:
        emit(f"| {c} | " + " | ".join(f"{traces[n]['per_probe'].get(c, 0):.2f}"
                                     for n in names) + " |")
    emit("| **total** | " + " | ".join(f"**{traces[n]['total_per_probe']:.2f}**"
                                      for n in names) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write(text + "\n")
    with open(os.path.join(tmp, "raw.json"), "w") as f:
        json.dump({"rounds": rounds, "strace": traces, "load": [load_before, load_after]}, f)
    log(f"raw numbers in {tmp}/raw.json")


def try_served(port):
    try:
        served(port)
        return True
    except OSError:
        return False


def status_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def stop_all():
    """Kill what this script started. Each keepwell first, by its own pid: it is PID 1 of its
    namespace, which the death of `unshare` does not end."""
    for pid in KEEPWELL_PIDS:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in reversed(started):
        if p.poll() is None:
            p.kill()
            p.wait()


KEEPWELL_PIDS = []

if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
