"""The ledger's HTTP API on an in-process node."""

from __future__ import annotations

import json
import os

from tests.support.ledger import now, transfer
from xsc.identity import Identity
from xsc.ledger.core.rules import AccountState
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE


async def _json(response, status):
    body = await response.json(content_type=None)
    assert response.status == status, body
    return body


async def test_settlements_show_up_everywhere(node):
    app = node.app
    ledger, client, me = app[NODE].ledger, app[CLIENT_IDENTITY], app[IDENTITY]
    ids = [await ledger.settle(client, me, 1_500_000 * (i + 1), {"fuel": 10 * i}, f"compute:job{i}") for i in range(3)]
    accounts = await _json(await node.get("/v1/ledger/accounts"), 200)
    roles = {a["role"]: a for a in accounts["accounts"]}
    assert roles["client"]["balance"] == -9_000_000 and roles["node"]["balance"] == 9_000_000
    assert roles["client"]["account"] == client.id
    balance = await _json(await node.get("/v1/ledger/accounts/client"), 200)
    assert balance["available"] == 100_000_000 - 9_000_000 and balance["seq"] == 3
    assert (await _json(await node.get(f"/v1/ledger/accounts/{me.id}"), 200))["role"] == "node"
    history = await _json(await node.get("/v1/ledger/accounts/client/history", params={"limit": "2"}), 200)
    assert [e["id"] for e in history["entries"]] == ids[:0:-1]
    chain = await _json(await node.get(f"/v1/ledger/accounts/{me.id}/chain", params={"from": "2"}), 200)
    assert [e["seq"] for e in chain["entries"]] == [2, 3] and chain["next"] is None
    page = await _json(await node.get(f"/v1/ledger/accounts/{me.id}/chain", params={"limit": "1"}), 200)
    assert page["next"] == 2
    entry = await _json(await node.get(f"/v1/ledger/entries/{ids[1][:10]}"), 200)
    assert entry["id"] == ids[1] and entry["amount"] == 3_000_000 and entry["usage"] == {"fuel": 10}
    assert entry["job"] == "compute:job1" and entry["payee"] == me.id
    report = await _json(await node.get("/v1/ledger/verify"), 200)
    assert report["ok"] and report["entries"] == 6
    export = await node.get("/v1/ledger/export")
    lines = [json.loads(line) for line in (await export.read()).splitlines()]
    assert export.status == 200 and len(lines) == 6 and {l["kind"] for l in lines} == {"payment", "receipt"}
    status = await _json(await node.get("/v1/node/status"), 200)
    assert status["ledger"]["client_balance"] == -9_000_000


async def test_countersigned_entries_from_a_counterparty(node):
    app = node.app
    me, peer = app[IDENTITY], Identity.generate()
    receipt, payment = transfer(peer, me, 42, AccountState(), app[NODE].ledger.store.state(me.public_key))
    # the node's receipt and the peer's payment (countersigning it), in chain order
    body = {"entries": [receipt.encode().hex(), {"encoded": payment.encode().hex()}]}
    stored = await _json(await node.post("/v1/ledger/entries", json=body), 201)
    assert [r["status"] for r in stored["results"]] == ["stored", "stored"]
    again = await _json(await node.post("/v1/ledger/entries", json={"entry": payment.encode().hex()}), 200)
    assert again["results"][0]["status"] == "duplicate"
    chain = await _json(await node.get(f"/v1/ledger/accounts/{peer.id}/chain"), 200)
    assert chain["entries"][0]["id"] == payment.id.hex() and chain["entries"][0]["encoded"] == payment.encode().hex()
    assert (await _json(await node.get(f"/v1/ledger/accounts/{peer.id}"), 200))["balance"] == -42

    # tampered: refused, nothing stored
    r2, p2 = transfer(peer, me, 1, AccountState().after(payment), app[NODE].ledger.store.state(me.public_key))
    bad = bytearray(p2.encode())
    bad[40] ^= 1
    problem = await _json(await node.post("/v1/ledger/entries", json={"entries": [r2.encode().hex(), bad.hex()]}), 422)
    assert problem["code"] == "invalid-entry"
    assert app[NODE].ledger.store.state(me.public_key).seq == 1

    # replayed authorization: refused
    r3, _ = transfer(peer, me, 1, AccountState(), app[NODE].ledger.store.state(me.public_key),
                     authorization=receipt.authorization)
    problem = await _json(await node.post("/v1/ledger/entries", json={"entries": [r3.encode().hex()]}), 409)
    assert problem["code"] == "authorization-replayed"

    # expired authorization: refused
    r4, _ = transfer(peer, me, 1, AccountState(), app[NODE].ledger.store.state(me.public_key),
                     at=now(), expires_at=now() - 5)
    problem = await _json(await node.post("/v1/ledger/entries", json={"entries": [r4.encode().hex()]}), 422)
    assert problem["code"] == "authorization-expired"

    # a gap: refused, saying where the chain stands
    _, p5 = transfer(peer, me, 1, AccountState(2, os.urandom(32)), AccountState(5, os.urandom(32)))
    problem = await _json(await node.post("/v1/ledger/entries", json={"entries": [p5.encode().hex()]}), 409)
    assert problem["code"] == "chain-conflict" and problem["have"] == 1

    # a fork: the peer signs another entry for its seq 1
    _, other = transfer(peer, Identity.generate(), 7, AccountState(), AccountState())
    problem = await _json(await node.post("/v1/ledger/entries", json={"entries": [other.encode().hex()]}), 409)
    assert problem["code"] == "fork-detected" and problem["seq"] == 1
    assert (await _json(await node.get(f"/v1/ledger/accounts/{peer.id}"), 200))["forked"] is True
    report = await _json(await node.get("/v1/ledger/verify"), 200)
    assert not report["ok"]
    assert [v["seq"] for v in report["violations"] if v["account"] == peer.id] == [1]


