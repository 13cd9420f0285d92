"""A child that writes the name of every signal it receives, one per line, to argv[1].

usage: echo_signals.py OUT      (OUT "-" is stdout)

It waits for every catchable signal (1-31 but KILL, STOP and CHLD, and the real-time ones, by
number: "40"), announces "ready <pid>" once they are blocked, and then writes each signal as it
arrives. With EXIT_ON=TERM (a comma list of names or numbers) it exits 0 after writing that
signal, like a graceful server would. With IGNORE=40 (a comma list) those signals are ignored
instead: they are discarded by the kernel and never written.

Signals are blocked and taken with sigwaitinfo (tests/support/sigsafe.py), never handled: a
signal that arrives while a line is written waits its turn instead of crashing the helper.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sigsafe  # noqa: E402


def listed(variable):
    return {sigsafe.number(word) for word in os.environ.get(variable, "").split(",") if word}


out = sigsafe.open_out(sys.argv[1])
exit_on, ignored = listed("EXIT_ON"), listed("IGNORE")
for number in ignored:
    signal.signal(number, signal.SIG_IGN)
waited = sigsafe.block(sigsafe.catchable() - ignored)
sigsafe.say(out, f"ready {os.getpid()}\n")
while True:
    number = sigsafe.wait(waited)
    sigsafe.say(out, sigsafe.name(number) + "\n")
    if number in exit_on:
        sys.exit(0)
