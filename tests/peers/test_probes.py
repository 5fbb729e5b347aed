"""A probe's second attempt: a peer that was up is asked once more, at once, when its challenge found no answer,
before the probe counts it down (xsc.health.core.stats.ask_again is the decision)."""

from __future__ import annotations

import time

import pytest

from xsc.errors import PeerRefused, PeerUnreachable
from xsc.identity import Identity
from xsc.node.appkeys import NODE

from tests.support.attacks import fake_descriptors
from tests.support.waiting import eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
LOST = PeerUnreachable("peer https://198.18.0.3:7070 is unreachable: timeout", sent=True)


async def test_one_challenge_without_an_answer_does_not_mark_a_peer_down(node_factory) -> None:
    node = await node_factory("prober", **QUIET)
    node.app[NODE].client.unreached = None  # its fake peers' addresses answer nothing: no probes out of turn
    peers, health = node.app[NODE].peers, node.app[NODE].health
    peer = Identity.generate()
    outcomes: list[dict | Exception] = [{}]  # what each challenge does, in turn: {} answers
    asked: list[str] = []

    async def challenge(url: str, node_id: str, timeout: float) -> dict:
        asked.append(node_id)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    health.challenge = challenge
    peers.accept(fake_descriptors([peer]))  # a node learned of is probed at once
    await eventually_async(lambda: health.availability(peer.id).up is True, "the first probe answered", 10, poll=0.01)

    outcomes[:] = [LOST, {}]  # up, then one attempt lost: asked again, still up
    result = await health.probe_round()
    assert result["ok"] == 1 and len(asked) == 3 and not outcomes
    assert health.availability(peer.id).up is True
    assert health.view()["probes_asked_again"] == 1 and "timeout" in health.view()["last_asked_again"]

    outcomes[:] = [LOST, LOST]  # no answer twice: down
    result = await health.probe_round()
    assert result["ok"] == 0 and len(asked) == 5 and not outcomes
    assert health.availability(peer.id).up is False

    outcomes[:] = [LOST]  # down already: one attempt only
    await health.probe_round()
    assert len(asked) == 6 and not outcomes and health.view()["probes_asked_again"] == 2

    outcomes[:] = [{}, PeerRefused("peer refused POST /v1/peer/challenge: too many requests")]
    await health.probe_round()  # back up
    await health.probe_round()  # a refusal is an answer: not asked again
    assert len(asked) == 8 and not outcomes and health.availability(peer.id).up is False
    assert health.view()["probes_asked_again"] == 2


async def test_a_peer_answering_its_probe_with_nesting_too_deep_to_parse_fails_it_and_the_others_are_counted(
        node_factory) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    deep = b"[" * 5_000 + b"]" * 5_000  # deeper than the parser goes, and within what an answer may hold

    plain = {**QUIET, "peers": {**QUIET["peers"], "tls": False}}
    prober, honest = await node_factory("prober", **plain), await node_factory("honest", **plain)
    peers, health = prober.app[NODE].peers, prober.app[NODE].health
    honest_id = (await peers.add(honest.app[NODE].peers.url)).id

    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=deep, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/peer/challenge", nested)
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    try:
        liar = Identity.generate()
        peers.accept(fake_descriptors([liar], host="127.0.0.1", first_port=liar_server.port))
        result = await health.probe_round()
    finally:
        await liar_server.close()
    outcome = {r["id"]: r for r in result["results"]}
    assert outcome[honest_id]["ok"] is True and health.availability(honest_id).up is True
    assert outcome[liar.id]["ok"] is False and "not JSON" in outcome[liar.id]["error"]
    assert health.availability(liar.id).up is False


