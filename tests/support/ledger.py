"""Helpers for the ledger tests: a LedgerStore on a real LevelDB, signed transfers between test keys, and a write held
in the ledger's writer thread until the test lets it go."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import plyvel

from xsc.identity import Identity
from xsc.ledger import LedgerStore
from xsc.ledger.core.model import Authorization, Payment, Receipt, authorize, make_payment, make_receipt
from xsc.ledger.core.rules import AccountState

LIMIT = 100_000_000


def open_store(path: Path, credit_limit: int = LIMIT) -> tuple[plyvel.DB, LedgerStore]:
    db = plyvel.DB(str(path), create_if_missing=True)
    return db, LedgerStore(db, credit_limit)


def now() -> int:
    return int(time.time())


def transfer(payer: Identity, payee: Identity, amount: int, payer_state: AccountState, payee_state: AccountState,
             *, cap: int | None = None, at: int | None = None, expires_at: int | None = None,
             job: str = "test-job", nonce: bytes | None = None, authorization=None) -> tuple[Receipt, Payment]:
    """A complete, validly signed transfer extending both accounts' chains from the given states."""
    at = now() if at is None else at
    auth = authorization or authorize(payer, payee.public_key, amount if cap is None else cap, job,
                                      at + 600 if expires_at is None else expires_at, nonce or os.urandom(16))
    receipt = make_receipt(payee, payee_state.seq + 1, payee_state.head, auth, amount, {"fuel": amount}, at)
    payment = make_payment(payer, payer_state.seq + 1, payer_state.head, receipt)
    return receipt, payment


def counted_under(tag: bytes, expires_at: int | None = None) -> Authorization:
    """An authorization a trust line counts a receipt or a payment under (its id and expiry are all the line reads)."""
    return Authorization(b"\1" * 32, b"\2" * 32, 1, tag.ljust(16, b"\0"),
                         int(time.time()) + 600 if expires_at is None else expires_at, "test:line")


HELD_FOR = 60  # seconds a held write waits for the test at most: a bound against a hang, never reached when green


class HeldWrite:
    """The next call of the ledger store's method `name` (`_write`, a batch; `add_pending`, `complete`...), in the
    writer thread, held before it runs until the test sets `released`; `written` once it ran (raised nothing)."""

    def __init__(self, store: LedgerStore, name: str, monkeypatch) -> None:
        self.reached, self.released, self.written = threading.Event(), threading.Event(), threading.Event()
        self.args: tuple = ()  # what the held call was given
        write = getattr(store, name)

        def held(*args, **kwargs):
            self.args = args
            self.reached.set()
            self.released.wait(HELD_FOR)
            result = write(*args, **kwargs)
            self.written.set()
            return result

        monkeypatch.setattr(store, name, held)

    async def reached_writer(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, HELD_FOR), "the write never reached the writer"
