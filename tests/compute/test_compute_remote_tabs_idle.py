"""The gateway's tabs' loop (compute/remote_tabs.py): asleep while nothing is owed, and a tab opened then is still
closed and paid by it, without a close asked (two nodes, real HTTP between them)."""

from __future__ import annotations

from tests.support.compute import deploy, invoke, peer_with_provider
from tests.support.peers import QUIET
from tests.support.waiting import eventually_async

from xsc.compute.provider_tabs import JOB, TAB_TTL
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

PRICE = 1_000_000  # micro-credits per million fuel
MARKET_TERMS = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}


async def test_a_tab_opened_while_the_loop_sleeps_is_closed_and_paid_by_it(node_factory) -> None:
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False})
    await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "add")
    tabs = gateway.app[NODE].paid.gateway_tabs
    ledger, account = provider.app[NODE].ledger, provider.app[IDENTITY].public_key
    for round_ in (1, 2):  # the second once the loop, its first tab paid, found nothing owed and slept again
        await eventually_async(lambda: tabs.asleep, f"round {round_}: the tabs' loop asleep, nothing owed")
        before = ledger.store.state(account).balance
        status, body = await invoke(gateway, module, "add", 1, 2, fuel=250_000)
        assert status == 200 and body["provider"] == provider.app[NODE].peers.identity.id, body
        await eventually_async(lambda: ledger.store.state(account).balance > before,
                               f"round {round_}: the tab closed and paid by the loop")


async def test_a_tab_unpaid_but_not_open_leaves_the_loop_asleep_and_is_forgotten_as_the_retry_drops_it(
        node_factory) -> None:
    """A tab this node sends no call on (a placed function's: unpaid for as long as the function stays placed) gives
    the loop nothing to do: it sleeps through it.  The payment retry, ending it unpaid (its provider ran nothing under
    it: nothing owed), has the tab forgotten and its tally deleted as it ends it, with no loop looking for it."""
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False})
    await peer_with_provider(gateway, provider)
    tabs = gateway.app[NODE].paid.gateway_tabs
    auth = await tabs.payments.authorize(provider.app[NODE].peers.identity.id, 1_000_000, JOB, ttl=TAB_TTL, hold=0)
    await tabs.track(auth, 10_000, PRICE)
    assert tabs.tallies.on_disk() == 1
    await eventually_async(lambda: tabs.asleep, "the tabs' loop asleep: no tab open, one unpaid")
    await tabs.payments.retry_all()  # (or its own pass, woken meanwhile: either ends it)
    await eventually_async(lambda: not gateway.app[NODE].ledger.is_pending(auth.id), "the retry to drop the tab")
    assert tabs.tallies.on_disk() == 0 and tabs.asleep
