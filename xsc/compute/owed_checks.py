"""Checks of remote answers waiting for room to run (compute/spot_checks.py): WAITING at most in memory, the others
on disk alone, in their `c/c/` rows, read back as room comes.

A check waits when the record of a `verify` call could not be had at once, or when a start finds it owed on disk.
Each keeps its tab open (not closed, kept off the payment retry) until it is made, and a provider that never shows
its records would otherwise make them grow in memory without bound.  Past WAITING a check waits on disk alone: its
row is there already (written with the tally that counts its answer, and again at each ask that went unanswered).
The room is shared: a check of a provider with fewer checks waiting in memory than the one with the most takes the
place of that one's latest, which waits on disk instead; so a provider long unreachable, however many of its checks
wait, keeps no other provider's from being made.  Rows on disk are read SCAN at most at a time, each read from where
the last left off, so every row is reached in turn; one taken up past its tab's half life ends at once, its record
not shown (spot_checks: `_sampled`), so no tab is kept open for ever, and none is closed with its check unmade.
A pass over the rows that took none but met one not written yet (a full disk) is not made again until it is; a
check whose first row is not written yet, listed by no read, is counted on disk all the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .remote_tabs import GatewayTabs, OpenTab
from .service import InvokeCall
from .store import ComputeStore

WAITING = 256  # checks waiting for room in memory, at most (the others wait on disk alone)
SCAN = 512  # rows of checks owed read from disk at a time, at most
_RESUMED = 4096  # rows counted at a time at a start


@dataclass
class Answered:
    """What a gateway sent and was answered of one remote call: what the provider's record must say."""

    provider: str
    url: str | None  # None: looked up when the record is asked for (a check a stop left owed)
    call: InvokeCall
    price: int
    tab: OpenTab  # the call's: not closed until its check says whether the call is paid
    facts: dict[str, Any]  # what the answer said (spot_checks._facts)
    check_id: bytes  # its row's, owed on disk until its tab is told the outcome
    tried: int = 0  # times its record was asked for and not shown (in its row too: TRIES in all, across restarts)
    settled: bool = False  # its tab told the outcome of its check

    def to_json(self) -> dict[str, Any]:
        call = self.call
        return {"provider": self.provider, "price": self.price, "facts": self.facts, "tried": self.tried,
                "call": {"module": call.module, "function": call.function, "args": call.args, "fuel": call.fuel,
                         "memory": call.memory, "timeout": call.timeout, "wasi": call.wasi}}


