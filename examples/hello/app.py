"""The smallest app to run under keepwell: Python's standard library only.

    PORT=8000 python3 examples/hello/app.py

/        a page
/health  200 "ok" (point --health-url here)

SIGTERM (what keepwell sends to stop it) shuts the server down gracefully: in-flight
requests finish, the listening socket closes, and the process exits 0.
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
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    # Finish in-flight requests before exiting instead of dropping them.
    server.daemon_threads = False
    server.block_on_close = True

    def stop(signum, _frame):
        sys.stderr.write("hello: %s received, shutting down\n" % signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return, so it must not run on that thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write("hello: listening on port %d\n" % port)
    sys.stderr.flush()
    server.serve_forever()
    server.server_close()
    sys.stderr.write("hello: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
