"""The restart gap, side by side in one run: what clients lose while keepwell restarts the app,
with and without --socket, for gunicorn and uvicorn, after an unhealthy /health and after a
crash (SIGKILL of the server's main process under --restart always), and where the time goes.

    python3 tests/bench/restart_gap.py [--runs 2] [--baseline PATH-TO-AN-OLDER-KEEPWELL]
        [--keepwell target/release/keepwell] [--rate 300] [--connections 40]

As root (no other requirement); it builds its own venv with tests/support/sockets-requirements.txt
(gunicorn 27, uvicorn) under /tmp/keepwell-bench, and drives the load with
tests/support/loadgen.py on loopback only (bounded: --connections, --rate, a few seconds each).

Each run: keepwell starts the server and probes it until healthy; the load starts; 2 s later the
restart is caused; once keepwell logs the new server healthy the load goes on 2 s, then stops.
The phases of the gap, from keepwell's log timestamps, /proc and the load's own clock:
- detect: the unhealthy switch on → keepwell's stop signal (probe interval × retries; 0 for a
  crash, which keepwell reaps at once);
- stop: the stop signal (or the SIGKILL) → the server's main process is gone;
- group gone: → keepwell has seen its leftovers go and schedules the restart;
- backoff: → the new server is started;
- boot: → the first request answered by it.
`--baseline` runs the same scenarios without --socket against another keepwell build (e.g. the
previous release, whose first backoff was 1 s).
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(ROOT, "tests/support/sockets-requirements.txt")
LOADGEN = os.path.join(ROOT, "tests/support/loadgen.py")
VENV = "/tmp/keepwell-bench/restart-venv"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def venv():
    marker = os.path.join(VENV, ".requirements")
    pins = open(REQUIREMENTS).read()
    if os.path.exists(marker) and open(marker).read() == pins:
        return VENV
    subprocess.run(["rm", "-rf", VENV], check=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", VENV], check=True)
    subprocess.run(
        [os.path.join(VENV, "bin/pip"), "install", "-q", "-r", REQUIREMENTS], check=True
    )
    open(marker, "w").write(pins)
    return VENV


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_times(log, text):
    """Unix times of the log lines that contain text."""
    found = []
    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match and text in line:
            stamp = datetime.datetime.fromisoformat(match.group(1)).replace(
                tzinfo=datetime.timezone.utc
            )
            found.append(stamp.timestamp())
    return found


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait(what, check, limit=60.0):
    until = time.monotonic() + limit
    while time.monotonic() < until:
        value = check()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def server_command(server, port, app_dir, with_socket):
    bin_dir = os.path.join(venv(), "bin")
    if server == "gunicorn":
        return [
            os.path.join(bin_dir, "gunicorn"),
            "--bind", f"127.0.0.1:{port}",
            "--workers", "2",
            "--graceful-timeout", "3",
            "--worker-tmp-dir", "/dev/shm",
            "--no-control-socket",
            "--chdir", app_dir,
            "wsgi_app:app",
        ]
    where = ["--fd", "3"] if with_socket else ["--host", "127.0.0.1", "--port", str(port)]
    return [
        os.path.join(bin_dir, "uvicorn"),
        "--app-dir", app_dir,
        "--timeout-graceful-shutdown", "3",
        "--no-access-log",
        *where,
        "asgi_app:app",
    ]


def one_run(keepwell, server, restart, with_socket, args):
    port = free_port()
    work = tempfile.mkdtemp(prefix="keepwell-gap-")
    for app in ("wsgi_app.py", "asgi_app.py"):
        subprocess.run(["cp", os.path.join(ROOT, "tests/support", app), work], check=True)
    fail_file = os.path.join(work, "fail-health")
    log_path = os.path.join(work, "keepwell.log")
    command = [
        keepwell,
        "--health-url", f"http://127.0.0.1:{port}/health",
        "--health-interval", "500ms",
        "--health-start-interval", "100ms",
        "--health-retries", "2",
        "--grace", "8s",
        "--restart", "always",
    ]
    if with_socket:
        command += ["--socket", f"127.0.0.1:{port}"]
    command += ["--", *server_command(server, port, work, with_socket)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPWELL_")}
    env["HEALTH_FAIL_FILE"] = fail_file
    log = open(log_path, "w")
    kw = subprocess.Popen(command, stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
    read_log = lambda: open(log_path).read()
    try:
        wait("the server to be healthy", lambda: "starting → healthy" in read_log())
        first = wait("the server's main process", lambda: [p for p in children(kw.pid) if alive(p)])[0]
        load = subprocess.Popen(
            [
                "/usr/bin/python3", LOADGEN, "127.0.0.1", str(port),
                "--connections", str(args.connections),
                "--rate", str(args.rate),
                "--timeout", "15",
                "--max-seconds", "90",
                "--timeline",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        time.sleep(2.0)
        if restart == "unhealthy":
            switched_on = time.time()
            open(fail_file, "w").write("on")
            wait("keepwell's stop", lambda: "stopping the child" in read_log())
            os.unlink(fail_file)
            stopped_at = log_times(read_log(), "stopping the child")[0]
        else:
            switched_on = stopped_at = time.time()
            os.kill(first, signal.SIGKILL)
        wait("the old server to be gone", lambda: not alive(first))
        gone_at = time.time()
        wait(
            "the new server to be healthy",
            lambda: read_log().count("starting → healthy") >= 2,
        )
        time.sleep(2.0)
        load.stdin.close()
        report = json.loads(load.stdout.read())
        load.wait(timeout=30)
    finally:
        kw.send_signal(signal.SIGTERM)
        try:
            kw.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kw.kill()
            kw.wait()
        log.close()
    text = read_log()
    scheduled = log_times(text, "restarting in")[0]
    spawned = log_times(text, "child started")[1]
    ok_after = [report["start_unix"] + t for t in report["ok_ends"]]
    first_ok = min((t for t in ok_after if t >= spawned), default=None)
    failed = {k: report[k] for k in ("refused", "reset", "timeout", "non_2xx", "other")}
    subprocess.run(["rm", "-rf", work])
    return {
        "ok": report["ok"],
        "lost": sum(failed.values()),
        "failed": failed,
        "gap": report["longest_gap_s"],
        "p99": report["p99_latency_s"],
        "max_latency": report["max_latency_s"],
        "detect": stopped_at - switched_on,
        "stop": gone_at - stopped_at,
        "group_gone": scheduled - gone_at,
        "backoff": spawned - scheduled,
        "boot": (first_ok - spawned) if first_ok else float("nan"),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keepwell", default=os.path.join(ROOT, "target/release/keepwell"))
    parser.add_argument("--baseline", help="another keepwell build, run without --socket")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    venv()

    builds = [("this", args.keepwell, [True, False])]
    if args.baseline:
        builds.append(("baseline", args.baseline, [False]))
    rows = []
    for server in ("gunicorn", "uvicorn"):
        for restart in ("unhealthy", "crash"):
            for name, binary, modes in builds:
                for with_socket in modes:
                    for run in range(args.runs):
                        result = one_run(binary, server, restart, with_socket, args)
                        label = f"{name} {'--socket' if with_socket else 'no socket'}"
                        rows.append((server, restart, label, run + 1, result))
                        print(json.dumps({"server": server, "restart": restart, "build": label, **result}), file=sys.stderr)

    print(
        f"load: {args.connections} connections, {args.rate} requests/s, a new connection each\n"
    )
    print(
        "| server | restart | build | run | ok | lost (refused/reset/timeout/non-2xx) | longest gap | "
        "p99 / max latency | detect | stop | group gone | backoff | boot |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ms = lambda s: f"{s * 1000:.0f} ms"
    for server, restart, label, run, r in rows:
        f = r["failed"]
        lost = f"{r['lost']} ({f['refused']}/{f['reset']}/{f['timeout']}/{f['non_2xx']})"
        print(
            f"| {server} | {restart} | {label} | {run} | {r['ok']} | {lost} | {ms(r['gap'])} | "
            f"{ms(r['p99'])} / {ms(r['max_latency'])} | {ms(r['detect'])} | {ms(r['stop'])} | "
            f"{ms(r['group_gone'])} | {ms(r['backoff'])} | {ms(r['boot'])} |"
        )


if __name__ == "__main__":
    main()
