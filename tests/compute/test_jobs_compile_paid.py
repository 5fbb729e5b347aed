"""A job's module pushed to the provider it was placed on is compiled at a price paid with the job's own tab
(compute/sent_jobs.py, remote_tabs.py `reserve_alone`, pushes.py, provider_tabs.py), on real nodes: a stranger's
gateway that paid its job (one whose outputs are none: storing them is paid apart) owes its provider nothing for the
compile, a job given up before it ran still pays it (the provider did that work: after a kill -9 of its gateway
too, by the next start), and a provider that claims a
compile on a job's tab it was not allowed (above its price, twice, or on a tab no push named) is not paid that tab
and is struck."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.compile_paid import GATEWAY, compiled, line, pair, refused_on_the_last
from tests.support.jobs import balances, reading, run_job, settled
from tests.support.nodes import close_node
from xsc.compute import sent_jobs
from xsc.errors import PeerRefused
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

COMPILED = compiled("wc")


async def _job(a, b, module: str) -> dict:
    status, job = await run_job(a, {"module": module, "stdin": "-"}, b"a b\n")
    assert status == 201 and job["state"] == "done" and job["provider"] == b.app[IDENTITY].id, job
    return job


async def test_a_jobs_pushed_modules_compile_is_paid_with_the_jobs_tab(node_factory) -> None:
    a, b, module = await pair(node_factory, module="wc", wasi=True)
    before = balances(a, b)
    job = await _job(a, b, module)
    await settled(a)
    # What `b` did for `a` (the job's run, and compiling the module `a` pushed for it) is all paid.
    assert line(a, b) == (job["charge"] + COMPILED,) * 2
    assert before[0] - balances(a, b)[0] == balances(a, b)[1] - before[1] == job["charge"] + COMPILED
    history = await (await a.get("/v1/ledger/accounts/client/history")).json()
    [payment] = [e for e in history["entries"] if e["kind"] == "payment"]
    assert payment["amount"] == job["charge"] + COMPILED and payment["usage"]["compiles"] == COMPILED, payment
    shown = (await (await a.get(f"/v1/compute/jobs/{job['id']}")).json())["payments"]
    assert [p["amount"] for p in shown] == [job["charge"] + COMPILED], shown
    # The next job finds the module there: its tab pays its run alone.
    again = await _job(a, b, module)
    await settled(a)
    assert line(a, b) == (job["charge"] + again["charge"] + COMPILED,) * 2
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0


async def test_a_job_given_up_before_it_runs_pays_the_compile_its_provider_did(node_factory, monkeypatch) -> None:
    a, b, module = await pair(node_factory, module="wc", wasi=True)

    async def refused(*args, **kwargs):  # its data is refused: the job never runs there
        raise PeerRefused("peer refused: 409 conflict", peer_status=409, peer_code="conflict")

    monkeypatch.setattr(sent_jobs.wire, "send", refused)
    before = balances(a, b)
    status, problem = await run_job(a, {"module": module, "stdin": "-"}, b"a b\n")
    assert status >= 400, problem
    await settled(a)
    # Nothing ran, so nothing of a run is paid; the compile was done, its price held before the push: paid.
    assert before[0] - balances(a, b)[0] == COMPILED and line(a, b) == (COMPILED, COMPILED)
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0
    assert b.app[NODE].paid.provider_tabs.kept == 0 and b.app[NODE].hosted_jobs.status() == {"hosted": 0}


def _above(amount: int, usage: dict) -> tuple[int, dict]:
    return (amount + 1, {**usage, "compiles": usage["compiles"] + 1}) if "compiles" in usage else (amount, usage)


def _twice(amount: int, usage: dict) -> tuple[int, dict]:
    return ((amount + usage["compiles"], {**usage, "compiles": 2 * usage["compiles"]}) if "compiles" in usage
            else (amount, usage))


def _unnamed(amount: int, usage: dict) -> tuple[int, dict]:
    return amount + COMPILED, {**usage, "compiles": COMPILED}


@pytest.mark.parametrize("change, jobs", [(_above, 1), (_twice, 1), (_unnamed, 2)],
                         ids=["above-its-price", "twice", "on-a-tab-no-push-named"])
async def test_a_compile_a_job_tab_did_not_allow_is_not_paid_and_its_provider_struck(node_factory, monkeypatch,
                                                                                      change, jobs: int) -> None:
    """`b` lies in the receipt of the last of `jobs` jobs (the first pushed the module): that tab is not paid."""
    a, b, module = await pair(node_factory, module="wc", wasi=True)

    async def job() -> int:
        return (await _job(a, b, module))["charge"]

    await refused_on_the_last(a, b, monkeypatch, change, job, jobs, COMPILED)


async def test_a_job_whose_gateway_was_killed_before_it_ran_pays_its_compile_after_the_restart(node_factory,
                                                                                              monkeypatch) -> None:
    """The gateway killed as its job's data is sent (its module pushed and compiled on the job's tab, its run never
    asked for): the start finds no answer for it and pays nothing of a run, and pays the compile its provider did, as
    a job given up before it ran pays it."""
    a, b, module = await pair(node_factory, module="wc", wasi=True)
    sending = asyncio.Event()

    async def stuck(*args, **kwargs):  # the gateway dies as the job's data is sent
        sending.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(sent_jobs.wire, "send", stuck)
    before = balances(a, b)
    job = asyncio.ensure_future(a.app[NODE].jobs.run({"module": module, "stdin": "-"}, reading(b"a b\n")))
    await asyncio.wait_for(sending.wait(), 30)
    # What a kill -9 there leaves on the gateway's disk: the job's record (its provider took it), its tab pending with
    # its tally (the compile allowed, no run asked for).  Its stop settles nothing more of the tab.
    monkeypatch.setattr(a.app[NODE].paid.gateway_tabs, "answered", lambda *args: None)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await close_node(a)
    monkeypatch.undo()
    a = await node_factory("a", **GATEWAY)
    await settled(a)
    assert before[0] - balances(a, b)[0] == COMPILED and line(a, b) == (COMPILED, COMPILED)
    assert a.app[NODE].paid.gateway_tabs.refused_receipts == 0
