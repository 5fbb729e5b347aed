"""Settlement across nodes on two in-process nodes: a payer on one, its payee on the other."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from xsc.errors import (AuthorizationExpired, AuthorizationNotPending, InsufficientCredit, InvalidArgument,
                        InvalidEntry, PeerRefused, PeerUnreachable, ReceiptMismatch, WrongPayee)
from xsc.identity import Identity
from xsc.ledger import decode_authorization, decode_entry, encode_authorization
from xsc.ledger.core.model import Payment, Receipt, authorize
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE
from xsc.ledger.receipts import RECEIPT_ANSWER, RECEIPTS_PATH, ask_receipt, fetch_receipt

from tests.support.nodes import free_port
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


class Checks:
    """A "test" job kind on the payee: records each claim it is asked about; refuses those it is told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, dict]] = []
        self.refuse: Exception | None = None

    async def __call__(self, sender, authorization, amount, usage) -> None:
        self.calls.append((sender, authorization.job, amount, usage))
        if self.refuse is not None:
            raise self.refuse


async def _json(response, status):
    body = await response.json(content_type=None)
    assert response.status == status, body
    return body


async def _peered(node_factory, *, ledger: dict | None = None, b_port: int | None = None):
    a = await node_factory("a", **QUIET, **({"ledger": ledger} if ledger else {}))
    b = await node_factory("b", **QUIET, **({"node": {"listen": f"127.0.0.1:{b_port}"}} if b_port else {}))
    checks = Checks()
    b.app[NODE].payments.add_check("test", checks)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    return a, b, checks


async def _verified(node) -> dict:
    report = await _json(await node.get("/v1/ledger/verify"), 200)
    assert report["ok"], report["violations"]
    return report


async def test_a_payment_to_another_node_lands_in_both_chains(node_factory) -> None:
    a, b, checks = await _peered(node_factory)
    b_id, a_id = b.app[IDENTITY].id, a.app[IDENTITY].id
    entry = await a.app[NODE].payments.pay(b_id, 7_000, {"byte_hours": 12}, "test:file-1")

    payment = await _json(await a.get(f"/v1/ledger/entries/{entry}"), 200)
    assert (payment["kind"], payment["amount"], payment["payee"], payment["usage"]) == \
        ("payment", 7_000, b_id, {"byte_hours": 12})
    receipts = await _json(await b.get(f"/v1/ledger/accounts/{b_id}/history"), 200)
    assert [(e["kind"], e["id"], e["payer"]) for e in receipts["entries"]] == \
        [("receipt", payment["receipt"], a.app[CLIENT_IDENTITY].id)]
    assert checks.calls == [(a_id, "test:file-1", 7_000, {"byte_hours": 12})]
    payer = await _json(await a.get("/v1/ledger/accounts/client"), 200)
    assert (payer["balance"], payer["held"], payer["available"]) == (-7_000, 0, 100_000_000 - 7_000)
    assert (await _json(await b.get("/v1/ledger/accounts/node"), 200))["balance"] == 7_000
    assert a.app[NODE].ledger.pending() == []
    for node, total in ((a, -7_000), (b, 7_000)):  # each holds one half: an open transfer
        report = await _verified(node)
        assert (report["open_transfers"], report["balance_sum"]) == (1, total)

    # Paying this node itself is a local settlement: both halves here.
    local = await a.app[NODE].payments.pay(a_id, 500, {"fuel": 3}, "test:local")
    assert (await _json(await a.get(f"/v1/ledger/entries/{local}"), 200))["payee"] == a_id
    assert (await _verified(a))["open_transfers"] == 1
    assert (await _json(await a.get("/v1/node/status"), 200))["payments"] == {"pending": 0, "pending_amount": 0,
                                                                           "open": 0, "open_amount": 0,
                                                                           "dropped": 0, "dropped_recent": 0}


