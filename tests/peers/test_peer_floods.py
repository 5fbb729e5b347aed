"""One peer key floods a node with signed requests: past its rate it gets 429 with Retry-After, while
other peers and /health go on being answered (floods of connections, the per-peer quota)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest

from xsc.errors import PeerRefused, QuotaExceeded
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.node.appkeys import NODE
from xsc.node.limits import RateLimiter
from xsc.peers import service
from xsc.peers.probes import OTHERS_KEPT, PROBES_AT_ONCE

from tests.support.attacks import fake_descriptors
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600, "rate_limit": 20}}


async def test_a_flooding_peer_is_slowed_and_the_others_are_not(node_factory) -> None:
    node = await node_factory("target", **QUIET)
    peers = node.app[NODE].peers
    # Fewer connections at once than the node waits for the first bytes of (sniff.MAX_PENDING + MAX_READING): this
    # client shares the node's event loop, so its ClientHellos go out only after the node has accepted the burst.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=8)) as session:
        flooder = PeerClient(Identity.generate(), session, 10.0)
        honest = PeerClient(Identity.generate(), session, 10.0)

        async def challenge(client: PeerClient):
            try:
                await client.request(peers.url, "POST", "/v1/peer/challenge", json={"nonce": "ab" * 16},
                                     to=peers.identity.id, max_size=1 << 20)
                return 200
            except PeerRefused as err:
                return err.details["peer_status"]

        statuses = await asyncio.gather(*(challenge(flooder) for _ in range(120)))
        assert statuses.count(429) > 0 and statuses.count(200) >= 20
        assert await challenge(honest) == 200  # another peer is not slowed by the flood
        health = await node.get("/health")
        assert health.status == 200


def test_the_limiter_refills_and_forgets_the_least_recent_keys() -> None:
    limiter = RateLimiter(rate=2, burst=2)
    limiter.check("a", 0.0, "a")
    limiter.check("a", 0.0, "a")
    with pytest.raises(QuotaExceeded) as err:  # a third in the same instant
        limiter.check("a", 0.0, "a")
    assert err.value.details["retry_after"] == 0.5
    limiter.check("a", 0.5, "a")  # half a second later, one token is back
    limiter.check("b", 0.5, "b")  # another key has its own bucket
    work = RateLimiter(rate=10, burst=20, unit="commitments to check")
    work.check("a", 0.0, "a", cost=15)
    with pytest.raises(QuotaExceeded) as err:  # 15 more than the 5 left: refused whole, nothing taken
        work.check("a", 0.0, "a", cost=15)
    assert err.value.details["retry_after"] == 1.0 and "too many commitments to check" in str(err.value)
    work.check("a", 0.0, "a", cost=5)
    with pytest.raises(QuotaExceeded):
        work.check("b", 0.0, "b", cost=21)  # more than a burst never passes
    work.require("b", 0.0, "b", 20)  # there, and nothing taken
    work.require("b", 0.0, "b", 500)  # asking for more than a burst asks for the burst
    with pytest.raises(QuotaExceeded) as err:
        work.require("a", 0.0, "a", 3)  # nothing left
    assert err.value.details["retry_after"] == 0.3
    # A refused cost is asked for before the next body is read: a sender past its quota is not parsed again and again.
    work.check("c", 0.0, "c", cost=15)  # 5 left
    with pytest.raises(QuotaExceeded):
        work.check("c", 0.0, "c", cost=10)
    with pytest.raises(QuotaExceeded) as err:
        work.require("c", 0.0, "c", 2)  # 2 are there, but 10 were refused
    assert err.value.details["retry_after"] == 0.5
    work.require("c", 0.5, "c", 2)  # half a second later the 10 are there
    work.check("c", 0.5, "c", cost=9)  # 1 left: a check that passes forgets the refusal
    work.require("c", 0.5, "c", 1)


async def test_a_probe_round_of_many_peers_keeps_a_bounded_number_in_flight(node_factory) -> None:
    """1,000 probes in flight at once kept ~40,000 objects for every full garbage collection to scan."""
    node = await node_factory("prober", **QUIET)
    peers, health = node.app[NODE].peers, node.app[NODE].health
    keys = [Identity.generate() for _ in range(PROBES_AT_ONCE + 40)]
    in_flight, most, asked = 0, 0, []

    full = asyncio.Event()  # the probes wait until as many are in flight as may be (no timing)

    async def probe(peer):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if most == PROBES_AT_ONCE:
            full.set()
        await asyncio.wait_for(full.wait(), 30)
        in_flight -= 1
        asked.append(peer.id)
        return False, None, "not there"

    health.probe = probe
    paced, started = health._starts.start, []

    async def start() -> None:  # every probe, whatever asked for it, begins only when the pacer lets it
        await paced()
        started.append(in_flight)

    health._starts.start = start
    for at in range(0, len(keys), 16):  # each node learned of is probed at once: these share the bound
        peers.accept(fake_descriptors(keys[at:at + 16]))
    result = await health.probe_round()
    assert most == PROBES_AT_ONCE
    assert len(started) == len(asked) >= len(keys)  # first probes on learning and the round's
    assert set(asked) == {k.id for k in keys} and result["peers"] == len(keys) and result["ok"] == 0
    assert all(health.availability(k.id).up is False for k in keys)


async def test_the_node_backs_off_probing_peers_that_never_answer_and_probes_all_on_request(node_factory) -> None:
    """A stranger's 1,000 fake peers made the node probe 1,000 dead addresses every round."""
    # every peer outside the neighbourhood each round: here only the backing off of dead ones is looked at
    node = await node_factory("prober", peers=QUIET["peers"], health={**QUIET["health"], "probe_others": 1000})
    peers, health = node.app[NODE].peers, node.app[NODE].health
    # Its fake peers' addresses answer nothing: the requests the node makes of `alive` once it answers (gossip, an
    # allocation subscription, an ITC fork) would each have it probed out of turn, beside the rounds counted here.
    node.app[NODE].client.unreached = None
    dead = [Identity.generate() for _ in range(32)]
    alive = Identity.generate()
    asked: list[str] = []

    async def probe(peer):
        asked.append(peer.id)
        return (True, 1.0, None) if peer.id == alive.id else (False, None, "refused")

    health.probe = probe
    for batch in (dead[:16], dead[16:], [alive]):  # 16 new nodes a message at most
        peers.accept(fake_descriptors(batch))
    everyone = sorted(k.id for k in [*dead, alive])
    # each node learned of is probed at once, once
    await eventually_async(lambda: sorted(asked) == everyone, "a probe of every node learned of", 10, poll=0.01)
    assert health.availability(alive.id).up is True and health.availability(dead[0].id).up is False
    rounds = []
    for _ in range(4):  # the node's own rounds, back to back: each well inside the next one's wait
        asked.clear()
        await health.probe_round(due_only=True)
        rounds.append(sorted(asked))
    assert rounds[0] == everyone  # a first failure is probed again the next round
    assert rounds[1] == rounds[2] == rounds[3] == [alive.id]  # two in a row: not before two intervals
    assert all(health.availability(k.id).up is False for k in dead) and health.availability(alive.id).up is True
    asked.clear()
    result = await health.probe_round()  # the user's `xsc health probe`: everyone, now
    assert sorted(asked) == everyone and result["peers"] == len(everyone)
    health_answer = await (await node.get("/health")).json()
    assert health_answer["checks"]["peers:reachable"][0]["observedValue"] == 1


