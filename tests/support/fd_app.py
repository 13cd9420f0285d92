"""A server that takes its listening socket from keepwell (fd 3, socket activation) the way a
real app does, for tests/sockets.rs.

It answers every connection with "200 fd app" and closes it. On SIGTERM it closes its copy of
the listening socket (as gunicorn does at once), writes "closed" to the file named by its first
argument, and then lingers until SIGKILL or 30 s, as an app busy with its last requests would.

Signal-safe: TERM is blocked before any thread starts and taken with sigwaitinfo.
"""

import os
import select
import signal
import socket
import sys
import threading

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
marker = sys.argv[1]
listener = socket.socket(fileno=3)
listener.setblocking(False)
closing = threading.Event()


def serve():
    while not closing.is_set():
        ready, _, _ = select.select([listener], [], [], 0.05)
        if not ready:
            continue
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        conn.settimeout(2)
        try:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nfd app")
        except OSError:
            pass
        conn.close()
    listener.close()


server = threading.Thread(target=serve)
server.start()
signal.sigwaitinfo({signal.SIGTERM})
closing.set()
server.join()
fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"closed\n")
os.close(fd)
signal.sigtimedwait({signal.SIGTERM}, 30)