async def test_countersign_and_complete_are_idempotent(node_factory) -> None:
    a, b, checks = await _peered(node_factory)
    payer, ledger_a, ledger_b = a.app[CLIENT_IDENTITY], a.app[NODE].ledger, b.app[NODE].ledger
    b_node = b.app[IDENTITY]
    auth = await ledger_a.authorize(payer, b_node.public_key, 900, "test:twice")
    wire = decode_authorization(encode_authorization(auth))
    assert wire == auth and wire.signature == auth.signature and wire.id == auth.id

    first = await ask_receipt(a.app[NODE].peers.client, a.app[NODE].peers.peer(b_node.id).url, b_node.id, auth, 800, {"fuel": 5})
    again = await ask_receipt(a.app[NODE].peers.client, a.app[NODE].peers.peer(b_node.id).url, b_node.id, auth, 800, {"fuel": 5})  # a retried POST: the same receipt
    direct = await ledger_b.countersign(b_node, wire, 800, {"fuel": 5})
    assert first.encode() == again.encode() == direct.encode()
    assert len(checks.calls) == 1  # the check is asked once, not on the repeats
    with pytest.raises(ReceiptMismatch):
        await ledger_b.countersign(b_node, wire, 801, {"fuel": 5})
    with pytest.raises(PeerRefused) as refused:
        await ask_receipt(a.app[NODE].peers.client, a.app[NODE].peers.peer(b_node.id).url, b_node.id, auth, 800, {"fuel": 6})
    assert refused.value.details["peer_code"] == "receipt-mismatch"
    got = await _json(await b.get("/v1/ledger/verify"), 200)
    assert got["entries"] == 1

    received = decode_entry(first.encode())
    assert isinstance(received, Receipt)
    noted: list[Payment] = []  # what follows a payment written (the market's note of it) follows it once
    p1 = await ledger_a.complete(payer, received, written=noted.append)
    p2 = await ledger_a.complete(payer, received, written=noted.append)
    assert p1.encode() == p2.encode() and ledger_a.store.state(payer.public_key).seq == 1
    assert [p.encode() for p in noted] == [p1.encode()]
    assert ledger_a.pending() == [] and ledger_a.account_view(payer.public_key)["held"] == 0
    await _verified(a)
    await _verified(b)


async def test_a_replayed_receipt_request_raises_the_senders_recognition_once(node_factory) -> None:
    # A payment raises its payer's node's recognition on the payee (the money exchanged with it).  Asking again for
    # the receipt of the same authorization gets the stored one: replayed 20 times, by its sender and by a third
    # node that saw it, it was counted each time, and any node that paid once could raise its weight at will.
    a, b, checks = await _peered(node_factory)
    c = await node_factory("c", **QUIET)
    await c.app[NODE].peers.add(b.app[NODE].peers.url)
    a_id, b_node = a.app[IDENTITY].id, b.app[IDENTITY]
    counters = b.app[NODE].market.weights.counters
    auth = await a.app[NODE].ledger.authorize(a.app[CLIENT_IDENTITY], b_node.public_key, 900, "test:replayed")
    asks = [(a, 10), (c, 10)]
    receipts = set()
    for node, times in asks:
        for _ in range(times):
            receipt = await ask_receipt(node.app[NODE].peers.client, node.app[NODE].peers.peer(b_node.id).url,
                                        b_node.id, auth, 800, {"fuel": 5})
            receipts.add(receipt.encode())
    assert len(receipts) == 1 and len(checks.calls) == 1
    assert counters()["paid_by"] == {a_id: 800}
    assert c.app[IDENTITY].id not in counters()["paid_by"]


async def test_a_receipt_is_shown_to_its_parties_alone(node_factory) -> None:
    # A receipt names its payer, its amount, its usage and its job: a third node that learns the authorization's id
    # (a log, a relay) is answered as for an id never signed, and learns not even that it exists.
    a, b, _ = await _peered(node_factory)
    c = await node_factory("c", **QUIET)
    await c.app[NODE].peers.add(b.app[NODE].peers.url)
    b_node = b.app[IDENTITY]
    auth = await a.app[NODE].ledger.authorize(a.app[CLIENT_IDENTITY], b_node.public_key, 900, "test:private")
    made = await ask_receipt(a.app[NODE].peers.client, a.app[NODE].peers.peer(b_node.id).url, b_node.id, auth, 800,
                             {"fuel": 5})

    async def get(node, auth_id: str):
        with pytest.raises(PeerRefused) as refused:
            await node.app[NODE].peers.request(b.app[NODE].peers.url, "GET", f"{RECEIPTS_PATH}/{auth_id}",
                                               to=b_node.id, max_size=RECEIPT_ANSWER)
        details = refused.value.details
        return details["peer_status"], details["peer_code"], refused.value.message.replace(auth_id, "<id>")

    assert await get(c, auth.id.hex()) == await get(c, "ab" * 32) == await get(a, "ab" * 32)
    assert (await get(c, auth.id.hex()))[0] == 404
    fetched = await fetch_receipt(a.app[NODE].peers.client, b.app[NODE].peers.url, b_node.id, auth)
    assert fetched is not None and fetched.encode() == made.encode()  # the payer's node, which asked for it
    own = authorize(c.app[IDENTITY], b_node.public_key, 700, "test:own", int(time.time()) + 600, os.urandom(16))
    await b.app[NODE].ledger.countersign(b_node, own, 600, {"fuel": 1})  # asked by no node: its payer's key sees it
    assert (await fetch_receipt(c.app[NODE].peers.client, b.app[NODE].peers.url, b_node.id, own)).amount == 600
    assert (await get(a, own.id.hex()))[0] == 404


