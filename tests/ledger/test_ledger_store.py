"""The ledger on a real LevelDB: settlement rules, entries from counterparties, forks, tampering."""

from __future__ import annotations

import os

import pytest

from tests.support.ledger import now, open_store, transfer
from xsc import keys
from xsc.errors import (AuthorizationExpired, AuthorizationReplayed, ChainConflict, ForkDetected,
                        InsufficientCredit, InvalidEntry, NothingOwed)
from xsc.identity import Identity, public_id
from xsc.ledger import Settlement, decode_entry, new_settlement
from xsc.ledger.core.model import authorize


@pytest.fixture
def store(tmp_path):
    db, store = open_store(tmp_path / "db", credit_limit=1_000)
    yield store
    db.close()


A, B, C = Identity.generate(), Identity.generate(), Identity.generate()


def settle(store, payer, payee, amount, **kw):
    [result] = store.settle([new_settlement(payer, payee, amount, {"fuel": amount}, "job", now())], now(), **kw)
    if isinstance(result, Exception):
        raise result
    return result


def test_settlement_appends_to_both_chains(store):
    payment = settle(store, A, B, 300)
    assert payment.account == A.public_key and payment.receipt.account == B.public_key
    assert store.state(A.public_key).balance == -300 and store.state(B.public_key).balance == 300
    assert [decode_entry(d) for d in store.chain(A.public_key)] == [payment]
    assert [decode_entry(d) for d in store.chain(B.public_key)] == [payment.receipt]
    settle(store, B, A, 100)
    assert store.state(A.public_key).seq == 2 and store.state(A.public_key).balance == -200
    report = store.verify()
    assert report["ok"], report["violations"]
    assert report["balance_sum"] == 0 and report["open_transfers"] == 0 and report["entries"] == 4


def test_credit_limit_refuses_and_names_the_shortfall(store):
    settle(store, A, B, 900)
    with pytest.raises(InsufficientCredit) as err:
        settle(store, A, B, 150)
    assert "short by 0.000050" in err.value.message and err.value.details["short"] == 50
    settle(store, A, B, 100)  # exactly down to the limit is allowed
    assert store.state(A.public_key).balance == -1_000
    assert store.verify()["ok"]


def test_replayed_authorization_is_refused(store):
    auth = authorize(A, B.public_key, 50, "job", now() + 600, os.urandom(16))
    [first] = store.settle([Settlement(A, B, auth, 40, (("fuel", 1),))], now())
    assert not isinstance(first, Exception)
    [again] = store.settle([Settlement(A, B, auth, 10, (("fuel", 1),))], now())
    assert isinstance(again, AuthorizationReplayed)
    # also within one group
    auth2 = authorize(A, B.public_key, 50, "job", now() + 600, os.urandom(16))
    results = store.settle([Settlement(A, B, auth2, 1, ()), Settlement(A, B, auth2, 1, ())], now())
    assert not isinstance(results[0], Exception) and isinstance(results[1], AuthorizationReplayed)
    assert store.state(A.public_key).balance == -41
    assert store.verify()["ok"]


def test_expired_authorization_is_refused(store):
    auth = authorize(A, B.public_key, 50, "job", now() - 1, os.urandom(16))
    [result] = store.settle([Settlement(A, B, auth, 10, ())], now())
    assert isinstance(result, AuthorizationExpired)
    assert store.state(A.public_key).seq == 0


def test_amount_over_cap_and_forged_authorization_are_refused(store):
    auth = authorize(A, B.public_key, 50, "job", now() + 600, os.urandom(16))
    [over] = store.settle([Settlement(A, B, auth, 51, ())], now())
    assert isinstance(over, InvalidEntry) and "exceeds the authorized cap" in over.message
    forged = auth.signed(C.sign(auth.body))
    [bad] = store.settle([Settlement(A, B, forged, 10, ())], now())
    assert isinstance(bad, InvalidEntry) and "signature" in bad.message
    [other] = store.settle([Settlement(C, B, auth, 10, ())], now())
    assert isinstance(other, InvalidEntry)
    # a group with failures keeps the others, exactly as if settled one by one
    results = store.settle([Settlement(A, B, auth, 51, ()), new_settlement(A, B, 5, {}, "j", now())], now())
    assert isinstance(results[0], InvalidEntry) and results[1].seq == 1
    assert store.verify()["ok"]


def test_entries_from_a_counterparty_are_validated_then_stored(store):
    # C's chains are foreign to this store: they arrive as posted entries.
    r1, p1 = transfer(C, A, 70, store.state(C.public_key), store.state(A.public_key))
    results = store.accept([r1, p1], now())
    assert [r["status"] for r in results] == ["stored", "stored"]
    assert store.accept([p1], now())[0]["status"] == "duplicate"
    assert store.state(A.public_key).balance == 70 and store.state(C.public_key).balance == -70
    # a gap is refused, naming what is missing
    r2, p2 = transfer(C, A, 1, store.state(C.public_key), store.state(A.public_key))
    r3, p3 = transfer(C, A, 1, store.state(C.public_key).after(p2), store.state(A.public_key).after(r2))
    with pytest.raises(ChainConflict) as err:
        store.accept([p3], now())
    assert err.value.details["have"] == 1
    # all or nothing: a bad signature late in the request stores nothing
    bad = decode_entry(p3.encode()[:-1] + bytes([p3.encode()[-1] ^ 1]))
    with pytest.raises(InvalidEntry):
        store.accept([r2, p2, r3, bad], now())
    assert store.state(C.public_key).seq == 1
    store.accept([r2, p2, r3, p3], now())
    # replay: a second receipt under a settled authorization
    r4, _ = transfer(C, A, 1, store.state(C.public_key), store.state(A.public_key), authorization=r3.authorization)
    with pytest.raises(AuthorizationReplayed):
        store.accept([r4], now())
    assert store.verify()["ok"]


