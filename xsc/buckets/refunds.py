"""Refunds of S3 writes refused after their charge (entries.py): the node's account pays each back to the user's.

A refusal writes its refund owed (o/r/) in its own synced batch and wakes the refunder; the refunder's first pass, as
the node starts, takes the rows a crash left.  Each refund is one ledger transfer, job `s3:refund:<storage index>`,
that consumes its row (`LedgerService.settle(consumes=...)`): the row is deleted in the transfer's batch, and a
transfer whose row is gone already is not settled.  So a refund asked for twice (a pass after a crash, or two passes
over one row) is paid once, and one a crash stopped is paid by the next pass.  A refund the node's account cannot pay
(its credit spent) stays owed and is tried again every RETRY seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import NothingOwed, XscError
from ..storage.core.capability import Capability
from ..tasks import woken_loop
from . import entries
from .accounts import REFUND_JOB, UserAccounts
from .index import S3Index

log = logging.getLogger(__name__)
RETRY = 60.0  # seconds between passes when nothing wakes the refunder (a refund the node could not pay yet)


class Refunds:
    def __init__(self, *, accounts: UserAccounts, index: S3Index, retry: float = RETRY) -> None:
        self.accounts, self.index, self.retry = accounts, index, retry
        self.refunded = 0  # refunds paid since start (status)
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        index.on_owed.append(self.wake)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def loops(self) -> dict[str, Any]:
        return {"refunds": woken_loop("s3 refunds", self._woken, self.retry, self.refund_owed)}

    def close(self) -> None:
        self._loop = None

    def wake(self) -> None:
        """A refund may be owed (called from the index's threads): pay it soon."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._woken.set)

    async def refund_owed(self) -> int:
        """Pay every refund owed (up to entries.MAX_OWED_AT_ONCE a pass; a full pass wakes the next): how many."""
        owed = entries.owed(self.index.db)
        outcomes = await asyncio.gather(*(self._refund(*row) for row in owed))
        paid = sum(outcomes)
        self.refunded += paid
        if paid and len(owed) >= entries.MAX_OWED_AT_ONCE:
            self._woken.set()
        return paid

    async def _refund(self, row: bytes, cap: str, user: str, amount: int) -> bool:
        ledger, owner = self.accounts.ledger, self.accounts.owner
        try:
            job = REFUND_JOB + Capability.parse(cap).storage_index.hex()
            await ledger.settle(owner, self.accounts.account(user), amount, {"files": 1}, job, consumes=(row,))
        except NothingOwed:  # paid already (its row went with the transfer)
            return False
        except XscError as err:
            log.warning("could not refund S3 user %s the %d micro-credits of a refused write yet: %s", user, amount,
                        err)
            return False
        return True


__all__ = ["Refunds"]
