#!/usr/bin/env python3
"""Run COMMAND COUNT times, one after another, output discarded, and print one JSON line with
each call's user and system CPU seconds, peak RSS (KiB) and wall time from wait4(2), and its
exit status. Usage: calls.py COUNT COMMAND [ARG...]."""
import json
import os
import shutil
import sys
import time

count, argv = int(sys.argv[1]), sys.argv[2:]
path = shutil.which(argv[0]) or argv[0]
devnull = os.open("/dev/null", os.O_RDWR)
actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
           (os.POSIX_SPAWN_DUP2, devnull, 2)]
calls = []
for _ in range(count):
    t0 = time.perf_counter()
    pid = os.posix_spawn(path, argv, os.environ, file_actions=actions)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    calls.append({"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
                  "wall": wall, "exit": os.waitstatus_to_exitcode(status)})
print(json.dumps({"argv": argv, "calls": calls}))
