"""Peak RSS of a keepwell --listen under N connections held at once, by kind of connection.

    python3 tests/bench/connections.py PATH/TO/keepwell [N]

Starts keepwell as PID 1 of a fresh PID namespace (unshare, as root) with --listen on a free
loopback port and `sleep` as its child, opens N connections of one kind, holds them 1.5 s,
closes them, and reads keepwell's VmHWM; once per kind:
  idle       connect, send nothing
  partial    a request head without its final blank line (stalled)
  halfclose  a whole request, then shutdown(SHUT_WR), the response never read
  keepalive  a whole request, the connection kept open, the response never read
Only loopback addresses are used; every loop is bounded by N.
"""
import os
import resource
import socket
import subprocess
import sys
import time

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 700
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, max(count + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def keepwell_pid(outer):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(f"/proc/{outer}/task/{outer}/children") as f:
                kids = f.read().split()
            if kids and "keepwell" in os.readlink(f"/proc/{kids[0]}/exe"):
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit("keepwell did not start")


for kind in ["idle", "partial", "halfclose", "keepalive"]:
    port = free_port()
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", binary,
         "--listen", f"127.0.0.1:{port}", "--", "sleep", "100"],
        stderr=subprocess.DEVNULL)
    pid = keepwell_pid(outer.pid)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.02)
    rest = field(pid, "VmRSS")
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if kind == "partial":
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        elif kind in ("halfclose", "keepalive"):
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            if kind == "halfclose":
                s.shutdown(socket.SHUT_WR)
        held.append(s)
    time.sleep(1.5)
    for s in held:
        s.close()
    print(f"{kind:10} {count} connections: VmRSS at rest {rest} KiB, peak {field(pid, 'VmHWM')} KiB")
    outer.kill()
    outer.wait()
