"""Signatures once: the ledger does not verify again what it just signed with its own keys (a test-only
self-check still can), and it verifies everything that comes from outside."""

from __future__ import annotations

import os

import pytest

from tests.support.ledger import now, open_store
from xsc.errors import InvalidEntry, LedgerError
from xsc.identity import Identity
from xsc.ledger import new_settlement
from xsc.ledger.core import rules
from xsc.ledger.core.model import authorize


class BrokenSigner(Identity):
    """Signs garbage: only the self-check can catch it before it reaches a chain."""

    def sign(self, message: bytes) -> bytes:
        return bytes(64)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = rules.signature_ok

    def signature_ok(check):
        calls.append(check[3])
        return real(check)

    monkeypatch.setattr(rules, "signature_ok", signature_ok)
    return calls


def _store(tmp_path, self_check: bool):
    db, store = open_store(tmp_path / "db")
    store.self_check = self_check
    return db, store


def test_settling_verifies_no_signature_the_node_just_made(tmp_path, counted) -> None:
    db, store = _store(tmp_path, self_check=False)
    a, b = Identity.generate(), Identity.generate()
    results = store.settle([new_settlement(a, b, 5, {"fuel": 5}, f"job{n}", now()) for n in range(40)], now())
    assert all(not isinstance(r, Exception) for r in results)
    assert counted == []  # 120 signatures made, none verified again
    assert store.verify()["ok"]  # the audit verifies every one of them
    db.close()


def test_the_self_check_catches_a_broken_signer_before_anything_is_stored(tmp_path) -> None:
    a, b = BrokenSigner(Identity.generate()._key), Identity.generate()
    db, store = _store(tmp_path, self_check=True)
    with pytest.raises(LedgerError, match="does not verify"):
        store.settle([new_settlement(a, b, 5, {"fuel": 5}, "job", now())], now())
    assert store.state(a.public_key).seq == 0
    db.close()


def test_what_comes_from_outside_is_verified(tmp_path, counted) -> None:
    db, store = _store(tmp_path, self_check=False)
    payer, payee = Identity.generate(), Identity.generate()
    auth = authorize(payer, payee.public_key, 10, "job", now() + 600, os.urandom(16))
    forged = auth.signed(bytes(64))
    with pytest.raises(InvalidEntry, match="signature is invalid"):
        store.countersign(payee, forged, 5, (("fuel", 5),), now())
    [failed] = store.settle([_with_auth(new_settlement(payer, payee, 5, {"fuel": 5}, "x", now()), forged)], now())
    assert isinstance(failed, InvalidEntry)
    receipt = store.countersign(payee, auth, 5, (("fuel", 5),), now())
    assert receipt.amount == 5 and counted.count("authorization") == 3
    db.close()


def _with_auth(settlement, auth):
    settlement.authorization = auth
    return settlement


def test_public_key_objects_are_parsed_once() -> None:
    from xsc import identity

    key = Identity.generate()
    message = b"hello"
    signature = key.sign(message)
    assert identity.verify(key.public_key, signature, message)
    cached = identity._PUBLIC_KEYS[key.public_key]
    assert identity.verify(key.public_key, signature, message) and identity._PUBLIC_KEYS[key.public_key] is cached
    assert not identity.verify(key.public_key, bytes(64), message)
    assert not identity.verify(b"short", signature, message)