async def test_bad_claims_are_refused_with_clear_problems(node_factory) -> None:
    a, b, checks = await _peered(node_factory)
    peers, b_url, b_node = a.app[NODE].peers, b.app[NODE].peers.url, b.app[IDENTITY]
    payer = a.app[CLIENT_IDENTITY]
    now = int(time.time())

    async def post(body, status: int, code: str) -> None:
        with pytest.raises(PeerRefused) as refused:
            await peers.request(b_url, "POST", RECEIPTS_PATH, json=body, to=b_node.id, max_size=RECEIPT_ANSWER)
        assert (refused.value.details["peer_status"], refused.value.details["peer_code"]) == (status, code), \
            refused.value

    def signed(payee: bytes = b_node.public_key, cap: int = 1000, job: str = "test:x", expires: int = now + 600,
               by: Identity = payer):
        auth = authorize(by, payee, cap, job, expires, os.urandom(16))
        return encode_authorization(auth).hex()

    good = {"amount": 10, "usage": {"fuel": 1}}
    forged = bytearray(bytes.fromhex(signed()))
    forged[-1] ^= 1
    await post({**good, "authorization": forged.hex()}, 422, "invalid-entry")
    impostor = Identity.generate()  # signs, but names the client as payer
    auth = authorize(impostor, b_node.public_key, 1000, "test:x", now + 600, os.urandom(16))
    fake = type(auth)(payer.public_key, auth.payee, auth.cap, auth.nonce, auth.expires_at, auth.job)
    await post({**good, "authorization": fake.signed(auth.signature).body.hex() + auth.signature.hex()},
               422, "invalid-entry")
    await post({**good, "authorization": signed(payee=Identity.generate().public_key)}, 422, "wrong-payee")
    await post({"amount": 1001, "usage": {"fuel": 1}, "authorization": signed()}, 422, "invalid-entry")
    await post({**good, "authorization": signed(expires=now - 5)}, 422, "authorization-expired")
    await post({**good, "authorization": signed(job="mystery:1")}, 403, "claim-refused")
    await post({**good, "authorization": signed(job="nokind")}, 403, "claim-refused")
    await post({**good, "authorization": "zz" + signed()}, 400, "invalid-argument")
    await post({**good, "authorization": signed()[:-2]}, 422, "invalid-entry")  # truncated
    await post({**good, "authorization": signed() + "00"}, 422, "invalid-entry")  # trailing byte
    await post({"amount": -1, "usage": {}, "authorization": signed()}, 400, "invalid-argument")
    await post({"amount": 1, "usage": {f"m{i}": 1 for i in range(9)}, "authorization": signed()}, 422, "invalid-entry")
    await post({"amount": 1, "usage": {"Fuel!": 1}, "authorization": signed()}, 422, "invalid-entry")
    await post({**good, "authorization": signed(), "job": "test:other"}, 422, "invalid-entry")
    await post([1, 2], 400, "invalid-argument")
    checks.refuse = WrongPayee("not mine")  # any XscError from the check is the answer
    await post({**good, "authorization": signed()}, 422, "wrong-payee")
    from xsc.errors import Forbidden

    checks.refuse = Forbidden("node a never stored this file here")
    await post({**good, "authorization": signed()}, 403, "forbidden")
    assert (await _json(await b.get("/v1/ledger/verify"), 200))["entries"] == 0  # nothing was countersigned

    for path, status in ((f"{RECEIPTS_PATH}/xyz", 400), (f"{RECEIPTS_PATH}/{'ab' * 32}", 404)):
        with pytest.raises(PeerRefused) as refused:
            await peers.request(b_url, "GET", path, to=b_node.id, max_size=1 << 20)
        assert refused.value.details["peer_status"] == status
    unsigned = await b.post(RECEIPTS_PATH, json={**good, "authorization": signed()})
    assert unsigned.status == 401

    # pay_node with a claim the payee refuses: the refusal comes through, nothing stays pending or held.
    with pytest.raises(PeerRefused) as refused:
        await a.app[NODE].payments.pay(b_node.id, 10, {"fuel": 1}, "test:refused")
    assert refused.value.details["peer_status"] == 403
    assert a.app[NODE].ledger.pending() == [] and a.app[NODE].ledger.account_view(payer.public_key)["held"] == 0

    # The payer side refuses receipts that do not answer one of its pending authorizations.
    ledger_a, ledger_b = a.app[NODE].ledger, b.app[NODE].ledger
    checks.refuse = None
    stray = authorize(payer, b_node.public_key, 50, "test:stray", now + 600, os.urandom(16))
    receipt = await ledger_b.countersign(b_node, stray, 50, {})
    with pytest.raises(AuthorizationNotPending):
        await ledger_a.complete(payer, receipt)
    auth = await ledger_a.authorize(payer, b_node.public_key, 50, "test:sig")
    receipt = await ledger_b.countersign(b_node, auth, 40, {})
    bad = bytearray(receipt.encode())
    bad[-1] ^= 1
    with pytest.raises(InvalidEntry):
        await ledger_a.complete(payer, decode_entry(bytes(bad)))
    with pytest.raises(InvalidEntry):  # signed for another payer
        await ledger_a.complete(a.app[IDENTITY], receipt)
    with pytest.raises(AuthorizationExpired):
        await ledger_b.countersign(b_node, authorize(payer, b_node.public_key, 5, "t", now - 1, os.urandom(16)), 5, {})
    await ledger_a.complete(payer, receipt)
    await _verified(a)
    await _verified(b)


