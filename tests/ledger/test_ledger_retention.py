"""What the ledger does not keep for good (ledger/store.py `retire`): the completed marks (l/c/) go once their
authorization expired, by more than the clock skew; the settled marks (l/u/), the provenance ids an aggregated
transfer covers (l/b/), and the marks that count a receipt or a payment on a trust line once (l/tp/, l/to/),
`retention` later.  The chains and balances never change by it, and a replay of a retired authorization is refused,
or not counted, all the same."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import plyvel
import pytest

from tests.support.ledger import transfer
from xsc import keys
from xsc.errors import AuthorizationExpired, AuthorizationNotPending, AuthorizationReplayed, ReceiptMismatch
from xsc.identity import Identity
from xsc.ledger import LedgerService, LedgerStore
from xsc.ledger.core import rules
from xsc.ledger.core.model import ZERO_HASH, authorize, make_receipt
from xsc.ledger.core.rules import CLOCK_SKEW, AccountState
from xsc.ledger.store import new_settlement
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE
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
        history = await ledger.history.entries(user.public_key, 10, expand=True)
        assert [e["covered"] for e in history if e["id"] == entry_id] != [None]  # kept for its retention
        late = settled + 600 + RETENTION + CLOCK_SKEW + 1  # past every authorization's expiry (600 s at most)
        assert await ledger.retire(settled + RETENTION - 1) == 0  # the trust marks and the covered ids: not yet
        # Until then a repeated request for the receipt gets the stored one, and one for another amount is refused.
        assert (await ledger.countersign(node, claim, 500, {"fuel": 2})).id == made.id
        with pytest.raises(ReceiptMismatch):
            ledger.store.countersign(node, claim, 501, (("fuel", 2),), int(time.time()))
        assert _count(db, keys.LEDGER_SETTLED) == 3
        assert await ledger.retire(late) == 6  # with the three transfers' settled marks
        assert {p: _count(db, p) for p in marks} == dict.fromkeys(marks, 0)
        assert _count(db, keys.LEDGER_RETIRE) == 0 and _count(db, keys.LEDGER_SETTLED) == 0

        # Balances and chains are as they were, and they still verify.
        assert ledger.accounts() == accounts
        report = await ledger.verify(now=late)
        assert report["ok"] and report["entries"] == entries, report["violations"]
        history = await ledger.history.entries(user.public_key, 10, expand=True)
        assert [e["covered"] for e in history if e["id"] == entry_id] == [None]  # the transfer stays, its ids went
        # A replay of a retired authorization is refused: the payment is not made twice ...
        with pytest.raises(AuthorizationNotPending):
            await ledger.complete(user, receipt)
        # ... and no receipt is made under it again, by its expiry ...
        with pytest.raises(AuthorizationExpired):
            ledger.store.countersign(node, claim, 500, (("fuel", 2),), late)
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
    for key in list(db.iterator(prefix=keys.LEDGER_RETIRE, include_value=False)) + [keys.LEDGER_RETIRE_INDEXED,
                                                                                     keys.LEDGER_SETTLED_INDEXED]:
        db.delete(key)  # as a node whose ledger kept these for good left them
    marks = (keys.LEDGER_COMPLETED, keys.LEDGER_COVERS, keys.TRUST_PAID, keys.TRUST_OWED, keys.LEDGER_SETTLED)
    assert [_count(db, p) for p in marks] == [1, 1, 1, 1, 3]

    ledger = LedgerService(db, 10**9, node=node, client=user, threads=1, retention=RETENTION)
    try:
        assert _count(db, keys.LEDGER_RETIRE) == 4 + 3
        assert ledger.store.retirement.index(int(time.time())) == 0  # once
        assert await ledger.retire(auth.expires_at + CLOCK_SKEW + 1) == 1  # the completed mark: past its expiry
        late = claim.expires_at + RETENTION + CLOCK_SKEW + 1
        assert await ledger.retire(late) == 6  # the ids, the lines' marks, the settled marks
        assert [_count(db, p) for p in marks + (keys.LEDGER_RETIRE,)] == [0, 0, 0, 0, 0, 0]
        assert (await ledger.verify(now=late))["ok"]
    finally:
        await ledger.close()
        db.close()


async def test_a_replay_from_a_counterparty_stays_refused_once_the_retention_sweep_dropped_its_mark(
        node, monkeypatch) -> None:
    app = node.app
    ledger, me, peer = app[NODE].ledger, app[IDENTITY], Identity.generate()
    receipt, payment = transfer(peer, me, 42, AccountState(), ledger.store.state(me.public_key))
    body = {"entries": [receipt.encode().hex(), payment.encode().hex()]}
    assert (await node.post("/v1/ledger/entries", json=body)).status == 201
    # The node signs a second receipt under the peer's authorization, at the head of its chain.
    replay, _ = transfer(peer, me, 42, AccountState(), ledger.store.state(me.public_key),
                         authorization=receipt.authorization)
    refused = await node.post("/v1/ledger/entries", json={"entries": [replay.encode().hex()]})
    assert (refused.status, (await refused.json())["code"]) == (409, "authorization-replayed")

    # The ledger's clock passes the mark's time (ledger.record_retention after the authorization's expiry), and
    # the ledger-retention loop's round drops it.
    later = rules.retired_at(receipt.authorization.expires_at, ledger.retention) + 1
    monkeypatch.setattr("xsc.ledger.service.time", SimpleNamespace(time=lambda: later, perf_counter=time.perf_counter))
    assert await ledger.retire() >= 1
    assert ledger.store.settled_by(receipt.authorization.id) is None

    refused = await node.post("/v1/ledger/entries", json={"entries": [replay.encode().hex()]})
    problem = await refused.json()
    assert (refused.status, problem["code"]) == (422, "authorization-expired"), problem
    assert "record_retention" in problem["detail"], problem
    assert ledger.store.state(me.public_key).seq == 1 and ledger.store.state(peer.public_key).balance == -42
    again = await node.post("/v1/ledger/entries", json=body)  # what is stored is still known as such
    assert again.status == 200 and [r["status"] for r in (await again.json())["results"]] == ["duplicate"] * 2
    report = await (await node.get("/v1/ledger/verify")).json()
    assert report["ok"] and report["entries"] == 2, report["violations"]


def test_settled_marks_stay_bounded_as_transfers_settle_and_expire(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    retention, per_round, step = 1000, 5, 1000
    store = LedgerStore(db, 10**12, retention=retention)
    payer, payee = Identity.generate(), Identity.generate()
    start = int(time.time())
    try:
        for n in range(8):
            now = start + n * step
            settled = store.settle([new_settlement(payer, payee, 7, {"fuel": 1}, f"test:{n}:{i}", now)
                                    for i in range(per_round)], now)
            assert all(not isinstance(s, Exception) for s in settled), settled
            store.retirement.retire(now)
            # A mark lives its authorization's 600 s, the retention and the skew: this round's and the last one's.
            assert _count(db, keys.LEDGER_SETTLED) <= 2 * per_round
            assert _count(db, keys.LEDGER_RETIRE) == _count(db, keys.LEDGER_SETTLED)
            report = store.verify(now)
            assert report["ok"] and report["entries"] == 2 * per_round * (n + 1), report["violations"]
        assert store.state(payer.public_key).balance == -7 * per_round * 8
    finally:
        db.close()


def test_a_settled_mark_written_under_a_shorter_retention_stays_until_the_longer_one_refuses_its_replays(
        tmp_path) -> None:
    """ledger.record_retention raised: a mark whose row was written under the old value is due before
    `check_remembered` refuses its authorization's entries, so the sweep keeps it, due again under the new value."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    me, peer = Identity.generate(), Identity.generate()
    try:
        receipt, payment = transfer(peer, me, 42, AccountState(), AccountState())
        LedgerStore(db, 10**9, retention=RETENTION).accept([receipt, payment], int(time.time()))
        store = LedgerStore(db, 10**9, retention=2 * RETENTION)  # the node restarted with a longer retention
        replay, _ = transfer(peer, me, 42, AccountState(), store.state(me.public_key),
                             authorization=receipt.authorization)
        expires_at = receipt.authorization.expires_at
        between = rules.retired_at(expires_at, RETENTION) + 1
        assert store.retirement.retire(between) >= 1
        assert store.settled_by(receipt.authorization.id) == receipt.id
        with pytest.raises(AuthorizationReplayed):
            store.accept([replay], between)
        assert store.verify(between)["ok"]
        late = rules.retired_at(expires_at, 2 * RETENTION) + 1
        assert store.retirement.retire(late) >= 1 and store.settled_by(receipt.authorization.id) is None
        with pytest.raises(AuthorizationExpired):
            store.accept([replay], late)
        assert store.verify(late)["ok"] and _count(db, keys.LEDGER_RETIRE) == 0
    finally:
        db.close()


