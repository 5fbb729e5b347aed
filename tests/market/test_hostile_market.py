"""A stranger's market commitments, and a removed node's: neither is ever matched."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

from xsc.allocation import Stamp
from xsc.errors import PeerError
from xsc.identity import Identity, sign_request
from xsc.market import parse_commitment, sign_commitment, units_cost
from xsc.market.core.models import MAX_PRICE
from xsc.node.appkeys import NODE
from xsc.tasks import now_ms

from tests.support.allocation import pair
from tests.support.attacks import fake_descriptors, free_ask, honest_commitment
from tests.support.market import HOUR, bid
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
CHEAP = {"market": {"storage_ask_floor": 10, "storage_ask_ceiling": 20}}


async def _put(node, data: bytes) -> tuple[int, dict]:
    response = await node.post("/v1/store/files", data=data)
    return response.status, await response.json(content_type=None)


async def test_a_stranger_asking_zero_is_never_in_the_book(node_factory) -> None:
    a = await node_factory("a", **QUIET)
    stranger = Identity.generate()
    body = {"commitments": [free_ask(stranger)]}
    import json as jsonlib

    raw = jsonlib.dumps(body).encode()
    path = "/v1/peer/market"
    headers = {**sign_request(stranger, "POST", path, raw, receiver=a.app[NODE].peers.identity.id),
               "Content-Type": "application/json"}
    response = await a.post(path, data=raw, headers=headers)
    assert response.status == 200
    market = a.app[NODE].market
    assert market.book.get(stranger.id) is None and not market.active(stranger.id)
    status, answer = await _put(a, b"x" * 5000)
    assert status == 201, answer
    assert stranger.id not in answer["placement"]


async def test_a_removed_peer_is_never_matched_and_puts_go_on(node_factory) -> None:
    a = await node_factory("a", **QUIET)
    b = await node_factory("b", **QUIET, **CHEAP)  # the cheapest provider: every put would go there
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    b_id = b.app[NODE].peers.identity.id
    await a.app[NODE].market.fill_book()
    assert a.app[NODE].market.book.get(b_id) is not None
    status, answer = await _put(a, b"y" * 5000)
    assert status == 201 and b_id in answer["placement"], answer

    response = await a.delete(f"/v1/peers/{b_id}")
    assert response.status == 200
    assert a.app[NODE].market.book.get(b_id) is None and not a.app[NODE].market.active(b_id)
    status, answer = await _put(a, b"z" * 5000)
    assert status == 201 and b_id not in answer["placement"], answer
    # b's commitments arriving again (gossip from a node that still knows it) are ignored.
    assert a.app[NODE].market.receive([b.app[NODE].market.book.get(b_id).to_json()]) == 0


async def test_a_put_goes_on_when_a_matched_provider_is_dead(node_factory) -> None:
    a = await node_factory("a", **QUIET)
    b = await node_factory("b", **QUIET, **CHEAP)  # the cheapest: the market sends shares there first
    c = await node_factory("c", **QUIET)
    for other in (b, c):
        await a.app[NODE].peers.add(other.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    b_id = b.app[NODE].peers.identity.id
    await b.close()  # killed: nobody has probed it since, so the market still offers it
    status, answer = await _put(a, b"w" * 20_000)
    assert status == 201, answer
    assert b_id not in answer["placement"]
    got = await a.get(f"/v1/store/files/{answer['capability']}")
    assert got.status == 200 and await got.read() == b"w" * 20_000


async def test_a_participant_that_stops_re_signing_leaves_the_active_set(node_factory) -> None:
    fresh = {"market": {"freshness": 3}}
    a = await node_factory("a", **QUIET, **fresh)
    b = await node_factory("b", **QUIET, **fresh)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    b_id = b.app[NODE].peers.identity.id
    assert a.app[NODE].market.active(b_id)
    for task in b.app[NODE].supervisor.tasks("market"):  # b hangs: it neither re-signs nor says it leaves
        task.cancel()
    await eventually_async(lambda: not a.app[NODE].market.active(b_id), "a to stop counting the hung b as active", 10,
                           poll=0.1)


async def test_a_node_that_stops_cleanly_says_it_leaves(node_factory) -> None:
    a = await node_factory("a", **QUIET)
    b = await node_factory("b", **QUIET)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    b_id = b.app[NODE].peers.identity.id
    assert a.app[NODE].market.book.get(b_id).asks
    await b.close()
    assert not a.app[NODE].market.book.get(b_id).asks  # its last word: an offer of nothing


async def test_a_repair_goes_on_when_the_chosen_spare_is_dead(node_factory) -> None:
    # The gateway recognises all seven of its peers: with the default bound of 6, the one left out of its
    # neighbourhood may never reach its book, and a repair has one spare only.
    nodes = [await node_factory("n0", **QUIET, market={"recognised_at_most": 8})]
    nodes += [await node_factory(f"n{i}", **QUIET) for i in range(1, 6)]
    a = nodes[0]
    spare_dead = await node_factory("dead-spare", **QUIET, **CHEAP)  # the cheapest: chosen first for a repair
    spare_live = await node_factory("live-spare", **QUIET)
    holders = nodes[1:]
    for other in holders:
        await a.app[NODE].peers.add(other.app[NODE].peers.url)
    await a.app[NODE].market.fill_book()
    status, answer = await _put(a, b"v" * 20_000)
    assert status == 201, answer
    lost = holders[0]
    lost_id = lost.app[NODE].peers.identity.id
    assert lost_id in answer["placement"]
    # Now the spares join: the dead one (nobody has probed it) is where the market sends the repaired share first.
    for spare in (spare_dead, spare_live):
        await a.app[NODE].peers.add(spare.app[NODE].peers.url)
    spares = [spare.app[NODE].peers.identity.id for spare in (spare_dead, spare_live)]
    dead_id = spares[0]

    async def spares_ready() -> bool:  # repairs go only to nodes in the book and proven up (a round probes 2 others)
        await a.app[NODE].market.fill_book()
        await a.app[NODE].health.probe_round()
        return all(a.app[NODE].market.book.get(s) and a.app[NODE].peers.availability(s).up for s in spares)

    await eventually_async(spares_ready, "both spares in the book and probed up", 30)

    async def hang() -> None:  # it dies without a word, as a kill -9 would
        return None

    spare_dead.app[NODE].market.leave = hang
    await spare_dead.close()
    await lost.close()
    repaired = await (await a.post(f"/v1/store/files/{answer['capability']}/repair")).json()
    assert repaired.get("healthy"), repaired
    assert dead_id not in repaired["placement"] and lost_id not in repaired["placement"]


async def test_an_invoke_goes_on_when_the_matched_provider_is_dead(node_factory) -> None:
    from tests.support.compute import wasm

    a = await node_factory("a", **QUIET, market={"offer_compute": False})  # every call runs elsewhere
    cheap = await node_factory("cheap", **QUIET, market={"compute_ask_floor": 1, "compute_ask_ceiling": 2})
    other = await node_factory("other", **QUIET)
    for provider in (cheap, other):
        await a.app[NODE].peers.add(provider.app[NODE].peers.url)

    async def both_offered() -> bool:
        await a.app[NODE].market.fill_book()
        return all(a.app[NODE].market.book.get(p.app[NODE].peers.identity.id) for p in (cheap, other))

    await eventually_async(both_offered, "both providers' asks in a's book")  # else the call never meets the dead one
    deployed = await (await a.post("/v1/modules", data=wasm("add"))).json()

    async def hang() -> None:
        return None

    cheap.app[NODE].market.leave = hang  # it dies without a word: the market still offers it
    cheap_id = cheap.app[NODE].peers.identity.id
    # Nor does a hear of its death before the call does: a request of a's own left unanswered (a subscription or
    # fork of the allocation's, still in flight from the start) has it probed at once and counted down, and the
    # market matches no node counted down, so the call would never meet it (nor count it defaulted).
    a.app[NODE].health.unreached = lambda node_id: None
    await cheap.close()
    assert a.app[NODE].market.active(cheap_id)  # the invoke is the first to find it dead
    response = await a.post("/v1/compute/invoke", json={"module": deployed["id"], "function": "add", "args": [2, 3]})
    answer = await response.json()
    assert response.status == 200, answer
    assert [r["value"] for r in answer["results"]] == [5]
    assert answer["provider"] == other.app[NODE].peers.identity.id != cheap_id
    assert a.app[NODE].allocation.status()["defaulted"] == [cheap_id]  # nor counted as serving a's needs


async def test_a_peer_flooding_new_commitments_gets_429_past_its_quota_and_nothing_is_checked(node_factory) -> None:
    """A peer's messages of 1,000 new commitments each kept the loop busy back to back, though its request rate was
    far inside the peer rate limit: what it may have checked is a quota of work."""
    a = await node_factory("a", **QUIET, market={"commitment_rate": 1})  # bursts of 2,002
    peers, market = a.app[NODE].peers, a.app[NODE].market
    flooder, honest = Identity.generate(), Identity.generate()
    others = [Identity.generate() for _ in range(40)]
    for at in range(0, len(others), 16):
        peers.accept(fake_descriptors(others[at:at + 16]))
    peers.accept(fake_descriptors([flooder, honest]))
    me = peers.identity.id

    async def send(sender: Identity, commitments: list[dict]):
        raw = json.dumps({"commitments": commitments, "push": True}).encode()
        headers = {**sign_request(sender, "POST", "/v1/peer/market", raw, receiver=me),
                   "Content-Type": "application/json"}
        response = await a.post("/v1/peer/market", data=raw, headers=headers)
        return response.status, response.headers.get("Retry-After"), await response.json()

    statuses, accepted, start = [], [], time.monotonic()
    for events in range(2, 100):  # every message supersedes all 40: each one is 40 commitments to check
        message = [honest_commitment(o, me, events) for o in others]
        status, retry_after, body = await send(flooder, message)
        statuses.append(status)
        if status == 429:
            break
        accepted = message
    assert statuses[:-1] == [200] * (len(statuses) - 1) and statuses[-1] == 429
    assert 2002 // 40 <= len(statuses) - 1 <= (2002 + (time.monotonic() - start)) // 40  # the burst, 40 at a time
    assert body["type"].endswith("quota-exceeded") and float(retry_after) > 0
    # Refused before any is checked: the book holds the last accepted message's commitments.
    assert [market.book.get(o.id).signature for o in others] == [c["signature"] for c in accepted]
    # The very commitments held cost nothing: a whole-book gossip of what it has is not charged (it needs one check
    # per 2 KiB left, as any message does, before it is parsed).
    market.replication.limiter._buckets[flooder.id] = (100, time.monotonic())
    status, _, _ = await send(flooder, [market.replication._json_of(market.book.get(o.id)) for o in others])
    assert status == 200 and market.replication.limiter.take_up_to(flooder.id, time.monotonic(), 2002) >= 100
    # Another peer has its own quota.
    status, _, body = await send(honest, [honest_commitment(honest, me, 1)])
    assert status == 200 and body["changed"] == 1
    # A message is refused before it is even parsed unless one check per 2 KiB of it is left: a few are left.
    for junk in (b"{not json", b"[" * 50 + b"x" * 200_000):
        market.replication.limiter.take_up_to(flooder.id, time.monotonic(), 2002)
        market.replication.limiter._buckets[flooder.id] = (10, time.monotonic())  # 10 left, as after a 429
        headers = {**sign_request(flooder, "POST", "/v1/peer/market", junk, receiver=me),
                   "Content-Type": "application/json"}
        response = await a.post("/v1/peer/market", data=junk, headers=headers)
        assert response.status == (400 if len(junk) < 10 * 2048 else 429), junk[:20]
    # A message parsed and then refused for its commitments leaves its sender owing that many checks before its next
    # body is read: a flood is not parsed message after message only to be refused each time.
    market.replication.limiter.take_up_to(flooder.id, time.monotonic(), 2002)
    market.replication.limiter._buckets[flooder.id] = (30, time.monotonic())  # enough for 40 commitments' bytes, not for 40 checks
    status, _, body = await send(flooder, [honest_commitment(o, me, 200) for o in others])
    assert status == 429 and "commitments to check" in body["detail"]
    market.replication.limiter._buckets[flooder.id] = (35, time.monotonic())
    status, _, _ = await send(flooder, [honest_commitment(others[0], me, 201)])  # one would do: 40 are asked for
    assert status == 429
    # Refused on its headers: a 500 KB body the sender never sends is not waited for.
    body = b"x" * 500_000
    headers = sign_request(flooder, "POST", "/v1/peer/market", body, receiver=me)
    reader, writer = await asyncio.open_connection("127.0.0.1", a.server.port)
    writer.write((f"POST /v1/peer/market HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                  + "\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 429"), head


async def test_a_pulled_peer_answers_only_for_the_participants_asked_and_within_its_quota(node_factory) -> None:
    a = await node_factory("a", **QUIET, market={"commitment_rate": 1})  # bursts of 2,002
    peers, market = a.app[NODE].peers, a.app[NODE].market
    answerer, asked = Identity.generate(), Identity.generate()
    others = [Identity.generate() for _ in range(20)]
    for batch in (others[:16], others[16:], [answerer, asked]):
        peers.accept(fake_descriptors(batch))
    me = peers.identity.id
    answers = []

    class Answer:
        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    async def request(url, method, path, **kwargs):
        if path != "/v1/peer/market/digest" or not answers:  # the node's own pushes meanwhile
            raise PeerError("not this test's")
        return Answer({"commitments": answers.pop(0)})

    market.peers.request = request
    # It adds 20 commitments nobody asked for to the one asked: only the one asked is taken.
    answers.append([honest_commitment(asked, me), *(honest_commitment(o, me) for o in others)])
    assert await market.replication.pull(peers.directory.get(answerer.id), [asked.id]) == 1
    assert market.book.get(asked.id) is not None and all(market.book.get(o.id) is None for o in others)
    # Past its quota, its answer is left unread (it may be asked again later).
    market.replication.limiter.check(answerer.id, time.monotonic(), "the test", 2001)  # what the first pull left
    # ... and all it will have a minute on: under load a second may pass before the next pull and give it one back
    market.replication.limiter.take_up_to(answerer.id, time.monotonic() + 60, 10**6)
    answers.append([honest_commitment(asked, me, 2)])
    assert await market.replication.pull(peers.directory.get(answerer.id), [asked.id]) == 0
    assert market.book.get(asked.id).stamp == parse_commitment(honest_commitment(asked, me)).stamp


async def test_the_needs_of_peers_known_down_do_not_compete_with_a_put(node_factory) -> None:
    """A stranger's 1,000 fake peers each carried a need, and every put matched them all (with 10-year puts)."""
    a = await node_factory("a", **QUIET)
    peers, market, health = a.app[NODE].peers, a.app[NODE].market, a.app[NODE].health
    fakes = [Identity.generate() for _ in range(8)]

    async def probe(peer):
        return False, None, "refused"

    health.probe = probe
    peers.accept(fake_descriptors(fakes))
    await health.probe_round()
    assert market.receive([honest_commitment(f, peers.identity.id) for f in fakes]) == len(fakes)
    inputs = a.app[NODE].dealing._match_inputs([], frozenset(), market.down())
    assert not {b.slot.owner for b in inputs["bids"]} & {f.id for f in fakes}
    assert not {a.slot.owner for a in inputs["asks"]} & {f.id for f in fakes}
    status, answer = await _put(a, b"v" * 5000)
    assert status == 201, answer


