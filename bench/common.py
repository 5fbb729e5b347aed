"""Helpers shared by the benchmarks: timing, a node process (from xsc.devnet), peak RSS, CPU time."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xsc.devnet import NodeProcess, free_port

__all__ = ["NodeProcess", "free_port", "best_of", "start_node", "peak_rss_mib", "run_xsc_measured", "AnonSampler",
           "cpu_seconds", "main_thread_times", "HealthProbe", "serve_script"]


def best_of(fn, repeat: int = 3) -> float:
    """Fastest of `repeat` runs, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# The user token's rate limit (node.user_rate_limit, 2,000 requests/s by default) guards an operator's node; it is not
# its speed.  A bench that measures how many invokes a node serves lifts it, or it measures the limit.
UNLIMITED_USER = {"XSC_NODE_USER_RATE_LIMIT": "1000000"}


@contextlib.contextmanager
def serve_script(script: str, *args: str):
    """A Python server `script` in a process of its own, run with a free port and `args`: yields the port once it
    accepts connections; the process is stopped on exit."""
    import socket

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", script, str(port), *args])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(10)


def start_node(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    """A started node process on a free port (its log is `<data dir>.log`); stop it with `.stop()`."""
    return NodeProcess(data_dir, args=args, env=env).start(60)


def peak_rss_mib(pid: int) -> float:
    """Peak resident set of a live process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Runs the xsc CLI and, at exit, reports its own VmHWM on the fd named by XSC_BENCH_FD.  (getrusage of a child would also
# count the pages it inherited from this process before exec.)
_XSC_WITH_PEAK = (
    "import atexit, os, sys\n"
    "def report():\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "    os.write(int(os.environ['XSC_BENCH_FD']), hwm.encode())\n"
    "atexit.register(report)\n"
    "sys.argv = ['xsc', *sys.argv[1:]]\n"
    "from xsc.cli import main\n"
    "main()\n"
)


def run_xsc_measured(args: list[str], prefix: Sequence[str] = (), **kwargs) -> tuple[float, float, int]:
    """Run `xsc ARGS` (after `prefix`, e.g. the command that enters a network namespace); return (seconds, its
    peak RSS in MiB, exit code)."""
    read_fd, write_fd = os.pipe()
    t = time.perf_counter()
    proc = subprocess.Popen([*prefix, sys.executable, "-P", "-c", _XSC_WITH_PEAK, *args], pass_fds=(write_fd,),
                            env={**os.environ, "XSC_BENCH_FD": str(write_fd)}, **kwargs)
    os.close(write_fd)
    proc.wait()
    elapsed = time.perf_counter() - t
    with os.fdopen(read_fd, "rb") as f:
        peak_kib = f.read().decode() or "nan"
    return elapsed, float(peak_kib) / 1024, proc.returncode


class AnonSampler:
    """Samples a process's anonymous RSS (heap, not file-backed mappings) in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid, self.interval, self.peak_kib = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return

    def __enter__(self) -> "AnonSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROBE_NICE = -10  # the health probe's scheduling priority, if it may raise its own (root)


def main_thread_times(pid: int) -> tuple[float, float, float]:
    """(seconds run on a CPU, seconds runnable but waiting for one) of a process's main thread, the event loop's,
    so far, and the seconds its other threads waited for a CPU (Linux schedstat); NaN elsewhere.  Over one /health
    request they tell a slow answer's causes apart: the node busy (ran), the machine's other work ahead of the loop
    (waited), or ahead of another thread of the node, which may hold the GIL the loop waits for (others waited)."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        others = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            if task != str(pid):
                with contextlib.suppress(OSError, ValueError):  # a thread may end meanwhile
                    others += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
    except (OSError, ValueError):
        return float("nan"), float("nan"), float("nan")
    return int(ran) / 1e9, int(waited) / 1e9, others / 1e9


def _probe_health(host: str, port: int, pid: int, interval: float, stop, out) -> None:
    """The body of HealthProbe's process: every `interval`, the node's memory, descriptors and CPU, and GET
    /health twice: on a fresh connection (what a monitor opening one per check sees, accept queue included)
    and on one kept-alive connection (the node's event loop alone), each with what the node's main thread did
    meanwhile (`main_thread_times`: `*_ran`, `*_waited`, `*_others_waited`)."""
    import http.client

    # Ahead of the node's processes and the benchmark's own for a core: on two shared cores a probe left waiting
    # for one between its connect and its request was timed as the node's slowness (the node idle meanwhile).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, PROBE_NICE)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    kept: http.client.HTTPConnection | None = None

    def get(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status

    while not stop.wait(interval):
        at = time.monotonic()
        memory = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in memory:
                    memory[name] = int(value.split()[0]) * 1024
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            fds = -1
        before, started = main_thread_times(pid), time.perf_counter()
        try:
            fresh = http.client.HTTPConnection(host, port, timeout=5)
            fresh_status: int | None = get(fresh)
            fresh.close()
        except (OSError, http.client.HTTPException):
            fresh_status = None
        fresh_seconds = time.perf_counter() - started
        between, started = main_thread_times(pid), time.perf_counter()
        try:
            kept = kept or http.client.HTTPConnection(host, port, timeout=5)
            kept_status: int | None = get(kept)
        except (OSError, http.client.HTTPException):
            kept_status, kept = None, None
        kept_seconds, after = time.perf_counter() - started, main_thread_times(pid)
        out.put({"at": at, "anonymous": memory["RssAnon"], "file": memory["RssFile"] + memory["RssShmem"],
                 "fds": fds, "cpu": cpu_seconds(pid), "fresh_status": fresh_status, "fresh_seconds": fresh_seconds,
                 "fresh_ran": between[0] - before[0], "fresh_waited": between[1] - before[1],
                 "fresh_others_waited": between[2] - before[2],
                 "kept_status": kept_status, "kept_seconds": kept_seconds, "kept_ran": after[0] - between[0],
                 "kept_waited": after[1] - between[1], "kept_others_waited": after[2] - between[2], "nice": nice})


class HealthProbe:
    """Times a node's /health every `interval` seconds from a process of its own (so a benchmark's flooding
    threads and their GIL do not delay the probe), with the node's RSS, descriptors and CPU seconds.  Each
    sample is a dict stamped with time.monotonic() (one clock for every process), so a benchmark marks its
    phases with `mark(name)` and reads them back with `samples()`."""

    def __init__(self, host: str, port: int, pid: int, interval: float = 0.05) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._stop, self._queue = context.Event(), context.Queue()
        self._process = context.Process(target=_probe_health, args=(host, port, pid, interval, self._stop,
                                                                    self._queue), daemon=True)
        self._marks: list[tuple[float, str]] = []
        self._samples: list[dict] = []

    def mark(self, phase: str) -> None:
        """Samples from now on belong to `phase`."""
        self._marks.append((time.monotonic(), phase))

    def __enter__(self) -> "HealthProbe":
        """Starts the probe and returns once it has taken its first sample: a spawned interpreter can take seconds
        to start on a loaded machine, and a phase marked before then would get no sample."""
        self._process.start()
        self._samples.append(self._queue.get(timeout=120))
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        import queue

        while self._process.is_alive() or not self._queue.empty():
            try:
                self._samples.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                pass
        self._process.join()

    def samples(self) -> list[dict]:
        """Every sample taken after the first mark, each with its "phase"; after the probe has stopped."""
        out = []
        for sample in sorted(self._samples, key=lambda s: s["at"]):
            phases = [name for at, name in self._marks if at <= sample["at"]]
            if phases:
                out.append({**sample, "phase": phases[-1]})
        return out
