"""The room a holder gives the bodies it reads into memory (segments bodies, whole shares' bodies, commits), all
senders together: bounded in all, per network and per sender, and never waited for without end.

A body reserves its declared length before it is read (node/http/shares.py reads it only once it has room) and
gives it back once its request is done with it.  Strangers' bodies that say 16 MiB and send nothing (or a byte a
second) would otherwise hold the room for as long as their deadlines let them, and send again when cut off, while
honest senders' bodies waited for it: the senders of one network (`net.addresses.network_key`, the grouping of the
holder's caps on uploads in progress) hold at most MAX_BUFFERED_PER_NETWORK of it, a body read slower than the
holder's floor is cut off (holder.MIN_BODY_RATE) and gives its room back at once, and a body that finds no room
within ROOM_WAIT is refused with a 503 that says when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ..errors import QuotaExceeded, StorageBusy
from .core.wire import MAX_BODIES_PER_SENDER, MAX_PUT_BYTES

MAX_BUFFERED = 128 * 1024**2  # bytes of bodies held in memory at once, all senders together
# The senders of one network together: what one sender's MAX_BODIES_PER_SENDER bodies hold at most (a segments body
# is at most MAX_PUT_BYTES, or one block of the largest segment), so an honest gateway is not held back by its own
# network's share; and half the room, so that the ids of one network, however many, leave the other half to the
# rest.
MAX_BUFFERED_PER_NETWORK = max(MAX_BODIES_PER_SENDER * MAX_PUT_BYTES, MAX_BUFFERED // 2)
# Seconds a body waits for room before it is refused (503 storage-busy, Retry-After).  Bodies read at the holder's
# floor free room within seconds; room still taken after this long is held by bodies the holder cannot take from
# their senders yet, and the sender does better to try again or place the share elsewhere than wait on.
ROOM_WAIT = 30.0


class BodyRoom:
    """The bodies being read (or waiting for room) and the bytes they hold: in all, per network and per sender (a
    key is dropped at zero, so what is kept is bounded by the bodies in flight)."""

    def __init__(self) -> None:
        self._held = 0  # bytes of bodies with room, all senders together
        self._networks: dict[str, int] = {}  # network -> bytes of its bodies with room
        self._senders: dict[bytes, int] = {}  # sender -> its bodies in flight (with room or waiting for it)
        self._room = asyncio.Condition()

    def status(self) -> dict[str, int]:
        """Bodies in flight (being read or waiting for room) and the bytes of those being read."""
        return {"bodies": sum(self._senders.values()), "body_bytes": self._held}

    def _fits(self, network: str, size: int) -> bool:
        mine = self._networks.get(network, 0)
        # A body alone is always taken, whatever its length: one larger than the bound is not kept out for ever.
        return (self._held == 0 or self._held + size <= MAX_BUFFERED) and \
            (mine == 0 or mine + size <= MAX_BUFFERED_PER_NETWORK)

    @contextlib.asynccontextmanager
    async def room(self, sender: bytes, network: str, size: int) -> AsyncIterator[None]:
        """Room to hold one body of `size` bytes from `sender` at `network`: refuses a sender with
        MAX_BODIES_PER_SENDER in flight already (429), waits while the node or the network holds its most, at most
        ROOM_WAIT seconds (then 503)."""
        if self._senders.get(sender, 0) >= MAX_BODIES_PER_SENDER:
            raise QuotaExceeded(f"already {MAX_BODIES_PER_SENDER} segment bodies of yours in flight",
                                hint="send one batch after the other", retry_after=1)
        self._senders[sender] = self._senders.get(sender, 0) + 1
        try:
            async with self._room:
                try:
                    async with asyncio.timeout(ROOM_WAIT):
                        await self._room.wait_for(lambda: self._fits(network, size))
                except TimeoutError:
                    raise StorageBusy(f"this node holds {self._held:,} bytes of bodies in memory, "
                                      f"{self._networks.get(network, 0):,} of them from your network {network}, and "
                                      f"had no room for {size:,} more within {ROOM_WAIT:g} s",
                                      hint="send it again in a moment, or place the share on another node",
                                      retry_after=5) from None
                self._held += size
                if size:
                    self._networks[network] = self._networks.get(network, 0) + size
            try:
                yield
            finally:
                async with self._room:
                    self._held -= size
                    if size:
                        left = self._networks.pop(network) - size
                        if left:
                            self._networks[network] = left
                    self._room.notify_all()
        finally:
            self._senders[sender] -= 1
            if not self._senders[sender]:
                del self._senders[sender]


__all__ = ["BodyRoom", "MAX_BUFFERED", "MAX_BUFFERED_PER_NETWORK", "ROOM_WAIT"]
