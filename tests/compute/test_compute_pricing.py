"""Price what is used: fuel plus peak memory pages times time, one formula (ledger/core/pricing.py),
shown in the invoke's answer and in its provenance record; the hold before a call covers its worst case."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.support.compute import deploy, invoke

from xsc.ledger import price_budget, price_compute
from xsc.node.appkeys import NODE

PRICE = 1_000  # micro-credits per million fuel
MEMORY_PRICE = 1_000  # micro-credits per page-second: high, so a few hundred microseconds of memory show
MARKET = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}


def _repriced(record: dict) -> int:
    """The price of a run worked out again from its provenance record alone."""
    billed = min(record["wall_time_us"], record["timeout_us"])
    return price_compute(record["fuel_consumed"], record["fuel_price"], record["memory_pages"], billed,
                         record["memory_price"])


async def test_a_call_that_grows_its_memory_is_charged_more_than_one_that_does_not_for_the_same_fuel(
        node_factory) -> None:
    node = await node_factory(market=MARKET, compute={"memory_price": MEMORY_PRICE})
    module = await deploy(node, "grow_work")
    # wasmtime charges memory.grow one unit of fuel per page and a loop turn 8: 64 more turns make up for 512
    # pages, so both calls use the same fuel.
    status, small = await invoke(node, module, "work", 0, 20_064, fuel=1_000_000)
    assert status == 200, small
    status, big = await invoke(node, module, "work", 512, 20_000, fuel=1_000_000)
    assert status == 200, big
    assert [r["value"] for r in small["results"]] == [0] and [r["value"] for r in big["results"]] == [512]
    assert small["fuel_consumed"] == big["fuel_consumed"] > 0
    assert (small["memory_pages"], big["memory_pages"]) == (0, 512)
    assert small["cost"]["memory_charge"] == 0 and big["cost"]["memory_charge"] > 0
    assert big["charge"] > small["charge"] == price_compute(small["fuel_consumed"], PRICE)
    for answer in (small, big):
        record = (await (await node.get(f"/v1/compute/provenance/{answer['provenance']}")).json())["record"]
        assert record["charge"] == answer["charge"] == _repriced(record)
        assert (record["memory_pages"], record["memory_price"], record["fuel_price"]) == \
            (answer["memory_pages"], MEMORY_PRICE, PRICE)
        cost = answer["cost"]
        assert cost["fuel_charge"] + cost["memory_charge"] - 1 <= answer["charge"] \
            <= cost["fuel_charge"] + cost["memory_charge"]


async def test_a_memory_the_module_does_not_export_is_priced_at_the_memory_limit(node_factory) -> None:
    node = await node_factory(market=MARKET, compute={"memory_price": MEMORY_PRICE})
    module = await deploy(node, "hidden_memory")
    status, body = await invoke(node, module, "answer", fuel=10_000, memory="2MiB")
    assert status == 200, body
    assert body["memory_pages"] == 32  # 2 MiB: what it may have used, since what it did use cannot be read


async def test_a_trapped_call_that_grew_is_charged_for_its_memory_too(node_factory) -> None:
    node = await node_factory(market=MARKET, compute={"memory_price": MEMORY_PRICE})
    module = await deploy(node, "memory_hog")
    status, body = await invoke(node, module, "hog", memory="1MiB", fuel=1_000_000)
    assert status == 422 and body["kind"] == "memory-limit", body
    assert body["memory_pages"] == 16 and body["cost"]["memory_charge"] > 0
    assert "16 pages of memory" in body["detail"], body


async def test_the_hold_covers_the_worst_case_and_the_price_never_exceeds_it(node_factory) -> None:
    node = await node_factory(market=MARKET, compute={"memory_price": MEMORY_PRICE})
    compute = node.app[NODE].compute
    module = await deploy(node, "grow_work")
    from xsc.compute.service import InvokeCall

    # (a wall-clock limit a busy machine cannot reach before the call's fuel is used)
    call = InvokeCall(module, "work", [16, 1000], 1_000_000, "1MiB", 5.0)
    assert compute.budget(call, PRICE) == price_budget(1_000_000, PRICE, 2**20, 5_000_000, MEMORY_PRICE) \
        == price_compute(1_000_000, PRICE) + 16 * 5_000_000 * MEMORY_PRICE // 1_000_000
    status, body = await invoke(node, module, "work", 16, 1000, fuel=1_000_000, memory="1MiB", timeout=5.0)
    assert status == 200 and body["charge"] <= compute.budget(call, PRICE)



async def test_every_call_is_held_the_price_of_its_own_limits(node_factory) -> None:
    """Budgets are kept per (limits, rate, memory price): each call still gets the price of its own limits at its
    rate, and a rate that is not a whole number is refused however often the same number was asked for."""
    import pytest

    from xsc.compute.service import InvokeCall
    from xsc.errors import InvalidArgument

    node = await node_factory(market=MARKET, compute={"memory_price": MEMORY_PRICE})
    compute = node.app[NODE].compute
    for _ in range(2):  # the second time from what was kept
        for fuel, memory, timeout in ((1_000_000, "1MiB", 0.5), (2_000_000, "1MiB", 0.5), (None, "2MiB", None),
                                      (None, None, None)):
            call = InvokeCall("0" * 64, "f", [], fuel, memory, timeout)
            limits = compute.limits(call)
            for rate in (0, 1, 7, PRICE):
                assert compute.budget(call, rate) == price_budget(limits.fuel, rate, limits.memory,
                                                                  round(limits.timeout * 1e6), MEMORY_PRICE)
    with pytest.raises(InvalidArgument):
        compute.budget(InvokeCall("0" * 64, "f"), True)  # True == 1, but no rate

@given(st.integers(0, 10**12), st.integers(0, 10**6), st.integers(0, 65536), st.integers(0, 86_400_000_000),
       st.integers(0, 10**6))
def test_the_price_is_the_exact_sum_rounded_up_once(fuel, rate, pages, micros, memory_price) -> None:
    price = price_compute(fuel, rate, pages, micros, memory_price)
    exact = fuel * rate + pages * micros * memory_price
    assert price * 1_000_000 >= exact > (price - 1) * 1_000_000
    assert price <= price_compute(fuel, rate) + price_compute(0, 0, pages, micros, memory_price)
    assert price <= price_budget(fuel, rate, pages * 65536, micros, memory_price)