async def _top_price(node) -> int:
    """The highest clearing price the node has kept (`xsc market prices`), 0 if none."""
    rows = (await (await node.get("/v1/market/prices?kind=storage&limit=1000")).json())["prices"]
    return max((r["price"] for r in rows), default=0)


async def test_a_peers_unfunded_bids_keep_no_put_home_and_set_no_price(node_factory) -> None:
    """A need is a bid, never paid unless served: a live peer, recognised by the weight any peer that is up earns,
    standing needs at the highest price for more than the providers offer kept every put of this node at home (and
    set its clearing price to that highest price).  They count only as far as the ledger backs them."""
    a, shill = await pair(node_factory, **QUIET)
    market, shill_id = a.app[NODE].market, shill.app[NODE].peers.identity.id
    await a.app[NODE].health.probe_round()
    assert market.recognition().get(shill_id, 0) > 0 and market.active(shill_id)
    slot = min(x.slot.quantity for x in market.book.asks() if x.slot.kind == "storage")
    need = {"kind": "storage", "quantity": slot * 9 // 10, "seconds": 3600, "max_price": MAX_PRICE}
    for _ in range(3):
        assert (await shill.post("/v1/allocation/needs", json=need)).status == 201
    shill.app[NODE].market.publish()
    market.receive([shill.app[NODE].market.book.get(shill_id).to_json()])  # as its gossip would bring them
    assert sum(b.price == MAX_PRICE for b in market.book.bids()) == 3
    status, answer = await _put(a, b"s" * 20_000)
    assert status == 201 and "kept_home" not in answer and shill_id in answer["placement"], answer
    assert await _top_price(a) < MAX_PRICE
    # Backed by a credit line this node's user gives it, its needs are heard: then its price is the market's.
    credit = 3 * units_cost("storage", need["quantity"], 3600, MAX_PRICE)
    response = await a.post("/v1/market/recognize", json={"peer": shill_id, "weight": "1", "credit": credit})
    assert response.status == 200, await response.text()
    status, answer = await _put(a, b"t" * 30_000)
    assert status == 201 and "clearing price" in answer["kept_home"], answer


async def test_many_fake_ids_bidding_the_highest_price_keep_no_put_home(node_factory) -> None:
    """Fifty ids that answer probes, each bidding the highest price for more than every provider offers and paying
    nothing: none of their bids counts, alone or together, even where strangers get credit (every fresh id would)."""
    a, b = await pair(node_factory, **QUIET, ledger={"stranger_credit": 2**61})
    market = a.app[NODE].market
    fakes = await _fifty_fakes_answering_probes(a)
    fake_ids = {f.id for f in fakes}
    now = int(time.time())
    commitments = [sign_commitment(f, asks=[], bids=[bid(f.id, "n", 10**13, MAX_PRICE, now, now + HOUR)],
                                   recognition={}, stamp=Stamp.seed().event(), timestamp=now_ms()).to_json()
                   for f in fakes]
    assert market.receive(commitments) == len(fakes)
    assert all(market.active(f) for f in fake_ids)
    status, answer = await _put(a, b"f" * 20_000)
    b_id = b.app[NODE].peers.identity.id
    assert status == 201 and "kept_home" not in answer and b_id in answer["placement"], answer
    assert await _top_price(a) < MAX_PRICE


async def _fifty_fakes_answering_probes(node) -> list[Identity]:
    """Fifty fresh ids in `node`'s directory, each answering every probe it is sent (proven up)."""
    peers, health = node.app[NODE].peers, node.app[NODE].health
    fakes = [Identity.generate() for _ in range(50)]
    fake_ids = {f.id for f in fakes}
    real_probe = health.probe

    async def probe(peer):
        return (True, 1.0, None) if peer.id in fake_ids else await real_probe(peer)

    health.probe = probe
    for at in range(0, len(fakes), 10):  # at most 16 nodes not known before per message
        peers.accept(fake_descriptors(fakes[at:at + 10], first_port=10000 + at))
    await health.probe_round()
    return fakes


class _TestClaims:
    """A "test" job kind on a payee: every claim is taken (the work was done)."""

    async def __call__(self, sender, authorization, amount, usage) -> None:
        return None


async def test_fifty_fake_ids_that_answer_probes_take_no_recognition_from_peers_that_traded(node_factory) -> None:
    """Answering probes earns no recognition: two peers this node paid for their work keep their places, however
    many fresh ids answer every probe, and no fake id is named in the commitment this node publishes."""
    a = await node_factory("a", **QUIET)
    traders = [await node_factory(name, **QUIET) for name in ("b", "c")]
    peers, market = a.app[NODE].peers, a.app[NODE].market
    for trader in traders:  # equal sums: each one's share of the money raises it 0.5 above a fresh id
        trader.app[NODE].payments.add_check("test", _TestClaims())
        await peers.add(trader.app[NODE].peers.url)
        await a.app[NODE].payments.pay(trader.app[NODE].peers.identity.id, 5_000, {"byte_hours": 12}, "test:work")
    trader_ids = {t.app[NODE].peers.identity.id for t in traders}
    fakes = await _fifty_fakes_answering_probes(a)
    fake_ids = {f.id for f in fakes}
    assert all(peers.availability(f).ratio_24h == 1.0 for f in fake_ids)
    weights = market.recognition()
    assert set(weights) == trader_ids, weights
    a_id = peers.identity.id
    await eventually_async(lambda: set(market.book.get(a_id).recognition) == trader_ids,
                           "a's published commitment to name its two traders and no fake id", 10, poll=0.1)
    # Each trader, paid by a, recognises a for the same money: the choice is mutual.
    for trader in traders:
        await trader.app[NODE].health.probe_round()
        assert a_id in trader.app[NODE].market.recognition()
