"""A put's shares matched on providers whose terms take them (storage/quotes.py `_deal_on_terms`): the gateway's own
ProviderTerms over real LevelDB, the providers' terms answers and the market's matchings played by fakes, time by a
clock the test moves; and what a put draws from a provider's terms, on two real nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.waiting import eventually_async
from xsc.config import LedgerSection
from xsc.db import open_database
from xsc.errors import BadRequest, PrepaymentRequired
from xsc.identity import Identity
from xsc.ledger.core.pricing import price_storage
from xsc.node.appkeys import NODE
from xsc import __version__
from xsc.peers.core.descriptors import make_descriptor
from xsc.storage import quotes, strangers
from xsc.storage.core import layout
from xsc.storage.files import reader
from xsc.storage.strangers import ProviderTerms
from xsc.tasks import now_ms

GIB_HOUR = (2**30, 3600)  # a share of a GiB for an hour: its price is its cost
PRICE = 80  # micro-credits per GiB-hour
PEER_CAP = 400  # what the gateway may prepay one provider by itself: at least a quarter of it goes at once


class _Providers:
    """The providers' terms for the gateway (micro-credits of work each takes on now), as the peers answer them."""

    def __init__(self, available: dict[str, int]) -> None:
        self.available = available

    def peer(self, node_id: str) -> SimpleNamespace:
        return SimpleNamespace(url=f"http://{node_id[:8]}.invalid")

    async def request(self, url: str, method: str, path: str, *, to: str, max_size: int) -> SimpleNamespace:
        return SimpleNamespace(json=lambda: {"available": self.available[to], "credit": 0, "recognised": False})


class _Market:
    """The book's matchings: each need, in turn, on the next provider not left out; and the book's fillings."""

    me = "gateway"

    def __init__(self, providers: list[str]) -> None:
        self.providers, self.market, self.fills, self.matched = providers, self, [], []

    async def deal_alike(self, need, needs: list[str], exclude: frozenset[str]) -> dict:
        free = [p for p in self.providers if p not in exclude]
        self.matched.append(free[:len(needs)])
        return {n: SimpleNamespace(provider=free[i % len(free)], price=PRICE) for i, n in enumerate(needs)}

    async def fill_book(self, **wanted) -> None:
        self.fills.append(wanted)


