"""A real grpcio server for keepwell's grpc:// probe tests (grpcio-health-checking from PyPI).

    python grpc_health_server.py [--no-health | --hang]

Binds 127.0.0.1 on a free port and prints "ready PORT" on stdout. Modes:
  (default)    grpc.health.v1 Health with the server ("") and "app.Worker" SERVING
  --no-health  a server with no health service at all (Check answers UNIMPLEMENTED)
  --hang       a health service whose Check never answers

Commands on stdin, one per line, so the test can change a status while it runs:
  set SERVICE STATUS      e.g. "set app.Worker NOT_SERVING" ("-" is the server, "")
Each command is acknowledged with "ok" on stdout. EOF on stdin stops the server.

No signal handlers: the test ends it with SIGKILL, or by closing stdin.
"""

import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class HangingHealth(health_pb2_grpc.HealthServicer):
    """Check waits until the server stops: a health endpoint that never answers."""

    def __init__(self, stop):
        self._stop = stop

    def Check(self, request, context):
        self._stop.wait()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    stop = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = None
    if mode == "--hang":
        health_pb2_grpc.add_HealthServicer_to_server(HangingHealth(stop), server)
    elif mode != "--no-health":
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set("app.Worker", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"ready {port}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] == "set" and servicer is not None:
            service = "" if words[1] == "-" else words[1]
            status = health_pb2.HealthCheckResponse.ServingStatus.Value(words[2])
            servicer.set(service, status)
        print("ok", flush=True)
    stop.set()
    server.stop(0)


if __name__ == "__main__":
    main()
