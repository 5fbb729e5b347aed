"""A caller cancelled as its ledger write is under way (a stop, a request cut short) waits for it, and leaves the node's
memory and its disk agreeing: an authorization cancelled as its pending record is written, never shown to its payee,
goes again with its hold, now and after a restart; a pending authorization dropped as its caller is cancelled is
gone from memory as from disk; a payment or a receipt written as its caller was cancelled, a receipt a repeated
request wrote as the first was cut short, and a payment the retry completed, is noted by the market all the same,
once (real LevelDB; each write held in the ledger's writer until the cancellation reached its caller)."""

from __future__ import annotations

import asyncio

import plyvel
import pytest

from xsc import keys
from xsc.identity import Identity
from xsc.ledger import LedgerService
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE

from tests.support.ledger import HeldWrite

LIMIT = 100_000_000
QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def _cancelled_as_written(held: HeldWrite, task: asyncio.Task) -> None:
    """`task` cancelled while its write is held in the writer, then the write let go: the task ends cancelled, once
    the write has ended."""
    await held.reached_writer()
    task.cancel()  # (its wait for the write is cancelled at once: it sees the cancellation whenever the write ends)
    held.released.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held.written.is_set()


def _ledger_on_disk(tmp_path) -> tuple[plyvel.DB, LedgerService, Identity, Identity]:
    """A ledger on its own LevelDB in `tmp_path`, and a payer and a payee."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    return db, LedgerService(db, LIMIT, threads=1), Identity.generate(), Identity.generate()


def _pending_on_disk(db) -> list[bytes]:
    return [key for prefix in (keys.LEDGER_PENDING, keys.LEDGER_CLAIMS)
            for key in db.iterator(prefix=prefix, include_value=False)]


async def test_an_authorization_cancelled_as_it_is_written_leaves_nothing_pending_or_held(tmp_path,
                                                                                         monkeypatch) -> None:
    """Its caller waits for the write, and the record goes again (no payee ever saw it): nothing is pending or held,
    now or after a restart."""
    db, ledger, payer, payee = _ledger_on_disk(tmp_path)
    held = HeldWrite(ledger.store, "add_pending", monkeypatch)
    authorizing = asyncio.create_task(ledger.authorize(payer, payee.public_key, 900, "test:cut",
                                                       claim=(800, {"fuel": 1})))
    await held.reached_writer()
    assert ledger.held(payer.public_key) == 900  # held as its record is written
    await _cancelled_as_written(held, authorizing)
    assert ledger.pending() == [] and ledger.held(payer.public_key) == 0
    await ledger.close()  # (the writer's queue done: the record's deletion with it)
    assert _pending_on_disk(db) == []

    restarted = LedgerService(db, LIMIT, threads=1)
    assert restarted.pending() == [] and restarted.held(payer.public_key) == 0
    auth = await restarted.authorize(payer, payee.public_key, LIMIT, "test:whole")  # the whole credit is there
    assert restarted.pending() == [auth] and restarted.held(payer.public_key) == LIMIT
    await restarted.close()
    db.close()


async def test_an_authorization_whose_write_is_refused_leaves_nothing_pending_or_held(tmp_path,
                                                                                         monkeypatch) -> None:
    """The write refused (the disk full): the caller's hold is released, nothing is pending, before or after a
    restart."""
    db, ledger, payer, payee = _ledger_on_disk(tmp_path)

    def refused(authorization, claim) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(ledger.store, "add_pending", refused)
    with pytest.raises(OSError):
        await ledger.authorize(payer, payee.public_key, 900, "test:refused")
    assert ledger.pending() == [] and ledger.held(payer.public_key) == 0
    await ledger.close()
    restarted = LedgerService(db, LIMIT, threads=1)
    assert restarted.pending() == [] and restarted.held(payer.public_key) == 0 and _pending_on_disk(db) == []
    await restarted.close()
    db.close()


async def _peered(node_factory):
    a = await node_factory("a", **QUIET)
    b = await node_factory("b", **QUIET)

    async def accept(sender, authorization, amount, usage) -> None:
        return None

    b.app[NODE].payments.add_check("test", accept)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    return a, b


async def test_a_payment_written_as_its_caller_is_cancelled_is_noted_by_the_market(node_factory, monkeypatch) -> None:
    a, b = await _peered(node_factory)
    node_a, b_id = a.app[NODE], b.app[IDENTITY].id
    earned = node_a.market.weights.earned(b_id)
    held = HeldWrite(node_a.ledger.store, "complete", monkeypatch)
    paying = asyncio.create_task(node_a.payments.pay(b_id, 800, {"fuel": 1}, "test:noted"))
    await _cancelled_as_written(held, paying)
    assert node_a.market.weights.earned(b_id) == earned + 800  # what the user paid b raises b's recognition here
    assert node_a.ledger.pending() == [] and node_a.trust.line(b_id)["owed"] == 800


async def test_a_receipt_written_as_the_request_for_it_is_cut_short_is_noted_by_the_market(node_factory,
                                                                                         monkeypatch) -> None:
    a, b = await _peered(node_factory)
    node_b, a_id = b.app[NODE], a.app[IDENTITY].id
    auth = await a.app[NODE].ledger.authorize(a.app[CLIENT_IDENTITY], b.app[IDENTITY].public_key, 900, "test:noted")
    earned = node_b.market.weights.earned(a_id)
    held = HeldWrite(node_b.ledger.store, "countersign", monkeypatch)
    countersigning = asyncio.create_task(node_b.payments.countersign(a_id, auth, 800, {"fuel": 1}))
    await _cancelled_as_written(held, countersigning)
    assert node_b.market.weights.earned(a_id) == earned + 800  # what a's user paid raises a's recognition here
    assert (await node_b.ledger.receipt_for(auth.id)).amount == 800 and node_b.trust.line(a_id)["paid"] == 800


async def test_a_payment_by_a_tabs_receipt_written_as_its_caller_is_cancelled_is_noted_by_the_market(
        node_factory, monkeypatch) -> None:
    """The gateway's side of a tab's close (compute's job, call and placed function tabs pay so: Payments.complete),
    cut short as its payment is written: the payment is whole, and noted as one whose caller went on."""
    a, b = await _peered(node_factory)
    node_a, b_id = a.app[NODE], b.app[IDENTITY].id
    auth = await node_a.payments.authorize(b_id, 900, "test:tab", ttl=600)
    receipt = await b.app[NODE].payments.countersign(a.app[IDENTITY].id, auth, 800, {"fuel": 1})
    earned = node_a.market.weights.earned(b_id)
    held = HeldWrite(node_a.ledger.store, "complete", monkeypatch)
    await _cancelled_as_written(held, asyncio.create_task(node_a.payments.complete(b_id, auth, receipt)))
    assert node_a.market.weights.earned(b_id) == earned + 800
    assert not node_a.ledger.is_pending(auth.id) and node_a.trust.line(b_id)["owed"] == 800


async def test_a_payment_the_retry_completes_is_noted_by_the_market_once(node_factory) -> None:
    """The payee countersigned, its receipt never reached the payer (a payment cut short, a restart): the retry
    pays by it, and the payment raises the payee's recognition as one its caller made would."""
    a, b = await _peered(node_factory)
    node_a, b_id = a.app[NODE], b.app[IDENTITY].id
    auth = await node_a.ledger.authorize(a.app[CLIENT_IDENTITY], b.app[IDENTITY].public_key, 900, "test:retried")
    await b.app[NODE].payments.countersign(a.app[IDENTITY].id, auth, 800, {"fuel": 1})
    earned = node_a.market.weights.earned(b_id)
    assert await node_a.payments.retry(auth) == "completed"
    assert node_a.market.weights.earned(b_id) == earned + 800 and node_a.trust.line(b_id)["owed"] == 800
    assert await node_a.payments.retry_all() == {} and node_a.market.weights.earned(b_id) == earned + 800


async def test_a_payment_cancelled_as_its_authorization_is_written_is_neither_paid_nor_pending(node_factory,
                                                                                                monkeypatch) -> None:
    """The authorization never reached its payee: nothing is pending for the retry to send, nothing is held, and the
    payment made again is paid once."""
    a, b = await _peered(node_factory)
    node_a, b_id, payer = a.app[NODE], b.app[IDENTITY].id, a.app[CLIENT_IDENTITY].public_key
    held = HeldWrite(node_a.ledger.store, "add_pending", monkeypatch)
    paying = asyncio.create_task(node_a.payments.pay(b_id, 800, {"fuel": 1}, "test:cut"))
    await _cancelled_as_written(held, paying)
    cut = held.args[0]
    assert node_a.ledger.pending() == [] and node_a.ledger.held(payer) == 0
    assert await node_a.payments.retry_all() == {}
    assert await b.app[NODE].ledger.receipt_for(cut.id) is None and await node_a.ledger.payment_for(cut.id) is None
    await node_a.payments.pay(b_id, 800, {"fuel": 1}, "test:cut")
    assert node_a.ledger.pending() == [] and node_a.ledger.held(payer) == 0 and node_a.trust.line(b_id)["owed"] == 800
    # (the writer deleted the record before it wrote this payment: on disk as in memory, for the next start)
    assert node_a.db.get(keys.ledger_pending(cut.id)) is None and node_a.ledger.store.claim(cut.id) is None


async def test_an_authorization_abandoned_as_its_caller_is_cancelled_is_gone_and_holds_nothing(tmp_path,
                                                                                              monkeypatch) -> None:
    """Its record deleted as the caller was cancelled: no longer pending nor held here, as on disk and after a
    restart."""
    db, ledger, payer, payee = _ledger_on_disk(tmp_path)
    auth = await ledger.authorize(payer, payee.public_key, 900, "test:abandoned")
    held = HeldWrite(ledger.store, "drop_pending", monkeypatch)
    abandoning = asyncio.create_task(ledger.abandon(auth.id, force=True))
    await _cancelled_as_written(held, abandoning)
    assert _pending_on_disk(db) == []
    assert ledger.pending() == [] and not ledger.is_pending(auth.id) and ledger.held(payer.public_key) == 0
    await ledger.close()
    restarted = LedgerService(db, LIMIT, threads=1)
    assert restarted.pending() == [] and restarted.held(payer.public_key) == 0
    await restarted.close()
    db.close()


async def test_a_receipt_written_by_a_repeated_request_as_the_first_is_cut_short_is_noted_by_the_market_once(
        node_factory) -> None:
    """Two requests for one receipt: the first cut short as its claim is checked, before it wrote anything, the repeat
    writing the receipt.  What the receipt pays raises its sender's recognition once, by the request that wrote it."""
    a, b = await _peered(node_factory)
    node_b, a_id = b.app[NODE], a.app[IDENTITY].id
    auth = await a.app[NODE].ledger.authorize(a.app[CLIENT_IDENTITY], b.app[IDENTITY].public_key, 900, "held:noted")
    checking, released = asyncio.Event(), asyncio.Event()

    async def held_once(sender, authorization, amount, usage) -> None:  # the first request's check waits
        if not checking.is_set():
            checking.set()
            await released.wait()

    node_b.payments.add_check("held", held_once)
    earned = node_b.market.weights.earned(a_id)
    first = asyncio.create_task(node_b.payments.countersign(a_id, auth, 800, {"fuel": 1}))
    await checking.wait()
    receipt = await node_b.payments.countersign(a_id, auth, 800, {"fuel": 1})  # the repeat writes it
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await node_b.ledger.receipt_for(auth.id)) == receipt and node_b.trust.line(a_id)["paid"] == 800
    assert node_b.market.weights.earned(a_id) == earned + 800
    # Asked again once more, it is the stored receipt: noted no more.
    assert await node_b.payments.countersign(a_id, auth, 800, {"fuel": 1}) == receipt
    assert node_b.market.weights.earned(a_id) == earned + 800 and node_b.trust.line(a_id)["paid"] == 800
