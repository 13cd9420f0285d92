"""The smallest app to run under keepwell: Python's standard library only.

    PORT=8000 python3 examples/hello/app.py

/        a page
/health  200 "ok" (point --health-url here)

SIGTERM (what keepwell sends to stop it) or SIGINT (Ctrl-C) shuts the server down
gracefully: in-flight requests finish, the listening socket closes, and the process exits 0.

The stop signals are blocked and waited for (signal.sigwaitinfo) by the main thread, not
handled: a Python signal handler runs in the middle of whatever the main thread is doing, and
one that writes to stderr while the main thread writes there too raises "reentrant call".
"""

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""<!doctype html>
<title>hello from keepwell</title>
<h1>Hello, this app runs under keepwell.</h1>
<p>Its health endpoint is <a href="/health">/health</a>.</p>
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.reply(200, "text/html; charset=utf-8", PAGE)
        elif self.path == "/health":
            self.reply(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self.reply(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self):
        self.do_GET()

    def reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        # One line per request on stderr, as gunicorn's access log would.
        sys.stderr.write("hello: %s %s\n" % (self.address_string(), format % args))


def main():
    port = int(os.environ.get("PORT", "8000"))
    # Before any thread starts, so that every thread inherits the mask: a stop signal then
    # waits in the kernel until the main thread takes it below.
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    # Finish in-flight requests before exiting instead of dropping them.
    server.daemon_threads = False
    server.block_on_close = True
    serving = threading.Thread(target=server.serve_forever, name="serve")
    serving.start()
    sys.stderr.write("hello: listening on port %d\n" % port)
    sys.stderr.flush()

    received = signal.sigwaitinfo(stops).si_signo
    sys.stderr.write("hello: %s received, shutting down\n" % signal.Signals(received).name)
    # Stops serve_forever on its thread and waits for it; server_close joins the requests.
    server.shutdown()
    serving.join()
    server.server_close()
    sys.stderr.write("hello: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
