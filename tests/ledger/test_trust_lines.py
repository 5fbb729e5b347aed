"""Credit only along recognition, on real nodes: a node that does not recognise a payer takes on its uploads and
invokes only within what it collected from it (402 prepayment-required before, accepted after, refused again
once used up); a prepayment counts only out of what the node owes its payer, so no payer key mints credit;
a recognised peer gets its credit line (docs/security.md)."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import aiohttp
import plyvel
import pytest

from xsc import keys
from xsc.compute.provider_tabs import compile_price
from xsc.errors import PeerRefused, PrepaymentRequired
from xsc.identity import Identity, parse_public_id
from xsc.ledger.core.model import authorize, decode_entry, encode_authorization
from xsc.ledger.core.pricing import price_compute, price_storage
from xsc.ledger.trust import TrustLines
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from xsc.node.appkeys import NODE

from tests.support.compute import wasm
from tests.support.ledger import counted_under
from tests.support.shares import DEAL_PRICE, SHARE, EncodedFile, place, refused

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
         "audit": {"blocks_per_round": 0}}
FUEL = 10_000_000  # `spin` never returns: each call uses its whole fuel, so its price is its budget
PRICE = 40  # per million fuel: the provider's only ask and the gateway's bid
NO_MEMORY_PRICE = {"compute": {"memory_price": 0}}  # a call's budget and charge are then its fuel's price alone


async def _pair(node_factory, *, stranger: dict, provider: dict):
    """A stranger's gateway `a` (it offers nothing: its work runs on `b`) and the provider `b`, which extends no
    credit to peers it does not recognise."""
    a = await node_factory("a", **QUIET, **stranger)
    b = await node_factory("b", **QUIET, ledger={"stranger_credit": 0}, **provider)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    b_id = b.app[NODE].peers.identity.id
    for _ in range(50):
        await a.app[NODE].market.fill_book()
        await b.app[NODE].market.fill_book()
        if a.app[NODE].market.book.get(b_id) is not None and b.app[NODE].market.book.get(a.app[NODE].peers.identity.id):
            break
    return a, b, b_id


async def _spin(a) -> tuple[int, dict]:
    response = await a.post("/v1/compute/invoke", json={"module": _spin.module, "function": "spin", "args": [],
                                                         "fuel": FUEL})
    return response.status, await response.json()


def _refused_for_prepayment(status: int, body: dict) -> None:
    assert status == 402 and body["code"] == "prepayment-required", (status, body)
    assert "prepay" in body["detail"] + body.get("hint", ""), body


async def _prepay(a, b_id: str, amount: int) -> None:
    response = await a.post("/v1/ledger/prepay", json={"node": b_id, "amount": amount})
    assert response.status == 201, await response.text()


async def _prepay_refused(a, b_id: str, amount: int) -> str:
    """`b` refuses to countersign a prepayment it cannot collect: told to the user of `a` as a 409 naming `b` and its
    reason (a 502 is for a peer that cannot be reached or answers garbage)."""
    response = await a.post("/v1/ledger/prepay", json={"node": b_id, "amount": amount})
    answer = await response.json()
    assert response.status == 409 and answer["code"] == "prepayment-refused", answer
    assert answer["node"] == b_id and answer["peer_code"] == "claim-refused", answer
    assert answer["detail"].startswith(f"node {b_id} refused the prepayment: it "), answer
    assert "--credit" not in answer.get("hint", "") and "owes" in answer["hint"], answer
    return answer["hint"]


async def _verified(*nodes) -> None:
    for node in nodes:
        report = await (await node.get("/v1/ledger/verify")).json()
        assert report["ok"], report


async def test_a_strangers_invokes_need_prepayment_and_stop_when_it_is_used_up(node_factory) -> None:
    """A stranger's prepayment out of nothing is refused and its invokes stay 402; once recognised it runs on its
    credit line, pays that debt (a prepayment the provider can collect: the work it did, not a call ahead),
    runs on its line again until it is used up; and the provider, now owing it, may prepay it that much and no
    more."""
    a, b, b_id = await _pair(node_factory, stranger={"market": {"offer_compute": False, "compute_bid": PRICE},
                                                     "ledger": {"stranger_credit": 0}},
                             provider={"market": {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE},
                                       **NO_MEMORY_PRICE})
    a.app[NODE].paid.gateway_tabs.interval = 3600  # its tab stays open: no payment tops the line up meanwhile
    _spin.module = (await (await a.post("/v1/modules", data=wasm("loop"))).json())["id"]
    a_id = a.app[NODE].peers.identity.id

    status, body = await _spin(a)
    _refused_for_prepayment(status, body)
    budget = price_compute(FUEL, PRICE)
    await _prepay_refused(a, b_id, 2 * budget)
    line = b.app[NODE].trust.line(a_id)
    assert line["used"] == 0 and line["paid"] == 0 and line["available"] == 0
    _refused_for_prepayment(*await _spin(a))

    compiled = compile_price(len(wasm("loop")), PRICE)  # `b` compiles the module `a` pushes: work it pays for
    response = await b.post("/v1/market/recognize", json={"peer": a_id, "weight": "1", "credit": budget + compiled})
    assert response.status == 200, await response.text()
    status, body = await _spin(a)
    assert status == 422 and body["code"] == "trap" and body["provider"] == b_id, body  # on credit (out of fuel)
    _refused_for_prepayment(*await _spin(a))  # its credit line is used up
    hint = await _prepay_refused(a, b_id, 2 * budget)  # it owes one call: it may prepay that, though `b` owes it none
    assert hint.startswith("a prepayment counts only out of what its payee owes its payer and, if its user "
                           "recognises the payer, what the payer owes it for work done there not paid yet"), hint
    await _prepay(a, b_id, budget)  # pays its debt: its line is open again
    status, body = await _spin(a)
    assert status == 422 and body["code"] == "trap" and body["provider"] == b_id, body
    _refused_for_prepayment(*await _spin(a))
    assert b.app[NODE].trust.line(a_id)["used"] == 2 * budget + compiled and b.app[NODE].trust.line(a_id)["counted"] == budget
    # What `b` can collect from `a`: what the user of `a` paid `b`, and no more.
    await _prepay_refused(b, a_id, budget + 1)
    await _prepay(b, a_id, budget)
    assert a.app[NODE].trust.line(b_id)["counted"] == budget
    # The operator still invokes on its own node, and both ledgers verify.
    response = await b.post("/v1/modules", data=wasm("add"))
    module = (await response.json())["id"]
    response = await b.post("/v1/compute/invoke", json={"module": module, "function": "add", "args": [1, 2]})
    assert response.status == 200, await response.text()
    await _verified(a, b)


async def _claim(client: PeerClient, node, auth, amount: int | None = None) -> tuple[int, str]:
    """Ask `node` to countersign a prepayment under `auth`: the answer's status and problem code."""
    try:
        await client.request(node.app[NODE].peers.url, "POST", "/v1/peer/ledger/receipts", to=node.app[NODE].peers.identity.id,
                             json={"authorization": encode_authorization(auth).hex(),
                                   "amount": auth.cap if amount is None else amount, "usage": {}}, max_size=1 << 20)
    except PeerRefused as exc:
        return exc.details["peer_status"], exc.details["peer_code"]
    return 200, ""