class OwedChecks:
    """Checks waiting for room, each with whether it asks for its record at once when it starts: those taken from
    disk do (the wait was their pause); those of `verify` calls whose record could not be had back off first."""

    def __init__(self, *, store: ComputeStore, tabs: GatewayTabs,
                 read: Callable[[OpenTab, bytes, dict | None], Answered | None]) -> None:
        self.store, self.tabs = store, tabs
        self._read = read  # a row read back (None: it cannot be, and its tab was told so)
        self._waiting: dict[str, deque[tuple[Answered, bool]]] = {}  # provider -> its, in memory, oldest first
        self._count = 0  # of them all
        self._on_disk: dict[str, int] = {}  # provider -> its checks waiting on disk alone
        self._live: set[bytes] = set()  # ids of the checks in memory: waiting, under way, or awaited by their call
        self._cursor: tuple[bytes, bytes] | None = None  # the row the last read from disk stopped at
        # A whole pass over the rows that took nothing into memory but met a row not written yet (a full disk) is not
        # made again until that row is written: the next write writes every row held back (TabTallies.write).
        self._took = False  # whether the pass under way took a check into memory, or found one gone
        self._met: dict[bytes, bytes | None] = {}  # a row not written yet that the pass under way met
        self._held: dict[bytes, bytes | None] = {}  # that of the last pass that took nothing: read again once written

    def status(self) -> dict[str, int]:
        on_disk = sum(self._on_disk.values())
        return {"owed": self._count + on_disk, "owed_on_disk": on_disk}

    def live(self, check_id: bytes) -> None:
        """A check is in memory from now on (its row on disk is not to be read back)."""
        self._live.add(check_id)

    def done(self, check_id: bytes) -> None:
        self._live.discard(check_id)

    def add(self, answered: Answered, now: bool) -> None:
        """`answered`'s check waits for room: in memory if there is room for it (`_room`), else on disk alone."""
        if self._room(answered.provider):
            self._wait(answered, now)
        else:
            self._live.discard(answered.check_id)
            self._on_disk[answered.provider] = self._on_disk.get(answered.provider, 0) + 1

    def next(self, free: Callable[[str], bool]) -> tuple[Answered, bool] | None:
        """The next check to start, of a provider `free` says has room for one; providers in turn (the provider of
        the one given goes last).  None if there is none."""
        self._refill()
        for provider in self._waiting:
            if free(provider):
                queue = self._waiting.pop(provider)
                got = queue.popleft()
                self._count -= 1
                if queue:
                    self._waiting[provider] = queue
                return got
        return None

    def resume(self) -> int:
        """At a start: every check a stop left owed waits on disk, counted on its tab (kept off the payment retry
        and not closed until the check is made); those of tabs paid or dropped since are forgotten.  How many
        wait."""
        after: tuple[bytes, bytes] | None = None
        while ids := self.store.owed_check_ids(after, _RESUMED):
            gone: dict[bytes, bytes | None] = {}
            for auth_id, check_id in ids:
                tab = self.tabs.owed_check(auth_id)
                if tab is None:
                    gone.update(self.store.owed_check_row(auth_id, check_id, None))
                else:
                    self._on_disk[tab.provider] = self._on_disk.get(tab.provider, 0) + 1
            self.tabs.tallies.write_with(gone)
            after = ids[-1]
        return sum(self._on_disk.values())

    def _wait(self, answered: Answered, now: bool) -> None:
        self._live.add(answered.check_id)
        self._waiting.setdefault(answered.provider, deque()).append((answered, now))
        self._count += 1

    def _room(self, provider: str, evict: bool = True) -> bool:
        """Whether a check of `provider` may wait in memory: there is room, or the provider with the most checks
        waiting there has more than one more than `provider`; its latest then waits on disk alone (if `evict`)."""
        if self._count < WAITING:
            return True
        most = max(self._waiting, key=lambda p: len(self._waiting[p]))
        if len(self._waiting[most]) <= len(self._waiting.get(provider, ())) + 1:
            return False
        if evict:
            answered, _ = self._waiting[most].pop()  # (its row is on disk, or handed to the next write)
            self._count -= 1
            self._live.discard(answered.check_id)
            self._on_disk[most] = self._on_disk.get(most, 0) + 1
        return True

    def _refill(self) -> None:
        """Take checks waiting on disk alone into memory, as far as there is room for them: SCAN rows read at most,
        from where the last read stopped (from the first once it reached the last)."""
        if not self._wanted():
            return
        first, before = self._cursor is None, self._cursor
        if first:
            self._took, self._met, self._held = False, {}, {}
        ids = self.store.owed_check_ids(self._cursor, SCAN)
        self._cursor = ids[-1] if len(ids) == SCAN else None
        seen: set[str] = set()
        for auth_id, check_id in ids:
            if not self._wanted():  # (the next read goes on from this row)
                self._cursor = before
                return
            before = (auth_id, check_id)
            if check_id in self._live:
                continue
            row, tab = self.store.owed_check_row(auth_id, check_id, None), self.tabs.checked_tab(auth_id)
            if tab is not None:
                seen.add(tab.provider)
            if self.tabs.tallies.unwritten(row):  # (what is on disk of it is not its latest: read once it is written)
                self._met = row
                continue
            if tab is None:  # paid or dropped since (its authorization expired): nothing left to check
                provider = (self.store.owed_check(auth_id, check_id) or {}).get("provider")
                self._left_disk(provider)
                self.tabs.tallies.write_with(row)
                continue
            if not self._room(tab.provider):
                self._on_disk[tab.provider] = self._on_disk.get(tab.provider) or 1  # (counted, to be read again)
                continue
            self._left_disk(tab.provider)
            answered = self._read(tab, check_id, self.store.owed_check(auth_id, check_id))
            if answered is not None:
                self._wait(answered, True)
        if first and self._cursor is None:  # every row read: a provider none of them is of waits on disk no more ...
            self._unlisted(seen)  # ... unless one of its is not written yet
            self._on_disk = {p: n for p, n in self._on_disk.items() if p in seen}
        if self._cursor is None and not self._took:
            self._held = self._met

    def _unlisted(self, seen: set[str]) -> None:
        """The providers of checks waiting on disk alone whose rows are not on disk yet, added to `seen`: a full disk
        refused a check's first row, and no read lists it until the next write.  Its provider's count stays (dropped,
        the check would wait for the next start once written, its tab open till then), and the pass is held up
        until it is written, as by a row met not written yet."""
        for auth_id, check_id in self.store.owed_check_ids_in(self.tabs.tallies.unwritten_rows()):
            tab = self.tabs.checked_tab(auth_id)
            if tab is not None and check_id not in self._live:
                seen.add(tab.provider)
                self._met = self.store.owed_check_row(auth_id, check_id, None)

    def _wanted(self) -> bool:
        """Whether a check waiting on disk alone would be taken into memory now: not while the rows read last are held
        up by one not written yet (each call would read SCAN rows again, to take none)."""
        if self._held and self.tabs.tallies.unwritten(self._held):
            return False
        return any(n and self._room(p, evict=False) for p, n in self._on_disk.items())

    def _left_disk(self, provider: Any) -> None:
        self._took = True
        left = self._on_disk.pop(provider, 0) - 1 if isinstance(provider, str) else 0
        if left > 0:
            self._on_disk[provider] = left


__all__ = ["Answered", "OwedChecks", "SCAN", "WAITING"]
