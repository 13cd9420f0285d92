"""The soak's child: an app that misbehaves at random, and reports what it got.

keepwell runs this as its child (tests/soak/soak.py starts keepwell). Every 0.5-3 s the app
picks a misdeed: it crashes (SIGKILL or abort), exits with a random code, switches what its
/health answers (200 "ok", 503, nothing at all, garbage bytes, an endless body, an endless
head, slowly), or double-forks a storm of orphans that keepwell must reap. It makes a storm
at its start too, and dies by its own hand at the first misdeed after MAX_LIFETIME, so that
even a short soak sees orphans and restarts. At its start it decides whether it ignores
SIGTERM, so that some stops go through the grace to SIGKILL.

It counts every signal it receives, by number, and appends one line per fact to the report
file (os.write on an O_APPEND descriptor: no buffer, no reentrancy, lines never interleave):

    ready TOKEN PID MONOTONIC IGNORES_TERM   signals blocked, /health served
    sig TOKEN SIGNO                          one signal received
    term TOKEN MONOTONIC ignored|exiting     the first SIGTERM (later ones add a "sig" line)
    storm TOKEN N MONOTONIC                  N orphans double-forked
    dying TOKEN HOW MONOTONIC                about to die by its own hand (HOW: kill, abort,
                                             exit:CODE, term)

Every catchable signal is blocked before "ready" and taken with sigtimedwait (see
tests/support/sigsafe.py), in the main thread only; the HTTP threads write only to sockets.
Before dying by its own hand the app drains the signals still pending and reports them, so a
signal keepwell forwarded before that moment is never lost by the app itself.
"""

import os
import random
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import sigsafe  # noqa: E402

#: An app that lived this long dies at its next misdeed (seconds).
MAX_LIFETIME = 10.0
HEALTH_MODES = ["ok", "ok", "ok", "status503", "hang", "garbage", "endless_body", "endless_head", "slow"]
#: The current /health behaviour; a plain assignment, read by the connection threads.
health_mode = "ok"


def read_head(conn):
    """Read until the end of a request head (or 8 KiB, or the peer's close)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 8192:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def serve_one(conn):
    mode = health_mode
    try:
        conn.settimeout(30)
        read_head(conn)
        if mode == "ok" or mode == "slow":
            if mode == "slow":
                time.sleep(0.2)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif mode == "status503":
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        elif mode == "hang":
            # Never answer: wait for the prober to give up and close.
            while conn.recv(4096):
                pass
        elif mode == "garbage":
            conn.sendall(os.urandom(random.randint(1, 3000)))
        elif mode == "endless_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            chunk = b"x" * 16384
            while True:
                conn.sendall(chunk)
        elif mode == "endless_head":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                conn.sendall(b"X-Chaos: " + b"y" * 1000 + b"\r\n")
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def serve(listener):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def orphan_storm(count, rng):
    """Double-fork `count` grandchildren: each intermediate exits at once (and is waited for
    here), so the grandchild is reparented to keepwell, which must reap it. Some live long
    enough to be left behind at the next restart; some leave the session; some ignore TERM."""
    for _ in range(count):
        lifetime = rng.choice([0.0, 0.01, 0.1, 0.5, 2.0])
        setsid = rng.random() < 0.3
        keep_blocked = rng.random() < 0.2
        pid = os.fork()
        if pid == 0:
            try:
                if os.fork() == 0:
                    if setsid:
                        os.setsid()
                    if not keep_blocked:
                        signal.pthread_sigmask(signal.SIG_SETMASK, [])
                    time.sleep(lifetime)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def main():
    port = int(sys.argv[1])
    report = sigsafe.open_out(sys.argv[2])
    rng = random.Random(os.urandom(8))
    token = "%d-%s" % (os.getpid(), os.urandom(4).hex())
    # Python ignores SIGPIPE already; keep it so (a write to a closed probe connection must
    # not kill the app). Every other catchable signal is blocked and counted.
    waitable = sigsafe.block(sigsafe.catchable() - {signal.SIGPIPE})
    ignores_term = rng.random() < 0.35

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()

    def say(text):
        sigsafe.say(report, text + "\n")

    def received(signo):
        say("sig %s %d" % (token, signo))

    def die(how):
        # Whatever keepwell forwarded before now is pending: take it and report it first.
        while True:
            info = signal.sigtimedwait(waitable, 0)
            if info is None:
                break
            received(info.si_signo)
        say("dying %s %s %.6f" % (token, how, time.monotonic()))

    say("ready %s %d %.6f %d" % (token, os.getpid(), time.monotonic(), ignores_term))
    started = time.monotonic()
    # Like a server whose boot leaves detached helpers behind: every app makes orphans.
    count = rng.randint(3, 20)
    orphan_storm(count, rng)
    say("storm %s %d %.6f" % (token, count, time.monotonic()))
    termed = False
    next_misdeed = time.monotonic() + rng.uniform(0.5, 3.0)
    global health_mode
    while True:
        timeout = max(0.0, next_misdeed - time.monotonic())
        info = signal.sigtimedwait(waitable, timeout)
        if info is not None:
            signo = info.si_signo
            if signo == signal.SIGTERM and not termed:
                termed = True
                say("term %s %.6f %s" % (token, time.monotonic(), "ignored" if ignores_term else "exiting"))
                if not ignores_term:
                    die("term")
                    os._exit(0)
                continue
            received(signo)
            continue
        next_misdeed = time.monotonic() + rng.uniform(0.5, 3.0)
        misdeed = rng.choices(
            ["nothing", "kill", "abort", "exit", "health", "storm"],
            weights=[3, 1, 1, 1, 4, 2],
        )[0]
        if time.monotonic() - started > MAX_LIFETIME:
            # Every soak, however short, sees an app die by its own hand.
            misdeed = rng.choice(["kill", "abort", "exit"])
        if misdeed == "kill":
            die("kill")
            os.kill(os.getpid(), signal.SIGKILL)
        elif misdeed == "abort":
            die("abort")
            os.abort()
        elif misdeed == "exit":
            code = rng.randint(0, 255)
            die("exit:%d" % code)
            os._exit(code)
        elif misdeed == "health":
            health_mode = rng.choice(HEALTH_MODES)
        elif misdeed == "storm":
            count = rng.randint(5, 40)
            orphan_storm(count, rng)
            say("storm %s %d %.6f" % (token, count, time.monotonic()))


if __name__ == "__main__":
    main()
