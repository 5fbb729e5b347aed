"""Two nodes strangers to each other, a gateway and the provider its work runs on, for the tests of a pushed module's
compile paid with the tab of the work that asked for it (tests/compute/test_compute_compile_paid.py, calls;
tests/compute/test_jobs_compile_paid.py, jobs; tests/compute/test_functions_compile_paid.py, web functions placed on
the market): the provider extends the gateway a credit line only once its user recognises it, and can be made to lie
in the receipts it countersigns."""

from __future__ import annotations

from tests.support.compute import deploy, peer_with_provider, wasm
from tests.support.nodes import free_port
from xsc.compute.provider_tabs import compile_price
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
PRICE = 40  # per million fuel: the provider's only ask and the gateway's bid
NO_MEMORY_PRICE = {"compute": {"memory_price": 0}}  # a call's budget is then its fuel's price alone
GATEWAY = {**QUIET, "market": {"offer_compute": False, "compute_bid": PRICE}, **NO_MEMORY_PRICE}


def compiled(name: str) -> int:
    """What the provider charges for compiling the fixture module `name` pushed to it at PRICE."""
    return compile_price(len(wasm(name)), PRICE)


async def pair(node_factory, name: str = "a", module: str = "add", wasi: bool = False, web: bool = False,
               storage: bool = True, **gateway):
    """A stranger's gateway `a` (it offers no compute: its work runs on `b`) and the provider `b`, which gives no
    credit to strangers and a credit line to `a` once its user recognises it; `module` deployed on `a` alone.
    `web`: `b` has a web listener (it may serve `a`'s functions on the market); not `storage`: `b` holds none of the
    files `a` stores; `gateway`: more sections of `a`'s configuration."""
    a = await node_factory(name, **GATEWAY, **gateway)
    b = await provider(node_factory, "b", a, web=web, storage=storage)
    return a, b, await deploy(a, module, wasi=wasi)


async def provider(node_factory, name: str, gateway, web: bool = False, storage: bool = True):
    """A provider asking PRICE, peered with `gateway`, that gives no credit to strangers and a credit line to
    `gateway` once its user recognises it; `web`: with a web listener; not `storage`: it holds none of the files
    `gateway` stores (their leases then pay it nothing)."""
    listener = {"node": {"web_listen": f"127.0.0.1:{free_port()}", "web_rate_limit": 1000}} if web else {}
    b = await node_factory(name, **QUIET, ledger={"stranger_credit": 0}, **NO_MEMORY_PRICE,
                           market={"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "offer_storage": storage},
                           **listener)
    await peer_with_provider(gateway, b)
    response = await b.post("/v1/market/recognize", json={"peer": gateway.app[IDENTITY].id, "weight": "1",
                                                          "credit": 10**9})
    assert response.status == 200, await response.text()
    return b


def line(a, b) -> tuple[int, int]:
    """What `b`'s trust line for `a` counts used and paid."""
    held = b.app[NODE].trust.line(a.app[IDENTITY].id)
    return held["used"], held["paid"]


def countersigning(b, monkeypatch, change) -> None:
    """`b` countersigns each tab's receipt as `change(amount, usage)` makes it (a provider that lies)."""
    ledger = b.app[NODE].ledger
    honest = ledger.countersign

    async def lying(payee, authorization, amount, usage, **kwargs):
        return await honest(payee, authorization, *change(amount, dict(usage)), **kwargs)

    monkeypatch.setattr(ledger, "countersign", lying)


async def refused_on_the_last(a, b, monkeypatch, change, work, times: int, compile: int) -> None:
    """`work()` (a call or a job of `a`'s on `b`: its charge) done `times` times, each tab settled, `b` countersigning
    the last one's receipt as `change(amount, usage)` makes it: `a` pays the tabs before the last (the first of them
    with the `compile` of the module pushed for it) and never the one lied about; `b` is struck."""
    from tests.support.jobs import balances, settled

    struck = strikes(a, monkeypatch)
    before, charges = balances(a, b)[0], []
    for n in range(times):
        if n == times - 1:
            countersigning(b, monkeypatch, change)
        charges.append(await work())
        await settled(a)
    assert before - balances(a, b)[0] == sum(charges[:-1]) + (compile if times > 1 else 0)
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 1 and struck == [b.app[IDENTITY].id]


def strikes(a, monkeypatch) -> list[str]:
    """The nodes `a` strikes from now on, in order (struck for nothing else)."""
    struck: list[str] = []
    monkeypatch.setattr(a.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    return struck
