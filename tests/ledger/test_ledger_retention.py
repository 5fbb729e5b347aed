"""What the ledger does not keep for good (ledger/store.py `retire`): the completed marks (l/c/) go once their
authorization expired, by more than the clock skew; the provenance ids an aggregated transfer covers (l/b/), and
the marks that count a receipt or a payment on a trust line once (l/tp/, l/to/), `retention` later.  The chains,
balances and settled marks never change by it, and a replay of a retired authorization is refused, or not
counted, all the same."""

from __future__ import annotations

import os
import time

import plyvel
import pytest

from xsc import keys
from xsc.errors import AuthorizationExpired, AuthorizationNotPending, ReceiptMismatch
from xsc.identity import Identity
from xsc.ledger import LedgerService, LedgerStore
from xsc.ledger.core.model import ZERO_HASH, authorize, make_receipt
from xsc.ledger.core.rules import CLOCK_SKEW
from xsc.ledger.tabs import Tabs
from xsc.ledger.trust import TrustLines

RETENTION = 3 * 86400


def _count(db, prefix: bytes) -> int:
    return sum(1 for _ in db.iterator(prefix=prefix, include_value=False))


async def test_records_not_kept_for_good_go_past_their_time_and_balances_chains_and_replays_hold(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    node, user, payee, sender = (Identity.generate() for _ in range(4))
    ledger = LedgerService(db, 10**9, node=node, client=user, threads=1, retention=RETENTION)
    lines = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False, retention=RETENTION)
    tabs = Tabs(ledger=ledger, identities=[user, node])
    try:
        # The local user pays a node elsewhere (l/c/, and l/to/ once counted as owed) ...
        auth = await ledger.authorize(user, payee.public_key, 300, "test:paid", ttl=600, claim=(300, {"fuel": 1}))
        receipt = make_receipt(payee, 1, ZERO_HASH, auth, 300, {"fuel": 1}, int(time.time()))
        await ledger.complete(user, receipt)
        lines.owe(payee.id, auth, 300)
        # ... this node countersigns a receipt a peer asked for (l/tp/ once counted as paid) ...
        claim = authorize(sender, node.public_key, 500, "test:claim", int(time.time()) + 600, os.urandom(16))
        made = await ledger.countersign(node, claim, 500, {"fuel": 2})
        lines.paid(sender.id, claim, 500)
        # ... and invokes are settled in aggregate (l/b/).
        await ledger.hold(user, 40)
        tabs.owe(user, node, os.urandom(16), 40, 7, held=40)
        (entry_id,) = await tabs.flush()
        settled = int(time.time())
        marks = {p: _count(db, p) for p in (keys.LEDGER_COMPLETED, keys.LEDGER_COVERS, keys.TRUST_PAID,
                                           keys.TRUST_OWED)}
        assert marks == dict.fromkeys(marks, 1), marks
        accounts, report = ledger.accounts(), await ledger.verify()
        assert report["ok"], report["violations"]
        entries = report["entries"]

        assert await ledger.retire(auth.expires_at) == 0  # not before its expiry and the skew have passed
        assert await ledger.retire(auth.expires_at + CLOCK_SKEW + 1) == 1
        assert _count(db, keys.LEDGER_COMPLETED) == 0 and _count(db, keys.LEDGER_COVERS) == 1
        history = await ledger.history(user.public_key, 10, expand=True)
        assert [e["covered"] for e in history if e["id"] == entry_id] != [None]  # kept for its retention
        late = max(auth.expires_at, claim.expires_at) + RETENTION + CLOCK_SKEW + 1
        assert await ledger.retire(settled + RETENTION - 1) == 0  # the trust marks and the covered ids: not yet
        assert await ledger.retire(late) == 3
        assert {p: _count(db, p) for p in marks} == dict.fromkeys(marks, 0)
        assert _count(db, keys.LEDGER_RETIRE) == 0

        # Balances and chains are as they were, and they still verify.
        assert ledger.accounts() == accounts
        report = await ledger.verify()
        assert report["ok"] and report["entries"] == entries, report["violations"]
        history = await ledger.history(user.public_key, 10, expand=True)
        assert [e["covered"] for e in history if e["id"] == entry_id] == [None]  # the transfer stays, its ids went
        # A replay of a retired authorization is refused: the payment is not made twice ...
        with pytest.raises(AuthorizationNotPending):
            await ledger.complete(user, receipt)
        # ... no receipt is made under it again (its stored receipt is what a repeated request gets back), nor
        # under it anywhere its settled mark is not (by its expiry) ...
        assert (await ledger.countersign(node, claim, 500, {"fuel": 2})).id == made.id
        with pytest.raises(ReceiptMismatch):
            ledger.store.countersign(node, claim, 501, (("fuel", 2),), late)
        elsewhere = LedgerStore(plyvel.DB(str(tmp_path / "elsewhere"), create_if_missing=True), 10**9)
        with pytest.raises(AuthorizationExpired):
            elsewhere.countersign(node, claim, 500, (("fuel", 2),), late)
        elsewhere.db.close()
        assert ledger.accounts() == accounts
        # ... and neither the receipt nor the payment is counted on a trust line again.
        before = (lines.line(sender.id), lines.line(payee.id))
        lines.paid(sender.id, claim, 500, now=late)
        lines.owe(payee.id, auth, 300, now=late)
        assert (lines.line(sender.id), lines.line(payee.id)) == before
        assert before[0]["paid"] == 500 and before[1]["owed"] == 300
        assert lines.owe_counted(auth, now=late)  # a start's recount of the newest payments stops there
    finally:
        await ledger.close()
        db.close()


