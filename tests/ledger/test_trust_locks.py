"""Each peer's trust line under a lock of its own: a payment's count holds its payee's line through the payment's synced
write in the ledger's writer thread, and every other peer's work is taken on meanwhile (real LevelDB, a real ledger
service; the payment's batch held in its writer until the test lets it go)."""

from __future__ import annotations

import asyncio
import functools
import threading

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.identity import Identity
from xsc.ledger import LedgerService
from xsc.ledger.trust import STRIPES, TrustLines

from tests.support.ledger import HELD_FOR, HeldWrite, counted_under

LIMIT = 100_000_000


def _lines(db) -> TrustLines:
    return TrustLines(db, stranger_credit=1_000, peer_credit=0, recognised=lambda peer: False)


def _apart_from(lines: TrustLines, peer: str) -> str:
    """A peer whose line is under another lock than `peer`'s (one in STRIPES shares it)."""
    while True:
        other = Identity.generate().id
        if lines.lock_of(other) is not lines.lock_of(peer):
            return other


@pytest.fixture
async def ledgers(tmp_path):
    """A payer's ledger (with the trust lines on its database) and its payee's, on real LevelDB."""
    dbs = [plyvel.DB(str(tmp_path / name), create_if_missing=True) for name in ("payer", "payee")]
    services = [LedgerService(db, LIMIT, threads=1) for db in dbs]
    yield dbs[0], services[0], services[1]
    for service in services:
        await service.close()
    for db in dbs:
        db.close()


async def test_a_payment_written_holds_its_payees_line_alone(ledgers, monkeypatch) -> None:
    db, payer_ledger, payee_ledger = ledgers
    payer, payee = Identity.generate(), Identity.generate()
    lines = _lines(db)
    a, b = payee.id, _apart_from(lines, payee.id)
    auth = await payer_ledger.authorize(payer, payee.public_key, 900, "test:held")
    receipt = await payee_ledger.countersign(payee, auth, 800, {"fuel": 1})
    held = HeldWrite(payer_ledger.store, "_write", monkeypatch)
    paying = asyncio.create_task(payer_ledger.complete(payer, receipt,
                                                       count=functools.partial(lines.counting, "owed", a)))
    await held.reached_writer()

    # Another peer's work is taken on, on the loop, while the payment's batch waits in the writer: had it waited for
    # that batch, it would have ended only once the batch was written (the hold's bound passed).
    lines.reserve(b, 100, "a call")
    lines.use(b, 70, reserved=100)
    version = lines.version
    lines.recognition_changed()  # (the user recognised a peer: no line's lock is taken for it)
    assert not held.written.is_set()
    assert (lines.line(b)["used"], lines.line(b)["reserved"]) == (70, 0) and lines.version > version

    # The payee's own line is locked by the writer until its batch is written: its work waits for it.
    lock = lines.lock_of(a)
    assert not lock.acquire(blocking=False)
    seen: dict[str, bool] = {}

    def take_on() -> None:
        lines.reserve(a, 50, "a call")
        seen["reserved after the write"] = held.written.is_set()
        lines.use(a, 50, reserved=50)

    taking = threading.Thread(target=take_on)
    taking.start()
    held.released.set()
    payment = await paying
    await asyncio.to_thread(taking.join, HELD_FOR)
    assert not taking.is_alive() and seen == {"reserved after the write": True}
    assert payment.receipt.id == receipt.id and not payer_ledger.is_pending(auth.id)

    # Neither change of the line was lost to the other, in memory or on disk.
    view = {name: lines.line(a)[name] for name in ("paid", "used", "owed", "reserved")}
    assert view == {"paid": 0, "used": 50, "owed": 800, "reserved": 0}
    again = _lines(db)  # as a start reads them
    assert {name: again.line(a)[name] for name in ("paid", "used", "owed")} == {"paid": 0, "used": 50, "owed": 800}
    assert (again.line(b)["used"], again.line(a)["owed"]) == (70, 800)
    listed = {line["peer"]: (line["used"], line["owed"]) for line in lines.lines()}
    assert listed == {a: (50, 800), b: (70, 0)}


def test_a_peers_lock_is_one_of_a_fixed_set_whatever_ids_come(tmp_path) -> None:
    """Strangers' ids grow no locks: each id always gets the same one, of STRIPES at most."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    lines = _lines(db)
    peers = [Identity.generate().id for _ in range(4 * STRIPES)]
    locks = {id(lines.lock_of(peer)) for peer in peers}
    assert len(locks) <= STRIPES
    assert all(lines.lock_of(peer) is lines.lock_of(peer.encode().decode()) for peer in peers)
    db.close()


PEERS = [Identity.generate().id for _ in range(3)]
STEPS = st.lists(st.tuples(st.sampled_from(PEERS), st.sampled_from(("reserve", "release", "use", "paid", "owe",
                                                                      "give_back", "credit", "recognition")),
                           st.integers(0, 500)), max_size=30)


@settings(max_examples=40)
@given(STEPS)
def test_every_change_of_a_line_grows_the_version_and_lands_as_it_is_kept(tmp_path_factory, steps) -> None:
    """Whatever the changes, on whichever peers' lines: each one grows `version` (the market makes its clearing again
    by it), and the lines kept in memory are what is on disk."""
    db = plyvel.DB(str(tmp_path_factory.mktemp("lines") / "db"), create_if_missing=True)
    recognised: set[str] = set()
    lines = TrustLines(db, stranger_credit=10_000, peer_credit=20_000, recognised=recognised.__contains__)
    reserved = dict.fromkeys(PEERS, 0)
    for n, (peer, step, amount) in enumerate(steps):
        before = lines.version
        if step == "reserve" and amount <= lines.line(peer)["available"]:
            lines.reserve(peer, amount, "a call")
            reserved[peer] += amount
        elif step == "release":
            lines.release(peer, min(amount, reserved[peer]))
            reserved[peer] -= min(amount, reserved[peer])
        elif step == "use":
            lines.use(peer, amount)
        elif step == "give_back":
            lines.give_back(peer, amount)
        elif step in ("paid", "owe"):
            getattr(lines, step)(peer, counted_under(n.to_bytes(2, "big")), amount)
        elif step == "credit":
            recognised.add(peer)
            lines.set_credit(peer, amount)
        elif step == "recognition":
            recognised.symmetric_difference_update({peer})
            lines.recognition_changed()
        else:
            continue
        assert lines.version > before, step
    again = TrustLines(db, stranger_credit=10_000, peer_credit=20_000, recognised=recognised.__contains__)
    for peer in PEERS:
        kept = lines.line(peer)
        assert kept["reserved"] == reserved[peer]
        assert {**again.line(peer), "reserved": kept["reserved"],
                "available": kept["available"]} == kept
    db.close()
