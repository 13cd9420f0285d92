"""Signal handling for the tests' Python helpers that cannot lose a signal nor crash on one.

Every helper that reacts to signals uses this module instead of signal handlers, because a
handler has two failure modes under load that flaked the suite:

- A handler runs between two bytecodes of whatever the main code does. If that is a write
  through a buffered file (print, file.write), the handler's own write raises
  `RuntimeError: reentrant call inside BufferedWriter` and the helper dies.
- A signal that lands after the main code checked for it but before it sleeps
  (signal.pause(), time.sleep()) is handled only when the sleep ends, often after the test's
  deadline.

Here the signals are blocked before the helper announces that it is ready, so every signal sent
after "ready" waits in the kernel's queue; the main loop takes them one at a time with
sigwaitinfo (lowest number first, as the kernel dequeues them) and writes with os.write, which
has no buffer to re-enter. A process started by a helper inherits the mask: helpers here start
none.
"""

import os
import signal

#: Signals no process can block or wait for, and SIGCHLD, which a helper never cares about.
UNWAITABLE = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def catchable():
    """Every signal this process can block and wait for: 1-31 but KILL, STOP and CHLD, and the
    real-time ones the C library leaves to programs (glibc keeps 32 and 33 for itself)."""
    return set(signal.valid_signals()) - UNWAITABLE


def block(signals):
    """Block `signals` (ints or Signals) in this thread and every thread it starts later; set
    their disposition to the default first, so that no handler inherited or installed by
    Python (SIGINT's KeyboardInterrupt) is ever run. Returns the set, for `wait`."""
    wanted = set(signals)
    for number in wanted:
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    return wanted


def wait(signals):
    """The number of the next of the blocked `signals` to arrive (sigwaitinfo retries EINTR)."""
    return signal.sigwaitinfo(signals).si_signo


def name(number):
    """USR1 for SIGUSR1; a real-time signal by its number, e.g. 40."""
    if number < 32:
        return signal.Signals(number).name.removeprefix("SIG")
    return str(number)


def number(text):
    """The signal named USR1, SIGUSR1 or 10."""
    if text.isdigit():
        return int(text)
    return int(signal.Signals["SIG" + text.removeprefix("SIG")])


def say(fd, text):
    """Write all of `text` to the file descriptor, with no Python buffer in between."""
    data = text.encode()
    while data:
        data = data[os.write(fd, data):]


def open_out(path):
    """An append-only descriptor for `path`; "-" is stdout."""
    if path == "-":
        return 1
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