async def test_records_written_before_they_had_a_retirement_are_given_theirs_once(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    node, user, payee, sender = (Identity.generate() for _ in range(4))
    ledger = LedgerService(db, 10**9, node=node, client=user, threads=1, retention=RETENTION)
    lines = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False, retention=RETENTION)
    auth = await ledger.authorize(user, payee.public_key, 300, "test:paid", ttl=600, claim=(300, {"fuel": 1}))
    await ledger.complete(user, make_receipt(payee, 1, ZERO_HASH, auth, 300, {"fuel": 1}, int(time.time())))
    lines.owe(payee.id, auth, 300)
    claim = authorize(sender, node.public_key, 500, "test:claim", int(time.time()) + 900, os.urandom(16))
    await ledger.countersign(node, claim, 500, {"fuel": 2})
    lines.paid(sender.id, claim, 500)
    await ledger.hold(user, 40)
    tabs = Tabs(ledger=ledger, identities=[user, node])
    tabs.owe(user, node, os.urandom(16), 40, 7, held=40)
    await tabs.flush()
    await ledger.close()
    for key in list(db.iterator(prefix=keys.LEDGER_RETIRE, include_value=False)) + [keys.LEDGER_RETIRE_INDEXED]:
        db.delete(key)  # as a node whose ledger kept these for good left them
    marks = (keys.LEDGER_COMPLETED, keys.LEDGER_COVERS, keys.TRUST_PAID, keys.TRUST_OWED)
    assert [_count(db, p) for p in marks] == [1, 1, 1, 1]

    ledger = LedgerService(db, 10**9, node=node, client=user, threads=1, retention=RETENTION)
    try:
        assert _count(db, keys.LEDGER_RETIRE) == 4
        assert ledger.store.index_retirements(RETENTION, int(time.time())) == 0  # once
        assert await ledger.retire(auth.expires_at + CLOCK_SKEW + 1) == 1  # the completed mark: past its expiry
        assert await ledger.retire(claim.expires_at + RETENTION + CLOCK_SKEW + 1) == 3  # the ids, the lines' marks
        assert [_count(db, p) for p in marks + (keys.LEDGER_RETIRE,)] == [0, 0, 0, 0, 0]
        assert (await ledger.verify())["ok"]
    finally:
        await ledger.close()
        db.close()
