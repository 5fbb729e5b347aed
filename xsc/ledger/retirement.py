"""What of the ledger goes once its time has passed (docs/ledger.md, "Retention").

The chains, their index, the account records and fork proofs are kept for good: they are the ledger.  What only stops
an authorization being used twice goes once something else refuses that use: a completed mark (l/c/) once the
authorization's expiry does; a settled mark (l/u/), `retention` after that, when no entry under it is taken any more
(rules.check_remembered); what counts it on a trust line once, then too (trust.py: no count comes later).  What is
proof for the user (the refs an aggregated transfer covers, l/b/) goes `retention` after it was written (tabs.py).
Each is written with its retirement's key (keys.ledger_retire), in the same batch, so a sweep reads only what is due.
"""

from __future__ import annotations

import itertools
from typing import Callable

from .. import keys
from ..db import Database
from .core import rules
from .core.model import Payment, Receipt, decode_entry

RETIRE_BATCH = 10_000  # records one write batch of `retire` deletes at most


class Retirement:
    """The sweep of what is past its time, and the retirement rows given once to records written before they had
    theirs.  Its writes are the ledger's: run on the ledger's writer thread, as LedgerStore's."""

    def __init__(self, db: Database, retention: int, payment_for: Callable[[bytes], Payment | None],
                 receipt_for: Callable[[bytes], Receipt | None]) -> None:
        self.db = db
        self.retention = retention  # ledger.record_retention: settled marks go this long after their expiry
        self._payment_for = payment_for  # an authorization's id -> the payment that completed it here, if any
        self._receipt_for = receipt_for  # an authorization's id -> the receipt that settled it here, if any

    def index(self, now: int) -> int:
        """Give the records written before they had a retirement theirs, once (their l/r/ rows and the mark that
        this was done, in one batch); how many.  One whose authorization is not found here is kept."""
        rows = _index_settled(self.db, self.retention) + _index_expiries(self.db)
        if self.db.get(keys.LEDGER_RETIRE_INDEXED) is not None:
            return rows
        found_rows: list[tuple[bytes, bytes]] = []
        for prefix, find, guard in ((keys.LEDGER_COMPLETED, self._payment_for, False),
                                    (keys.TRUST_OWED, self._payment_for, True),
                                    (keys.TRUST_PAID, self._receipt_for, True)):
            with self.db.iterator(prefix=prefix, include_value=False) as it:
                found = list(it)
            for key in found:
                entry = find(key[len(prefix):])
                if entry is not None:
                    expires_at = entry.authorization.expires_at
                    found_rows.append(guard_row(key, expires_at, self.retention) if guard else
                                      (keys.ledger_retire(expires_at + rules.CLOCK_SKEW, key), b""))
        with self.db.iterator(prefix=keys.LEDGER_COVERS, include_value=False) as it:
            found_rows += [(keys.ledger_retire(now + self.retention, key), b"") for key in it]
        with self.db.write_batch(transaction=True, sync=True) as batch:
            for row, value in found_rows:
                batch.put(row, value)
            batch.put(keys.LEDGER_RETIRE_INDEXED, b"")
        return rows + len(found_rows)

    def retire(self, now: int, limit: int = RETIRE_BATCH) -> int:
        """Delete the records whose time has passed (at most `limit`, in one write batch); how many.  A replay guard
        whose row was written under a shorter retention than the one now set is kept, its row moved (`_kept_until`)."""
        due: list[tuple[bytes, bytes]] = []
        with self.db.iterator(start=keys.LEDGER_RETIRE, stop=keys.ledger_retire(now, b"")) as it:
            due = list(itertools.islice(it, limit))
        if due:
            with self.db.write_batch(transaction=True) as batch:
                for key, value in due:
                    record = keys.split_ledger_retire(key)[1]
                    later = _kept_until(value, self.retention)
                    if later is not None and later > now:
                        batch.put(keys.ledger_retire(later, record), value)
                    else:
                        batch.delete(record)
                    batch.delete(key)
        return len(due)


def guard_row(record: bytes, expires_at: int, retention: int) -> tuple[bytes, bytes]:
    """The retirement row of a replay guard (a settled mark, a count marker) of an authorization expiring at
    `expires_at`, and its value: that expiry, by which the sweep moves it if the retention is raised."""
    return keys.ledger_retire(rules.retired_at(expires_at, retention), record), keys.retire_expiry(expires_at)


def _kept_until(row: bytes, retention: int) -> int | None:
    """When a replay guard (a settled mark, a receipt's or a payment's count marker) goes under the retention now
    set, by its authorization's expiry, which its row carries (`guard_row`; None: not a guard).  Until then
    `check_remembered` takes entries under that authorization and `TrustLines` counts it, and without the guard a
    replay of it would pass for a first: a row written under a shorter retention (the setting was raised) comes
    due too soon."""
    expires_at = keys.split_retire_expiry(row)
    return None if expires_at is None else rules.retired_at(expires_at, retention)


def _index_settled(db: Database, retention: int) -> int:
    """The settled marks' retirement rows, once: every chain is walked (an authorization's expiry is in its
    entries), and the rows are written a batch at a time; the mark that this was done goes with the last batch, so
    a walk a kill -9 cut short is made again whole.  How many rows (a transfer's two halves write one row twice)."""
    if db.get(keys.LEDGER_SETTLED_INDEXED) is not None:
        return 0
    rows: list[bytes] = []
    written = 0
    with db.iterator(prefix=keys.LEDGER_ENTRIES, include_key=False) as it:
        for data in it:
            auth = decode_entry(data).authorization
            rows.append(guard_row(keys.ledger_settled(auth.id), auth.expires_at, retention))
            if len(rows) >= RETIRE_BATCH:
                with db.write_batch(transaction=True) as batch:
                    for row, value in rows:
                        batch.put(row, value)
                written, rows = written + len(rows), []
    with db.write_batch(transaction=True, sync=True) as batch:
        for row, value in rows:
            batch.put(row, value)
        batch.put(keys.LEDGER_SETTLED_INDEXED, b"")
    return written + len(rows)


def _index_expiries(db: Database) -> int:
    """The replay guards' retirement rows written without their authorization's expiry are given it, once, by one
    walk of the chains (where each authorization's expiry is): the sweep moves a guard by it when the retention is
    raised.  How many."""
    if db.get(keys.LEDGER_EXPIRY_INDEXED) is not None:
        return 0
    bare: dict[bytes, list[bytes]] = {}
    with db.iterator(prefix=keys.LEDGER_RETIRE) as it:
        for key, value in it:
            record = keys.split_ledger_retire(key)[1]
            for prefix in (keys.LEDGER_SETTLED, keys.TRUST_PAID, keys.TRUST_OWED):
                if not value and record.startswith(prefix):
                    bare.setdefault(record[len(prefix):], []).append(key)
    rows: list[tuple[bytes, bytes]] = []
    if bare:
        with db.iterator(prefix=keys.LEDGER_ENTRIES, include_key=False) as it:
            for data in it:
                auth = decode_entry(data).authorization
                rows += [(key, keys.retire_expiry(auth.expires_at)) for key in bare.pop(auth.id, ())]
                if not bare:
                    break
    with db.write_batch(transaction=True, sync=True) as batch:
        for key, value in rows:
            batch.put(key, value)
        batch.put(keys.LEDGER_EXPIRY_INDEXED, b"")
    return len(rows)


__all__ = ["RETIRE_BATCH", "Retirement", "guard_row"]
