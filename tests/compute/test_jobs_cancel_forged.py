"""A job on one provider, cancelled while it runs, whose provider answers the cancel with a record that does not hold
(`cancelled`, but over the job's budget, or signed by no one): the job ends `cancelled`, its line and record saying
the provider's record was refused and the provider struck, nothing paid; not "its provider did not answer"."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.cli import error_line, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import balances, network, running_on, settle, verified
from tests.support.waiting import eventually_async
from xsc.compute import sent_jobs
from xsc.node import IDENTITY, TOKEN
from xsc.node.appkeys import NODE

LONG = {"compute": {"timeout": 600, "fuel": 200_000_000_000}}  # a spinning job runs until cancelled
SPIN_LIMITS = {"timeout": 600, "fuel": 200_000_000_000}


def _over_budget(answer: dict) -> dict:
    """An answer charging more than the job's budget."""
    return {**answer, "run": {**answer["run"], "charge": 10**15}}


def _signed_by_no_one(answer: dict) -> dict:
    """A record its provider's signature does not cover: more fuel than it signed."""
    signed = answer["provenance"]
    return {**answer, "provenance": {**signed, "record": {**signed["record"],
                                                          "fuel_consumed": signed["record"]["fuel_consumed"] + 1}}}


@pytest.mark.parametrize("lie, said", [(_over_budget, "answered a job charging 1000000000000000"),
                                       (_signed_by_no_one, "is not signed by it")])
async def test_a_cancelled_job_whose_providers_record_does_not_hold_is_refused_struck_and_unpaid(
        node_factory, monkeypatch, lie, said) -> None:
    gateway, (provider,) = await network(node_factory, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    real_run = sent_jobs.wire.run

    async def lying(client, url, provider_id, job, timeout, most):
        return lie(await real_run(client, url, provider_id, job, timeout=timeout, most=most))

    monkeypatch.setattr(sent_jobs.wire, "run", lying)
    before = balances(gateway, provider)
    running = asyncio.ensure_future(asyncio.to_thread(
        xsc_in_process, "--node", str(gateway.make_url("")), "compute", "run", module, "--no-stdin", "--timeout",
        "600", "--fuel", str(SPIN_LIMITS["fuel"]), env={"XSC_TOKEN": gateway.app[TOKEN]}))
    job = await running_on(gateway, provider)
    response = await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"].startswith("its user cancelled it while it ran, and its provider's record was refused, "
                                         f"its provider struck (provider {provider.app[IDENTITY].id}"), cancelled
    assert said in cancelled["error"] and cancelled["error"].endswith("): nothing is charged"), cancelled
    assert "did not answer" not in cancelled["error"] and "paid_on" not in cancelled, cancelled
    assert struck == [provider.app[IDENTITY].id]
    line = error_line(await running)
    assert "was cancelled while it ran, and its provider's record was refused, its provider struck" in line, line
    assert said in line, line
    await settle(gateway)
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "its tab dropped")
    assert balances(gateway, provider) == before  # nothing of the refused record is paid
    for node in (gateway, provider):
        await verified(node)