def _prepayment(payer: Identity, payee, amount: int) -> object:
    return authorize(payer, parse_public_id(payee.app[NODE].peers.identity.id), amount,
                     f"prepay:{os.urandom(8).hex()}", int(time.time()) + 600, os.urandom(16))


async def test_no_payer_key_mints_credit_and_a_throwaway_key_uploads_only_on_the_credit_it_is_given(
        node_factory) -> None:
    """A throwaway key tries every way to prepay out of nothing: payers holding nothing (one, then many, each
    under the refusal's bound), amounts past every bound, an authorization made out to another node, and one it
    was countersigned elsewhere for.  None counts; its uploads stay 402 before anything is reserved.  Given a
    credit line by the holder's user, it places as many shares as the line pays the leases of, then 402 again;
    the holder keeps serving its operator and its ledger verifies."""
    b = await node_factory("b", **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": 1000}},
                           ledger={"stranger_credit": 0})
    c = await node_factory("c", **QUIET)
    b_id = b.app[NODE].peers.identity.id
    stranger = Identity.generate()
    files = [EncodedFile(5000) for _ in range(4)]
    share_cost = price_storage(files[0].share_bytes, 86400 + 5, DEAL_PRICE)  # a lease of a day (and clock slack)
    async with aiohttp.ClientSession() as session:
        client = PeerClient(stranger, session, 30.0)
        holder = RemoteHolder(client, b_id, b.app[NODE].peers.url, DEAL_PRICE, stranger.id)
        attempts = [await _claim(client, b, _prepayment(Identity.generate(), b, 10**12)) for _ in range(3)]
        attempts += [await _claim(client, b, _prepayment(Identity.generate(), b, share_cost)) for _ in range(20)]
        attempts.append(await _claim(client, b, _prepayment(stranger, b, 10**12 + 1)))
        attempts.append(await _claim(client, b, _prepayment(stranger, b, 2**62)))
        attempts.append(await _claim(client, b, _prepayment(stranger, b, 1), amount=2**63))
        attempts.append(await _claim(client, b, _prepayment(stranger, c, share_cost)))  # made out to `c`
        status, _ = await _claim(client, c, elsewhere := _prepayment(stranger, c, share_cost))
        attempts.append(await _claim(client, b, elsewhere))  # and replayed to `b` after `c` saw it
        assert all(status in (400, 403, 422) for status, _ in attempts), attempts
        line = b.app[NODE].trust.line(stranger.id)
        assert line["paid"] == 0 and line["counted"] == 0 and line["available"] == 0, line
        with pytest.raises(PeerRefused) as err:
            await place(holder, files[0])
        refused(err, 402, "prepayment-required")
        assert b.app[NODE].gateway.store.shares_held == 0 and len(b.app[NODE].share_holder) == 0

        response = await b.post("/v1/market/recognize", json={"peer": stranger.id, "weight": "1",
                                                              "credit": 2 * share_cost + share_cost // 2})
        assert response.status == 200, await response.text()
        for f in files[:2]:
            await place(holder, f)
        used = b.app[NODE].trust.line(stranger.id)["used"]
        assert 0 < used <= 2 * share_cost
        with pytest.raises(PeerRefused) as err:  # half a lease left: refused before anything is reserved
            await place(holder, files[2])
        refused(err, 402, "prepayment-required")
        assert b.app[NODE].trust.line(stranger.id)["used"] == used and b.app[NODE].gateway.store.shares_held == 2
        # Whatever its payer, what a recognised peer pays counts up to the work done here: its credit line again.
        assert (await _claim(client, b, _prepayment(Identity.generate(), b, used + 1)))[0] == 403
        assert (await _claim(client, b, _prepayment(Identity.generate(), b, used)))[0] == 200
        assert b.app[NODE].trust.line(stranger.id)["counted"] == used
    # The holder keeps serving its operator, and its ledger verifies.
    response = await b.post("/v1/store/files", data=b"mine" * 1000)
    assert response.status == 201, await response.text()
    await _verified(b)


async def test_a_recognised_peer_gets_its_credit_line(node_factory) -> None:
    a, b, b_id = await _pair(node_factory, stranger={"market": {"offer_compute": False, "compute_bid": PRICE}},
                             provider={"market": {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE},
                                       **NO_MEMORY_PRICE})
    a.app[NODE].paid.gateway_tabs.interval = 3600
    _spin.module = (await (await a.post("/v1/modules", data=wasm("loop"))).json())["id"]
    a_id = a.app[NODE].peers.identity.id
    budget = price_compute(FUEL, PRICE)
    credit = budget + compile_price(len(wasm("loop")), PRICE)  # a call, and compiling the module `a` pushes
    response = await b.post("/v1/market/recognize", json={"peer": a_id, "weight": "1", "credit": credit})
    answer = await response.json()
    assert response.status == 200 and answer["credit_line"]["credit"] == credit, answer
    status, body = await _spin(a)
    assert status == 422 and body["provider"] == b_id, body  # on credit, no prepayment
    status, body = await _spin(a)
    _refused_for_prepayment(status, body)  # its line is used up until it pays
    # No longer recognised: no credit at all.
    await b.post("/v1/market/recognize", json={"peer": a_id, "weight": "0"})
    assert b.app[NODE].trust.line(a_id)["credit"] == 0


def test_a_count_made_in_its_entrys_batch_is_on_the_line_only_once_that_batch_is_written(tmp_path) -> None:
    """`counting` gives the rows of a count for the ledger to write with the receipt or the payment: a batch that
    fails leaves the line as it was, on disk and in memory; one written counts it, once."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    peer = Identity.generate().id
    lines = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False)

    class WriteFailed(Exception):
        pass

    with pytest.raises(WriteFailed):
        with lines.counting("paid", peer, counted_under(b"a"), 30) as rows:
            assert rows
            raise WriteFailed  # the receipt's batch was not written: neither is its count
    assert lines.line(peer)["paid"] == 0
    assert TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False).line(peer)["paid"] == 0
    for total, tag in (("paid", b"a"), ("owed", b"b")):
        with lines.counting(total, peer, counted_under(tag), 30) as rows:
            with db.write_batch(transaction=True) as batch:
                for key, value in rows.items():
                    batch.put(key, value)
        with lines.counting(total, peer, counted_under(tag), 30) as rows:
            assert rows == {}  # counted: a repeated receipt or payment counts nothing again
    lines.paid(peer, counted_under(b"a"), 30)
    lines.owe(peer, counted_under(b"b"), 30)
    assert (lines.line(peer)["paid"], lines.line(peer)["owed"]) == (30, 30)
    again = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False)  # as a start reads it
    assert (again.line(peer)["paid"], again.line(peer)["owed"]) == (30, 30)
    db.close()


def test_the_lines_kept_in_memory_are_always_what_is_on_disk(tmp_path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    recognised: set[str] = set()
    def make() -> TrustLines:
        return TrustLines(db, stranger_credit=100, peer_credit=1000, recognised=recognised.__contains__)

    lines, peer = make(), Identity.generate().id
    lines.reserve(peer, 60, "a call")
    lines.use(peer, 50, reserved=60)
    lines.paid(peer, counted_under(b"a"), 30)
    lines.paid(peer, counted_under(b"a"), 30)  # the same receipt: counted once
    assert lines.line(peer) == {"peer": peer, "paid": 30, "used": 50, "owed": 0, "counted": 0, "reserved": 0,
                                "credit": 100, "recognised": False, "available": 50}
    lines.owe(peer, counted_under(b"b"), 20)
    lines.owe(peer, counted_under(b"b"), 20)  # the same payment: counted once
    assert lines.line(peer)["counted"] == 20 and lines.line(peer)["available"] == 70
    recognised.add(peer)
    lines.set_credit(peer, 500)
    assert lines.line(peer)["credit"] == 500

    def use() -> None:
        for _ in range(200):
            lines.use(peer, 1)

    threads = [threading.Thread(target=use) for _ in range(4)]  # work is taken on from pool threads too
    for t in threads:
        t.start()
    for _ in range(200):
        assert lines.line(peer)["used"] >= 50  # reads meanwhile never go back
    for t in threads:
        t.join()
    assert lines.line(peer)["used"] == 850
    assert make().line(peer) == lines.line(peer)  # read from disk afresh: the same
    lines.set_credit(peer, None)
    assert lines.line(peer)["credit"] == 1000 and make().line(peer)["credit"] == 1000
    db.close()


async def test_a_refusal_for_want_of_prepayment_names_both_nodes_in_the_commands_that_lift_it(node_factory) -> None:
    node = await node_factory("holder", **QUIET, ledger={"stranger_credit": 0})
    me, stranger = node.app[NODE].peers.identity.id, Identity.generate().id
    with pytest.raises(PrepaymentRequired) as err:
        node.app[NODE].trust.reserve(stranger, 42, "a share")
    assert f"on node {stranger}: xsc ledger prepay {me} 0.000042 " in err.value.hint, err.value.hint
    assert f"xsc market recognize {stranger} WEIGHT" in err.value.hint, err.value.hint


def test_work_is_reserved_exactly_when_the_line_shows_it_available(tmp_path) -> None:
    """`reserve` takes work on without building the line's view when it fits: the verdict is the view's, for
    strangers and recognised peers, with and without a credit of their own, before and after use and payment."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    recognised: set[str] = set()
    lines = TrustLines(db, stranger_credit=100, peer_credit=1000, recognised=recognised.__contains__)
    stranger, friend, own = (Identity.generate().id for _ in range(3))
    recognised.update((friend, own))
    lines.set_credit(own, 40)
    steps = [(0, 0, 0), (0, 50, 0), (30, 70, 0), (0, 0, 25), (500, 900, 100)]  # (paid, used, reserved) added
    for peer in (stranger, friend, own):
        for n, (paid, used, reserve) in enumerate(steps):
            if paid:
                lines.paid(peer, counted_under(bytes([n])), paid)
            if used:
                lines.use(peer, used)
            if reserve and lines.line(peer)["available"] >= reserve:
                lines.reserve(peer, reserve, "held")
            available = lines.line(peer)["available"]
            for price in sorted({0, 1, max(0, available - 1), max(0, available), max(0, available + 1), 10**6}):
                before = lines.line(peer)["reserved"]
                try:
                    lines.reserve(peer, price, "a call")
                except PrepaymentRequired as err:
                    assert price > available and err.details["available"] == available
                    assert lines.line(peer)["reserved"] == before
                else:
                    assert price <= available and lines.line(peer)["reserved"] == before + price
                    lines.release(peer, price)
    db.close()


async def test_a_peer_asks_its_own_terms_and_nothing_else(node_factory) -> None:
    """`GET /v1/peer/terms`: a stranger learns what the node takes on for it (nothing until it is recognised), signed
    requests only, about the sender alone whatever it asks; each answer is one read of its own line."""
    b = await node_factory("b", **QUIET, ledger={"stranger_credit": 0})
    b_id, url = b.app[NODE].peers.identity.id, b.app[NODE].peers.url
    stranger, other = Identity.generate(), Identity.generate()
    assert (await b.get("/v1/peer/terms")).status == 401  # unsigned
    async with aiohttp.ClientSession() as session:
        client = PeerClient(stranger, session, 30.0)
        answer = await client.request(url, "GET", f"/v1/peer/terms?peer={other.id}", to=b_id, max_size=1 << 20)
        assert answer.status == 200 and answer.json() == {"available": 0, "credit": 0, "recognised": False}
        response = await b.post("/v1/market/recognize", json={"peer": stranger.id, "weight": "1", "credit": 1234})
        assert response.status == 200, await response.text()
        answer = await client.request(url, "GET", "/v1/peer/terms", to=b_id, max_size=1 << 20)
        assert answer.json() == {"available": 1234, "credit": 1234, "recognised": True}
    assert b.app[NODE].trust.line(other.id)["available"] == 0  # nobody learns another's line


def test_recognising_a_peer_never_lowers_its_credit_line(tmp_path) -> None:
    """On a network that trusts strangers more than ledger.peer_credit (a devnet), recognising a peer keeps the
    larger line; a line the user sets is the line."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    weights: dict[str, bool] = {}
    lines = TrustLines(db, stranger_credit=10**15, peer_credit=10_000_000, recognised=lambda p: weights.get(p, False))
    peer = Identity.generate().id
    assert lines.credit(peer) == 10**15
    weights[peer] = True  # xsc market recognize PEER 2
    assert lines.credit(peer) == 10**15
    lines.set_credit(peer, 5)
    assert lines.credit(peer) == 5
    db.close()


@pytest.mark.parametrize("down", ["a moment", "past record_retention"])
async def test_a_stop_between_a_settlement_and_its_trust_line_is_counted_at_the_next_start(
        tmp_path, monkeypatch, down) -> None:
    """A receipt this node countersigned, and a payment its user made to another node, are each one synced ledger
    write; the trust line that counts them is written after.  A kill -9 in between left them uncounted for good:
    what a peer paid (a prepayment: its money moved) gave it no credit here, and what this node paid a peer was
    not collectable from it.  The next start counts them, once, even after the node stayed down longer than
    ledger.record_retention past their authorizations' expiry and the retention sweep ran first."""
    from types import SimpleNamespace

    from xsc.ledger import LedgerService
    from xsc.ledger.core.model import ZERO_HASH, make_receipt
    from xsc.ledger.core.rules import retired_at
    from xsc.ledger.settlement import Payments
    from xsc.ledger.store import RETENTION

    node, user, sender_payer, other = (Identity.generate() for _ in range(4))
    sender = Identity.generate().id  # the node that asks for the receipt

    class Stopped(Exception):
        pass

    def stop(*args) -> None:
        raise Stopped  # the process dies right after the synced write: nothing after it runs

    async def allow(*args) -> None:
        pass

    def opened(on_countersigned, on_owed):
        db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
        ledger = LedgerService(db, 10**9, node=node, client=user, threads=1)
        lines = TrustLines(db, stranger_credit=0, peer_credit=0, recognised=lambda peer: False)
        payments = Payments(ledger=ledger, payer=user, node=node, peers=None, client=None, retry_interval=30,
                            on_countersigned=on_countersigned or lines.paid, on_owed=on_owed or lines.owe,
                            owe_counted=lines.owe_counted)
        payments.add_check("test", allow)
        return db, ledger, lines, payments

    db, ledger, lines, payments = opened(stop, None)
    claim = authorize(sender_payer, node.public_key, 800, "test:paid", int(time.time()) + 600, os.urandom(16))
    with pytest.raises(Stopped):
        await payments.countersign(sender, claim, 800, {"fuel": 5})
    assert await ledger.receipt_for(claim.id) is not None and lines.line(sender)["paid"] == 0
    # The local user's payment to `other`, completed; its count as owed never ran.
    pay = await ledger.authorize(user, other.public_key, 300, "test:owed", claim=(300, {"fuel": 1}))
    await ledger.complete(user, make_receipt(other, 1, ZERO_HASH, pay, 300, {"fuel": 1}, int(time.time())))
    await ledger.close()
    db.close()

    db, ledger, lines, payments = opened(None, None)
    try:
        if down != "a moment":
            later = retired_at(max(claim.expires_at, pay.expires_at), RETENTION) + 1
            monkeypatch.setattr("xsc.ledger.trust.time", SimpleNamespace(time=lambda: later))
            assert await ledger.retire(later) > 0  # the settled marks among them
            assert await ledger.receipt_for(claim.id) is None
        payments.start()
        assert lines.line(sender)["paid"] == 800
        assert lines.line(other.id)["owed"] == 300
        assert payments.count_uncounted() == 0  # counted once: nothing is left to count
        if down != "a moment":
            await ledger.retire(later + 1)  # the markers of the counts just made are past their time too
        lines.paid(sender, claim, 800)  # a repeated request, or a replay, counts nothing again
        lines.owe(other.id, pay, 300)
        assert payments.count_uncounted() == 0
        assert lines.line(sender)["paid"] == 800 and lines.line(other.id)["owed"] == 300
        assert [sum(1 for _ in db.iterator(prefix=p)) for p in (keys.LEDGER_SENDERS, keys.LEDGER_UNCOUNTED)] == [0, 0]
    finally:
        await ledger.close()
        db.close()


LONG = 3650 * 86400  # seconds of a long lease: its price is many micro-credits


async def _holder_for(node_factory, credit: int):
    """Node b holding for node a on the credit b's user gives a (and none to strangers): (b, a's id, a's holder b)."""
    b = await node_factory("b", **QUIET, ledger={"stranger_credit": 0})
    a = await node_factory("a", **QUIET)
    b_id, a_id = b.app[NODE].peers.identity.id, a.app[NODE].peers.identity.id
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    response = await b.post("/v1/market/recognize", json={"peer": a_id, "weight": "1", "credit": credit})
    assert response.status == 200, await response.text()
    return b, a_id, RemoteHolder(a.app[NODE].peers.client, b_id, b.app[NODE].peers.url, DEAL_PRICE)


async def _place_for_long(holder: RemoteHolder, f: EncodedFile) -> None:
    upload = await holder.begin(f.si, SHARE, f.size, f.segment_size, int(time.time()) + LONG)
    await holder.put_segments(upload, 0, f.blocks[SHARE])
    await holder.commit(upload, f.hashes[SHARE], f.manifest.encode())


async def test_a_share_deleted_by_its_uploader_gives_back_the_rest_of_its_lease_on_the_line(node_factory) -> None:
    """A gateway that removes a file stops paying for its shares: the holder gives back on its line the part of the
    lease it had set aside and will not hold, or every file put and removed would eat the line until its puts were
    refused (402) though it owes nothing."""
    first, second = EncodedFile(5000), EncodedFile(5000)
    cost = price_storage(first.share_bytes, LONG, DEAL_PRICE)
    b, a_id, holder = await _holder_for(node_factory, credit=cost + cost // 2)
    await _place_for_long(holder, first)
    assert b.app[NODE].trust.line(a_id)["used"] >= cost
    with pytest.raises(PeerRefused) as err:
        await _place_for_long(holder, second)
    refused(err, 402, "prepayment-required")
    await holder.delete(first.si, SHARE)
    # What was held (seconds of it) stays used; the rest of the lease is given back.
    assert b.app[NODE].trust.line(a_id)["used"] < cost // 100
    await _place_for_long(holder, second)
    assert b.app[NODE].gateway.store.shares_held == 1


async def test_a_share_deleted_as_unpaid_gives_back_the_lease_it_will_not_hold_and_keeps_what_was_held(
        node_factory) -> None:
    """A holder deletes a share nobody paid for within `storage.unpaid_grace`: what was held unpaid stays used on the
    uploader's line (it is owed), the rest of the lease is given back, as when the uploader deletes it.  Else an
    uploader whose node was away past the grace would find its line eaten for good by leases nobody holds."""
    f = EncodedFile(5000)
    cost = price_storage(f.share_bytes, LONG, DEAL_PRICE)
    b, a_id, holder = await _holder_for(node_factory, credit=2 * cost)
    await _place_for_long(holder, f)
    assert b.app[NODE].trust.line(a_id)["used"] >= cost

    gc = b.app[NODE].lease_gc
    later = time.time() + gc.config.unpaid_grace + 86400  # held unpaid past the grace
    round_ = await gc.collect(now=later)
    assert round_["shares"] == 1 and b.app[NODE].gateway.store.shares_held == 0
    used = b.app[NODE].trust.line(a_id)["used"]
    held = price_storage(f.share_bytes, int(later - time.time()), DEAL_PRICE)
    assert held // 2 < used <= held + cost // 10**6 + 1, (used, held, cost)


async def test_a_lease_renewed_after_it_ended_is_charged_on_the_line_from_now_not_from_its_end(node_factory) -> None:
    """What a renewal adds is counted from now: the time a share spent expired is not sold again (its uploader pays
    `max(0, new - max(previous, now))`), so it must not be used on the uploader's line either."""
    f = EncodedFile(5000)
    b, a_id, holder = await _holder_for(node_factory, credit=10**9)
    await place(holder, f)
    store = b.app[NODE].gateway.store
    meta = store.share_meta(f.si, SHARE)
    ended = int(time.time()) - 1000 * 86400  # its lease ended long ago (its holder's GC has not run yet)
    store.db.put(keys.share(f.si, SHARE), dataclasses.replace(meta, lease_expiry=ended).encode())
    used = b.app[NODE].trust.line(a_id)["used"]
    await holder.renew(f.si, SHARE, int(time.time()) + 86400)
    added = b.app[NODE].trust.line(a_id)["used"] - used
    assert added <= price_storage(f.share_bytes, 86400 + 5, DEAL_PRICE), added  # a day, not a thousand and one


async def test_a_single_paid_calls_receipt_is_counted_on_its_gateways_line_in_its_own_batch(node_factory) -> None:
    """A call paid by its own authorization (no tab) is countersigned with its count on its gateway's line in one
    synced write: nothing of it is left for the next start to count (Payments.count_uncounted, which the node's
    start runs), and the receipt's batch names no gateway still to count it."""
    from tests.support.attacks import invoke_body
    from tests.support.compute import deploy
    from xsc.node import IDENTITY
    from xsc.identity import sign_request
    from xsc.net.compute import INVOKE_PATH

    node = await node_factory()
    services, gateway = node.app[NODE], Identity.generate()
    module = await deploy(node, "add")
    body = invoke_body(gateway, node.app[IDENTITY].public_key, module)
    headers = sign_request(gateway, "POST", INVOKE_PATH, body, receiver=node.app[IDENTITY].id)
    response = await node.post(INVOKE_PATH, data=body, headers={**headers, "Authorization": ""})
    answer = await response.json()
    assert response.status == 200, answer

    amount = decode_entry(bytes.fromhex(answer["receipt"])).amount
    assert amount > 0
    assert services.trust.line(gateway.id)["paid"] == amount
    assert sum(1 for _ in services.db.iterator(prefix=keys.LEDGER_SENDERS)) == 0
    assert services.payments.count_uncounted() == 0 and services.trust.line(gateway.id)["paid"] == amount
