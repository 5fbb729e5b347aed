"""Strangers who answer badly pay for it: a provider whose answer to a peer request proves it misbehaved (not of the
shape asked for, over the bound the gateway set) is struck by the gateway, and quarantined past
`peers.quarantine_strikes`: the market no longer chooses it.  An honest 503 (busy) or 500 (a fault of its own) is
not struck.  Two real nodes in this process over TLS, the provider's route made to answer so: invokes, and every
other request a node makes of a peer whose answer it reads (receipts asked and fetched, a tab's close, a web function's
placement, where a file's shares are, a provider's terms, the descriptor exchange, a fork of the ITC id), each bad
answer struck once, and a plaintext answer, which proves nobody, never.

"""

from __future__ import annotations

import os
import time

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.allocation import FORK_WAIT, joining
from tests.support.compute import deploy, invoke, peer_with_provider
from tests.support.waiting import eventually_async
from xsc.compute.service import InvokeCall
from xsc.errors import ComputeBusy, PeerMisbehaved
from xsc.ledger.core.model import make_receipt
from xsc.net import functions
from xsc.net.peer_client import PeerResponse
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE
from xsc.storage.locate import read_answer

PRICE = 1_000_000  # micro-credits per million fuel
FUEL = 250_000
MARKET_TERMS = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}
QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def _pair(node_factory, strikes: int):
    """A provider, and a gateway that offers no compute (every call runs on the provider) quarantining a peer at its
    `strikes`-th misbehaviour, after one call answered as it should."""
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": strikes}},
                                 market={**MARKET_TERMS, "offer_compute": False}, ledger={"credit_limit": 10**9})
    await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "add")
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)  # the provider gets the module
    assert status == 200 and body["provider"] == provider.app[IDENTITY].id, body
    return gateway, provider, module


def _strikes(gateway, monkeypatch) -> list[tuple[str, str]]:
    """The gateway's strikes as they are made (node, why), each still counted by its quarantine."""
    quarantine, made = gateway.app[NODE].quarantine, []
    strike = quarantine.strike

    def counted(node, why, **kind):
        made.append((node, why))
        return strike(node, why, **kind)

    monkeypatch.setattr(quarantine, "strike", counted)
    return made


async def _quarantined(gateway) -> list[str]:
    response = await gateway.get("/v1/peers/quarantine")
    assert response.status == 200
    return [q["node"] for q in (await response.json())["quarantined"]]


def _answering(provider, monkeypatch, answer) -> list[int]:
    """The provider's invoke route answers `answer()` (returned, or raised): the calls it got, counted."""
    asked: list[int] = []

    async def answering(gateway, body, batch=None):
        asked.append(1)
        return answer()

    monkeypatch.setattr(provider.app[NODE].paid, "run_for_peer", answering)
    return asked


@pytest.mark.parametrize("answer", ["shapeless", "over-bound"])
async def test_a_provider_answering_invokes_badly_is_struck_quarantined_and_no_longer_chosen(
        node_factory, monkeypatch, answer) -> None:
    gateway, provider, module = await _pair(node_factory, strikes=1)
    pid = provider.app[IDENTITY].id
    made = _strikes(gateway, monkeypatch)
    bad = {"shapeless": lambda: {"results": "not a run"},  # JSON, of another shape than a call's answer
           "over-bound": lambda: {"run": {}, "tab": "x" * (4 << 20)}}[answer]  # past any honest answer's bound
    asked = _answering(provider, monkeypatch, bad)
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status >= 500 and asked == [1], (status, body)
    assert [node for node, _ in made] == [pid], made
    assert await _quarantined(gateway) == [pid]
    # Its offer left the book: the market does not choose it again (the gateway offers no compute of its own).
    assert gateway.app[NODE].market.book.get(pid) is None
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status != 200 and asked == [1], (status, body)


@pytest.mark.parametrize("refusal", ["busy", "failing"])
async def test_an_honest_503_or_500_is_not_struck_and_the_provider_is_chosen_again(
        node_factory, monkeypatch, refusal) -> None:
    gateway, provider, module = await _pair(node_factory, strikes=1)
    made = _strikes(gateway, monkeypatch)

    def refused():
        raise ComputeBusy("too many calls are running here") if refusal == "busy" else \
            RuntimeError("a fault of the provider's own")

    asked = _answering(provider, monkeypatch, refused)
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == {"busy": 503, "failing": 502}[refusal] and asked, (status, body)
    assert made == [] and await _quarantined(gateway) == []
    monkeypatch.undo()  # answering again
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)
    assert status == 200 and body["provider"] == provider.app[IDENTITY].id, body