async def test_a_round_probes_the_neighbours_and_in_turn_a_few_others(node_factory) -> None:
    """A node knowing many peers probes those it recognises every round and a sample of `health.probe_others` of
    the rest, each kept for OTHERS_KEPT rounds (on the connection the round before left open), then replaced by
    those probed longest ago: a round's cost does not grow with the network, and every peer is probed in turn."""
    node = await node_factory("prober", peers=QUIET["peers"], health={**QUIET["health"], "probe_others": 4},
                              market={"recognised_at_most": 1})
    services = node.app[NODE]
    services.client.unreached = None  # its fake peers' addresses answer nothing: no probes out of turn
    others, neighbour = [Identity.generate() for _ in range(12)], Identity.generate()
    everyone = sorted(k.id for k in [*others, neighbour])
    asked: list[str] = []

    async def probe(peer):
        asked.append(peer.id)
        return True, 1.0, None

    services.health.probe = probe
    for batch in (others, [neighbour]):
        services.peers.accept(fake_descriptors(batch))
    await eventually_async(lambda: sorted(asked) == everyone, "a probe of every node learned of", 10, poll=0.01)
    services.recognition.set_weight(neighbour.id, Decimal(5))  # the user's: always a neighbour
    near = set(services.recognition.weights())
    assert len(near) == 2 and neighbour.id in near  # and the one peer recognised from its health
    rounds = []
    for _ in range(3 * OTHERS_KEPT):
        asked.clear()
        await services.health.probe_round(due_only=True)
        rounds.append(set(asked))
    assert all(near <= r and len(r) == len(near) + 4 for r in rounds), rounds
    samples = [r - near for r in rounds]
    generations = samples[::OTHERS_KEPT]
    assert all(s == generations[i // OTHERS_KEPT] for i, s in enumerate(samples)), samples  # kept OTHERS_KEPT rounds
    assert all(not a & b for a, b in zip(generations, generations[1:])), generations  # then those probed longest ago
    assert set().union(*rounds) == set(everyone)  # the 11 others in turn, 4 at a time

    async def probe_failing(peer):
        asked.append(peer.id)
        return (False, None, "gone") if peer.id == gone else (True, 1.0, None)

    asked.clear()
    await services.health.probe_round(due_only=True)
    gone = next(iter(set(asked) - near))
    services.health.probe = probe_failing
    for _ in range(2):  # two failed probes in a row: not due next round
        await services.health.probe_round(due_only=True)
    asked.clear()
    await services.health.probe_round(due_only=True)
    assert gone not in asked and len(set(asked) - near) == 4  # another took its place in the sample


async def test_a_gossip_message_carries_a_bounded_sample_with_the_news_first(node_factory) -> None:
    """However many peers a node knows, its gossip carries its own descriptor and GOSSIPED others; the nodes it
    learned of go first, before the random sample of those up, until each was passed on NEWS_PASSES times."""
    node = await node_factory("gossiper", **QUIET)
    services = node.app[NODE]
    old, news = [Identity.generate() for _ in range(14)], [Identity.generate() for _ in range(2)]

    async def probe(peer):
        return (True, 1.0, None) if peer.id not in {k.id for k in news} else (False, None, "not there")

    services.health.probe = probe
    services.peers.accept(fake_descriptors(old))
    await eventually_async(lambda: all(services.peers.up(k.id) for k in old), "the first probes answered", 10,
                           poll=0.01)
    for _ in range(-(-len(old) * service.NEWS_PASSES // service.GOSSIPED)):
        services.peers.gossip_payload()  # the old news passed on as often as news is: a random sample from now on
    services.peers.accept(fake_descriptors(news, first_port=20000))
    payloads = [services.peers.gossip_payload() for _ in range(service.NEWS_PASSES + 1)]
    assert all(p[0]["id"] == services.identity.id and len(p) == 1 + service.GOSSIPED for p in payloads)
    assert all({d["id"] for d in p[1:3]} == {k.id for k in news} for p in payloads[:service.NEWS_PASSES])
    assert {d["id"] for d in payloads[-1]} & {k.id for k in news} == set()  # passed on enough: not up, not sent