async def test_an_authorization_beyond_the_available_credit_is_refused(node_factory) -> None:
    a, b, _ = await _peered(node_factory, ledger={"credit_limit": 1_000, "low_balance": 50})
    ledger, payer, b_id = a.app[NODE].ledger, a.app[CLIENT_IDENTITY], b.app[IDENTITY].id
    first = await ledger.authorize(payer, b.app[IDENTITY].public_key, 600, "test:big")
    with pytest.raises(InsufficientCredit) as short:
        await ledger.authorize(payer, b.app[IDENTITY].public_key, 500, "test:bigger")
    assert short.value.details["short"] == 100 and "short by 0.000100" in short.value.message
    with pytest.raises(InsufficientCredit):
        await a.app[NODE].payments.pay(b_id, 401, {}, "test:too-much")
    assert [p.id for p in ledger.pending()] == [first.id]

    view = await _json(await a.get("/v1/ledger/accounts/client"), 200)
    assert (view["held"], view["available"], view["low"]) == (600, 400, True)
    health = await _json(await a.get("/health"), 200)
    check = health["checks"]["ledger:balance"][0]
    assert health["status"] == "warn" and check["status"] == "warn" and check["observedValue"] == 400
    assert "0.000400 credits left" in check["output"]

    await ledger.abandon(first.id, force=True)
    assert ledger.pending() == [] and ledger.account_view(payer.public_key)["available"] == 1_000
    health = await _json(await a.get("/health"), 200)
    assert health["checks"]["ledger:balance"][0]["status"] == "pass"
    with pytest.raises(AuthorizationNotPending):
        await ledger.abandon(first.id)
    await a.app[NODE].payments.pay(b_id, 1_000, {}, "test:all-of-it")  # exactly the limit: allowed
    assert ledger.account_view(payer.public_key)["available"] == 0


