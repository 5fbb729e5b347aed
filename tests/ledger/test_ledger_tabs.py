"""The tabs' loop (ledger/tabs.py): asleep while nothing is owed, and a payment that goes on a tab then is still
settled as one transfer, by the loop, without a flush asked."""

from __future__ import annotations

import asyncio
import os

import plyvel

from xsc.identity import Identity
from xsc.ledger import LedgerService
from xsc.ledger.tabs import Tabs
from xsc.tasks import stop


async def _settled(tabs: Tabs, refs: int) -> None:
    while tabs.settled_refs < refs:
        await asyncio.sleep(0.01)


async def test_a_payment_owed_to_an_idle_loop_is_settled_by_it(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    node, user = Identity.generate(), Identity.generate()
    ledger = LedgerService(db, 10**9, node=node, client=user, threads=1)
    tabs = Tabs(ledger=ledger, identities=[user, node], interval=0.01)
    loop = asyncio.create_task(tabs.loops()["ledger-tabs"]())
    try:
        for round_ in (1, 2):  # the second after the loop found nothing owed and slept again
            await ledger.hold(user, 40)
            tabs.owe(user, node, os.urandom(16), 40, 7, held=40)
            await asyncio.wait_for(_settled(tabs, round_), 10)
            assert tabs.open() == {"tabs": 0, "refs": 0, "amount": 0}
    finally:
        await stop(loop)
        await ledger.close()
        db.close()
