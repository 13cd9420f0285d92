#!/usr/bin/env python3
"""Signal-latency child: blocks SIGUSR1, takes each one with sigwaitinfo and writes the
CLOCK_MONOTONIC time (ns) it got it to the FIFO. Usage: sigchild.py FIFO COUNT."""
import os
import signal
import sys
import time

fifo, count = sys.argv[1], int(sys.argv[2])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
out = os.open(fifo, os.O_WRONLY)
os.write(out, b"ready\n")
for _ in range(count):
    signal.sigwaitinfo({signal.SIGUSR1})
    os.write(out, b"%d\n" % time.clock_gettime_ns(time.CLOCK_MONOTONIC))
os.close(out)
