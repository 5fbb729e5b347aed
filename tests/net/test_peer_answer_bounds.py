"""A peer's answer is read only as far as an honest answer to that request goes: a stranger answering with megabytes
costs this node no more than an honest peer would, and the caller sees the refusal it handles for any bad answer."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from xsc.config import LedgerSection
from xsc.db import open_database
from xsc.errors import PeerRefused, PeerUnreachable
from xsc.identity import Identity
from xsc.ledger.core.model import authorize
from xsc.ledger.receipts import RECEIPT_ANSWER, RECEIPTS_PATH, ask_receipt, fetch_receipt
from xsc.net import functions, jobs
from xsc.net.compute import INVOKE_PATH, INVOKES_PATH, InvokeBatcher, invoke_answer_bound
from xsc.storage.locate import LOCATE_ANSWER, LOCATE_PATH, Locator
from xsc.storage.strangers import TERMS_ANSWER, TERMS_PATH, ProviderTerms

from tests.support.peers import READ_AHEAD, lying_peer, metered_client


class Peers:
    """The node's peer view as the locator and the terms see it: every node is the liar at `url`."""

    def __init__(self, peer_client, url: str, nodes: list[str]) -> None:
        self.client, self.url, self.nodes = peer_client, url, nodes

    def peer(self, node_id: str) -> SimpleNamespace:
        return SimpleNamespace(id=node_id, url=self.url)

    def up_peers(self) -> list[SimpleNamespace]:
        return [self.peer(n) for n in self.nodes]

    def known(self, node_id: str) -> bool:
        return node_id in self.nodes

    def up(self, node_id: str) -> bool:
        return node_id in self.nodes

    async def request(self, peer_url: str, method: str, path: str, **kwargs):
        return await self.client.request(peer_url, method, path, **kwargs)


async def test_an_invoke_answered_with_megabytes_is_read_no_further_than_a_run_goes_and_counts_as_lost() -> None:
    body = {"call": {"module": "ab" * 32, "function": "f", "args": []}, "price": 1, "authorization": "00",
            "deal": {}, "tab": True}
    async with lying_peer(("POST", INVOKE_PATH), ("POST", INVOKES_PATH)) as url, \
            metered_client() as (peer_client, counted):
        batcher = InvokeBatcher(peer_client)
        provider = Identity.generate().id
        # The first call goes alone; the two made while it is in flight go together as one batch.
        outcomes = await asyncio.gather(*(batcher.invoke(url, provider, body, lambda: b"", False) for _ in range(3)),
                                        return_exceptions=True)
        await batcher.close()
    # Each call may have run: lost (its budget stays held until the tab is paid), not refused before it ran.
    assert all(isinstance(o, PeerUnreachable) and o.details["sent"] is True for o in outcomes), outcomes
    assert batcher.batches == 1 and batcher.batched == 2
    assert counted.received <= invoke_answer_bound(1024) + invoke_answer_bound(2048, 2)


async def test_a_receipt_answered_with_megabytes_is_read_no_further_than_a_receipt_goes() -> None:
    payer, payee = Identity.generate(), Identity.generate()
    auth = authorize(payer, payee.public_key, 1000, "job", int(time.time()) + 600, os.urandom(16))
    async with lying_peer(("POST", RECEIPTS_PATH), ("GET", RECEIPTS_PATH + "/{auth}")) as url, \
            metered_client() as (peer_client, counted):
        with pytest.raises(PeerRefused) as asked:
            await ask_receipt(peer_client, url, payee.id, auth, 10, {"fuel": 1})
        with pytest.raises(PeerRefused) as fetched:
            await fetch_receipt(peer_client, url, payee.id, auth)
    assert asked.value.details["answer_limit"] == fetched.value.details["answer_limit"] == RECEIPT_ANSWER
    assert counted.received < 2 * (RECEIPT_ANSWER + READ_AHEAD)


async def test_a_locate_answered_with_megabytes_is_read_no_further_than_an_answer_goes_and_names_nothing() -> None:
    async with lying_peer(("POST", LOCATE_PATH)) as url, metered_client() as (peer_client, counted):
        nodes = [Identity.generate().id for _ in range(3)]
        store = SimpleNamespace(share_metas=lambda si: [])
        locator = Locator(me=Identity.generate().id, store=store, pool=None, peers=Peers(peer_client, url, nodes))
        assert await locator.locate(os.urandom(32)) == {}
    assert counted.received < len(nodes) * (LOCATE_ANSWER + READ_AHEAD)