def test_fork_is_detected_kept_and_reported(store):
    r1, p1 = transfer(C, A, 5, store.state(C.public_key), store.state(A.public_key))
    store.accept([r1, p1], now())
    # C signs a second, different entry at seq 1 of its chain: equivocation
    _, other = transfer(C, B, 9, store.state(C.public_key).__class__(), store.state(B.public_key))
    assert other.seq == 1 and other.id != p1.id
    with pytest.raises(ForkDetected) as err:
        store.accept([other], now())
    assert err.value.details["seq"] == 1 and err.value.details["account"] == public_id(C.public_key)
    assert store.state(C.public_key).forked
    assert len(store.forks()) == 1
    report = store.verify()
    assert not report["ok"]
    assert any("fork" in v["message"] and v["account"] == public_id(C.public_key) and v["seq"] == 1
               for v in report["violations"])
    # the marked account gets no new entries
    r2, p2 = transfer(C, A, 1, store.state(C.public_key), store.state(A.public_key))
    with pytest.raises(ChainConflict):
        store.accept([r2, p2], now())


def test_every_changed_byte_of_a_stored_entry_fails_verify_naming_it(store):
    settle(store, A, B, 10)
    payment = settle(store, A, B, 20)  # A seq 2: an entry in the middle of nothing, with a successor below
    settle(store, A, B, 30)
    key = keys.ledger_entry(A.public_key, payment.seq)
    original = store.db.get(key)
    assert store.verify()["ok"]
    account = public_id(A.public_key)
    for i in range(len(original)):
        tampered = bytearray(original)
        tampered[i] ^= 0x01
        store.db.put(key, bytes(tampered))
        report = store.verify()
        assert not report["ok"], f"byte {i} changed but verify passed"
        assert any(v["account"] == account and v["seq"] == payment.seq for v in report["violations"]), \
            (i, report["violations"])
    store.db.put(key, original)
    assert store.verify()["ok"]


def test_verify_catches_inconsistent_tables(store):
    payment = settle(store, A, B, 10)
    store.db.delete(keys.ledger_id(payment.id))
    assert any("index" in v["message"] for v in store.verify()["violations"])
    store.db.put(keys.ledger_id(payment.id), A.public_key + (1).to_bytes(8, "big"))
    store.db.delete(keys.ledger_settled(payment.authorization.id))
    assert any("mark" in v["message"] for v in store.verify()["violations"])
    store.db.put(keys.ledger_settled(payment.authorization.id), payment.receipt.id)
    # a lost half: the receipt disappears from B's chain
    store.db.delete(keys.ledger_entry(B.public_key, 1))
    report = store.verify()
    assert not report["ok"]
    assert any(v["account"] == public_id(B.public_key) for v in report["violations"])


def test_verify_checks_the_authorization_where_no_payment_covers_it(store):
    # An open receipt (its payer's chain is elsewhere) whose authorization signature is forged:
    # accept() refuses it; written behind the store's back, verify names it.
    forged = authorize(C, A.public_key, 10, "job", now() + 600, os.urandom(16))
    forged = forged.signed(A.sign(forged.body))
    from xsc.ledger.core.model import make_receipt
    from xsc.ledger.core.rules import AccountState
    receipt = make_receipt(A, 1, bytes(32), forged, 10, {"fuel": 1}, now())
    with pytest.raises(InvalidEntry, match="authorization signature"):
        store.accept([receipt], now())
    with store.db.write_batch() as batch:
        batch.put(keys.ledger_entry(A.public_key, 1), receipt.encode())
        batch.put(keys.ledger_id(receipt.id), A.public_key + (1).to_bytes(8, "big"))
        batch.put(keys.ledger_account(A.public_key), AccountState().after(receipt).encode())
        batch.put(keys.ledger_settled(forged.id), receipt.id)
    report = store.verify()
    assert [v["message"] for v in report["violations"]] == ["invalid authorization signature"]
    assert report["violations"][0]["entry"] == receipt.id.hex() and report["open_transfers"] == 1


def test_a_settlement_that_consumes_a_record_of_what_it_pays_is_settled_once(store):
    """A transfer made from a record of what is owed (an S3 refund's row) deletes it in its batch and is settled only
    while it is there: asked twice in one group, or again later, it is paid once."""
    owed = b"o/r/test-row"
    store.db.put(owed, b"{}")

    def paying() -> Settlement:
        request = new_settlement(A, B, 5, {"files": 1}, "s3:refund:x", now())
        request.consumes = (owed,)
        return request

    first, twice = store.settle([paying(), paying()], now())
    assert first.receipt.amount == 5 and isinstance(twice, NothingOwed)
    assert store.db.get(owed) is None
    [again] = store.settle([paying()], now())
    assert isinstance(again, NothingOwed)
    assert store.state(B.public_key).balance == 5 and len(store.chain(B.public_key)) == 1


def test_payments_dropped_unpaid_keep_the_newest_and_count_from_a_time(tmp_path, monkeypatch) -> None:
    from xsc.ledger import dropped

    monkeypatch.setattr(dropped, "KEEP", 3)
    db, _ = open_store(tmp_path / "db", credit_limit=1_000)
    try:
        kept = dropped.DroppedPayments(db)
        for n in range(5):
            kept.add(bytes([n]) * 32, {"n": n}, 1_000 + n)
        assert [r["n"] for r in kept.newest()] == [4, 3, 2] and kept.count() == 3 and kept.count(1_004) == 1
        again = dropped.DroppedPayments(db)  # as a start reads them
        assert again.count() == 3 and again.count(1_003) == 2
    finally:
        db.close()
