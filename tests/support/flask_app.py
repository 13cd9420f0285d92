"""A small Flask app for the end-to-end tests: gunicorn serves it under keepwell.

/        a page (the tests look for its text)
/health  200 "Healthy: OK", or 500 while the file named by HEALTH_FAIL_FILE exists,
         so a test can make the app unhealthy and healthy again while it runs
/whoami  the uid and gid that serve the request (the --user test reads it)
"""

import os

from flask import Flask

app = Flask(__name__)

PAGE = "<!doctype html><title>keepwell e2e</title><h1>Hello from Flask under keepwell</h1>\n"


@app.get("/")
def index():
    return PAGE


@app.get("/health")
def health():
    fail_file = os.environ.get("HEALTH_FAIL_FILE")
    if fail_file and os.path.exists(fail_file):
        return "Unhealthy: " + fail_file + " exists\n", 500
    return "Healthy: OK\n"


@app.get("/whoami")
def whoami():
    return f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()}\n"
