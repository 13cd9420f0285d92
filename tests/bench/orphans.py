#!/usr/bin/env python3
"""Reaping benchmark, run as the init's child inside a fresh PID namespace.

Double-forks COUNT orphans (each ends as `cat` reading a pipe, reparented to PID 1), waits
until all of them run `cat`, then closes the pipe so they all exit at once, and times until
every one has exited (running → zombie) and until every one is gone from /proc (reaped by
PID 1). Prints one JSON line. Usage: orphans.py COUNT."""
import json
import os
import sys
import time

DEADLINE = 20.0  # seconds for each phase: bounded, never hangs the run


def state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:data.rindex(b")") + 3].decode()


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def main():
    count = int(sys.argv[1])
    release_r, release_w = os.pipe()
    report_r, report_w = os.pipe()
    devnull = os.open("/dev/null", os.O_WRONLY)
    t_spawn = time.monotonic()
    for _ in range(count):
        middle = os.fork()
        if middle == 0:
            orphan = os.fork()
            if orphan == 0:
                os.dup2(release_r, 0)
                os.dup2(devnull, 1)
                for fd in (release_r, release_w, report_r, report_w, devnull):
                    os.close(fd)
                os.execv("/bin/cat", ["cat"])
            os.write(report_w, orphan.to_bytes(4, "little"))
            os._exit(0)
        os.waitpid(middle, 0)
    os.close(report_w)
    raw = b""
    while len(raw) < 4 * count:
        chunk = os.read(report_r, 65536)
        if not chunk:
            break
        raw += chunk
    pids = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
    # Wait until every orphan runs cat (it has closed its copy of the pipe's write end).
    deadline = time.monotonic() + DEADLINE
    waiting = list(pids)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if comm(p) != "cat"]
        if waiting:
            time.sleep(0.005)
    t_spawned = time.monotonic()
    parents = {}
    for p in pids[:50]:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
            parents[int(data[data.rindex(b")") + 2:].split()[1])] = True
        except FileNotFoundError:
            pass
    time.sleep(0.2)

    t0 = time.monotonic()
    os.close(release_w)  # every cat sees EOF and exits
    running = list(pids)
    left = list(pids)
    t_exited = t_reaped = None
    while left and time.monotonic() - t0 < DEADLINE:
        states = [(p, state(p)) for p in left]
        left = [p for p, s in states if s is not None]
        running = [p for p, s in states if s not in (None, "Z")]
        now = time.monotonic()
        if not running and t_exited is None:
            t_exited = now
        if not left:
            t_reaped = now
            break
        time.sleep(0.001)
    zombies = sum(1 for p in left if state(p) == "Z")
    print(json.dumps({
        "count": count,
        "orphans_seen": len(pids),
        "not_cat_in_time": len(waiting),
        "orphan_parent_pids": sorted(parents),
        "spawn_s": t_spawned - t_spawn,
        "all_exited_s": None if t_exited is None else t_exited - t0,
        "all_reaped_s": None if t_reaped is None else t_reaped - t0,
        "left_at_deadline": len(left),
        "zombies_at_deadline": zombies,
    }), flush=True)


if __name__ == "__main__":
    main()
