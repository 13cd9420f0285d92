"""A test app whose health a test switches with a file.

usage: switch_app.py PORT HEALTH_FILE EVENTS_FILE

- GET /health answers 200 while HEALTH_FILE exists and 500 otherwise; any other path 200 "app".
- With BIND_WHEN=PATH in the environment it waits until PATH exists before it listens on
  127.0.0.1:PORT, like an app that is still booting (its health URL refuses connections).
- It appends "listening <pid>" to EVENTS_FILE once it serves, and "<SIGNAL> <unix time>" (TERM,
  INT or QUIT) when one of those arrives, then exits 0 like a graceful server.

The stop signals are blocked before any thread starts (so the server's threads inherit the
mask) and taken by the main thread with sigwaitinfo; events are written with os.write
(tests/support/sigsafe.py says why).
"""
import http.server
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sigsafe  # noqa: E402

port, health_file, events_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
stops = sigsafe.block({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
events = sigsafe.open_out(events_file)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            ok = os.path.exists(health_file)
            status, body = (200, b"ok\n") if ok else (500, b"unhealthy\n")
        else:
            status, body = 200, b"app\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def serve():
    bind_when = os.environ.get("BIND_WHEN")
    while bind_when and not os.path.exists(bind_when):
        time.sleep(0.02)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    sigsafe.say(events, f"listening {os.getpid()}\n")
    server.serve_forever(poll_interval=0.05)


threading.Thread(target=serve, daemon=True).start()
number = sigsafe.wait(stops)
sigsafe.say(events, f"{sigsafe.name(number)} {time.time():.6f}\n")
os._exit(0)
