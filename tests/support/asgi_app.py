"""A plain ASGI app for uvicorn in the --socket tests: / answers 200, /health answers 500 while
the file named by HEALTH_FAIL_FILE exists (the unhealthy switch)."""

import os

FAIL_FILE = os.environ.get("HEALTH_FAIL_FILE", "/nonexistent")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    failing = scope["path"] == "/health" and os.path.exists(FAIL_FILE)
    body = b"Unhealthy: the switch is on\n" if failing else b"Healthy: OK\n"
    await send(
        {
            "type": "http.response.start",
            "status": 500 if failing else 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