async def test_a_peer_answering_with_megabytes_is_cut_off_after_what_such_an_answer_holds(node_factory) -> None:
    """An answer to a challenge is ~800 bytes and to an exchange of descriptors a few KB: a peer answering either
    with 64 MiB is cut off after CHALLENGE_ANSWER or EXCHANGE_ANSWER bytes, not read up to the client's 16 MiB
    (64 probes at once of a stranger's fake nodes held a GiB), and the others' probes are counted."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from xsc.peers.service import CHALLENGE_ANSWER

    plain = {**QUIET, "peers": {**QUIET["peers"], "tls": False}}
    prober, honest = await node_factory("prober", **plain), await node_factory("honest", **plain)
    peers, health = prober.app[NODE].peers, prober.app[NODE].health
    honest_id = (await peers.add(honest.app[NODE].peers.url)).id
    written: list[int] = []

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        written.append(0)
        try:
            for _ in range(64):
                await response.write(b" " * 1024 * 1024)
                written[-1] += 1024 * 1024
        except (ConnectionError, RuntimeError):
            pass  # the prober hung up
        return response

    app = web.Application()
    app.router.add_post("/v1/peer/challenge", huge)
    app.router.add_post("/v1/peer/descriptors", huge)
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    try:
        liar = Identity.generate()
        peers.accept(fake_descriptors([liar], host="127.0.0.1", first_port=liar_server.port))
        result = await health.probe_round()
        with pytest.raises(PeerRefused, match="more than"):
            await peers.exchange(f"http://127.0.0.1:{liar_server.port}", to=liar.id)
    finally:
        await liar_server.close()
    outcome = {r["id"]: r for r in result["results"]}
    assert outcome[honest_id]["ok"] is True
    assert outcome[liar.id]["ok"] is False and f"more than {CHALLENGE_ANSWER} bytes" in outcome[liar.id]["error"]
    assert written and all(w < 16 * 1024 * 1024 for w in written)


async def test_a_probe_answer_carrying_another_nodes_descriptor_adds_nothing(node_factory) -> None:
    """A probe's answer carries the responder's fresh descriptor; one carrying another node's instead is a way
    around the budget of new nodes a message of descriptors draws on (`peers.new_node_rate`): it is not taken,
    and the probe still counts."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from xsc.health import answer as challenge_answer
    from xsc.peers import make_descriptor

    plain = {**QUIET, "peers": {**QUIET["peers"], "tls": False}}
    prober = await node_factory("prober", **plain)
    peers, health = prober.app[NODE].peers, prober.app[NODE].health
    liar, other = Identity.generate(), Identity.generate()

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        smuggled = make_descriptor(other, url="http://127.0.0.7:9", capacity=1, free=1, version="0",
                                   timestamp=int(time.time() * 1000))
        return web.json_response({**challenge_answer(liar, body["nonce"], peers.identity.id),
                                  "descriptor": smuggled.to_json()})
    app = web.Application()
    app.router.add_post("/v1/peer/challenge", answer)
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    try:
        peers.accept(fake_descriptors([liar], host="127.0.0.1", first_port=liar_server.port))
        result = await health.probe_round()
    finally:
        await liar_server.close()
    assert [r["ok"] for r in result["results"] if r["id"] == liar.id] == [True]
    assert peers.get(other.id) is None


async def test_a_scheduled_round_with_no_peer_due_leaves_the_last_round_as_it_was(node_factory) -> None:
    """A peer down is probed less often, so a scheduled round may probe no one: `xsc health status` goes on saying
    how the last probes went, not "0 of 0 answered"."""
    node = await node_factory("prober", **QUIET)
    node.app[NODE].client.unreached = None  # its fake peers' addresses answer nothing: no probes out of turn
    peers, health = node.app[NODE].peers, node.app[NODE].health
    peer = Identity.generate()
    answers = [{}]

    async def challenge(url: str, node_id: str, timeout: float) -> dict:
        if not answers:
            raise LOST
        return answers.pop(0)

    health.challenge = challenge
    peers.accept(fake_descriptors([peer]))
    await eventually_async(lambda: health.availability(peer.id).up is True, "the first probe answered", 10, poll=0.01)
    await health.probe_round()  # no answer: down
    probed = await health.probe_round()  # down twice in a row: next probed in two intervals, not one
    assert (probed["peers"], probed["ok"]) == (1, 0) and health.availability(peer.id).up is False
    idle = await health.probe_round(due_only=True)
    assert idle["peers"] == 0
    assert health.view()["last_round"] == {k: probed[k] for k in ("time", "seconds", "peers", "ok")}


async def test_a_request_to_a_peer_counted_up_that_finds_no_answer_has_it_probed_at_once(node_factory) -> None:
    node = await node_factory("prober", **QUIET)
    node.app[NODE].client.unreached = None  # only this test's own calls tell of unanswered requests
    peers, health = node.app[NODE].peers, node.app[NODE].health
    peer = Identity.generate()
    asked: list[str] = []

    async def challenge(url: str, node_id: str, timeout: float) -> dict:
        asked.append(node_id)
        if len(asked) > 1:
            raise PeerRefused("peer refused POST /v1/peer/challenge: stopping")  # an answer: not asked again
        return {}

    health.challenge = challenge
    peers.accept(fake_descriptors([peer]))
    await eventually_async(lambda: health.availability(peer.id).up is True, "the first probe answered", 10, poll=0.01)
    health.unreached(peer.id)  # a request to it found no answer: probed now, not in an hour
    await eventually_async(lambda: health.availability(peer.id).up is False, "the probe out of turn", 10, poll=0.01)
    health.unreached(peer.id)  # counted down already: nothing more to learn
    health.unreached(Identity.generate().id)  # a node it does not know: nothing to probe
    assert asked == [peer.id, peer.id]
