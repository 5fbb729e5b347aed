"""Amounts a stranger chooses cannot corrupt the ledger: balances stay in their encoding, writes are all or
nothing, and a storage receipt is signed only for exactly what the deal owes, to the account it names."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from xsc.errors import BalanceOutOfRange, PeerRefused
from xsc.identity import Identity
from xsc.ledger import price_storage_period
from xsc.ledger.core.model import MAX_U63, authorize
from xsc.ledger.core.rules import MAX_BALANCE, AccountState
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from tests.support.attacks import receipt_claim, signed
from tests.support.ledger import now, open_store, transfer
from tests.support.peers import http, node_id
from tests.support.shares import EncodedFile, lease, place


def _reopened_ok(tmp_path, db) -> None:
    db.close()
    db, store = open_store(tmp_path / "db")
    try:
        report = store.verify()
        assert report["ok"], report["violations"]
    finally:
        db.close()


def test_a_balance_pushed_past_int64_is_refused_and_nothing_is_written(tmp_path) -> None:
    """Two countersigned receipts of 2**63-1 from throwaway payers: the second would overflow the record."""
    db, store = open_store(tmp_path / "db")
    payee = Identity.generate()
    for n in range(2):
        auth = authorize(Identity.generate(), payee.public_key, MAX_U63, f"store:{n}", now() + 600, os.urandom(16))
        if n == 0:
            store.countersign(payee, auth, MAX_U63, (("byte_hours", 1),), now())
            continue
        before = list(db.iterator())
        with pytest.raises(BalanceOutOfRange) as err:
            store.countersign(payee, auth, MAX_U63, (("byte_hours", 1),), now())
        assert "past the ledger's range" in err.value.message
        assert list(db.iterator()) == before  # not one key changed
    assert store.state(payee.public_key).balance == MAX_U63
    report = store.verify()
    assert report["ok"], report["violations"]
    _reopened_ok(tmp_path, db)


def test_entries_from_a_counterparty_that_overflow_are_refused_whole(tmp_path) -> None:
    db, store = open_store(tmp_path / "db")
    payee, payers = Identity.generate(), [Identity.generate(), Identity.generate()]
    first, _ = transfer(payers[0], payee, MAX_U63, AccountState(), AccountState())
    second, _ = transfer(payers[1], payee, 5, AccountState(), AccountState(1, first.id, MAX_U63))
    before = list(db.iterator())
    with pytest.raises(BalanceOutOfRange):
        store.accept([first, second], now())
    assert list(db.iterator()) == before  # all or nothing: not even the first one
    _reopened_ok(tmp_path, db)


def test_a_record_that_cannot_be_encoded_writes_nothing(tmp_path) -> None:
    """The write path itself: encoding happens before the batch, so a bad record leaves no half-write."""
    db, store = open_store(tmp_path / "db")
    payee = Identity.generate()
    receipt, _ = transfer(Identity.generate(), payee, 10, AccountState(), AccountState())
    with pytest.raises(BalanceOutOfRange):
        store._write([receipt], {payee.public_key: AccountState(1, receipt.id, MAX_BALANCE + 1)}, {})
    assert list(db.iterator()) == []
    assert store.state(payee.public_key) == AccountState()
    db.close()


# --- the attack on a real node: a stranger's storage receipt ------------------------------------
PRICE = 4_000  # micro-credits per GiB-hour: at or above every ask of the default pricing policy


def _peer(node, signer: Identity, receiver: str, path: str, payload: dict) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    return http(node.url, "POST", path, body, signed(signer, "POST", path, body, receiver))


def _receipt(node, attacker: Identity, victim: str, payer: Identity, f: EncodedFile, start: int, end: int,
             amount: int) -> tuple[int, dict]:
    return _peer(node, attacker, victim, "/v1/peer/ledger/receipts", receipt_claim(payer, victim, f, start, end, amount))


def _verify(node) -> None:
    result = node.xsc("ledger", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report


@pytest.mark.slow
async def test_a_strangers_storage_receipt_is_signed_only_for_what_the_deal_owes(node_process) -> None:
    node = await asyncio.to_thread(node_process, "victim")
    victim = await asyncio.to_thread(node_id, node)
    attacker, payer, other = Identity.generate(), Identity.generate(), Identity.generate()
    named, unnamed = EncodedFile(5000), EncodedFile(5000)
    async with aiohttp.ClientSession() as session:
        client = PeerClient(attacker, session, 30.0)
        # Two shares placed by the stranger at the victim's ask: one names its payer, one does not.
        await place(RemoteHolder(client, victim, node.url, PRICE, payer.id), named, 0)
        await place(RemoteHolder(client, victim, node.url, PRICE), unnamed, 0)
        # A deal price no market would clear is refused outright.
        with pytest.raises(PeerRefused) as err:
            await RemoteHolder(client, victim, node.url, 2**62).begin(EncodedFile(100).si, 0, 100, 4096, lease())
        assert err.value.details["peer_code"] == "deal-refused"

    def attack() -> None:
        end = now()
        start = end - 1
        due = price_storage_period(named.share_bytes, start, end, PRICE)
        for amount in (2**53 - 1, due + 1):  # bounded from above now, not only from below
            status, problem = _receipt(node, attacker, victim, payer, named, start, end, amount)
            assert status == 403 and "not the deal price" in problem["detail"], problem
        status, problem = _receipt(node, attacker, victim, payer, named, start, end, MAX_U63)  # no JSON reader's
        assert status == 422 and "past 9,007,199,254,740,991" in problem["detail"], problem
        status, problem = _receipt(node, attacker, victim, other, named, start, end, due)  # another payer
        assert status == 403 and f"paid by account {payer.id}" in problem["detail"], problem
        early = price_storage_period(named.share_bytes, 1, end, PRICE)
        status, problem = _receipt(node, attacker, victim, payer, named, 1, end, early)
        assert status == 403 and "before the deal began" in problem["detail"], problem
        status, answer = _receipt(node, attacker, victim, payer, named, start, end, due)
        assert status == 200 and answer["receipt"], answer
        # The upload that named no payer: the first account that pays it is its payer from then on.
        status, answer = _receipt(node, attacker, victim, other, unnamed, start, end, due)
        assert status == 200, answer
        status, problem = _receipt(node, attacker, victim, payer, unnamed, start + 1, end + 1, due)
        assert status == 403 and f"paid by account {other.id}" in problem["detail"], problem

        _verify(node)
        node.stop()
        node.start()
        _verify(node)
        status, health = http(node.url, "GET", "/health")
        assert status == 200 and health["status"] in ("pass", "warn"), health

    await asyncio.to_thread(attack)


def test_the_account_record_bounds_are_those_of_its_encoding() -> None:
    assert AccountState(1, bytes(32), MAX_BALANCE).encode()
    assert AccountState(1, bytes(32), -MAX_BALANCE - 1).encode()
    for balance in (MAX_BALANCE + 1, -MAX_BALANCE - 2):
        with pytest.raises(BalanceOutOfRange):
            AccountState(1, bytes(32), balance).encode()
