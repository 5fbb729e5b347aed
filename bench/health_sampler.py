"""`python -m bench.health_sampler PORT PID [INTERVAL]`: time GET /health on a fresh connection every INTERVAL
seconds (0.05) until stdin closes; one line per sample on stdout: `monotonic status seconds rss_anon_bytes`
(status 0: no answer).  A process of its own, so that a bench's attacking threads (and their GIL) do not delay
its requests or its clock: CLOCK_MONOTONIC is the same in every process, so the bench places each sample in
its phases by time."""

from __future__ import annotations

import http.client
import sys
import threading
import time


def _anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def health(port: int, timeout: float = 5.0) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, time.perf_counter() - started
    except (OSError, http.client.HTTPException):
        return 0, time.perf_counter() - started


def main(argv: list[str]) -> int:
    port, pid = int(argv[0]), int(argv[1])
    interval = float(argv[2]) if len(argv) > 2 else 0.05
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    due = time.monotonic()
    while not done.is_set():
        at = time.monotonic()
        status, seconds = health(port)
        print(f"{at:.6f} {status} {seconds:.6f} {_anon(pid)}", flush=True)
        due = max(due + interval, time.monotonic())  # a slow answer delays the next sample, never doubles it
        done.wait(max(0.0, due - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
