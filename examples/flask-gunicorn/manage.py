"""The seed article's Flask application, served by gunicorn under keepwell.

/health is what keepwell probes (KEEPWELL_HEALTH_URL). Like a real application's health
endpoint, it reports more than "the process is up": here the one dependency it checks is a
maintenance switch. While the file named by HEALTH_FAIL_FILE (default /dev/shm/unhealthy)
exists, /health answers 500, e.g. because an operator ran

    docker exec CONTAINER touch /dev/shm/unhealthy

and keepwell restarts gunicorn after --health-retries failed probes; removing the file makes
the application healthy again. /dev/shm is a per-container tmpfs that the non-root user may
write to, and it stays writable under a read-only root file system (see k8s/deployment.yaml).
"""

import os

from flask import Flask

app = Flask(__name__)

HEALTH_FAIL_FILE = os.environ.get("HEALTH_FAIL_FILE", "/dev/shm/unhealthy")


@app.route("/")
def index():
    return "Hello from Flask, supervised by keepwell.\n"


@app.route("/health", methods=["GET"])
def health():
    # Handle here any business logic for ensuring the application is healthy
    # (database connections, queues, ...).
    if os.path.exists(HEALTH_FAIL_FILE):
        return f"Unhealthy: {HEALTH_FAIL_FILE} exists\n", 500
    return "Healthy: OK"
