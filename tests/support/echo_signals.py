"""A child that writes the name of every signal it receives, one per line, to argv[1].

It handles every catchable standard signal (1-31 but KILL, STOP, CHLD), announces "ready"
once its handlers are in place, and with EXIT_ON=TERM (a comma list) exits 0 after writing
that signal's name, like a graceful server would.
"""
import os
import signal
import sys

out = open(sys.argv[1], "a", buffering=1)
exit_on = {name for name in os.environ.get("EXIT_ON", "").split(",") if name}


def handler(signum, _frame):
    name = signal.Signals(signum).name.removeprefix("SIG")
    out.write(name + "\n")
    if name in exit_on:
        sys.exit(0)


for number in range(1, 32):
    if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    try:
        signal.signal(number, handler)
    except (OSError, ValueError):
        pass
out.write(f"ready {os.getpid()}\n")
while True:
    signal.pause()
