#!/usr/bin/env python3
"""The cost of a health check by kind, side by side in one run (issue 10, "Measure").

1. One check as a process of its own, as Docker's HEALTHCHECK or a Kubernetes exec probe
   runs it: `keepwell check file:`, `keepwell check -- true`, `keepwell check grpc://`, a
   grpc-health-probe-style Python grpcio client, `celery inspect ping`. CPU (user+sys) per
   call from wait4(2) (calls.py), peak RSS from `/usr/bin/time -f %M`, wall time.
2. One probe inside the supervisor, every 50 ms for a while: file:, --health-cmd true,
   grpc://. keepwell's own CPU per probe (schedstat, ns resolution), the command checks' CPU
   (what keepwell reaped: cutime+cstime), keepwell's peak RSS (VmHWM).
3. The binary: the static musl release with and without the grpc feature.

Run through tests/bench/health_kinds.sh, which builds both binaries and the venv. Everything
is on loopback; every process started here is killed by its pid at the end.

Usage: health_kinds.py KEEPWELL KEEPWELL_WITHOUT_GRPC VENV RESULTS_FILE [--quick]
"""
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEEPWELL, KEEPWELL_NO_GRPC, VENV, RESULTS = (os.path.abspath(a) for a in sys.argv[1:5])
QUICK = "--quick" in sys.argv[5:]
VPY = os.path.join(VENV, "bin", "python")
CELERY = os.path.join(VENV, "bin", "celery")
EXAMPLE = os.path.join(ROOT, "examples", "celery-worker")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp(prefix="keepwell-bench-kinds.")
started = []
out = []


def emit(line=""):
    print(line, flush=True)
    out.append(line)


def log(msg):
    print(f"[health_kinds] {msg}", file=sys.stderr, flush=True)


def popen(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


def stop(p):
    """End P: keepwell gets TERM (it stops its child itself), then SIGKILL; a process that
    leads its own group (the Celery worker and its pool) is killed by group."""
    if p.poll() is None:
        try:
            if os.getpgid(p.pid) == p.pid and p.args[0] != KEEPWELL:
                os.killpg(p.pid, signal.SIGKILL)
            elif p.args[0] == KEEPWELL:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
            else:
                p.kill()
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"pid {p.pid} did not end after SIGKILL")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def calls(n, argv, env=None, cwd=None):
    """CPU and wall per call from wait4(2) over N sequential calls (calls.py)."""
    r = subprocess.run([sys.executable, os.path.join(HERE, "calls.py"), str(n)] + argv,
                       capture_output=True, text=True, timeout=600, check=True, env=env, cwd=cwd)
    data = json.loads(r.stdout)["calls"]
    cpu = [c["utime"] + c["stime"] for c in data]
    return {"n": len(data), "cpu_mean": statistics.mean(cpu), "cpu_median": statistics.median(cpu),
            "wall_median": statistics.median(c["wall"] for c in data),
            "exits": sorted({c["exit"] for c in data})}


def peak_rss(argv, n, env=None, cwd=None):
    """Peak RSS (KiB) from `/usr/bin/time -f %M` over N runs: median and max."""
    mem = []
    for _ in range(n):
        r = subprocess.run(["/usr/bin/time", "-f", "TIME %M"] + argv, capture_output=True,
                           text=True, timeout=60, env=env, cwd=cwd)
        mem.append(int([x for x in r.stderr.splitlines() if x.startswith("TIME ")][-1].split()[1]))
    return statistics.median(mem), max(mem)


def us(s):
    return f"{s * 1e6:.0f} µs" if s < 0.01 else f"{s * 1e3:.1f} ms"