class _Bad:
    """What a provider's service answers in place of its own: `answer` (returned as the route encodes it), each time
    counted."""

    def __init__(self, answer) -> None:
        self.answer, self.asked = answer, 0

    async def __call__(self, *args, **kwargs):
        self.asked += 1
        return self.answer

    def sync(self, *args, **kwargs):
        self.asked += 1
        return self.answer


class _Unreadable:
    """A receipt as the receipts route encodes it (`encode().hex()`): bytes that are no ledger entry."""

    def encode(self) -> bytes:
        return b"\x00"


async def _struck_once(gateway, made, provider, bad: _Bad) -> None:
    """The gateway struck `provider` for each of its bad answers, once, and (at one strike) quarantined it."""
    pid = provider.app[IDENTITY].id
    await eventually_async(lambda: made and bad.asked == len(made), "the bad answer struck")
    assert {node for node, _ in made} == {pid} and bad.asked >= 1, made
    assert await _quarantined(gateway) == [pid]


class _Forged:
    """The payee's receipt for exactly what it is asked (`countersign`), or for a fetch the one it made last (`of`),
    sent back with a signature that does not hold."""

    def __init__(self, payee=None, of: _Forged | None = None) -> None:
        self.payee, self.of, self.asked, self.last = payee, of, 0, None

    async def __call__(self, sender, auth, amount=None, usage=None, job=None):
        self.asked += 1
        if self.of is not None:
            return self.of.last
        made = make_receipt(self.payee, 1, b"\0" * 32, auth, amount, usage, int(time.time()))
        self.last = _Encoded(made.body + bytes(64))
        return self.last


class _Encoded:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def encode(self) -> bytes:
        return self.data


def _unreadable(provider) -> tuple[_Bad, _Bad]:
    """A payee answering bytes that are no ledger entry, asked and fetched."""
    return _Bad(_Unreadable()), _Bad(_Unreadable())


def _forged(provider) -> tuple[_Forged, _Forged]:
    """A payee answering its receipt for what it is asked with a signature that does not hold, asked and fetched."""
    asked = _Forged(provider.app[IDENTITY])
    return asked, _Forged(of=asked)


@pytest.mark.parametrize(("answers", "why"), [(_unreadable, "no readable receipt"),
                                            (_forged, "signature does not hold")])
async def test_a_receipt_asked_for_or_fetched_that_does_not_check_is_struck_each_time(
        node_factory, monkeypatch, answers, why) -> None:
    gateway, provider, _ = await _pair(node_factory, strikes=2)
    pid, payments = provider.app[IDENTITY].id, gateway.app[NODE].payments
    made = _strikes(gateway, monkeypatch)
    asked, fetched = answers(provider)
    monkeypatch.setattr(provider.app[NODE].payments, "countersign", asked)
    monkeypatch.setattr(provider.app[NODE].payments, "receipt_for", fetched)
    with pytest.raises(PeerMisbehaved, match=why):  # asked (a prepayment): one strike
        await payments.prepay(pid, 1_000)
    assert asked.asked == 1 and [node for node, _ in made] == [pid] and await _quarantined(gateway) == []
    # Its authorization is pending: the retry fetches the receipt the payee says it made, as bad again.
    assert (await payments.retry_all()).get("pending") == 1
    assert fetched.asked == 1 and [node for node, _ in made] == [pid, pid]
    assert await _quarantined(gateway) == [pid]


async def test_a_tabs_close_answered_with_a_receipt_that_does_not_check_is_struck(node_factory, monkeypatch) -> None:
    gateway, provider, module = await _pair(node_factory, strikes=1)
    made = _strikes(gateway, monkeypatch)
    bad = _Bad({"receipt": "00"})  # of a receipt's shape, and no receipt
    monkeypatch.setattr(provider.app[NODE].paid, "close_tab", bad)
    status, body = await invoke(gateway, module, "add", 1, 2, fuel=FUEL)  # its tab closes within a second
    assert status == 200, body
    await _struck_once(gateway, made, provider, bad)


