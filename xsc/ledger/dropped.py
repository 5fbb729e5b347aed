"""Payments to other nodes dropped unpaid after their payer was told they were pending (the payee, reached at last,
refused them; or it stayed out of reach past their expiry): kept so that their payer learns it where it looks
(`xsc ledger payments`, `xsc node status`), not only in the node's log.  Keys: xsc/keys.py `ledger_dropped`."""

from __future__ import annotations

import struct

from .. import codec, keys
from ..db import Database

KEEP = 200  # the newest kept: what a user reads, not an archive


class DroppedPayments:
    def __init__(self, db: Database) -> None:
        self._db = db
        at = len(keys.LEDGER_DROPPED)
        with db.iterator(prefix=keys.LEDGER_DROPPED, include_value=False) as it:
            self._times = [struct.unpack(">Q", key[at:at + 8])[0] for key in it]  # oldest first, as the keys sort

    def add(self, authorization_id: bytes, record: dict, now: int) -> None:
        """Note one dropped payment; the oldest go past KEEP."""
        with self._db.write_batch(sync=True) as batch:
            batch.put(keys.ledger_dropped(now, authorization_id), codec.dumps(record))
            if len(self._times) >= KEEP:
                with self._db.iterator(prefix=keys.LEDGER_DROPPED, include_value=False) as oldest:
                    for key, _ in zip(oldest, range(len(self._times) + 1 - KEEP)):
                        batch.delete(key)
        self._times = [*self._times[len(self._times) + 1 - KEEP:], now] if len(self._times) >= KEEP else \
            [*self._times, now]

    def newest(self) -> list[dict]:
        """Every dropped payment kept, newest first."""
        with self._db.iterator(prefix=keys.LEDGER_DROPPED, reverse=True) as it:
            return [codec.loads(value) for _, value in it]

    def count(self, since: int = 0) -> int:
        """How many of those kept were dropped at or after `since` (unix seconds)."""
        return sum(1 for t in self._times if t >= since)
