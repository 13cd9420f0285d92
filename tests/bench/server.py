#!/usr/bin/env python3
"""Benchmark HTTP app: GET /health answers 200 (500 after SIGUSR2); GET /count answers
"HEALTH_REQUESTS CONNECTIONS", the number of /health requests and of accepted connections so
far (a tcp:// probe is a connection without a request). Usage: server.py PORT (0 picks a free port); prints "port N" once
listening. Loopback only."""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

hits = 0
connections = 0
lock = threading.Lock()
unhealthy = False


def turn_unhealthy(_signo, _frame):
    global unhealthy
    unhealthy = True


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        if self.path == "/health":
            with lock:
                hits += 1
            self.reply(500 if unhealthy else 200, b"unhealthy\n" if unhealthy else b"ok\n")
        elif self.path == "/count":
            with lock:
                n, c = hits, connections
            self.reply(200, b"%d %d\n" % (n, c))
        else:
            self.reply(404, b"not found\n")

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def verify_request(self, request, client_address):
        global connections
        with lock:
            connections += 1
        return True


def main():
    signal.signal(signal.SIGUSR2, turn_unhealthy)
    httpd = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"port {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