@pytest.mark.parametrize("rows_carry_expiry", [True, False])
async def test_a_payments_marks_written_under_a_shorter_retention_stay_until_the_longer_one_refuses_a_recount(
        tmp_path, rows_carry_expiry: bool) -> None:
    """ledger.record_retention raised: the payer's halves of a transfer with a node elsewhere, its settled mark and
    the marker that counted its payment as owed, are due under the old value before the trust line refuses to count
    the payment again; the sweep keeps them, due again under the new value (their rows carry the expiry: the
    completed mark that found the payment is gone by then).  Rows that carry none are given it at the start."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    user, payee = Identity.generate(), Identity.generate()
    ledger = LedgerService(db, 10**9, node=Identity.generate(), client=user, threads=1, retention=RETENTION)
    auth = await ledger.authorize(user, payee.public_key, 300, "test:paid", ttl=600, claim=(300, {"fuel": 1}))
    receipt = make_receipt(payee, 1, ZERO_HASH, auth, 300, {"fuel": 1}, int(time.time()))
    await ledger.complete(user, receipt)
    TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False, retention=RETENTION).owe(
        payee.id, auth, 300)
    await ledger.close()
    if not rows_carry_expiry:
        for key in list(db.iterator(prefix=keys.LEDGER_RETIRE, include_value=False)):
            db.put(key, b"")
        db.delete(keys.LEDGER_EXPIRY_INDEXED)

    # The node restarts with a longer retention.
    ledger = LedgerService(db, 10**9, node=Identity.generate(), client=user, threads=1, retention=2 * RETENTION)
    lines = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False,
                       retention=2 * RETENTION)
    try:
        between = rules.retired_at(auth.expires_at, RETENTION) + 1
        assert await ledger.retire(between) == 3  # the completed mark goes; the two guards' rows move
        assert _count(db, keys.LEDGER_COMPLETED) == 0
        assert ledger.store.settled_by(auth.id) == receipt.id and _count(db, keys.TRUST_OWED) == 1
        lines.owe(payee.id, auth, 300, now=between)  # a start's recount, or a replay of the receipt
        assert lines.line(payee.id)["owed"] == 300 and lines.owe_counted(auth, now=between)
        assert (await ledger.verify(now=between))["ok"]

        late = rules.retired_at(auth.expires_at, 2 * RETENTION) + 1
        assert await ledger.retire(late) == 2
        assert _count(db, keys.TRUST_OWED) == 0 and ledger.store.settled_by(auth.id) is None
        assert _count(db, keys.LEDGER_RETIRE) == 0
        lines.owe(payee.id, auth, 300, now=late)
        assert lines.line(payee.id)["owed"] == 300 and lines.owe_counted(auth, now=late)
        assert (await ledger.verify(now=late))["ok"]
    finally:
        await ledger.close()
        db.close()
