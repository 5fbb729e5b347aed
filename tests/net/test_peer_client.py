"""The service the rest of the node uses (app[NODE].peers): signed requests, peers(), availability()."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from xsc.allocation.gossip import SUBSCRIPTION_TTL
from xsc.config import NodeSection
from xsc.errors import PeerRefused, PeerUnreachable
from xsc.health import check_answer, new_nonce
from xsc.net import KEEPALIVE
from xsc.node.appkeys import NODE

from tests.support.nodes import free_port
from tests.support.peers import metered_client
from tests.support.waiting import eventually_async

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


def test_a_connection_to_a_peer_outlives_the_subscription_renewals_and_this_end_closes_it_first() -> None:
    # A renewal finds the connection of the one before still open (else a TLS handshake on both nodes each), and
    # the client, not the peer, ends an idle one (a request sent as the peer closes it would be lost).
    assert SUBSCRIPTION_TTL / 3 < KEEPALIVE < NodeSection().idle_timeout


async def test_the_peer_service_signs_requests_and_reports_availability(node_factory) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    peers_a, b_url = a.app[NODE].peers, b.app[NODE].peers.url
    added = await peers_a.add(b_url)
    b_id = b.app[NODE].peers.identity.id
    assert added.id == b_id and [d.id for d in peers_a.peers()] == [b_id]
    assert peers_a.availability(b_id).up is True  # its answer to add's challenge counts as a probe
    # ... and a node learned of is probed at once
    await eventually_async(lambda: peers_a.availability(b_id).probes_1h >= 2, "a probe of b", 10, poll=0.01)

    nonce = new_nonce()
    response = await peers_a.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": nonce}, max_size=1 << 20)
    assert response.status == 200
    check_answer(response.json(), nonce=nonce, prober=peers_a.identity.id, responder=b_id)

    with pytest.raises(PeerRefused) as refused:
        await peers_a.request(b_url, "POST", "/v1/peer/no-such-thing", data=b"\x00\x01", max_size=1 << 20)
    assert refused.value.details["peer_status"] == 404
    with pytest.raises(PeerRefused) as refused:  # a bad nonce: the peer's problem code comes through
        await peers_a.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": "xyz"}, max_size=1 << 20)
    assert refused.value.details["peer_code"] == "invalid-argument"
    with pytest.raises(PeerUnreachable):
        await peers_a.request(f"http://127.0.0.1:{free_port()}", "POST", "/v1/peer/challenge", json={},
                              max_size=1 << 20)

    result = await a.app[NODE].health.probe_round()
    assert result["ok"] == 1 and result["results"][0]["id"] == b_id
    stats = peers_a.availability(b_id)
    assert stats.up is True and stats.probes_1h == 3 and stats.latency_ms > 0  # its add, learning of it, the round
    a.app[NODE].health.record_audit(b_id, False, "block 7 of share 3 does not match its root")
    assert peers_a.availability(b_id).last_audit["ok"] is False
    health = await (await a.get("/health")).json()
    assert health["checks"]["peers:reachable"][0]["status"] == "pass"
    status = await (await a.get("/v1/node/status")).json()
    assert status["peers"] == {"url": peers_a.url, "known": 1, "up": 1}


def _test_upload(monkeypatch):
    """A streaming peer route PUT /v1/peer/test-upload (priced for bodies up to 4 MiB) made of the decorated
    handler, which is called with the SHA-256 of the body as it was streamed in."""
    import hashlib

    from xsc.node.peer_auth import streams_body
    from xsc.node.peer_routes import PEER_ROUTES, Price

    monkeypatch.setitem(PEER_ROUTES, ("PUT", "/v1/peer/test-upload"), Price(4 * 1024 * 1024, 64 * 1024))

    def route(answer):
        @streams_body
        async def upload(request):
            digest = hashlib.sha256()
            async for chunk in request.content.iter_chunked(64 * 1024):
                digest.update(chunk)
            return await answer(request, digest.hexdigest())

        return upload

    return route


async def test_a_streaming_peer_handler_gets_the_signed_digest_and_an_unread_body(make_config, monkeypatch) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from xsc.identity import Identity, sign_request
    from xsc.node import create_app
    from xsc.node.peer_auth import signed

    @_test_upload(monkeypatch)
    async def upload(request: web.Request, sha256: str) -> web.Response:
        return web.json_response({"matches": sha256 == signed(request).digest})

    config = make_config("streamer", **FAST)
    app = create_app(config)
    app.router.add_put("/v1/peer/test-upload", upload)
    client = TestClient(TestServer(app, host="127.0.0.1", port=int(config.node.listen.rsplit(":", 1)[1])))
    await client.start_server()
    try:
        sender = Identity.generate()
        body = b"x" * (3 * 1024 * 1024)  # more than a buffered peer request may carry
        for sent, matches in ((body, True), (body[:-1] + b"y", False)):
            headers = sign_request(sender, "PUT", "/v1/peer/test-upload", body)
            answer = await client.put("/v1/peer/test-upload", data=sent, headers=headers)
            assert answer.status == 200 and (await answer.json())["matches"] is matches
    finally:
        await client.close()


async def test_a_body_given_as_parts_arrives_whole_and_its_signature_covers_them_one_after_the_other(
        make_config, monkeypatch) -> None:
    import hashlib

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from xsc.identity import Identity
    from xsc.net.peer_client import PeerClient
    from xsc.node import create_app
    from xsc.node.peer_auth import signed

    @_test_upload(monkeypatch)
    async def upload(request: web.Request, sha256: str) -> web.Response:
        return web.json_response({"sha256": sha256, "signed": signed(request).digest})

    config = make_config("parts", **FAST)
    app = create_app(config)
    app.router.add_put("/v1/peer/test-upload", upload)
    port = int(config.node.listen.rsplit(":", 1)[1])
    server = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await server.start_server()
    try:
        parts = [b"a" * 700_000, b"", b"b" * 3, bytes(range(256)) * 5000]  # pieces cut across and within parts
        whole = hashlib.sha256(b"".join(parts)).hexdigest()
        async with aiohttp.ClientSession() as session:  # plaintext on loopback: every request signed
            client = PeerClient(Identity.generate(), session, 10.0, tls=False)
            answer = (await client.request(f"http://127.0.0.1:{port}", "PUT", "/v1/peer/test-upload",
                                           data=parts, max_size=1 << 20)).json()
        assert answer == {"sha256": whole, "signed": whole}
    finally:
        await server.close()


async def test_parts_are_written_in_pieces_of_at_most_write_piece_bytes_never_joined() -> None:
    from xsc.net.peer_client import WRITE_PIECE, Pieces

    class Writer:
        def __init__(self) -> None:
            self.pieces: list[memoryview] = []

        async def write(self, piece) -> None:
            self.pieces.append(piece)

    parts = [b"x" * (2 * WRITE_PIECE + 5), b"y" * 10]
    writer = Writer()
    body = Pieces(parts)
    assert body.size == 2 * WRITE_PIECE + 15
    await body.write(writer)
    assert [len(p) for p in writer.pieces] == [WRITE_PIECE, WRITE_PIECE, 5, 10]
    assert all(p.obj is part for p, part in zip(writer.pieces, [parts[0]] * 3 + [parts[1]]))  # views: no copy
    assert b"".join(writer.pieces) == b"".join(parts) == await body.as_bytes()
    cut = Writer()
    await body.write_with_length(cut, WRITE_PIECE + 1)  # a shorter Content-Length is honoured
    assert [len(p) for p in cut.pieces] == [WRITE_PIECE, 1]


@asynccontextmanager
async def _refusing(problem: Callable[[], dict]) -> AsyncIterator[Callable[..., Awaitable[PeerRefused]]]:
    """A stranger answering every request 402 with `problem()`: a call that asks it (PeerClient.request's options)
    and returns the PeerRefused it raised."""
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=402, body=json.dumps(problem()), content_type="application/problem+json")

    app = web.Application()
    app.router.add_post("/v1/peer/refused", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with metered_client() as (client, _):
            async def ask(**options) -> PeerRefused:
                with pytest.raises(PeerRefused) as refused:
                    await client.request(f"http://127.0.0.1:{server.port}", "POST", "/v1/peer/refused", json={},
                                         max_size=1 << 20, **options)
                return refused.value
            yield ask
    finally:
        await server.close()


async def test_a_strangers_refusal_is_quoted_on_one_line_without_control_characters_and_bounded() -> None:
    detail = "\x1b[2J\x1b]0;owned\x07you owe me\nerror: run xsc ledger prepay ATTACKER 1000\r\u202e" + "x" * 10_000
    problem = {"code": "\x1b[31mdeal-refused" + "y" * 500, "detail": detail}
    async with _refusing(lambda: problem) as ask:
        for kept in (False, True):  # the session's requests, and those over this client's kept connections
            refused = await ask(kept=kept)
            said, code = refused.message.split(": ", 1)[1], refused.details["peer_code"]
            assert said.startswith("[2J]0;owned") and "you owe me error: run xsc ledger prepay" in said, said
            assert len(said) == 300 and said.endswith("…") and said.isprintable(), said  # MAX_DETAIL
            assert code.startswith("[31mdeal-refused") and len(code) == 100 and code.isprintable()
            assert refused.details["peer_status"] == 402


async def test_a_refusal_keeps_the_credits_a_peer_says_are_missing_only_as_a_whole_number_a_ledger_holds() -> None:
    said: list = []
    problem = {"code": "prepayment-required", "detail": "must prepay", "hint": "run xsc ledger prepay X 9"}
    async with _refusing(lambda: {**problem, "missing": said[-1]}) as ask:
        for missing, kept in ((250_000, 250_000), (2**62, 2**62), (2**62 + 1, None), (0, None), (-5, None),
                              (True, None), (1.5, None), ("250000", None), ([1], None), (None, None)):
            said.append(missing)
            refused = await ask()
            assert refused.details.get("peer_missing") == kept, missing
            assert "hint" not in refused.details and refused.hint is None  # its own text never
