"""The delay line: every packet the namespaces' NFQUEUE rules queue is held `delay` seconds, then let through.

One process serves every namespace of a devnet: it enters each namespace in turn (setns) to open that
namespace's queue socket there, then waits on all of them.  A constant delay keeps each queue's packets in the
order they came, so one batch verdict releases every packet that is due.  SIGTERM or SIGINT stops it; the
packets still held then are let through."""

from __future__ import annotations

import collections
import ctypes
import os
import selectors
import signal
import time
from contextlib import contextmanager
from typing import Iterator

from .nfqueue import QueueSocket

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


@contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the block in the named network namespace (this thread only), then come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter network namespace {name}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to this process's network namespace")
    finally:
        os.close(target)
        os.close(home)


class DelayLine:
    """Queue `queue` of each of `namespaces`, each packet held `delay` seconds."""

    def __init__(self, namespaces: list[str], delay: float, queue: int = 0) -> None:
        self.delay = delay
        self.queues: list[QueueSocket] = []
        try:
            for name in namespaces:
                with in_namespace(name):
                    self.queues.append(QueueSocket(queue))
        except BaseException:
            self.close()
            raise
        self.held: dict[QueueSocket, collections.deque] = {q: collections.deque() for q in self.queues}
        self.passed = 0
        self._stopping = False

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        for q in self.queues:
            selector.register(q, selectors.EVENT_READ)
        try:
            while not self._stopping:
                selector.select(self._wait())
                now = time.monotonic()
                for q in self.queues:
                    self.held[q].extend((now + self.delay, packet) for packet in q.read())
                self._release(now)
            self._release(float("inf"))
        finally:
            selector.close()

    def _wait(self) -> float:
        due = min((held[0][0] for held in self.held.values() if held), default=None)
        return 0.5 if due is None else max(0.0, due - time.monotonic())

    def _release(self, now: float) -> None:
        for q, held in self.held.items():
            last = None
            while held and held[0][0] <= now:
                last = held.popleft()[1]
                self.passed += 1
            if last is not None:
                q.accept_through(last)

    def close(self) -> None:
        for q in self.queues:
            q.close()


def serve(namespaces: list[str], delay: float, ready: str | None = None) -> None:
    """Run the delay line until SIGTERM or SIGINT; touch `ready` once every queue is bound."""
    line = DelayLine(namespaces, delay)
    signal.signal(signal.SIGTERM, line.stop)
    signal.signal(signal.SIGINT, line.stop)
    if ready:
        with open(ready, "w") as out:
            out.write(str(os.getpid()))
    try:
        line.run()
    finally:
        line.close()