@pytest.mark.parametrize("url", ["http://elsewhere.example/phish", "http://elsewhere.example/fn/x/\r\nLocation: y/"])
async def test_a_placement_answered_without_the_functions_url_is_struck(node_factory, monkeypatch, url) -> None:
    gateway, provider, _ = await _pair(node_factory, strikes=1)
    pid, gid = provider.app[IDENTITY].id, gateway.app[IDENTITY].id
    made = _strikes(gateway, monkeypatch)
    bad = _Bad({"url": url})
    monkeypatch.setattr(provider.app[NODE].placed_functions, "place", bad)
    with pytest.raises(PeerMisbehaved, match="placement"):
        await functions.place(gateway.app[NODE].client, provider.app[NODE].peers.url, pid, gid,
                              {"function": {"name": "hello"}})
    await _struck_once(gateway, made, provider, bad)


async def test_an_answer_of_where_shares_are_of_another_shape_is_struck_and_not_read(node_factory, monkeypatch) -> None:
    gateway, provider, _ = await _pair(node_factory, strikes=1)
    made = _strikes(gateway, monkeypatch)
    bad = _Bad({"shares": [0, 1, 2, 3], "holders": {"not a node": [4, 5]}})
    monkeypatch.setattr(provider.app[NODE].storage, "where", bad)
    assert await gateway.app[NODE].storage.locator.locate(os.urandom(32)) == {}  # nothing of it taken
    await _struck_once(gateway, made, provider, bad)


async def test_terms_answered_as_something_else_are_struck(node_factory, monkeypatch) -> None:
    gateway, provider, _ = await _pair(node_factory, strikes=1)
    made = _strikes(gateway, monkeypatch)
    bad = _Bad({"available": "all of it", "credit": 0, "recognised": True})
    monkeypatch.setattr(provider.app[NODE].trust, "terms_for", bad.sync)
    assert await gateway.app[NODE].provider_terms.terms(provider.app[IDENTITY].id) is None  # nothing assumed
    await _struck_once(gateway, made, provider, bad)


async def test_bad_descriptors_in_an_exchanges_answer_are_struck(node_factory, monkeypatch) -> None:
    gateway, provider, _ = await _pair(node_factory, strikes=1)
    made = _strikes(gateway, monkeypatch)
    bad = _Bad({"self": provider.app[NODE].peers.descriptor().to_json(), "descriptors": [{"id": "forged"}]})
    monkeypatch.setattr(provider.app[NODE].peers, "gossip_answer", bad.sync)
    with pytest.raises(PeerMisbehaved, match="bad descriptors"):
        await gateway.app[NODE].peers.exchange(provider.app[NODE].peers.url, to=provider.app[IDENTITY].id)
    await _struck_once(gateway, made, provider, bad)


@pytest.mark.parametrize("answer", [{"stamp": "not hex"}, {"stamp": 7}, {"retired": False}, {"stamp": "00"}])
async def test_a_fork_answered_with_no_stamp_is_struck_and_forgotten(node_factory, monkeypatch, answer) -> None:
    quiet = {**QUIET, "market": {"allocation_fork_wait": FORK_WAIT}}
    a = await node_factory("a", **quiet)
    b = await joining(node_factory, a, "b", **{**quiet, "peers": {**QUIET["peers"], "quarantine_strikes": 1}})
    await eventually_async(lambda: a.app[NODE].allocation.stamp is not None, "a to seed the ITC id")
    made = _strikes(b, monkeypatch)
    bad = _Bad(answer)  # ("00": the encoding of a stamp with no id, which no fork gives)
    monkeypatch.setattr(a.app[NODE].allocation, "fork", bad.sync)
    await b.app[NODE].peers.add(a.app[NODE].peers.url)
    await b.app[NODE].allocation.ids.ensure()
    await _struck_once(b, made, a, bad)
    # b's own allocation pass may have asked too, its answer still on the way: each such ask is forgotten as it ends
    await eventually_async(lambda: b.app[NODE].allocation.status()["forks_asked"] == [], "every bad ask forgotten")
    assert b.app[NODE].allocation.stamp is None and {node for node, _ in made} == {a.app[IDENTITY].id}


async def test_a_plaintext_answer_proves_nobody_and_is_not_struck(monkeypatch) -> None:
    """A PeerResponse from no node the handshake proved (plaintext, loopback): its bad shape is refused, struck
    against nobody."""
    told: list[tuple[str, str]] = []
    response = PeerResponse(200, CIMultiDictProxy(CIMultiDict()), b'{"shares": "all"}', node=None,
                            misbehaved=lambda node, why: told.append((node, why)))
    with pytest.raises(ValueError):
        read_answer(response.json())
    err = response.shapeless("not of the shape asked")
    assert isinstance(err, PeerMisbehaved) and not err.struck and told == []