async def test_a_put_matched_again_draws_and_prepays_once_and_a_slow_round_fills_the_book_again(tmp_path: Path,
                                                                                                monkeypatch) -> None:
    """Round one: provider p wants prepayment and is prepaid (slowly: the ledger transfer takes a minute), q wants more
    than the budget.  Round two, without q, matches p again for the same share: what round one drew from p's terms is
    given back first, so p is drawn and prepaid once for it (drawn twice, it lacked room and was prepaid again); and
    since the round took longer than the book's offers were counted to last, the book is filled again before it."""
    cost = price_storage(*GIB_HOUR, PRICE)
    p, q, r = (Identity.generate().id for _ in range(3))
    clock = [1000.0]
    monkeypatch.setattr(quotes, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sent: list[tuple[str, int]] = []

    async def prepay(provider: str, amount: int) -> None:
        sent.append((provider, amount))
        clock[0] += 60.0  # the prepayment's ledger transfer is slow

    db = open_database(tmp_path / "db")
    try:
        terms = ProviderTerms(db=db, peers=_Providers({p: 0, q: -10**6, r: 10**6}), prepay=prepay,
                              budget=LedgerSection(auto_prepay=True, auto_prepay_peer=PEER_CAP))
        market = _Market([p, q, r])
        assignments, prepaid, passed = await quotes._deal_on_terms(market, None, ["s0", "s1"], *GIB_HOUR, terms,
                                                                   False)
        assert market.matched == [[p, q], [p, r]]
        assert passed.startswith(f"node {q} wants prepayment for this put"), passed  # why the second round left q out
        assert {n: a.provider for n, a in assignments.items()} == {"s0": p, "s1": r}
        assert sent == [(p, PEER_CAP // 4)] and prepaid == {p: PEER_CAP // 4} and terms.prepaid(p) == PEER_CAP // 4
        assert (await terms.terms(p)).available == PEER_CAP // 4 - cost  # drawn once, by the share it takes
        assert (await terms.terms(r)).available == 10**6 - cost
        assert market.fills == [{"kind": "storage", "wanted": 6, "needed": 2 * quotes.TERMS_TIMEOUT}]
    finally:
        db.close()


async def test_two_settlements_at_once_prepay_a_provider_once_and_the_second_draws_on_the_first(tmp_path: Path) -> None:
    """Provider p takes nothing from the gateway without prepayment.  While one settlement's prepayment to p is under
    way, a second settlement of work for p waits for it and then draws on it, so p is prepaid once, a quarter of the
    cap, for the two shares it covers (decided at once, the second prepaid p as much again); a third, sent once that
    prepayment is drawn down, prepays p again."""
    cost = PEER_CAP // 10  # two shares fit in a quarter of the cap
    p = Identity.generate().id
    sent: list[tuple[str, int]] = []
    answer = asyncio.Event()

    async def prepay(provider: str, amount: int) -> None:
        sent.append((provider, amount))
        await answer.wait()

    db = open_database(tmp_path / "db")
    try:
        terms = ProviderTerms(db=db, peers=_Providers({p: 0}), prepay=prepay,
                              budget=LedgerSection(auto_prepay=True, auto_prepay_peer=PEER_CAP))
        first = asyncio.create_task(terms.settle({p: cost}))
        await eventually_async(lambda: sent, "the first settlement's prepayment to be sent")
        second = asyncio.create_task(terms.settle({p: cost}))
        await eventually_async(lambda: terms.status()["waiting_for_prepayments"] or len(sent) > 1,
                               "the second settlement to wait for it, or to prepay p itself")
        answer.set()
        assert await first == ({}, {p: PEER_CAP // 4}) and await second == ({}, {})
        assert sent == [(p, PEER_CAP // 4)] and terms.prepaid(p) == PEER_CAP // 4
        assert (await terms.terms(p)).available == PEER_CAP // 4 - 2 * cost
        assert await terms.settle({p: PEER_CAP // 4}) == ({}, {p: PEER_CAP // 4})  # beyond what is left of it
        assert terms.status()["prepaying"] == [] and terms.prepaid(p) == PEER_CAP // 2
    finally:
        db.close()


async def test_a_settlement_that_waited_for_a_prepayment_that_was_refused_prepays_the_provider_itself(
        tmp_path: Path) -> None:
    """The prepayment a second settlement waited for is refused (p would not countersign it): the second decides
    again once it is over, on the budget the refusal gave back, and prepays p itself."""
    p = Identity.generate().id
    sent: list[tuple[str, int]] = []
    answer = asyncio.Event()

    async def prepay(provider: str, amount: int) -> None:
        sent.append((provider, amount))
        if len(sent) == 1:
            await answer.wait()
            raise PrepaymentRequired("no: this node owes you nothing")

    db = open_database(tmp_path / "db")
    try:
        terms = ProviderTerms(db=db, peers=_Providers({p: 0}), prepay=prepay,
                              budget=LedgerSection(auto_prepay=True, auto_prepay_peer=PEER_CAP))
        first = asyncio.create_task(terms.settle({p: 40}))
        await eventually_async(lambda: sent, "the first settlement's prepayment to be sent")
        second = asyncio.create_task(terms.settle({p: 40}))
        await eventually_async(lambda: terms.status()["waiting_for_prepayments"], "the second settlement to wait")
        answer.set()
        assert await first == ({p: 40}, {}) and await second == ({}, {p: PEER_CAP // 4})
        assert sent == [(p, PEER_CAP // 4)] * 2 and terms.prepaid(p) == PEER_CAP // 4
    finally:
        db.close()


QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
SEGMENT = 4096


async def test_a_put_that_fails_or_is_cancelled_after_its_quote_gives_back_what_it_drew_and_one_stored_keeps_it(
        node_factory) -> None:
    """A put drew its shares' cost from provider b's terms as it was quoted: if it then fails (its upload cut) or is
    cancelled, the draw is b's again at once, once, so the puts that follow within the terms' 30 s do not see room
    on b as taken that is not; a put that is stored keeps its draw."""
    a = await node_factory("a", storage={"segment_size": SEGMENT}, **QUIET)
    b = await node_factory("b", storage={"segment_size": SEGMENT}, ledger={"stranger_credit": 10**12}, **QUIET)
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    b_id = b.app[NODE].peers.identity.id
    terms, storage, bid = a.app[NODE].provider_terms, a.app[NODE].storage, a.app[NODE].market.config.storage_bid
    before = (await terms.terms(b_id)).available  # held from now on for TERMS_SECONDS
    data = os.urandom(40_000)

    async def stalled(cut: bool) -> None:
        reading, go = asyncio.Event(), asyncio.Event()

        async def read(n: int) -> bytes:  # the body, read once quoted: it stalls, then is cut (or the put cancelled)
            reading.set()
            await go.wait()
            raise BadRequest("the upload was cut short")

        put = asyncio.create_task(storage.put(read, len(data), "cut", 3600, bid))
        await asyncio.wait_for(reading.wait(), 30)
        assert (await terms.terms(b_id)).available < before  # its shares on b drawn
        if cut:
            go.set()
            with pytest.raises(BadRequest):
                await put
        else:
            put.cancel()
            await asyncio.wait([put])
            assert put.cancelled()
        assert (await terms.terms(b_id)).available == before

    await stalled(cut=True)
    await stalled(cut=False)
    answer = await storage.put(reader(data), len(data), "kept", 3600, bid)
    share_bytes = layout.share_bytes(len(data), SEGMENT)
    drawn = sum(price_storage(share_bytes, answer["lease_seconds"], price)
                for node, price in zip(answer["placement"], answer["prices"]) if node == b_id)
    assert drawn and (await terms.terms(b_id)).available == before - drawn
    await eventually_async(lambda: not a.app[NODE].dealing.needs.open_ids(), "the puts' needs to be withdrawn")


async def test_a_payee_that_never_answers_a_prepayment_holds_up_no_other_settlement_and_its_own_no_longer_than_the_wait(
        node_factory) -> None:
    """Gateway a prepays by itself (`ledger.auto_prepay`) the stranger b, which takes the prepayment's request and
    never answers it, and a's requests to peers may take an hour: a settlement of provider c is not held up behind it,
    and the one of b ends once `ledger.prepay_wait` has passed, with b wanting; the prepayment, cut short, stays
    counted and pending for the payments' retry to finish."""
    a = await node_factory("a", **{**QUIET, "peers": {**QUIET["peers"], "request_timeout": 3600}},
                           ledger={"auto_prepay": True, "prepay_wait": 0.5})
    b = await node_factory("b", **QUIET, ledger={"stranger_credit": 0})
    c = await node_factory("c", **QUIET, ledger={"stranger_credit": 10**12})
    for other in (b, c):
        await a.app[NODE].peers.add(other.app[NODE].peers.url)
    b_id, c_id = (n.app[NODE].peers.identity.id for n in (b, c))
    asked, answer = asyncio.Event(), asyncio.Event()
    countersign = b.app[NODE].payments.countersign

    async def unanswered(*args, **kwargs):
        asked.set()
        await answer.wait()
        return await countersign(*args, **kwargs)

    b.app[NODE].payments.countersign = unanswered
    terms, cost = a.app[NODE].provider_terms, 1000
    stuck = asyncio.create_task(terms.settle({b_id: cost}))
    await asyncio.wait_for(asked.wait(), 30)
    assert await asyncio.wait_for(terms.settle({c_id: cost}), 30) == ({}, {})
    assert await asyncio.wait_for(stuck, 30) == ({b_id: cost}, {})
    assert not answer.is_set() and terms.prepaid(b_id) > 0
    assert [auth.job.partition(":")[0] for auth in a.app[NODE].ledger.pending()] == ["prepay"]
    answer.set()  # (b's request ends before the nodes stop)


@contextlib.asynccontextmanager
async def _silent_provider(gateway, url_of):
    """A provider `gateway` knows that takes the connection and never answers: (its id, an event set once one
    connected)."""
    connected = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        while await reader.read(4096):  # (until its client gives up on it)
            pass
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent = Identity.generate()
    url = f"{url_of.split(':')[0]}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    gateway.app[NODE].peers.accept([make_descriptor(silent, url=url, capacity=2**30, free=2**30, version=__version__,
                                                    timestamp=now_ms()).to_json()])
    try:
        yield silent.id, connected
    finally:
        server.close()


async def test_a_provider_that_never_answers_its_terms_holds_up_no_other_settlement(node_factory, monkeypatch) -> None:
    """Gateway a knows a provider that takes the connection and never answers (a's requests, and its asking of
    terms, may take an hour): while a waits for its terms, a settlement of provider b, which answers, is not held up
    behind it."""
    monkeypatch.setattr(strangers, "TERMS_TIMEOUT", 3600.0)
    a = await node_factory("a", **{**QUIET, "peers": {**QUIET["peers"], "request_timeout": 3600}})
    b = await node_factory("b", **QUIET, ledger={"stranger_credit": 10**12})
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    b_id = b.app[NODE].peers.identity.id
    terms = a.app[NODE].provider_terms
    async with _silent_provider(a, b.app[NODE].peers.url) as (silent, connected):
        stuck = asyncio.create_task(terms.settle({silent: 1000}))
        try:
            await asyncio.wait_for(connected.wait(), 30)
            assert await asyncio.wait_for(terms.settle({b_id: 1000}), 30) == ({}, {})
            assert not stuck.done()
        finally:
            stuck.cancel()
            await asyncio.wait([stuck])


async def test_a_provider_that_did_not_say_its_terms_is_not_waited_for_again_by_the_settlements_that_follow(
        node_factory, monkeypatch) -> None:
    """Gateway a asks a provider that never answers for its terms once: two settlements at once and one after them
    each take it as saying nothing (it takes the work) and go on, the later ones without asking it again (each would
    wait `TERMS_TIMEOUT` for it, a put on a network with one silent provider that much slower every time), until
    `SILENT_SECONDS` passed."""
    monkeypatch.setattr(strangers, "TERMS_TIMEOUT", 0.2)
    a = await node_factory("a", **QUIET)
    terms, peers = a.app[NODE].provider_terms, a.app[NODE].peers
    asked: list[str] = []
    request = peers.request

    async def counted(url: str, method: str, path: str, **kwargs):
        if path == strangers.TERMS_PATH:
            asked.append(kwargs["to"])
        return await request(url, method, path, **kwargs)

    monkeypatch.setattr(peers, "request", counted)
    async with _silent_provider(a, peers.url) as (silent, _):
        assert await asyncio.gather(terms.settle({silent: 1000}), terms.settle({silent: 1000})) == [({}, {})] * 2
        assert await terms.settle({silent: 1000}) == ({}, {})
        assert asked == [silent]
        monkeypatch.setattr(strangers, "SILENT_SECONDS", 0.0)  # its silence is as old as it is kept
        assert await terms.settle({silent: 1000}) == ({}, {})
        assert asked == [silent] * 2
