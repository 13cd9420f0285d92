#!/usr/bin/env python3
"""keepwell benchmarks: supervision against Debian's tini, dumb-init and catatonit, keepwell's
own cost while probing, `keepwell check` against curl, and the unhealthy-to-restart gap.

Run through tests/bench/run.sh, which installs the peers and builds the static binary. Every
loop is bounded, everything is on loopback, and every process started here is killed by its
pid before the script ends. Output: one markdown table per area plus the raw numbers, on
stdout and in the results file.

Usage: bench.py KEEPWELL_BINARY RESULTS_FILE [--quick]
"""
import datetime
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
NS = ["unshare", "--pid", "--fork", "--mount-proc"]

KEEPWELL = os.path.abspath(sys.argv[1])
RESULTS = sys.argv[2]
QUICK = "--quick" in sys.argv[3:]
TMP = tempfile.mkdtemp(prefix="keepwell-bench.")

# name → argv prefix that runs a COMMAND under that init
INITS = {
    "keepwell": [KEEPWELL, "--"],
    "tini": ["tini", "-s", "--"],
    "tini-static": ["tini-static", "-s", "--"],
    "dumb-init": ["dumb-init", "--"],
    "catatonit": ["catatonit", "--"],
}
TARGETS = {}  # filled as areas run: human-readable verdicts for the summary

started = []  # every Popen we start, for cleanup
raw = {}  # everything measured, dumped as JSON at the end
out_lines = []