async def test_an_unreachable_payee_is_paid_by_the_retry_after_a_restart(node_factory) -> None:
    b_port = free_port()
    a, b, checks = await _peered(node_factory, b_port=b_port)
    b_id, payer = b.app[IDENTITY].id, a.app[CLIENT_IDENTITY]
    await b.close()  # the payee is down
    with pytest.raises(PeerUnreachable) as pending:
        await a.app[NODE].payments.pay(b_id, 3_000, {"fuel": 30}, "test:later")
    auth_id = pending.value.details["authorization"]
    assert [p.id.hex() for p in a.app[NODE].ledger.pending()] == [auth_id]
    assert a.app[NODE].ledger.account_view(payer.public_key)["held"] == 3_000
    assert await a.app[NODE].payments.retry_all() == {"pending": 1}
    assert a.app[NODE].ledger.account_view(payer.public_key)["balance"] == 0
    a_port = a.server.port
    await a.close()  # the payer restarts too: the pending record and its hold survive

    b = await node_factory("b", **QUIET, node={"listen": f"127.0.0.1:{b_port}"})
    b.app[NODE].payments.add_check("test", checks)
    a = await node_factory("a", **QUIET, node={"listen": f"127.0.0.1:{a_port}"})
    ledger = a.app[NODE].ledger
    assert [p.id.hex() for p in ledger.pending()] in ([auth_id], [])  # the start-up pass may be done already
    outcomes = []

    async def paid() -> bool:  # the retry's first pass runs at start; this one helps it along
        if ledger.pending():
            outcomes.append(await a.app[NODE].payments.retry_all())
        return not ledger.pending()

    await eventually_async(paid, "the pending authorization to be paid", 10)
    assert ledger.pending() == [], outcomes
    assert ledger.pending() == [] and ledger.account_view(payer.public_key)["balance"] == -3_000
    assert ledger.account_view(payer.public_key)["held"] == 0
    assert (await _json(await b.get("/v1/ledger/accounts/node"), 200))["balance"] == 3_000
    await _verified(a)
    await _verified(b)


