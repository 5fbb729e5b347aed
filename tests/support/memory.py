"""A process's anonymous memory (heap, not file-backed pages), read from /proc while a test runs."""

from __future__ import annotations

import threading


def anonymous(pid: int) -> int:
    """Bytes of anonymous memory the process holds now."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon"))


class AnonPeak:
    """The most anonymous memory a process held while this was open (sampled every 5 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, anonymous(self.pid))
            if self._stop.wait(0.005):
                return

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
