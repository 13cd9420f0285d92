"""A plain WSGI app for gunicorn in the --socket tests: / answers 200 with the worker's pid,
/health answers 500 while the file named by HEALTH_FAIL_FILE exists (the unhealthy switch)."""

import os

FAIL_FILE = os.environ.get("HEALTH_FAIL_FILE", "/nonexistent")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/health" and os.path.exists(FAIL_FILE):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"Unhealthy: the switch is on\n"]
    body = b"Healthy: OK from %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