class HeldChecks(Checks):
    """Checks that hold the payee's answer to the first claim until `go` is set (`asked` says it came)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.go = asyncio.Event(), asyncio.Event()

    async def __call__(self, sender, authorization, amount, usage) -> None:
        await super().__call__(sender, authorization, amount, usage)
        self.asked.set()
        await self.go.wait()


async def test_the_retry_leaves_alone_an_authorization_dropped_while_it_finished_another(node_factory) -> None:
    """The retry takes the pending authorizations one after the other.  One dropped meanwhile (as a start drops the
    tab of a replica it refuses to pay) is not asked of its payee, who would credit a receipt no payment matches."""
    b_port = free_port()
    a, b, _ = await _peered(node_factory, ledger={"settle_retry_interval": 3600}, b_port=b_port)
    b_id, payer = b.app[IDENTITY].id, a.app[CLIENT_IDENTITY]
    await b.close()  # the payee is down: both payments stay pending
    for n in (1, 2):
        with pytest.raises(PeerUnreachable):
            await a.app[NODE].payments.pay(b_id, 100 * n, {}, f"test:{n}")
    b = await node_factory("b", **QUIET, node={"listen": f"127.0.0.1:{b_port}"})
    checks = HeldChecks()
    b.app[NODE].payments.add_check("test", checks)
    ledger = a.app[NODE].ledger
    first, second = ledger.pending()  # in the order the retry takes them
    retry = asyncio.create_task(a.app[NODE].payments.retry_all())
    await asyncio.wait_for(checks.asked.wait(), 30)  # the payee asked about the first
    await ledger.abandon(second.id, force=True)
    checks.go.set()
    assert await retry == {"completed": 1}
    assert [job for _, job, _, _ in checks.calls] == [first.job]
    assert ledger.pending() == [] and ledger.account_view(payer.public_key)["balance"] == -first.cap
    assert (await _json(await b.get("/v1/ledger/accounts/node"), 200))["balance"] == first.cap
    await _verified(a)
    await _verified(b)


async def test_an_expired_authorization_without_a_receipt_is_abandoned(node_factory, monkeypatch) -> None:
    a, b, _ = await _peered(node_factory)
    ledger, payer = a.app[NODE].ledger, a.app[CLIENT_IDENTITY]
    auth = await ledger.authorize(payer, b.app[IDENTITY].public_key, 70, "test:never", ttl=1)
    with pytest.raises(InvalidArgument):  # not expired yet: the payee may still countersign
        await ledger.abandon(auth.id)
    assert await a.app[NODE].payments.retry_all() == {"pending": 1}  # no claim recorded, no receipt yet
    later = time.time() + 1_000  # past expiry and the clock skew allowance
    monkeypatch.setattr(time, "time", lambda: later)
    assert await a.app[NODE].payments.retry_all() == {"abandoned": 1}
    assert ledger.pending() == [] and ledger.account_view(payer.public_key)["held"] == 0


async def test_pending_authorizations_and_their_holds_survive_a_restart(tmp_path) -> None:
    import plyvel

    from xsc.ledger import LedgerService

    payer, payee = Identity.generate(), Identity.generate()
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    ledger = LedgerService(db, 10_000, client=payer, threads=1)
    kept = await ledger.authorize(payer, payee.public_key, 4_000, "test:a", claim=(3_500, {"fuel": 7}))
    dropped = await ledger.authorize(payer, payee.public_key, 1_000, "test:b")
    await ledger.abandon(dropped.id, force=True)
    await ledger.close()
    db.close()

    db = plyvel.DB(str(tmp_path / "db"))
    ledger = LedgerService(db, 10_000, client=payer, threads=1)
    try:
        assert [a.id for a in ledger.pending()] == [kept.id]
        assert ledger.pending()[0].signature == kept.signature
        assert ledger.claim(kept.id) == (3_500, {"fuel": 7}) and ledger.claim(dropped.id) is None
        view = ledger.account_view(payer.public_key)
        assert (view["held"], view["available"]) == (4_000, 6_000)
        with pytest.raises(InsufficientCredit):
            await ledger.authorize(payer, payee.public_key, 6_001, "test:c")
    finally:
        await ledger.close()
        db.close()


JSON_MAX = 2**53 - 1  # the largest integer a reader holding JSON numbers as doubles reads exactly


@pytest.mark.parametrize("cap, amount, usage, expires, named", [
    (2**53, 10, 1, None, "cap is 9,007,199,254,740,992"),
    (JSON_MAX, 2**53, 1, None, "amount is 9,007,199,254,740,992"),
    (1000, 10, 2**53, None, "usage fuel is 9,007,199,254,740,992"),
    (1000, 10, 1, 2**53, "expires_at is 9,007,199,254,740,992"),
], ids=["cap", "amount", "usage", "expires-at"])
async def test_a_claim_with_an_integer_no_json_reader_holds_exactly_is_refused(node_factory, cap, amount, usage,
                                                                               expires, named) -> None:
    """The payee publishes its receipt (amount, usage, the authorization's cap and expiry) in JSON: a dashboard in a
    browser would read 2^53 + 1 as 2^53, another amount than the one signed."""
    a, b, checks = await _peered(node_factory)
    b_node, payer = b.app[IDENTITY], a.app[CLIENT_IDENTITY]
    auth = authorize(payer, b_node.public_key, cap, "test:big", expires or int(time.time()) + 600, os.urandom(16))
    body = {"authorization": encode_authorization(auth).hex(), "amount": amount, "usage": {"fuel": usage}}
    with pytest.raises(PeerRefused) as refused:
        await a.app[NODE].peers.request(b.app[NODE].peers.url, "POST", RECEIPTS_PATH, json=body, to=b_node.id,
                                        max_size=RECEIPT_ANSWER)
    assert (refused.value.details["peer_status"], refused.value.details["peer_code"]) == (422, "invalid-entry")
    assert named in str(refused.value) and checks.calls == []
    largest = authorize(payer, b_node.public_key, JSON_MAX, "test:largest", int(time.time()) + 600, os.urandom(16))
    receipt = await ask_receipt(a.app[NODE].peers.client, b.app[NODE].peers.url, b_node.id, largest, JSON_MAX,
                                {"fuel": JSON_MAX})
    assert receipt.amount == JSON_MAX
    entry = await _json(await b.get(f"/v1/ledger/entries/{receipt.id.hex()}"), 200)
    assert (entry["amount"], entry["cap"], entry["usage"]) == (JSON_MAX, JSON_MAX, {"fuel": JSON_MAX})


def test_a_payees_receipt_with_an_integer_no_json_reader_holds_exactly_is_refused() -> None:
    from xsc.ledger.core.model import make_receipt
    from xsc.ledger.receipts import check_receipt
    payer, payee = Identity.generate(), Identity.generate()
    auth = authorize(payer, payee.public_key, 2**53, "test:big", int(time.time()) + 600, os.urandom(16))
    receipt = make_receipt(payee, 1, bytes(32), auth, 2**53, {"fuel": 1}, int(time.time()))
    with pytest.raises(PeerRefused, match="amount is 9,007,199,254,740,992"):
        check_receipt(payee.id, {"receipt": receipt.encode().hex()}, auth, 2**53, {"fuel": 1})