async def test_terms_answered_with_megabytes_are_read_no_further_than_terms_go(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    try:
        async with lying_peer(("GET", TERMS_PATH)) as url, metered_client() as (peer_client, counted):
            provider = Identity.generate().id

            async def prepay(node: str, amount: int) -> None:
                raise AssertionError("nothing is prepaid to a provider that said no terms")
            terms = ProviderTerms(db=db, peers=Peers(peer_client, url, [provider]), prepay=prepay,
                                  budget=LedgerSection())
            assert await terms.terms(provider) is None  # as a provider that does not answer
            assert await terms.settle({provider: 5}) == ({}, {})
    finally:
        db.close()
    assert counted.received < 2 * (TERMS_ANSWER + READ_AHEAD)


async def test_a_job_begun_with_megabytes_for_an_answer_is_refused_after_what_its_id_takes() -> None:
    async with lying_peer(("POST", jobs.JOBS_PATH), ("PUT", jobs.DATA_PATH), ("DELETE", jobs.JOB_PATH),
                          ("POST", jobs.RUN_PATH)) as url, metered_client() as (peer_client, counted):
        provider = Identity.generate().id
        with pytest.raises(PeerRefused):
            await jobs.begin(peer_client, url, provider, {"spec": {}})
        with pytest.raises(PeerRefused):
            await jobs.send(peer_client, url, provider, "j1", 0, b"data")
        with pytest.raises(PeerRefused):
            await jobs.forget(peer_client, url, provider, "j1")
        assert counted.received < 3 * (jobs.JOB_ANSWER + READ_AHEAD)
        # A run answered past its bound may have run: not refused (which would say nothing is owed) but lost.
        with pytest.raises(PeerUnreachable) as lost:
            await jobs.run(peer_client, url, provider, "j1", timeout=30, most=jobs.run_answer_bound(1024, 1024))
        assert lost.value.details["sent"] is True
    # A spec keeping the default 1 MiB of stdout and 64 KiB of stderr is answered with less than 20 MiB at most.
    assert jobs.run_answer_bound(1 << 20, 64 << 10) < 20 * 1024**2


async def test_a_function_placed_with_megabytes_for_an_answer_is_refused_after_what_its_url_takes() -> None:
    async with lying_peer(("POST", functions.FUNCTIONS_PATH), ("GET", functions.FUNCTION_PATH),
                          ("DELETE", functions.FUNCTION_PATH)) as url, metered_client() as (peer_client, counted):
        provider = Identity.generate().id
        with pytest.raises(PeerRefused):
            await functions.place(peer_client, url, provider, provider, {"function": {"name": "f"}})
        with pytest.raises(PeerRefused):
            await functions.status(peer_client, url, provider, provider, "f")
        with pytest.raises(PeerRefused):
            await functions.withdraw(peer_client, url, provider, "f")
    assert counted.received < 3 * (functions.FUNCTION_ANSWER + READ_AHEAD)


async def test_a_holder_answering_with_megabytes_is_read_no_further_than_an_honest_holder_says() -> None:
    from xsc.storage.core import wire
    from xsc.storage.holder_client import RemoteHolder

    share = "/v1/peer/shares/{si}/{share}"
    async with lying_peer(("GET", share), ("POST", share + "/uploads"), ("POST", share + "/renew"),
                          ("PUT", wire.WHOLE_PATH)) as url, metered_client() as (peer_client, counted):
        holder = RemoteHolder(peer_client, Identity.generate().id, url)
        si = os.urandom(32)
        # A reader handed a capability knows the file's size, not its segment count: a 1 MB file's share has
        # at most 245 segments' hashes.
        with pytest.raises(PeerRefused) as meta:
            await holder.meta(si, 0, size=1_000_000)
        assert meta.value.details["answer_limit"] == wire.meta_answer_most(1_000_000) < 128 * 1024
        with pytest.raises(PeerRefused):
            await holder.begin(si, 0, 1000, 4096, int(time.time()) + 3600)
        with pytest.raises(PeerRefused):
            await holder.renew(si, 0, int(time.time()) + 7200)
        with pytest.raises(PeerRefused):
            await holder.place_shares([wire.WholeShare(si, 0, {"size": 3}, b"abc")])
    assert counted.received < wire.meta_answer_most(1_000_000) + 2 * wire.HOLDER_ANSWER + wire.WHOLE_ANSWER \
        + 4 * READ_AHEAD


async def test_an_answer_declaring_more_than_its_bound_is_refused_before_its_body_comes() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    never = asyncio.Event()

    async def declares_megabytes(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 8 * 1024**2
        await response.prepare(request)
        await never.wait()  # the body never comes: only a refusal on the head ends the request
        return response

    app = web.Application()
    app.router.add_get(TERMS_PATH, declares_megabytes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with metered_client() as (peer_client, _):
            for kept in (False, True):
                with pytest.raises(PeerRefused) as refused:
                    await peer_client.request(f"http://127.0.0.1:{server.port}", "GET", TERMS_PATH, timeout=20,
                                              kept=kept, max_size=TERMS_ANSWER)
                assert refused.value.details["answer_limit"] == TERMS_ANSWER
    finally:
        never.set()
        await server.close()