def table(header, rows):
    emit("| " + " | ".join(header) + " |")
    emit("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        emit("| " + " | ".join(str(c) for c in row) + " |")
    emit()


# ------------------------------------------------------------------------- the services


def start_grpc():
    p = popen([VPY, os.path.join(ROOT, "tests", "support", "grpc_health_server.py")],
              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 30)
    if not ready:
        raise RuntimeError("the grpcio server did not start")
    return p, int(p.stdout.readline().split()[1])


def start_redis():
    port = free_port()
    p = popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no"], stdout=subprocess.DEVNULL)

    def pong():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(7) == b"+PONG\r\n"
        except OSError:
            return False

    wait_for(pong, 20, "redis-server")
    return p, port


def start_celery(redis_port, env):
    p = popen([CELERY, "--workdir", EXAMPLE, "-A", "worker", "worker", "--loglevel", "WARNING",
               "--concurrency", "2", "--hostname", "bench@%h"],
              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
              start_new_session=True)
    return p


# ------------------------------------------------------------------------- 1. per call


def area_calls(grpc_port, redis_port):
    n = 30 if QUICK else 200
    n_py = max(5, n // 10)
    n_celery = 5 if QUICK else 20
    heartbeat = os.path.join(TMP, "heartbeat")
    open(heartbeat, "w").close()
    pyclient = ("import sys, grpc\n"
                "from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
                f"channel = grpc.insecure_channel('127.0.0.1:{grpc_port}')\n"
                "stub = health_pb2_grpc.HealthStub(channel)\n"
                "reply = stub.Check(health_pb2.HealthCheckRequest(service=''), timeout=2)\n"
                "sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)\n")
    celery_env = dict(os.environ, CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0")
    node = f"bench@{socket.gethostname()}"
    peers = [
        ("keepwell check file:HB --max-age 30s", [KEEPWELL, "check", f"file:{heartbeat}",
                                                  "--max-age", "30s"], n, None),
        ("keepwell check -- true", [KEEPWELL, "check", "--", "true"], n, None),
        ("keepwell check grpc://", [KEEPWELL, "check", f"grpc://127.0.0.1:{grpc_port}"], n, None),
        ("python grpcio Health/Check client", [VPY, "-c", pyclient], n_py, None),
        ("celery inspect ping -d NODE", [CELERY, "--workdir", EXAMPLE, "-A", "worker", "inspect",
                                         "ping", "-d", node], n_celery, celery_env),
    ]
    rows, res = [], {}
    for name, argv, count, env in peers:
        log(f"calls: {name} × {count}")
        c = calls(count, argv, env=env)
        med, top = peak_rss(argv, min(count, 10), env=env)
        res[name] = dict(c, rss_median=med, rss_max=top)
        rows.append([f"`{name}`", count, us(c["cpu_mean"]), us(c["cpu_median"]),
                     us(c["wall_median"]), f"{med:.0f} KiB (max {top})",
                     ",".join(map(str, c["exits"]))])
    emit("### 1. One check as a process of its own (HEALTHCHECK, exec probe)")
    emit()
    emit("CPU (user+sys) per call from wait4(2) over sequential calls; peak RSS from "
         "`/usr/bin/time -f %M` over 10 runs; the gRPC server is grpcio with "
         "grpcio-health-checking, the Celery worker is examples/celery-worker with Redis.")
    emit()
    table(["check", "calls", "CPU/call mean", "CPU/call median", "wall median", "peak RSS",
           "exit"], rows)
    return res


# ------------------------------------------------------------------------- 2. supervisor


def proc_cpu(pid):
    """keepwell's own on-CPU seconds (schedstat, ns) and its reaped children's (cutime+cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK  # fields 16, 17
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return ns / 1e9, children


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def probes_done(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        s = json.loads(r.read())
    return s["probes_ok"] + s["probes_failed"], s["probes_failed"]


def area_supervisor(grpc_port):
    seconds = 5 if QUICK else 20
    heartbeat = os.path.join(TMP, "heartbeat-sup")
    kinds = [
        ("file:", ["--health-url", f"file:{heartbeat}", "--health-max-age", "30s"]),
        ("--health-cmd true", ["--health-cmd", "true"]),
        ("grpc://", ["--health-url", f"grpc://127.0.0.1:{grpc_port}"]),
    ]
    rows, res = [], {}
    for name, flags in kinds:
        listen = free_port()
        script = f"touch {heartbeat}; exec sleep 600"
        p = popen([KEEPWELL, "--listen", f"127.0.0.1:{listen}", "--health-interval", "50ms",
                   "--health-start-interval", "50ms", "--log-level", "warn"] + flags +
                  ["--", "sh", "-c", script], stderr=subprocess.DEVNULL, start_new_session=True)

        def ready():
            try:
                return probes_done(listen)[0] >= 5
            except OSError:
                return False

        wait_for(ready, 20, f"keepwell probing {name}")
        n0, _ = probes_done(listen)
        own0, kids0 = proc_cpu(p.pid)
        time.sleep(seconds)
        n1, failed = probes_done(listen)
        own1, kids1 = proc_cpu(p.pid)
        peak = hwm(p.pid)
        stop(p)
        probes = n1 - n0
        r = {"probes": probes, "failed": failed, "own_s": own1 - own0, "children_s": kids1 - kids0,
             "vmhwm_kib": peak}
        res[name] = r
        rows.append([f"`{name}`", probes, failed, us(r["own_s"] / probes),
                     us(r["children_s"] / probes) if name.startswith("--health-cmd") else "—",
                     f"{peak} KiB"])
    emit("### 2. One probe inside the supervisor (every 50 ms)")
    emit()
    emit(f"keepwell supervising `sleep`, probing every 50 ms for {seconds} s after the first "
         "five probes; its own on-CPU time per probe from /proc/PID/task/*/schedstat, the "
         "command checks' CPU from the children keepwell reaped (cutime+cstime, 10 ms ticks), "
         "keepwell's peak RSS (VmHWM).")
    emit()
    table(["probe", "probes", "failed", "keepwell CPU/probe", "check process CPU/probe",
           "keepwell VmHWM"], rows)
    return res


# ------------------------------------------------------------------------- 3. the binary


def memory_while_probing(binary):
    """VmRSS, RssAnon, RssFile (KiB) of BINARY supervising `sleep` with a file: probe every
    100 ms, after 3 s: what the gRPC code costs a keepwell that does not use it."""
    heartbeat = os.path.join(TMP, "heartbeat-size")
    p = popen([binary, "--health-url", f"file:{heartbeat}", "--health-interval", "100ms",
               "--health-start-interval", "100ms", "--log-level", "warn", "--", "sh", "-c",
               f"touch {heartbeat}; exec sleep 600"], stderr=subprocess.DEVNULL,
              start_new_session=True)
    time.sleep(3)
    vals = {}
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                vals[key] = int(rest.split()[0])
    stop(p)
    return vals


def area_size():
    with_grpc, without = os.path.getsize(KEEPWELL), os.path.getsize(KEEPWELL_NO_GRPC)
    mem_with, mem_without = memory_while_probing(KEEPWELL), memory_while_probing(KEEPWELL_NO_GRPC)
    emit("### 3. The binary with and without gRPC")
    emit()
    emit("Memory: each binary supervising `sleep` with a `file:` probe every 100 ms, read "
         "after 3 s (RssFile is the binary's own pages, shared and reclaimable).")
    emit()

    def mem(m):
        return f"{m['VmRSS']} / {m['RssAnon']} / {m['RssFile']} KiB"

    table(["build", "bytes", "VmRSS / RssAnon / RssFile"], [
        ["`cargo build --release --target x86_64-unknown-linux-musl` (default: grpc)",
         f"{with_grpc:,}", mem(mem_with)],
        ["the same with `--no-default-features` (no grpc://)", f"{without:,}", mem(mem_without)],
        ["gRPC's share", f"{with_grpc - without:,} ({(with_grpc - without) / without:.1%})",
         f"{mem_with['VmRSS'] - mem_without['VmRSS']} / "
         f"{mem_with['RssAnon'] - mem_without['RssAnon']} / "
         f"{mem_with['RssFile'] - mem_without['RssFile']} KiB"],
    ])
    return {"with_grpc": with_grpc, "without_grpc": without, "memory_with": mem_with,
            "memory_without": mem_without}


def main():
    emit("## Health checks by kind")
    emit()
    emit(f"Generated by `tests/bench/health_kinds.sh` on {time.strftime('%Y-%m-%d')}: "
         f"{os.cpu_count()} CPUs, {platform.platform()}; load average at start "
         f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    emit()
    raw = {}
    grpc, grpc_port = start_grpc()
    redis, redis_port = start_redis()
    celery = start_celery(redis_port, dict(os.environ, CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
                                           HEARTBEAT_FILE=os.path.join(TMP, "celery-heartbeat")))
    try:
        wait_for(lambda: os.path.exists(os.path.join(TMP, "celery-heartbeat")), 60,
                 "the Celery worker's first heartbeat")
        raw["calls"] = area_calls(grpc_port, redis_port)
        raw["supervisor"] = area_supervisor(grpc_port)
        raw["size"] = area_size()
    finally:
        for p in started:
            stop(p)
    emit("<details><summary>raw numbers</summary>")
    emit()
    emit("```json")
    emit(json.dumps(raw, indent=1))
    emit("```")
    emit("</details>")
    with open(RESULTS, "w") as f:
        f.write("\n".join(out) + "\n")
    log(f"wrote {RESULTS}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in started:
            if p.poll() is None:
                stop(p)
