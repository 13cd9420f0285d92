"""A FastAPI application served by uvicorn under keepwell.

/health is what keepwell probes (KEEPWELL_HEALTH_URL). It fails (503) while the file named by
HEALTH_FAIL_FILE (default /dev/shm/unhealthy) exists: an operator's maintenance switch, and
the way the container tests make the app unhealthy:

    docker exec CONTAINER touch /dev/shm/unhealthy
"""

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()

HEALTH_FAIL_FILE = os.environ.get("HEALTH_FAIL_FILE", "/dev/shm/unhealthy")


@app.get("/", response_class=PlainTextResponse)
def index() -> str:
    return "Hello from FastAPI, supervised by keepwell.\n"


@app.get("/health", response_class=PlainTextResponse)
def health() -> PlainTextResponse:
    # Check here what the application needs to serve requests (database, caches, ...).
    if os.path.exists(HEALTH_FAIL_FILE):
        return PlainTextResponse(f"Unhealthy: {HEALTH_FAIL_FILE} exists\n", status_code=503)
    return PlainTextResponse("Healthy: OK")
