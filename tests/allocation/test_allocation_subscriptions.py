"""Subscriptions and digest anti-entropy: who subscribes to what (the seed's derived subgroups), hostile
subscriptions and digests refused (oversized, unknown peer, bad signature), a record reaches only the parties it
names and its subscribers, and a node that missed records catches up through a digest exchange alone."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from tests.support.allocation import FORK_WAIT, joining, pair
from tests.support.waiting import eventually_async
from tests.support.peers import answering_megabytes
from xsc.allocation import AllocationState, Stamp
from xsc.allocation.core.records import sign_state
from xsc.allocation.core.subscriptions import (
    MAX_DIGEST,
    MAX_SUBSCRIPTIONS,
    MAX_TTL_MS,
    Subscribers,
    commitment_audience,
    interests,
    parse_digest,
    parse_subscription,
    short_hash,
    sign_subscription,
)
from xsc.errors import InvalidArgument
from xsc.identity import Identity, sign_request
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
         "market": {"allocation_delay": 0.05}}


def _now() -> int:
    return int(time.time() * 1000)


# --- the pure rules ------------------------------------------------------------------------------------
def test_interests_follow_the_seeds_subgroups() -> None:
    me, mutual, oneway, provider, unknown, stranger = "me", "mu", "ow", "pr", "un", "st"
    mine = {mutual: Decimal(1), oneway: Decimal(2), unknown: Decimal(1)}
    theirs = {mutual: {me: Decimal(1)}, oneway: {}, provider: {me: Decimal(3)}, stranger: {"x": Decimal(1)}}
    got = interests(me, mine, theirs, offered={"storage"})
    assert got == {
        mutual: {"commitment", "state", "receipt"},  # mutual partners: everything
        oneway: {"needs:storage", "receipt"},  # a tier-2 beneficiary: its needs of the kinds I offer, its receipts
        unknown: {"commitment", "needs:storage", "receipt"},  # no commitment yet: whether it recognises me is unknown
        provider: {"commitment", "state"},  # a provider for me: its commitment and allocation states
    }  # the stranger, which neither recognises nor is recognised, is not subscribed to
    # A node that offers nothing wants no receipts and no needs; a subscriber to my receipts is a provider for me.
    assert interests(me, mine, theirs, offered=(), recognisers={stranger})[stranger] == {"commitment", "state"}
    assert interests(me, {oneway: Decimal(1)}, {oneway: {}}, offered=()) == {}


def test_subscribers_are_bounded_expire_and_unsubscribe() -> None:
    now = _now()
    ids = [Identity.generate() for _ in range(3)]
    publisher = Identity.generate().id
    table = Subscribers(max_total=2)
    assert table.add(sign_subscription(ids[0], publisher, ["state"], now + 1000), now)
    assert table.add(sign_subscription(ids[1], publisher, ["commitment", "needs:storage"], now + 5000), now)
    assert not table.add(sign_subscription(ids[2], publisher, ["state"], now + 1000), now)  # full
    assert table.of("state", now) == {ids[0].id}
    assert commitment_audience(table, {"storage"}, set(), now) == {ids[1].id}
    assert commitment_audience(table, set(), {"compute"}, now) == {ids[1].id}
    assert table.recognisers(now) == {ids[1].id} and table.recognisers(now + 5000) == set()  # its needs: it lapses
    # the first one lapses: the third now fits
    assert table.of("state", now + 1000) == set()
    assert table.add(sign_subscription(ids[2], publisher, ["state"], now + 9000), now + 2000)
    assert table.of("state", now + 2000) == {ids[2].id}
    # an empty subscription unsubscribes
    assert table.add(sign_subscription(ids[2], publisher, [], now + 9000), now + 2000)
    assert table.of("state", now + 2000) == set() and len(table) == 1


@pytest.mark.parametrize("change, why", [
    (lambda s: {**s, "topics": ["commitment", "state", "receipt", "needs:storage", "needs:compute", "x"]},
     "6 topics .at most 5."),
    (lambda s: {**s, "topics": ["everything"]}, "unknown topic"),
    (lambda s: {**s, "topics": ["state", "commitment"]}, "sorted"),
    (lambda s: {**s, "expires": s["expires"] + 1}, "not signed"),
    (lambda s: {**s, "subscriber": "not-a-node"}, "node id"),
    (lambda s: {**s, "extra": 1}, "Extra inputs"),
])
def test_a_bad_subscription_is_refused(change, why) -> None:
    sub = sign_subscription(Identity.generate(), Identity.generate().id, ["state"], _now() + 60_000).to_json()
    with pytest.raises(InvalidArgument, match=why):
        parse_subscription(change(sub), now_ms=_now())


def test_a_subscription_expired_or_too_long_is_refused() -> None:
    me, publisher = Identity.generate(), Identity.generate().id
    with pytest.raises(InvalidArgument, match="expired"):
        parse_subscription(sign_subscription(me, publisher, ["state"], _now() - 1).to_json(), now_ms=_now())
    with pytest.raises(InvalidArgument, match="at most 600 s"):
        parse_subscription(sign_subscription(me, publisher, ["state"], _now() + MAX_TTL_MS + 60_000).to_json(),
                           now_ms=_now())


def test_a_digest_is_bounded_before_it_is_read() -> None:
    with pytest.raises(InvalidArgument, match=f"at most {MAX_DIGEST}"):
        parse_digest({f"p{i}": "" for i in range(MAX_DIGEST + 1)}, "states")
    with pytest.raises(InvalidArgument, match="hex digits"):
        parse_digest({"p": "zz"}, "states")
    with pytest.raises(InvalidArgument, match="an object"):
        parse_digest(["p"], "states")
    assert parse_digest({"p": "0" * 16, "q": ""}, "states") == {"p": "0" * 16, "q": ""}


# --- on nodes --------------------------------------------------------------------------------------------
async def _post(node, sender: Identity, path: str, body: dict, *, forge: bool = False) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    headers = sign_request(sender, "POST", path, raw, receiver=node.app[NODE].peers.identity.id)
    if forge:  # the signature of other bytes
        headers = {**headers, **{k: v for k, v in sign_request(sender, "POST", path, raw + b" ",
                                                                 receiver=node.app[NODE].peers.identity.id).items()
                                 if "signature" in k.lower()}}
    response = await node.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    return response.status, await response.json(content_type=None)


async def test_hostile_subscriptions_and_digests_are_refused(node_factory) -> None:
    a, b = await pair(node_factory, **QUIET)
    a_id, service = a.app[NODE].peers.identity.id, a.app[NODE].allocation
    b_identity = b.app[NODE].peers.identity
    stranger = Identity.generate()
    sub_path, digest_path, market_path = ("/v1/peer/allocation/subscribe", "/v1/peer/allocation/digest",
                                          "/v1/peer/market/digest")

    def sub(who: Identity, **kw) -> dict:
        return sign_subscription(who, kw.get("publisher", a_id), kw.get("topics", ["state"]),
                                 kw.get("expires", _now() + 60_000)).to_json()

    # oversized: counted before anything is read
    status, answer = await _post(a, b_identity, sub_path, {"subscriptions": [sub(b_identity)] * (MAX_SUBSCRIPTIONS + 1)})
    assert status == 400 and "at most 16" in answer["detail"], answer
    for path, key in ((digest_path, "states"), (market_path, "commitments")):
        status, answer = await _post(a, b_identity, path, {key: {f"p{i}": "" for i in range(MAX_DIGEST + 1)}})
        assert status == 400 and f"at most {MAX_DIGEST}" in answer["detail"], answer
    # unknown peer: refused before the subscription's signature is checked (a forged one gets the same answer)
    forged = {**sub(stranger), "signature": sub(b_identity)["signature"]}
    for body in ({"subscriptions": [sub(stranger)]}, {"subscriptions": [forged]}):
        status, answer = await _post(a, stranger, sub_path, body)
        assert status == 403 and answer["code"] == "unknown-peer", answer
    for path, key in ((digest_path, "states"), (market_path, "commitments")):
        status, answer = await _post(a, stranger, path, {key: {b_identity.id: ""}})
        assert status == 403 and answer["code"] == "unknown-peer", answer
    # a known peer's subscription with a bad signature, or another's, or for another publisher
    bad = {**sub(b_identity), "signature": sub(stranger)["signature"]}
    status, answer = await _post(a, b_identity, sub_path, {"subscriptions": [bad]})
    assert status == 400 and "not signed" in answer["detail"], answer
    for other in (sub(stranger), sub(b_identity, publisher=stranger.id)):
        status, answer = await _post(a, b_identity, sub_path, {"subscriptions": [other]})
        assert status == 400 and "names its sender" in answer["detail"], answer
    # a digest request whose peer signature does not cover its body
    status, answer = await _post(a, b_identity, digest_path, {"states": {}}, forge=True)
    assert status == 401, answer
    assert service.gossip.subscribers.topics(stranger.id, _now()) == frozenset()
    assert service.refused["unknown peer"] >= 2 and service.refused["bad signature"] == 1
    # and the honest one is taken
    status, answer = await _post(a, b_identity, sub_path, {"subscriptions": [sub(b_identity, topics=["receipt",
                                                                                                      "state"])]})
    assert status == 200 and answer["accepted"] == 1, answer
    assert service.gossip.subscribers.topics(b_identity.id, _now()) == {"receipt", "state"}


async def test_a_record_reaches_only_the_parties_it_names_and_its_subscribers(node_factory) -> None:
    a = await node_factory("a", **QUIET)
    b = await joining(node_factory, a, "b", **QUIET)
    c = await joining(node_factory, a, "c", **QUIET)
    for other in (b, c):
        await a.app[NODE].peers.add(other.app[NODE].peers.url)
    await b.app[NODE].peers.add(c.app[NODE].peers.url)
    a_id, b_id, c_id = (n.app[NODE].peers.identity.id for n in (a, b, c))
    # a and b recognise each other; c and a not at all (c and b do, by the derived weights)
    for x, y in ((a, c_id), (c, a_id)):
        x.app[NODE].market.set_recognition(y, Decimal(0))
    for x, y in ((a, b_id), (b, a_id)):
        x.app[NODE].market.set_recognition(y, Decimal(1))
    for n in (a, b, c):
        n.app[NODE].market.publish()
    service = a.app[NODE].allocation
    await eventually_async(lambda: "state" in service.gossip.subscribers.topics(b_id, _now()), "b to subscribe to a's states")
    # c may have subscribed at a before the weights were set (a subscribed to its receipts: a provider for it), and a
    # subscription c signed then may still be on its way when c wants nothing of a any more; a takes it when it
    # comes and answers it with its state, as it answers any new subscriber.  So c is to hold no subscription at a
    # (it drops one as it sends the empty one), and a none of c's (the empty one arrived).
    c_gossip = c.app[NODE].allocation.gossip
    await eventually_async(lambda: service.gossip.interests().get(c_id) is None
                           and c_gossip.interests().get(a_id) is None and a_id not in c_gossip.view()["subscribed"]
                           and not service.gossip.subscribers.topics(c_id, _now()),
                           "a and c to want nothing of each other")
    before = (b.app[NODE].allocation.states.get(a_id), c.app[NODE].allocation.states.get(a_id))
    # a publishes a state naming nobody: it goes to its subscriber b, not to c
    record = sign_state(a.app[NODE].peers.identity, AllocationState.model_construct(
        provider=a_id, slot_allocations=(), wanted=(), converged=True, convergence_history=()),
        stamp=Stamp.seed().event().event().event(), timestamp=_now())
    service.states.receive(record)
    sent = await service.gossip.push([record])
    assert sent > 0
    assert b.app[NODE].allocation.states.get(a_id) == record
    assert c.app[NODE].allocation.states.get(a_id) is before[1] is None
    # a state that names c (a request for its need) reaches c as well (which reads it against a's commitment)
    c.app[NODE].market.receive([a.app[NODE].market.book.get(a_id).to_json()])
    named = sign_state(a.app[NODE].peers.identity, AllocationState.model_construct(
        provider=a_id, slot_allocations=(), wanted=((c_id, "need-1"),), converged=True, convergence_history=()),
        stamp=record.stamp.event(), timestamp=_now())
    service.states.receive(named)
    await service.gossip.push([named])
    assert b.app[NODE].allocation.states.get(a_id) == named and c.app[NODE].allocation.states.get(a_id) == named


async def test_a_node_that_missed_records_catches_up_through_a_digest_exchange_alone(node_factory) -> None:
    a, b = await pair(node_factory, **QUIET)
    a_id, b_id = a.app[NODE].peers.identity.id, b.app[NODE].peers.identity.id
    a_service, b_service = a.app[NODE].allocation, b.app[NODE].allocation
    b_descriptor = next(d for d in a.app[NODE].peers.peers() if d.id == b_id)
    for x, y in ((a, b_id), (b, a_id)):  # mutual partners: a wants b's states
        x.app[NODE].market.set_recognition(y, Decimal(1))
        x.app[NODE].market.publish()
    await a.app[NODE].market.replication.pull(b_descriptor, [b_id])
    assert "state" in a_service.gossip.interests()[b_id]
    # a's loop subscribes at b, and a subscription's answer carries b's state: that is over before b's next one
    await eventually_async(lambda: b_service.gossip.subscribers.topics(a_id, _now()) == a_service.gossip.interests()[b_id],
                "a to subscribe to what it wants of b")
    # b holds a state of its own that it never sent (a lost push)
    record = sign_state(b.app[NODE].peers.identity, AllocationState.model_construct(
        provider=b_id, slot_allocations=(), wanted=((a_id, "need-1"),), converged=True, convergence_history=()),
        stamp=Stamp.seed().event().event().event().event(), timestamp=_now())
    b_service.states.receive(record)
    assert a_service.states.get(b_id) != record
    assert await a_service.gossip.pull(b_descriptor) >= 1
    assert a_service.states.get(b_id) == record
    # the same digest again: nothing differs, nothing is sent back
    digest = a_service.gossip.digest()
    assert digest["states"][b_id] == short_hash(record.signature)
    assert b_service.digest_answer(a_id, digest)["states"] == []
    assert await a_service.gossip.pull(b_descriptor) == 0
    # market commitments the same way: a forgets b's commitment, one digest exchange brings it back
    held = a.app[NODE].market.book.get(b_id)
    a.app[NODE].market.book.forget(b_id)
    await a.app[NODE].market.replication.pull(b_descriptor, [b_id])  # (a's market loop may pull it first: also a digest exchange)
    assert a.app[NODE].market.book.get(b_id) is not None and a.app[NODE].market.book.get(b_id).timestamp >= held.timestamp


async def _storage_provider_and_recipient(node_factory):
    """A node offering storage and one offering nothing, peered (fast allocation rounds): both, and their ids."""
    quiet = {k: v for k, v in QUIET.items() if k != "market"}
    market = {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT, "offer_compute": False}
    provider = await node_factory("provider", **quiet, storage={"capacity": 1_000_000}, market=market)
    recipient = await joining(node_factory, provider, "recipient", **quiet, market={**market, "offer_storage": False})
    await provider.app[NODE].peers.add(recipient.app[NODE].peers.url)
    return provider, recipient, provider.app[NODE].peers.identity.id, recipient.app[NODE].peers.identity.id


async def test_a_need_published_before_its_provider_subscribes_reaches_it(node_factory) -> None:
    """The ordering that lost a one-way recipient's need: the recipient publishes it while the provider is not
    subscribed to its needs (so the push goes to nobody), and the provider subscribes afterwards.  The subscription
    is answered with the recipient's current commitment, and the provider's next round allocates to the need."""
    provider, recipient, p_id, r_id = await _storage_provider_and_recipient(node_factory)
    p_service, r_service = provider.app[NODE].allocation, recipient.app[NODE].allocation
    await provider.app[NODE].supervisor.pause("allocation")  # it subscribes only when this test says so
    r_descriptor = next(d for d in provider.app[NODE].peers.peers() if d.id == r_id)
    # one-way: the provider recognises the recipient, the recipient nobody
    provider.app[NODE].market.set_recognition(r_id, Decimal(1))
    recipient.app[NODE].market.set_recognition(p_id, Decimal(0))
    for n in (provider, recipient):
        n.app[NODE].market.publish()
    await provider.app[NODE].market.replication.pull(r_descriptor, [r_id])  # the provider holds the recipient's commitment (no need)
    assert provider.app[NODE].market.book.get(r_id).bids == ()
    # the provider is subscribed to nothing at the recipient (whatever its loop did before it stopped)
    r_service.gossip.subscribers.forget(p_id)
    p_service.gossip.subscribed.pop(r_id, None)
    # the recipient publishes a need and pushes its commitment to its audience: the provider is not in it
    need = r_service.add_need("storage", 300_000, 600)
    recipient.app[NODE].market.publish()  # (or its market loop did)
    assert [b.slot.id for b in recipient.app[NODE].market.book.get(r_id).bids] == [need["id"]]
    assert p_id not in commitment_audience(r_service.gossip.subscribers, {"storage"}, set(), _now())
    await recipient.app[NODE].market.replication.push_own()
    assert provider.app[NODE].market.book.get(r_id).bids == ()  # it did not reach the provider
    # the provider subscribes now: to the recipient's needs of the kind it offers (and its receipts) ...
    assert p_service.gossip.interests()[r_id] == {"needs:storage", "receipt"}
    await p_service.gossip.maintain_subscriptions()
    assert r_service.gossip.subscribers.topics(p_id, _now()) == {"needs:storage", "receipt"}
    # ... and the answer carried the recipient's current commitment: the need is there
    assert [b.slot.id for b in provider.app[NODE].market.book.get(r_id).bids] == [need["id"]]
    # so the provider's round allocates to it
    # an ITC id, forked from the recipient (or seeded after FORK_WAIT s)
    await eventually_async(p_service.ensure_id, "the provider's ITC id", 30, poll=0.1)
    await p_service.gossip.push(p_service.round())  # as its loop would: the recipient answers what it published
    assert (r_id, need["id"]) in p_service.states.get(p_id).wanted  # it asks the recipient for a grant of it
    provider.app[NODE].supervisor.resume("allocation")  # and with its loop running again the need is served

    def given() -> int:
        mine = p_service.states.get(p_id)
        return sum(q for _, r, n, q, _ in mine.allocations if r == r_id and n == need["id"])

    await eventually_async(lambda: given() == 300_000, "the provider to allocate the whole need")


async def test_converged_waits_until_a_need_has_reached_and_been_answered_by_its_providers(node_factory) -> None:
    """A need reaches its providers through their subscriptions; until it has, no node may report `converged`
    (before, the recipient of a need that had reached nobody said converged, with nothing given).  The recipient
    lists the need as unanswered until the provider that should see it (recognises it, offers a compatible
    slot) names it in a state; a provider holding a need it has not computed on yet is not converged either."""
    provider, recipient, p_id, r_id = await _storage_provider_and_recipient(node_factory)
    p_service, r_service = provider.app[NODE].allocation, recipient.app[NODE].allocation
    await provider.app[NODE].supervisor.pause("allocation")  # the provider computes only when this test says so
    r_descriptor = next(d for d in provider.app[NODE].peers.peers() if d.id == r_id)
    p_descriptor = next(d for d in recipient.app[NODE].peers.peers() if d.id == p_id)
    provider.app[NODE].market.set_recognition(r_id, Decimal(1))  # one-way: the provider recognises the recipient
    recipient.app[NODE].market.set_recognition(p_id, Decimal(0))
    for n in (provider, recipient):
        n.app[NODE].market.publish()
    await provider.app[NODE].market.replication.pull(r_descriptor, [r_id])
    await recipient.app[NODE].market.replication.pull(p_descriptor, [p_id])  # the recipient knows its provider's offer
    r_service.gossip.subscribers.forget(p_id)
    p_service.gossip.subscribed.pop(r_id, None)
    # The recipient publishes a need; it reaches nobody (the provider is not subscribed to its needs).
    need = r_service.add_need("storage", 300_000, 600)
    recipient.app[NODE].market.publish()
    await recipient.app[NODE].market.replication.push_own()
    assert provider.app[NODE].market.book.get(r_id).bids == ()
    # The recipient computes on its own need (its receipt lists it, nothing given): not converged, round after round.

    async def both_ids() -> bool:  # one seeds, one forks
        return (await p_service.ensure_id()) & (await r_service.ensure_id())

    await eventually_async(both_ids, "both nodes' ITC ids", 30, poll=0.1)
    for _ in range(3):
        r_service.round()
        assert need["id"] in r_service.receipts.get(r_id).needs
        status = r_service.status()
        assert status["converged"] is False
        assert status["unanswered"] == [need["id"]]
    # The provider subscribes: the need reaches it, and its round asks for it; once the provider runs again the
    # need is served and both converge.
    await p_service.gossip.maintain_subscriptions()
    assert [b.slot.id for b in provider.app[NODE].market.book.get(r_id).bids] == [need["id"]]
    provider.app[NODE].supervisor.resume("allocation")

    def given(nid: str) -> int:
        mine = p_service.states.get(p_id)
        return 0 if mine is None else sum(q for _, r, n, q, _ in mine.allocations if r == r_id and n == nid)

    await eventually_async(lambda: given(need["id"]) == 300_000, "the provider to allocate the whole need")
    await eventually_async(lambda: r_service.status()["converged"] and p_service.status()["converged"], "both to converge")
    assert r_service.status()["unanswered"] == []

    # A second need reaches the provider while it does not compute: it holds a need it has not computed on,
    # so it is not converged, nor is the recipient until the provider names the new need.
    await provider.app[NODE].supervisor.pause("allocation")
    second = r_service.add_need("storage", 200_000, 600)
    recipient.app[NODE].market.publish()
    await recipient.app[NODE].market.replication.push_own()
    await eventually_async(lambda: second["id"] in {b.slot.id for b in provider.app[NODE].market.book.get(r_id).bids},
                "the second need to reach the provider")
    status = p_service.status()
    assert status["provider_converged"] is False and status["converged"] is False
    await r_service.gossip.push(r_service.round())  # as its loop would: the provider gets the receipt it answers
    assert second["id"] in r_service.receipts.get(r_id).needs
    assert r_service.status()["unanswered"] == [second["id"]] and r_service.status()["converged"] is False
    provider.app[NODE].supervisor.resume("allocation")
    await eventually_async(lambda: given(second["id"]) == 200_000, "the provider to allocate the second need")
    await eventually_async(lambda: r_service.status()["converged"] and p_service.status()["converged"], "both to converge again")


@pytest.mark.parametrize("answer", [{"states": 5}, {"receipts": "x"}, {"states": [{}] * 2000}])
async def test_a_digest_answered_with_what_is_not_records_is_refused_and_counted_not_raised(node_factory,
                                                                                            answer) -> None:
    """A peer's answer to this node's digest that is not lists of records is counted as refused: it does not end
    the allocation's round with an error and its traceback in the log."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from xsc.peers import make_descriptor

    node = await node_factory("puller", **{**QUIET, "peers": {**QUIET["peers"], "tls": False}})
    service = node.app[NODE].allocation
    other = Identity.generate()
    service.states.receive(sign_state(other, AllocationState.model_construct(
        provider=other.id, slot_allocations=(), wanted=(), converged=True, convergence_history=()),
        stamp=Stamp.seed().event(), timestamp=_now()))  # (a digest of something held)

    async def digest(request: web.Request) -> web.Response:
        return web.json_response(answer)
    app = web.Application()
    app.router.add_post("/v1/peer/allocation/digest", digest)
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    liar = Identity.generate()
    try:
        descriptor = make_descriptor(liar, url=f"http://127.0.0.1:{liar_server.port}", capacity=1, free=1,
                                     version="0", timestamp=_now())
        refused = sum(service.refused.values())
        assert await service.gossip.pull(descriptor) == 0
        assert sum(service.refused.values()) == refused + 1
    finally:
        await liar_server.close()