def emit(line=""):
    print(line, flush=True)
    out_lines.append(line)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def popen(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


def ns_init_pid(unshare, timeout=5.0):
    """The host pid of the namespace's PID 1: the only child of `unshare --fork`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{unshare.pid}/task/{unshare.pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except FileNotFoundError:
            pass
        if unshare.poll() is not None:
            raise RuntimeError(f"unshare exited early with {unshare.returncode}")
        time.sleep(0.01)
    raise RuntimeError("no init appeared in the namespace")


def stop(p, init_pid=None):
    """Kill a started process by its pid. SIGKILL to a namespace's PID 1 ends the namespace."""
    for pid in (init_pid, p.pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"pid {p.pid} did not end after SIGKILL")


def cleanup():
    for p in started:
        if p.poll() is None:
            stop(p)
    shutil.rmtree(TMP, ignore_errors=True)


def status_kib(pid):
    """VmRSS, VmHWM, RssAnon, RssFile (KiB, as /proc/PID/status prints them) and Threads."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                vals[key] = int(rest.split()[0])  # "1234 kB"
            elif key == "Threads":
                vals[key] = int(rest)
    return vals


def cpu_of(pid):
    """(utime+stime in seconds from /proc/PID/stat, on-CPU seconds summed over live threads
    from /proc/PID/task/*/schedstat, which has ns resolution, utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14, 15
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return utime + stime, ns / 1e9, utime, stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    p = popen([PY, os.path.join(HERE, "server.py"), "0"], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 10)
    if not ready:
        raise RuntimeError("benchmark server did not start")
    port = int(p.stdout.readline().split()[1])
    return p, port


def server_count(port, what=0):
    """/health requests (what=0) or accepted connections (what=1) the server has seen."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        return int(r.read().split()[what])


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def hyperfine(commands, runs, warmup=10, names=None, rounds=3, prefix=()):
    """Mean, sd and median (seconds) per command from hyperfine -N (no shell). The runs are
    split into ROUNDS passes over all commands, so slow drift in the machine's load (other
    jobs share it) falls on every command alike; the times of all passes are pooled."""
    path = os.path.join(TMP, "hyperfine.json")
    times = [[] for _ in commands]
    for _ in range(rounds):
        argv = list(prefix) + ["hyperfine", "-N", "--style", "none", "-w", str(warmup),
                               "-r", str(max(2, runs // rounds)), "--export-json", path]
        for i, c in enumerate(commands):
            if names:
                argv += ["-n", names[i]]
            argv.append(c)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=240)
        with open(path) as f:
            for i, r in enumerate(json.load(f)["results"]):
                times[i] += r["times"]
    return [{"command": c, "mean": statistics.mean(t), "stddev": statistics.stdev(t),
             "median": statistics.median(t), "min": min(t), "max": max(t), "runs": len(t)}
            for c, t in zip(commands, times)]


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def ms(s):
    return f"{s * 1000:.2f} ms"


def us(s):
    return f"{s * 1e6:.0f} µs"


def mean_sd(r):
    return f"{r['mean'] * 1000:.3f} ± {r['stddev'] * 1000:.3f} ms"


def mean_sd_med(r):
    return f"{mean_sd(r)} (median {r['median'] * 1000:.3f})"


def verdict(ok):
    return "✅ met" if ok else "❌ missed"


def table(header, rows):
    emit("| " + " | ".join(header) + " |")
    emit("| " + " | ".join("---" for _ in header) + " |")
    for r in rows:
        emit("| " + " | ".join(str(c) for c in r) + " |")
    emit()


# ---------------------------------------------------------------- area 1: supervision


def area_supervision():
    emit("## 1. Supervision: keepwell against tini, dumb-init, catatonit")
    emit()
    sizes = {}
    for name, prefix in INITS.items():
        path = shutil.which(prefix[0]) or prefix[0]
        ftype = subprocess.run(["file", "-bL", path], capture_output=True, text=True).stdout
        sizes[name] = {"path": path, "bytes": os.path.getsize(path),
                       "static": "statically linked" in ftype, "file": ftype.strip()}
    raw["size"] = sizes

    # RSS as PID 1 of a fresh PID namespace, supervising `sleep`.
    rss = {}
    for name, prefix in INITS.items():
        p = popen(NS + prefix + ["sleep", "300"])
        pid = ns_init_pid(p)
        time.sleep(0.7)
        with open(f"/proc/{pid}/stat") as f:
            comm = f.read().split("(")[1].split(")")[0]
        rss[name] = dict(status_kib(pid), comm=comm)
        stop(p, pid)
    raw["rss_pid1"] = rss
    log("area 1: sizes and RSS done")

    # Start overhead: X -- /bin/true, plain (keepwell as subreaper, tini -s) and as PID 1.
    runs = 60 if QUICK else 300
    names = ["/bin/true"] + list(INITS)
    plain = hyperfine(["/bin/true"] + [" ".join(INITS[n] + ["/bin/true"]) for n in INITS],
                      runs, names=names)
    ns_base = ["unshare", "--pid", "--fork"]
    pid1 = hyperfine([" ".join(ns_base + ["/bin/true"])] +
                     [" ".join(ns_base + INITS[n] + ["/bin/true"]) for n in INITS],
                     runs, names=names)
    start = {n: {"plain": plain[i], "pid1": pid1[i]} for i, n in enumerate(names)}
    raw["start"] = start
    log("area 1: start overhead done")

    # Signal latency: SIGUSR1 to the init (PID 1 of a namespace) until the child has it. All
    # inits run at once and take their signals in turn (shuffled each round), so the load of
    # the machine at any moment falls on every init alike.
    count = 100 if QUICK else 500
    subjects = {}
    sig_inits = dict(INITS)
    # keepwell logs "forwarded SIGUSR1 to child N" (level info) for every signal; this row
    # shows what that line costs.
    sig_inits["keepwell --log-level warn"] = [KEEPWELL, "--log-level", "warn", "--"]
    for i, (name, prefix) in enumerate(sig_inits.items()):
        fifo = os.path.join(TMP, f"sig-{i}")
        os.mkfifo(fifo)
        rd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never blocks, never EOF
        errlog = open(os.path.join(TMP, f"sig-{i}.log"), "w")
        p = popen(NS + prefix + [PY, os.path.join(HERE, "sigchild.py"), fifo, str(count)],
                  stderr=errlog)
        subjects[name] = {"p": p, "pid": ns_init_pid(p), "rd": rd, "buf": b"", "lat": [],
                          "lost": 0, "log": errlog}

    def line(sub, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\n" not in sub["buf"]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sub["rd"]], [], [], left)[0]:
                return None
            sub["buf"] += os.read(sub["rd"], 4096)
        first, sub["buf"] = sub["buf"].split(b"\n", 1)
        return first

    for name, sub in subjects.items():
        if line(sub, 10) != b"ready":
            raise RuntimeError(f"{name}: signal child did not start")
    order = list(subjects)
    for _ in range(count):
        random.shuffle(order)
        for name in order:
            sub = subjects[name]
            if sub["lost"]:
                continue
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            os.kill(sub["pid"], signal.SIGUSR1)
            got = line(sub)
            if got is None:
                sub["lost"] += 1
                continue
            sub["lat"].append((int(got) - t0) / 1e9)
            time.sleep(0.002)
    sig = {}
    for name, sub in subjects.items():
        stop(sub["p"], sub["pid"])
        os.close(sub["rd"])
        sub["log"].close()
        lat = sub["lat"]
        sig[name] = {"n": len(lat), "lost": sub["lost"],
                     "median": statistics.median(lat) if lat else None,
                     "p90": pct(lat, 90) if lat else None,
                     "p99": pct(lat, 99) if lat else None,
                     "max": max(lat) if lat else None,
                     "mean": statistics.mean(lat) if lat else None}
    raw["signal_latency"] = sig
    log("area 1: signal latency done")

    # Reaping 2000 orphans released at once, init as PID 1.
    n_orphans = 500 if QUICK else 2000
    reap = {}
    for name, prefix in INITS.items():
        p = popen(NS + prefix + [PY, os.path.join(HERE, "orphans.py"), str(n_orphans)],
                  stdout=subprocess.PIPE, text=True)
        try:
            text, _ = p.communicate(timeout=90)
            reap[name] = json.loads(text.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, IndexError, ValueError) as e:
            reap[name] = {"error": repr(e)}
            stop(p)
    raw["reaping"] = reap
    log("area 1: reaping done")

    kw = sizes["keepwell"]["bytes"]
    table(["init", "binary bytes", "static?", "VmRSS as PID 1", "VmHWM", "RssAnon",
           "RssFile"],
          [[n, f"{sizes[n]['bytes']:,}", "static" if sizes[n]["static"] else "dynamic (+ libc)",
            f"{rss[n]['VmRSS']} KiB", f"{rss[n]['VmHWM']} KiB", f"{rss[n]['RssAnon']} KiB",
            f"{rss[n]['RssFile']} KiB"] for n in INITS])
    TARGETS["static binary ≤ 1 MiB (1,048,576 B)"] = (kw <= 1048576, f"{kw:,} B")

    base_p, base_1 = start["/bin/true"]["plain"]["mean"], start["/bin/true"]["pid1"]["mean"]
    rows = [["(none: /bin/true alone)", mean_sd_med(start["/bin/true"]["plain"]), "—",
             mean_sd_med(start["/bin/true"]["pid1"]), "—"]]
    for n in INITS:
        a, b = start[n]["plain"], start[n]["pid1"]
        rows.append([n, mean_sd_med(a), f"{a['mean'] / start['tini']['plain']['mean']:.2f}×",
                     mean_sd_med(b), f"{b['mean'] / start['tini']['pid1']['mean']:.2f}×"])
    emit(f"Start overhead, `X -- /bin/true` with hyperfine -N ({runs} runs each, in 3 "
         "interleaved passes; ratios are of means). "
         "\"plain\": a child of the shell (keepwell as subreaper, `tini -s`); "
         "\"PID 1\": `unshare --pid --fork X -- /bin/true` (the unshare is in every row, "
         "including the baseline).")
    emit()
    table(["init", "plain: mean ± sd", "vs tini", "PID 1: mean ± sd", "vs tini"], rows)
    kp, tp = start["keepwell"]["plain"]["mean"], start["tini"]["plain"]["mean"]
    k1, t1 = start["keepwell"]["pid1"]["mean"], start["tini"]["pid1"]["mean"]
    emit(f"Overhead above the baseline: plain keepwell {ms(kp - base_p)}, tini {ms(tp - base_p)}; "
         f"PID 1 keepwell {ms(k1 - base_1)}, tini {ms(t1 - base_1)}.")
    emit()
    kpm, tpm = start["keepwell"]["plain"]["median"], start["tini"]["plain"]["median"]
    k1m, t1m = start["keepwell"]["pid1"]["median"], start["tini"]["pid1"]["median"]
    TARGETS["start ≤ 1.2× tini (plain)"] = (
        kp <= 1.2 * tp, f"{kp / tp:.2f}× by mean, {kpm / tpm:.2f}× by median")
    TARGETS["start ≤ 1.2× tini (as PID 1)"] = (
        k1 <= 1.2 * t1, f"{k1 / t1:.2f}× by mean, {k1m / t1m:.2f}× by median")

    emit(f"Signal latency: SIGUSR1 sent to the init (PID 1 of its own namespace) until the "
         f"child returns from sigwaitinfo (CLOCK_MONOTONIC on both sides), {count} signals "
         "each; all inits run at once and take one signal each per round in shuffled "
         "order, 2 ms apart, so load spikes from other jobs fall on all alike.")
    emit()
    table(["init", "median", "p90", "p99", "max", "signals received"],
          [[n, us(sig[n]["median"]), us(sig[n]["p90"]), us(sig[n]["p99"]), us(sig[n]["max"]),
            f"{sig[n]['n']}/{count}"] for n in sig])
    ks, ts = sig["keepwell"], sig["tini"]
    TARGETS["signal latency no worse than tini (median, p99)"] = (
        ks["median"] <= ts["median"] * 1.1 and ks["p99"] <= ts["p99"] * 1.1 and not ks["lost"],
        f"median {us(ks['median'])} vs {us(ts['median'])}, p99 {us(ks['p99'])} vs "
        f"{us(ts['p99'])} (10% tolerance)")

    emit(f"Reaping: {n_orphans} double-forked orphans (each `cat` on a shared pipe, reparented "
         "to the init as PID 1) released at once by closing the pipe; time until every one has "
         "exited and until every one is gone from /proc (reaped). The exit itself of "
         f"{n_orphans} processes on this machine is part of both numbers.")
    emit()
    rows = []
    for n in INITS:
        r = reap[n]
        if "error" in r:
            rows.append([n, r["error"], "", "", ""])
            continue
        reaped = r["all_reaped_s"]
        rows.append([n, ms(r["all_exited_s"]) if r["all_exited_s"] is not None else "—",
                     ms(reaped) if reaped is not None else f"not all ({r['left_at_deadline']} "
                     "left)", r["zombies_at_deadline"], f"{r['spawn_s']:.2f} s"])
    table(["init", "all exited", "all reaped", "zombies left", "(time to spawn them)"], rows)
    kr = reap["keepwell"].get("all_reaped_s")
    TARGETS[f"{n_orphans} orphans reaped in < 0.5 s"] = (
        kr is not None and kr < 0.5, ms(kr) if kr is not None else "not reaped")


# ---------------------------------------------------------------- area 2: probing cost


def keepwell_ns(args, child, errlog):
    p = popen(NS + [KEEPWELL] + args + ["--"] + child, stderr=errlog)
    return p, ns_init_pid(p)


def measure_probing(port, pid, seconds):
    """CPU per probe over SECONDS, and the memory seen (max VmRSS sampled every 0.5 s)."""
    c0, t0, n0 = cpu_of(pid), time.monotonic(), server_count(port)
    rss_max = 0
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        rss_max = max(rss_max, status_kib(pid)["VmRSS"])
        time.sleep(0.5)
    c1, t1, n1 = cpu_of(pid), time.monotonic(), server_count(port)
    probes = n1 - n0
    st = status_kib(pid)
    return {"seconds": t1 - t0, "probes": probes,
            "cpu_stat_s": c1[0] - c0[0], "cpu_sched_s": c1[1] - c0[1],
            "utime_s": c1[2] - c0[2], "stime_s": c1[3] - c0[3],
            "us_per_probe_stat": (c1[0] - c0[0]) / probes * 1e6 if probes else None,
            "us_per_probe_sched": (c1[1] - c0[1]) / probes * 1e6 if probes else None,
            "rss_max_sampled": max(rss_max, st["VmRSS"]), **st}


def measure_probing_tcp(port, pid, seconds):
    """CPU per connect-only tcp:// probe; probes are the connections the server accepted
    (minus the one /count request between the two readings)."""
    c0, t0, n0 = cpu_of(pid), time.monotonic(), server_count(port, 1)
    time.sleep(seconds)
    c1, t1, n1 = cpu_of(pid), time.monotonic(), server_count(port, 1)
    probes = n1 - n0 - 1
    return {"seconds": t1 - t0, "probes": probes,
            "cpu_stat_s": c1[0] - c0[0], "cpu_sched_s": c1[1] - c0[1],
            "utime_s": c1[2] - c0[2], "stime_s": c1[3] - c0[3],
            "us_per_probe_stat": (c1[0] - c0[0]) / probes * 1e6 if probes else None,
            "us_per_probe_sched": (c1[1] - c0[1]) / probes * 1e6 if probes else None,
            **status_kib(pid)}


def flood(port, seconds):
    """Flood GET /metrics on loopback for SECONDS: wrk if present, else a Python thread pool."""
    url = f"http://127.0.0.1:{port}/metrics"
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", url], capture_output=True,
                           text=True, timeout=seconds + 30)
        reqs = None
        for line in r.stdout.splitlines():
            if "requests in" in line:
                reqs = int(line.split()[0])
        return {"tool": "wrk -t2 -c64", "requests": reqs, "output": r.stdout}
    import http.client
    stop_at = time.monotonic() + seconds
    counts = []

    def worker():
        n = 0
        while time.monotonic() < stop_at:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/metrics")
                c.getresponse().read()
                c.close()
                n += 1
            except OSError:
                pass
        counts.append(n)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tool": "python, 16 threads", "requests": sum(counts), "output": ""}


def area_probing():
    emit("## 2. keepwell's own cost while probing every 100 ms")
    emit()
    seconds = 6 if QUICK else 20
    server, port = start_server()
    probe = ["--health-url", f"http://127.0.0.1:{port}/health", "--health-interval", "100ms",
             "--health-start-interval", "100ms"]
    res = {}

    errlog = open(os.path.join(TMP, "probe.log"), "w")
    p, pid = keepwell_ns(probe, ["sleep", "300"], errlog)
    wait_for(lambda: server_count(port) > 0, 10, "the first probe")
    time.sleep(1)
    res["probing"] = measure_probing(port, pid, seconds)
    stop(p, pid)
    log("area 2: probing done")

    # The same with a connect-only tcp:// probe: what the HTTP exchange adds to the connection.
    tcp = ["--health-url", f"tcp://127.0.0.1:{port}", "--health-interval", "100ms",
           "--health-start-interval", "100ms"]
    p, pid = keepwell_ns(tcp, ["sleep", "300"], errlog)
    time.sleep(1)
    res["probing_tcp"] = measure_probing_tcp(port, pid, seconds // 2)
    stop(p, pid)

    lport = free_port()
    p, pid = keepwell_ns(probe + ["--listen", f"127.0.0.1:{lport}"], ["sleep", "300"], errlog)
    wait_for(lambda: server_count(port) > 0, 10, "the first probe")
    time.sleep(1)
    res["probing_listening"] = measure_probing(port, pid, seconds // 2)
    # Flood /metrics; meanwhile sample RSS and time /livez.
    flood_s = 4 if QUICK else 8
    n0, c0 = server_count(port), cpu_of(pid)
    box = {}
    th = threading.Thread(target=lambda: box.update(flood(lport, flood_s)))
    th.start()
    rss_max, livez = 0, []
    time.sleep(0.5)
    while th.is_alive():
        rss_max = max(rss_max, status_kib(pid)["VmRSS"])
        t = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{lport}/livez", timeout=5) as r:
                r.read()
            livez.append(time.monotonic() - t)
        except OSError as e:
            livez.append(None)
            log(f"/livez during the flood: {e}")
        time.sleep(0.25)
    th.join()
    n1, c1 = server_count(port), cpu_of(pid)
    st = status_kib(pid)
    res["flood"] = {"seconds": flood_s, "tool": box.get("tool"), "requests": box.get("requests"),
                    "probes_during": n1 - n0, "cpu_sched_s": c1[1] - c0[1],
                    "rss_max_sampled": max(rss_max, st["VmRSS"]),
                    "livez_s": livez, **st, "wrk": box.get("output")}
    stop(p, pid)
    stop(server)
    errlog.close()
    raw["probing"] = res
    log("area 2: listen and flood done")

    a, b, f = res["probing"], res["probing_listening"], res["flood"]
    emit("keepwell as PID 1 of a namespace supervising `sleep`, probing an always-200 "
         "Python http.server (separate process) with `--health-interval 100ms "
         "--health-start-interval 100ms`. Probes counted at the server; CPU from "
         "/proc/PID/task/*/schedstat (ns resolution) and, for comparison, utime+stime from "
         f"/proc/PID/stat (1/{CLK_TCK} s ticks); memory from /proc/PID/status.")
    emit()
    rows = []
    for label, r in (("http:// probing", a), ("tcp:// probing (connect only)", res["probing_tcp"]),
                     ("http:// probing + `--listen`", b)):
        rows.append([label, f"{r['seconds']:.1f} s", r["probes"],
                     f"{r['us_per_probe_sched']:.1f} µs",
                     f"{r['us_per_probe_stat']:.1f} µs",
                     f"{r['utime_s'] * 1000:.0f} / {r['stime_s'] * 1000:.0f} ms",
                     f"{r['VmRSS']} KiB", f"{r['VmHWM']} KiB", r["Threads"]])
    rows.append([f"`/metrics` flood ({f['tool']}, {f['requests']:,} requests)"
                 if f["requests"] else "`/metrics` flood", f"{f['seconds']} s",
                 f["probes_during"], "—", "—", "—", f"{f['rss_max_sampled']} KiB (max sampled)",
                 f"{f['VmHWM']} KiB", f["Threads"]])
    table(["mode", "duration", "probes", "CPU/probe (schedstat)", "CPU/probe (stat ticks)",
           "user / sys (ticks)", "VmRSS", "VmHWM", "threads"], rows)
    lz = [x for x in f["livez_s"] if x is not None]
    emit(f"During the flood: {f['requests']:,} `/metrics` answers in {f['seconds']} s "
         f"({f['requests'] / f['seconds']:,.0f}/s), keepwell CPU {f['cpu_sched_s']:.2f} s; "
         f"{f['probes_during']} probes kept coming; `/livez` answered "
         f"{len(lz)}/{len(f['livez_s'])} times, slowest {ms(max(lz)) if lz else '—'}.")
    emit()
    TARGETS["≤ 50 µs CPU per probe"] = (a["us_per_probe_sched"] <= 50,
                                        f"{a['us_per_probe_sched']:.1f} µs")
    worst = max(a["VmHWM"], b["VmHWM"])
    TARGETS["supervisor RSS ≤ 2 MiB while probing (VmHWM)"] = (
        a["VmHWM"] <= 2048, f"{a['VmHWM']} KiB")
    TARGETS["supervisor RSS ≤ 2 MiB while probing and listening (VmHWM)"] = (
        worst <= 2048, f"{b['VmHWM']} KiB")
    TARGETS["supervisor RSS ≤ 2 MiB under a /metrics flood (VmHWM)"] = (
        f["VmHWM"] <= 2048, f"{f['VmHWM']} KiB")


# ---------------------------------------------------------------- area 3: keepwell check


def calls(n, argv, nsenter_pid=None):
    """CPU per call from wait4(2) over N sequential calls (calls.py). Its ru_maxrss is not
    used: a posix_spawn (vfork) child inherits the spawner's memory high-water mark."""
    cmd = [PY, os.path.join(HERE, "calls.py"), str(n)] + argv
    if nsenter_pid:
        cmd = ["nsenter", "-t", str(nsenter_pid), "-p", "-m"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
    data = json.loads(r.stdout)["calls"]
    cpu = [c["utime"] + c["stime"] for c in data]
    return {"n": len(data), "cpu_median": statistics.median(cpu), "cpu_mean": statistics.mean(cpu),
            "cpu_p90": pct(cpu, 90),
            "utime_mean": statistics.mean(c["utime"] for c in data),
            "stime_mean": statistics.mean(c["stime"] for c in data),
            "wall_median": statistics.median(c["wall"] for c in data),
            "exits": sorted({c["exit"] for c in data})}


def gnu_time(argv, n=20, nsenter_pid=None):
    """Peak RSS (KiB) from `/usr/bin/time -f %M` over N runs: median and max. GNU time
    fork()s, and its small child's own pages set the floor of %M (the kernel keeps the
    larger of the pre-exec and post-exec high-water marks)."""
    prefix = ["nsenter", "-t", str(nsenter_pid), "-p", "-m"] if nsenter_pid else []
    mem = []
    for _ in range(n):
        r = subprocess.run(prefix + ["/usr/bin/time", "-f", "TIME %M"] + argv,
                           capture_output=True, text=True, timeout=30)
        mem.append(int([x for x in r.stderr.splitlines() if x.startswith("TIME ")][-1].split()[1]))
    return {"maxrss_median": statistics.median(mem), "maxrss_max": max(mem), "runs": n}


def area_check():
    emit("## 3. `keepwell check` against curl (and a Python one-liner)")
    emit()
    server, port = start_server()
    url = f"http://127.0.0.1:{port}/health"
    n = 60 if QUICK else 300
    pyline = ("import urllib.request,sys; "
              f"sys.exit(0 if urllib.request.urlopen('{url}', timeout=3).status == 200 else 1)")
    peers = {
        "keepwell check URL": [KEEPWELL, "check", url],
        "curl -fsS URL": ["curl", "-fsS", url],
        "python3 -c urllib": [PY, "-c", pyline],
    }
    res = {}
    for name, argv in peers.items():
        res[name] = calls(n if "python" not in name else n // 5, argv)
        res[name]["gnu_time"] = gnu_time(argv)
    hf = hyperfine([" ".join(peers["keepwell check URL"]), " ".join(peers["curl -fsS URL"])],
                   runs=n, names=["keepwell check URL", "curl -fsS URL"])
    for name in ("keepwell check URL", "curl -fsS URL"):
        hf_one = hf.pop(0)
        res[name]["hyperfine"] = hf_one
    stop(server)
    log("area 3: check URL done")

    # `keepwell check` with no target, as HEALTHCHECK runs it: inside the supervisor's PID and
    # mount namespaces, asking it over the local socket.
    errlog = open(os.path.join(TMP, "check-local.log"), "w")
    p, pid = keepwell_ns([], ["sleep", "300"], errlog)
    time.sleep(0.5)
    local = calls(n, [KEEPWELL, "check"], nsenter_pid=pid)
    local["gnu_time"] = gnu_time([KEEPWELL, "check"], nsenter_pid=pid)
    local["hyperfine"] = hyperfine([f"{KEEPWELL} check"], runs=n,
                                   prefix=["nsenter", "-t", str(pid), "-p", "-m"])[0]
    stop(p, pid)
    errlog.close()
    res["keepwell check (no target, nsenter)"] = local
    raw["check"] = res
    log("area 3: check without a target done")

    emit(f"Loopback, the same always-200 Python server; {n} sequential calls each "
         f"({n // 5} for Python): CPU (user+sys) per call from wait4(2); wall time from "
         "hyperfine -N (same number of runs, in 3 interleaved passes); peak RSS from "
         "`/usr/bin/time -f %M` over 20 runs (median, max). The last row "
         "runs inside a PID namespace whose PID 1 is keepwell, entered with nsenter as "
         "HEALTHCHECK/docker exec would (no URL: it asks the supervisor).")
    emit()
    curl_cpu = res["curl -fsS URL"]["cpu_mean"]
    rows = []
    for name, r in res.items():
        hfr = r.get("hyperfine")
        g = r["gnu_time"]
        rows.append([f"`{name}`", us(r["cpu_mean"]), us(r["cpu_median"]),
                     f"{r['cpu_mean'] / curl_cpu:.2f}×",
                     mean_sd(hfr) if hfr else f"{ms(r['wall_median'])} (median, wait4 loop)",
                     f"{g['maxrss_median']:.0f} KiB (max {g['maxrss_max']})",
                     ",".join(map(str, r["exits"]))])
    table(["command", "CPU/call mean", "CPU/call median", "CPU vs curl",
           "wall (hyperfine)", "peak RSS", "exit"], rows)
    k = res["keepwell check URL"]
    TARGETS["check ≤ 0.25× curl's CPU"] = (k["cpu_mean"] <= 0.25 * curl_cpu,
                                          f"{k['cpu_mean'] / curl_cpu:.2f}×")
    TARGETS["check ≤ 2 MiB peak RSS"] = (
        max(k["gnu_time"]["maxrss_max"], local["gnu_time"]["maxrss_max"]) <= 2048,
        f"{k['gnu_time']['maxrss_max']} KiB (URL), {local['gnu_time']['maxrss_max']} KiB "
        "(no target), max of 20 runs")


# ---------------------------------------------------------------- area 4: restart gap


def parse_ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def area_restart():
    emit("## 4. From the failure that crosses the threshold to the new child")
    emit()
    rounds = 2 if QUICK else 3
    gaps, logs = [], []
    for i in range(rounds):
        # A fresh keepwell each round, so every round measures the first restart (1 s backoff;
        # later restarts inside the window double it).
        port = free_port()
        logpath = os.path.join(TMP, f"restart-{i}.log")
        errlog = open(logpath, "w")
        args = ["--log-format", "json", "--health-url", f"http://127.0.0.1:{port}/health",
                "--health-retries", "2", "--health-interval", "200ms",
                "--health-start-interval", "100ms", "--grace", "2s"]
        p, pid = keepwell_ns(args, [PY, os.path.join(HERE, "server.py"), str(port)], errlog)

        def events():
            with open(logpath) as f:
                return [json.loads(x) for x in f if x.startswith("{")]

        def msg(e):
            return e.get("message", e.get("fields", {}).get("message", ""))

        wait_for(lambda: any("→ healthy" in msg(e) for e in events()), 15, "healthy")
        time.sleep(0.5)
        sent = time.time()
        os.kill(pid, signal.SIGUSR2)  # forwarded to the app: /health turns 500
        wait_for(lambda: sum(msg(e) == "child started" for e in events()) >= 2, 15,
                 "the restart")
        stop(p, pid)
        errlog.close()
        ev = events()
        logs.append([json.dumps(e, ensure_ascii=False) for e in ev])
        unhealthy = next(e for e in ev if "→ unhealthy" in msg(e))
        t_u = parse_ts(unhealthy["timestamp"])
        after = [e for e in ev if parse_ts(e["timestamp"]) >= t_u]
        t_s = parse_ts(next(e for e in after if msg(e) == "child started")["timestamp"])
        marks = {}
        for e in after:
            m = msg(e)
            if m.startswith("stopping the child"):
                marks.setdefault("stop_signal", parse_ts(e["timestamp"]))
            elif m.startswith("restarting in"):
                marks.setdefault("restart_scheduled", parse_ts(e["timestamp"]))
                marks.setdefault("restart_msg", m)
        gaps.append({"signal_to_unhealthy": t_u - sent, "unhealthy_to_started": t_s - t_u,
                     "unhealthy_to_stop_signal": marks.get("stop_signal", t_u) - t_u,
                     "unhealthy_to_restart_scheduled":
                         marks.get("restart_scheduled", float("nan")) - t_u,
                     "restart_scheduled_to_started":
                         t_s - marks.get("restart_scheduled", float("nan")),
                     "restart_msg": marks.get("restart_msg")})
    raw["restart_logs"] = logs
    raw["restart"] = gaps
    log("area 4: restart gap done")

    emit("keepwell `--health-retries 2 --health-interval 200ms --grace 2s "
         "--health-start-interval 100ms --log-format json` (a fresh one per round), its child "
         "a Python server whose "
         "/health turns 500 on SIGUSR2 (sent to keepwell, forwarded); times from keepwell's own "
         "log timestamps. The gap includes the first restart backoff of 1 s (SPEC: backoff "
         "starts at 1 s) and the child's exit on SIGTERM.")
    emit()
    rows = []
    for i, g in enumerate(gaps):
        rows.append([i + 1, ms(g["signal_to_unhealthy"]), ms(g["unhealthy_to_stop_signal"]),
                     ms(g["unhealthy_to_restart_scheduled"]),
                     ms(g["restart_scheduled_to_started"]), ms(g["unhealthy_to_started"])])
    table(["round", "SIGUSR2 → \"healthy → unhealthy\"", "→ stop signal",
           "→ \"restarting in …\" (child gone)", "backoff → \"child started\"",
           "**unhealthy → child started**"], rows)
    med = statistics.median(g["unhealthy_to_started"] for g in gaps)
    emit(f"Median gap: {ms(med)}, of which the backoff is "
         f"{ms(statistics.median(g['restart_scheduled_to_started'] for g in gaps))} "
         f"({gaps[0]['restart_msg']!r}).")
    emit()


# ---------------------------------------------------------------- main


def main():
    t_start = time.monotonic()
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    head = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    versions = {}
    for name, cmd in {"keepwell": [KEEPWELL, "--version"], "tini": ["tini", "--version"],
                      "dumb-init": ["dumb-init", "--version"],
                      "catatonit": ["catatonit", "--version"],
                      "curl": ["curl", "--version"], "hyperfine": ["hyperfine", "--version"]}.items():
        r = subprocess.run(cmd, capture_output=True, text=True)
        versions[name] = ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
    raw["versions"] = versions
    emit("# keepwell benchmarks")
    emit()
    emit(f"Generated by `tests/bench/run.sh` on {datetime.date.today().isoformat()}: "
         f"{os.cpu_count()} CPUs, {platform.platform()}, Debian "
         f"{open('/etc/debian_version').read().strip()}, keepwell at {head or '?'}; "
         f"load average at start {' '.join(load0)}{' (QUICK run)' if QUICK else ''}.")
    emit("Peers: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    emit()
    for area in (area_supervision, area_probing, area_check, area_restart):
        try:
            area()
        except Exception as e:  # one broken area must not hide the others
            log(f"{area.__name__} failed: {e!r}")
            emit(f"**{area.__name__} failed: {e!r}**")
            emit()
            raw[f"{area.__name__}_error"] = repr(e)
    emit("## Targets")
    emit()
    table(["target", "measured", "verdict"],
          [[k, v[1], verdict(v[0])] for k, v in TARGETS.items()])
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]
    emit(f"Whole run: {time.monotonic() - t_start:.0f} s; load average at the end "
         f"{' '.join(load1)}.")
    emit()
    emit("## Raw numbers")
    emit()
    emit("```json")
    emit(json.dumps(raw, indent=1, default=str))
    emit("```")
    with open(RESULTS, "w") as f:
        f.write("\n".join(out_lines) + "\n")
    log(f"results written to {RESULTS}")
    write_chart(os.path.join(os.path.dirname(RESULTS), "chart.svg"))


# ---------------------------------------------------------------- chart


def write_chart(path):
    """An SVG bar chart of what a HEALTHCHECK costs per call: CPU and peak RSS."""
    check = raw.get("check")
    if not check:
        return
    # keepwell against curl, the command it replaces (Python's would flatten both bars).
    names = [n for n in check if "python" not in n]
    panels = [("CPU per call (µs)", lambda r: r["cpu_mean"] * 1e6),
              ("peak RSS (KiB)", lambda r: r["gnu_time"]["maxrss_median"])]
    bar_h, gap, label_w, bar_w, panel_gap = 22, 8, 270, 360, 40
    rows_h = len(names) * (bar_h + gap)
    height = 30 + len(panels) * (rows_h + panel_gap)
    colours = {"keepwell": "#2e7d32", "curl": "#c62828", "python": "#6d4c41"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 120}" '
             f'height="{height}" font-family="sans-serif" font-size="13">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="8" y="20" font-size="15" font-weight="bold">'
             f'One Docker HEALTHCHECK call, loopback</text>']
    y = 40
    for title, value in panels:
        parts.append(f'<text x="8" y="{y}" font-weight="bold">{title}</text>')
        y += 8
        top = max(value(check[n]) for n in names) or 1
        for n in names:
            v = value(check[n])
            w = max(1, int(bar_w * v / top))
            colour = next((c for k, c in colours.items() if k in n), "#555")
            parts.append(f'<text x="8" y="{y + 16}">{n}</text>')
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" '
                         f'fill="{colour}"/>')
            parts.append(f'<text x="{label_w + w + 6}" y="{y + 16}">{v:,.0f}</text>')
            y += bar_h + gap
        y += panel_gap - gap
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    log(f"chart written to {path}")


if __name__ == "__main__":
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: sys.exit(130))
    try:
        main()
    finally:
        cleanup()
