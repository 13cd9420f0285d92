"""Record every signal this process gets, signal-safely, one name per line in argv[1].

No handler ever runs: every catchable signal is blocked and read with sigwaitinfo, and lines
are written with os.write to a file opened O_APPEND, so nothing can interrupt a write halfway.
The first line is "ready PID". EXIT_ON (a comma list of names, e.g. TERM) makes it exit 0
after recording one of them; without it the process records and goes on until SIGKILL.
SETSID=1 makes it leave its process group first (setsid), as a daemonizing worker does.
A signal that stops it (SIGSTOP) cannot be blocked; SIGCONT continues it either way.
"""
import os
import signal
import sys

if os.environ.get("SETSID") == "1":
    os.setsid()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
exit_on = {name for name in os.environ.get("EXIT_ON", "").split(",") if name}
catchable = set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
signal.pthread_sigmask(signal.SIG_BLOCK, catchable)
os.write(fd, f"ready {os.getpid()}\n".encode())
while True:
    info = signal.sigwaitinfo(catchable)
    name = signal.Signals(info.si_signo).name.removeprefix("SIG")
    os.write(fd, (name + "\n").encode())
    if name in exit_on:
        sys.exit(0)
