"""Held credit under load: a call's budget is held only while it runs; once metered, only what it used is
held until its settlement is written (a backlog of whole budgets would make 402s)."""

from __future__ import annotations

from tests.support.compute import deploy, invoke_at_once

from xsc.ledger import price_budget
from xsc.node import CLIENT_IDENTITY
from xsc.node.appkeys import NODE

PRICE = 1_000_000  # micro-credits per million fuel: a budget of 250,000 fuel holds 0.25 credits
FUEL = 250_000
# ... plus the default memory limit (64 MiB) for the default timeout (5 s) at the default memory price
BUDGET = price_budget(FUEL, PRICE, 64 * 2**20, 5_000_000, 10)


async def test_a_burst_far_below_the_credit_limit_gets_no_402_and_holds_only_what_is_in_flight(node_factory) -> None:
    # Ten budgets of credit; eight calls in flight at a time; the whole burst costs a few hundred micro-credits.
    node = await node_factory(ledger={"credit_limit": 10 * BUDGET},
                              market={"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE})
    module = await deploy(node, "add")
    ledger, payer = node.app[NODE].ledger, node.app[CLIENT_IDENTITY].public_key
    statuses, prices, samples = await invoke_at_once(node, module, lambda: ledger.held(payer), each=60,
                                                     fuel=FUEL)
    assert statuses.count(402) == 0 and set(statuses) == {200}, sorted(set(statuses))
    metered = sum(prices)
    assert metered < BUDGET  # far below the limit: nothing but the holds could have refused a call
    worst = max(held - flying * BUDGET for held, flying in samples)
    assert worst <= metered, f"held credit exceeded in-flight budgets by {worst} (all metered: {metered})"
    await node.app[NODE].tabs.flush()
    assert ledger.held(payer) == 0
