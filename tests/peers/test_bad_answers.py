"""Strangers who answer badly pay for it: a provider whose answer to a peer request proves it misbehaved (not of the
shape asked for, over the bound the gateway set) is struck by the gateway, and quarantined past
`peers.quarantine_strikes`: the market no longer chooses it.  An honest 503 (busy) or 500 (a fault of its own) is
not struck.  Two real nodes in this process over TLS, the provider's route made to answer so."""

from __future__ import annotations

import pytest

from tests.support.compute import deploy, invoke, peer_with_provider
from xsc.compute.service import InvokeCall
from xsc.errors import ComputeBusy
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

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