@pytest.mark.parametrize("asked", ["digest", "push"])
async def test_a_peer_answering_with_more_than_an_honest_answer_holds_is_cut_off_and_counted(node_factory,
                                                                                           asked) -> None:
    """A digest is answered with at most DIGEST_BYTES of records and the record past them, a push with the
    answerer's own state and receipt: an answer longer than that is read no further and counted as refused."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from xsc.allocation import gossip
    from xsc.node.peer_routes import JSON_MAX
    from xsc.peers import make_descriptor

    assert gossip.RECORD_BYTES == JSON_MAX  # the most a push's body may be
    node = await node_factory("asker", **{**QUIET, "peers": {**QUIET["peers"], "tls": False}})
    service = node.app[NODE].allocation
    other = Identity.generate()
    state = sign_state(other, AllocationState.model_construct(
        provider=other.id, slot_allocations=(), wanted=(), converged=True, convergence_history=()),
        stamp=Stamp.seed().event(), timestamp=_now())
    service.states.receive(state)
    path = gossip.DIGEST_PATH if asked == "digest" else gossip.PEER_PATH

    app = web.Application()
    app.router.add_post(path, answering_megabytes(b'{"states": [], "padding": "', b" "))
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    try:
        descriptor = make_descriptor(Identity.generate(), url=f"http://127.0.0.1:{liar_server.port}", capacity=1,
                                     free=1, version="0", timestamp=_now())

        def received() -> float:  # bytes of peers' answers the node read (xsc_peer_bytes)
            return sum(sample.value for metric in node.app[NODE].metrics.peer_bytes.collect()
                       for sample in metric.samples
                       if sample.name.endswith("_total") and sample.labels["direction"] == "received")
        before = received()
        if asked == "digest":
            assert await service.gossip.pull(descriptor) == 0
        else:
            await service.gossip.push([state], only=[descriptor])
        assert service.refused.get("oversized") == 1
        assert received() - before < gossip.ANSWER_BYTES[path] + 256 * 1024  # not the 8 MiB sent
    finally:
        await liar_server.close()


def test_a_digest_is_answered_with_what_an_answer_may_hold_and_the_rest_at_the_next() -> None:
    """Records beyond DIGEST_BYTES wait for the peer's next digest, which shows what the first answer brought: no
    honest answer is longer than a peer reads, however many records differ."""
    from xsc.allocation import gossip
    from xsc.allocation.core.models import SlotAllocation
    from xsc.allocation.core.records import Held
    from xsc.allocation.core.subscriptions import Subscribers, short_hash
    from xsc.codec import dumps

    refused = []
    held = Held()
    answerer = gossip.AllocationGossip(identity=Identity.generate(), peers=None, market=None,
                                       subscribers=Subscribers(), states=held, receipts=Held(),
                                       receive=lambda message: {}, refuse=refused.append, wake=lambda: None)
    recipient = Identity.generate().id
    providers = [Identity.generate() for _ in range(8)]
    for provider in providers:  # ~350 KB each
        allocations = tuple(SlotAllocation(f"capacity-{i:04d}-" + "c" * 80, f"need-{i:04d}-" + "n" * 80, recipient,
                                           1, 1) for i in range(1500))
        held.receive(sign_state(provider, AllocationState.model_construct(
            provider=provider.id, slot_allocations=allocations, wanted=(), converged=True, convergence_history=()),
            stamp=Stamp.seed().event(), timestamp=_now()))
    digest = {"states": {p.id: "" for p in providers}, "receipts": {}}
    got: dict[str, dict] = {}
    for _ in range(len(providers)):
        answer = answerer.digest_answer("a-peer", digest)
        assert len(dumps(answer)) <= gossip.ANSWER_BYTES[gossip.DIGEST_PATH]
        if not answer["states"]:
            break
        got.update({s["provider"]: s for s in answer["states"]})
        digest["states"].update({p: short_hash(s["signature"]) for p, s in got.items()})
    assert set(got) == {p.id for p in providers} and refused == []


async def test_a_node_removed_and_back_is_greeted_again_and_those_gone_are_not_remembered() -> None:
    """A peer that took a subscription of ours is remembered only while it is a peer: once removed (or pushed out
    of the directory), our next subscription at it says it is fresh, as it lost its subscriptions here too."""
    from types import SimpleNamespace

    from xsc.allocation import gossip
    from xsc.allocation.core.records import Held
    from xsc.allocation.core.subscriptions import Subscribers

    peer = Identity.generate().id
    sent: list[dict] = []

    class Peers:
        def get(self, node_id: str):
            return SimpleNamespace(id=node_id, url="http://10.0.0.1:7070")

        def up(self, node_id: str) -> bool:
            return True

        async def request(self, url: str, method: str, path: str, *, json: dict, **kwargs):
            sent.append(json)
            return SimpleNamespace(json=lambda: {"accepted": 1})

    market = SimpleNamespace(interests=lambda: {peer: frozenset({"state"})}, receive=lambda commitments: None)
    subscriber = gossip.AllocationGossip(identity=Identity.generate(), peers=Peers(), market=market,
                                         subscribers=Subscribers(), states=Held(), receipts=Held(),
                                         receive=lambda message: {}, refuse=lambda why: None, wake=lambda: None)
    await subscriber.maintain_subscriptions()
    subscriber.subscribed[peer] = (frozenset({"state"}), 0.0)  # due for renewal
    await subscriber.maintain_subscriptions()
    assert [m.get("fresh") for m in sent] == [True, None]  # a renewal to a peer that took ours
    subscriber.forget(peer)
    await subscriber.maintain_subscriptions()
    assert [m.get("fresh") for m in sent] == [True, None, True]
