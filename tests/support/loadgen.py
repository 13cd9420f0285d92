"""A bounded HTTP load generator for loopback: many concurrent connections, each request on a
connection of its own (as most clients behind a load balancer open them), every failure
counted by kind.

    python3 loadgen.py HOST PORT [--connections 40] [--rate 300] [--timeout 10]
                       [--max-seconds 60] [--path /]

It runs until its standard input closes (the test or benchmark that started it says "enough"
by closing the pipe) or --max-seconds pass, whichever is first, then prints one JSON object:

    {"ok": 2980, "non_2xx": 0, "refused": 0, "reset": 0, "timeout": 0, "other": 0,
     "longest_gap_s": 1.21, "max_latency_s": 1.3, "p50_latency_s": 0.002,
     "p99_latency_s": 1.1, "seconds": 10.0, "failures": [[t, "refused"], ...]}

- refused: the connection was refused (nothing listened on the port).
- reset: the connection was reset, or closed before a whole status line came back.
- timeout: no complete answer within --timeout (connect, send and read together).
- non_2xx: an answer with a status outside 200-299.
- longest_gap_s: the longest time in which no request succeeded (the restart gap clients see).
- failures: when each failure happened, in seconds since the start (the first 2000).

Bounded in every way: --connections threads, --rate requests per second over all of them, and
--max-seconds. It handles no signal (a test ends it by closing stdin, or kills it), and writes
its report only at the end, from the main thread.
"""

import argparse
import errno
import json
import socket
import sys
import threading
import time


def one_request(host, port, path, timeout):
    """("ok" | "non_2xx" | "refused" | "reset" | "timeout" | "other", latency)."""
    started = time.monotonic()
    deadline = started + timeout
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            if not chunk:
                return "reset", time.monotonic() - started
            data += chunk
        # Read the rest so the server is not reset by our close.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            if not sock.recv(65536):
                break
        parts = data.split(b"\r\n", 1)[0].split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        kind = "ok" if 200 <= status < 300 else "non_2xx"
        return kind, time.monotonic() - started
    except ConnectionRefusedError:
        return "refused", time.monotonic() - started
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return "reset", time.monotonic() - started
    except socket.timeout:
        return "timeout", time.monotonic() - started
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return "refused", time.monotonic() - started
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset", time.monotonic() - started
        return "other", time.monotonic() - started
    finally:
        if sock is not None:
            sock.close()


def worker(args, index, stop, start, results):
    interval = args.connections / args.rate
    # Spread the workers over one interval so the load is even.
    next_at = start + interval * index / args.connections
    while not stop.is_set():
        now = time.monotonic()
        if next_at > now:
            if stop.wait(next_at - now):
                break
        begun = time.monotonic()
        kind, latency = one_request(args.host, args.port, args.path, args.timeout)
        results.append((begun - start, begun - start + latency, kind, latency))
        next_at = max(next_at + interval, time.monotonic() - interval)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--path", default="/")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="add start_unix and ok_ends (when each success ended, seconds since the start)",
    )
    args = parser.parse_args()

    stop = threading.Event()
    start_unix = time.time()
    start = time.monotonic()
    results = []
    threads = [
        threading.Thread(target=worker, args=(args, i, stop, start, results), daemon=True)
        for i in range(args.connections)
    ]
    for thread in threads:
        thread.start()

    def until_stdin_closes():
        try:
            while sys.stdin.buffer.read(1):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    stop.wait(args.max_seconds)
    stop.set()
    # Requests in flight finish within their timeout.
    for thread in threads:
        thread.join(args.timeout + 5)
    seconds = time.monotonic() - start

    counts = {k: 0 for k in ("ok", "non_2xx", "refused", "reset", "timeout", "other")}
    successes = []
    latencies = []
    failures = []
    for begun, ended, kind, latency in list(results):
        counts[kind] += 1
        latencies.append(latency)
        if kind == "ok":
            successes.append(ended)
        else:
            failures.append((round(begun, 3), kind))
    successes.sort()
    gaps = [b - a for a, b in zip(successes, successes[1:])]
    latencies.sort()

    def quantile(q):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 4)

    failures.sort()
    report = dict(counts)
    report.update(
        longest_gap_s=round(max(gaps), 3) if gaps else None,
        max_latency_s=round(latencies[-1], 3) if latencies else None,
        p50_latency_s=quantile(0.50),
        p99_latency_s=quantile(0.99),
        seconds=round(seconds, 3),
        failures=failures[:2000],
    )
    if args.timeline:
        report.update(start_unix=start_unix, ok_ends=[round(t, 4) for t in successes])
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