async def test_bad_requests_get_clear_problems(node):
    cases = [
        ("GET", "/v1/ledger/accounts/not-an-id", None, 400),
        ("GET", "/v1/ledger/accounts/nonsense", None, 404),  # a prefix of no known account's id
        ("GET", "/v1/ledger/accounts/client/chain?from=abc", None, 400),
        ("GET", "/v1/ledger/accounts/client/chain?from=0", None, 400),
        ("GET", "/v1/ledger/accounts/client/history?limit=100000", None, 400),
        ("GET", "/v1/ledger/entries/abc", None, 400),
        ("GET", f"/v1/ledger/entries/{os.urandom(32).hex()}", None, 404),
        ("POST", "/v1/ledger/entries", b"not json", 400),
        ("POST", "/v1/ledger/entries", json.dumps({"entries": []}).encode(), 400),
        ("POST", "/v1/ledger/entries", json.dumps({"entries": ["zz"]}).encode(), 400),
        ("POST", "/v1/ledger/entries", json.dumps({"entries": ["00ff"]}).encode(), 422),
    ]
    for method, path, body, status in cases:
        response = await node.request(method, path, data=body)
        problem = await _json(response, status)
        assert problem["detail"] and problem["status"] == status, (path, problem)
    unauthenticated = await node.session.get(node.make_url("/v1/ledger/accounts"), headers={"Authorization": ""})
    assert unauthenticated.status == 401


async def test_a_refused_entry_id_field_or_amount_is_quoted_back_cut(node):
    """A pasted 5,000-character entry id or field name, or a 4,000-digit prepayment, is refused in one short line,
    not sent back whole (twice, for the amount: in micro-credits and in credits); nothing is paid."""
    long, peer = "a" * 5000, Identity.generate().id
    cases = [("GET", f"/v1/ledger/entries/{long}", None, "not an entry id"),
             ("GET", f"/v1/ledger/accounts/client/history?fields={long}", None, "no entry field"),
             ("POST", "/v1/ledger/prepay", f'{{"node": "{peer}", "amount": {"9" * 4000}}}', "a figure of 4,000 digits"),
             ("POST", "/v1/ledger/prepay", f'{{"node": "{peer}", "amount": "{long}"}}', "a prepayment is 1 to")]
    for method, path, body, said in cases:
        response = await node.request(method, path, data=body, headers={"Content-Type": "application/json"})
        problem = await _json(response, 400)
        assert said in problem["detail"] and len(problem["detail"]) < 300, problem["detail"][:400]
    payments = await _json(await node.get("/v1/ledger/payments"), 200)
    assert not payments.get("pending") and not payments.get("dropped"), payments


async def test_insufficient_credit_is_refused_before_work_with_a_402(node):
    import pytest

    from xsc.errors import InsufficientCredit
    from xsc.node.problems import problem_from_error

    app = node.app
    ledger, client, me = app[NODE].ledger, app[CLIENT_IDENTITY], app[IDENTITY]
    await ledger.settle(client, me, 99_000_000, {"byte_hours": 5}, "store:x")
    await ledger.ensure_credit(client, 1_000_000)  # exactly down to the limit is fine
    with pytest.raises(InsufficientCredit) as err:
        await ledger.ensure_credit(client, 3_500_000)
    response = problem_from_error(err.value)
    body = json.loads(response.text)
    assert response.status == 402 and body["code"] == "insufficient-credit" and body["short"] == 2_500_000
    assert "short by 2.500000" in body["detail"] and body["hint"]
    with pytest.raises(InsufficientCredit):
        await ledger.settle(client, me, 3_500_000, {"byte_hours": 5}, "store:y")
    assert ledger.store.state(client.public_key).balance == -99_000_000


async def test_a_counterpartys_entry_with_an_integer_no_json_reader_holds_exactly_is_refused(node):
    """Kept entries are served as JSON: an amount past 2^53 - 1 would read as another amount in a browser."""
    me, peer = node.app[IDENTITY], Identity.generate()
    receipt, payment = transfer(peer, me, 2**53, AccountState(), node.app[NODE].ledger.store.state(me.public_key))
    body = {"entries": [receipt.encode().hex(), payment.encode().hex()]}
    problem = await _json(await node.post("/v1/ledger/entries", json=body), 422)
    assert problem["code"] == "invalid-entry" and "entry #1: amount is 9,007,199,254,740,992" in problem["detail"], \
        problem
    assert node.app[NODE].ledger.store.state(me.public_key).seq == 0


async def test_the_history_says_the_account_as_its_balance_does_with_what_leases_promise(node):
    """The dashboard's ledger page shows the account the history answers with: what the client can spend is the same
    figure `xsc ledger balance` prints, its puts' leases kept aside."""
    put = await node.post("/v1/store/files", data=os.urandom(300_000))
    assert put.status in (200, 201), await put.text()
    balance = await _json(await node.get("/v1/ledger/accounts/client"), 200)
    assert balance["promised"] > 0, balance
    history = await _json(await node.get("/v1/ledger/accounts/client/history", params={"limit": "1"}), 200)
    assert history["account"] == balance
