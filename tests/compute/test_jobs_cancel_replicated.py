"""A replicated job cancelled by its user (compute/replica_cancels.py): every replica stopped on its provider, each
paid once what its own signed record says it used, none judged against the others, the job `cancelled` with nothing
stored; the refusals (a stranger's cancel of a replica, a replica's record signed by another node or over its
budget); a replica's provider silent past the cancel's grace (job_cancels.CANCEL_GRACE); a stop as it cancels; a
replica that answered its result before the cancel came."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.cli import ok, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import (balances, balances_of, compiled, compiled_for, network, paid_since, run_job, settle,
                                settled, verified)
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.compute import job_cancels, provider_stops, sent_jobs
from xsc.errors import PeerRefused, XscError
from xsc.node import IDENTITY, TOKEN
from xsc.node.appkeys import NODE
from xsc.units import format_credits

LONG = {"compute": {"timeout": 600, "fuel": 200_000_000_000}}  # a spinning job runs until cancelled
SPIN = {"deterministic": True, "replicas": 2, "limits": {"timeout": 600, "fuel": 200_000_000_000}}


async def _replicas_running(gateway, providers) -> tuple[dict, list]:
    """The replicated job once each of its replicas runs on its provider: (its record, the providers running one)."""
    async def running():
        jobs = (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]
        job = jobs and await (await gateway.get(f"/v1/compute/jobs/{jobs[0]['id']}")).json()
        busy = [p for p in providers if (await (await p.get("/v1/node/status")).json())["compute"]["running"] >= 1]
        sent = job and [r for r in job.get("replicating", {}).values() if r["step"] == "sent"]
        return job and len(busy) == len(sent) == 2 and (job, busy)

    return await eventually_async(running, "both replicas running on their providers", 60)


async def test_a_replicated_job_cancelled_stops_every_replica_and_pays_each_what_it_used_once(node_factory) -> None:
    gateway, providers = await network(node_factory, 3, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    before = balances_of(gateway, providers)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, **SPIN}))
    job, busy = await _replicas_running(gateway, providers)
    budgets = {r["provider"]: r["budget"] for r in job["replicating"].values()}
    (stranger,) = [p for p in providers if p not in busy]
    for runner in busy:  # another node's cancel of a replica: none of its business, not even its id
        sent = job["replicating"][runner.app[IDENTITY].id]
        with pytest.raises(PeerRefused) as refused:
            await sent_jobs.wire.cancel(stranger.app[NODE].paid.client,
                                        gateway.app[NODE].paid.peers.peer(sent["provider"]).url, sent["provider"],
                                        sent["job"], 30)
        assert refused.value.details.get("peer_status") == 404, refused.value.details
        assert (await (await runner.get("/v1/node/status")).json())["compute"]["running"] >= 1  # it still runs
    response = await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    assert cancelled["outputs"] == [] and "replicating" not in cancelled, cancelled
    replicas = {r["provider"]: r for r in cancelled["replicas"]}
    assert set(replicas) == {p.app[IDENTITY].id for p in busy}, cancelled
    for provider, replica in replicas.items():  # each stopped there, metered and signed by its provider
        assert replica["paid"] and replica["outcome"] == "cancelled", replica
        assert 0 < replica["charge"] <= budgets[provider], (replica, budgets)
    assert cancelled["charge"] == sum(r["charge"] for r in replicas.values()), cancelled
    assert sorted(p["provider"] for p in cancelled["paid_on"]) == sorted(replicas), cancelled
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled") and told["charged"] == cancelled["charge"], told
    with gateway.app[NODE].db.iterator(prefix=keys.JOB_OUTPUTS) as links:
        assert list(links) == []  # no lineage for it
    await settle(gateway)
    # Each once, what it used and compiling the module pushed to it.
    owed = {p: r["charge"] + compiled(job["replicating"][p], "spin") for p, r in replicas.items()}
    paid = paid_since(gateway, providers, before)
    assert paid == {p: owed.get(p, 0) for p in paid}, paid
    assert balances(gateway, busy[0])[0] - before[busy[0].app[IDENTITY].id][0] == -sum(owed.values())
    for runner in busy:
        assert runner.app[NODE].hosted_jobs.status() == {"hosted": 0}
        assert runner.app[NODE].trust.line(gateway.app[IDENTITY].id)["reserved"] == 0
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job",
                                       job["id"], env={"XSC_TOKEN": gateway.app[TOKEN]}))
    for provider, replica in replicas.items():  # each replica's outcome and what it was paid
        assert f"replica  paid  {format_credits(replica['charge'])} credits  {replica['fuel_consumed']:,} fuel  " \
            f"cancelled  {provider}" in shown, shown
    for node in (gateway, *providers):
        await verified(node)


def _signed_by_the_other(liar: str, answers: dict, other: asyncio.Event):
    """The liar's answer carries the other replica's record: signed, but by another node than its provider."""
    async def lie(provider: str, answer: dict) -> dict:
        if provider != liar:
            answers["other"] = answer
            other.set()
            return answer
        await other.wait()
        return {**answer, "provenance": answers["other"]["provenance"]}
    return lie


def _over_budget(liar: str, budget: int):
    """The liar's answer charges more than its replica's budget."""
    async def lie(provider: str, answer: dict) -> dict:
        if provider != liar:
            return answer
        return {**answer, "run": {**answer["run"], "charge": budget + 1}}
    return lie


@pytest.mark.parametrize("lie", ["signed-by-another-node", "over-its-budget"])
async def test_a_cancelled_replica_whose_record_does_not_hold_is_struck_and_not_paid_the_other_is(
        node_factory, monkeypatch, lie) -> None:
    gateway, providers = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    liar, honest = (p.app[IDENTITY].id for p in providers)
    answers: dict = {}
    real_run, lying = sent_jobs.wire.run, []

    async def run(client, url, provider, job, timeout, most):
        answer = await real_run(client, url, provider, job, timeout=timeout, most=most)
        return await lying[0](provider, answer)

    monkeypatch.setattr(sent_jobs.wire, "run", run)
    before = balances_of(gateway, providers)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, **SPIN}))
    job, _ = await _replicas_running(gateway, providers)
    budget = job["replicating"][liar]["budget"]
    lying.append(_signed_by_the_other(liar, answers, asyncio.Event()) if lie == "signed-by-another-node"
                 else _over_budget(liar, budget))
    response = await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")
    cancelled = await response.json()
    assert response.status == 200 and cancelled["state"] == "cancelled", cancelled
    replicas = {r["provider"]: r for r in cancelled["replicas"]}
    assert replicas[honest]["paid"] and replicas[honest]["outcome"] == "cancelled", replicas
    assert not replicas[liar]["paid"] and "outcome" not in replicas[liar], replicas
    said = "is not signed by it" if lie == "signed-by-another-node" else f"not 0 to {budget}"
    assert said in replicas[liar]["error"], replicas[liar]
    assert struck == [liar] and cancelled["charge"] == replicas[honest]["charge"] > 0, (struck, cancelled)
    assert [p["provider"] for p in cancelled["paid_on"]] == [honest], cancelled
    status, told = await running
    assert (status, told["code"]) == (409, "job-cancelled"), told
    await settled(gateway)
    paid = paid_since(gateway, providers, before)  # the honest one with compiling the module pushed to it
    assert paid == {honest: cancelled["charge"] + compiled(job["replicating"][honest], "spin"), liar: 0}, paid
    for node in (gateway, *providers):
        await verified(node)


async def test_a_replica_whose_provider_stays_silent_is_given_up_unpaid_and_the_other_paid(node_factory,
                                                                                          monkeypatch) -> None:
    """One replica's provider answers neither the cancel nor its run: past the cancel's grace its tab is dropped
    unpaid, as an unanswered run's, and the job ends `cancelled`, the other replica paid what it used."""
    from xsc.errors import PeerUnreachable

    monkeypatch.setattr(job_cancels, "CANCEL_GRACE", 1.0)
    gateway, providers = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    silent, other = (p.app[IDENTITY].id for p in providers)
    real_run, real_cancel = sent_jobs.wire.run, provider_stops.wire.cancel

    async def run(client, url, provider, job, timeout, most):
        if provider != silent:
            return await real_run(client, url, provider, job, timeout=timeout, most=most)
        running = asyncio.ensure_future(real_run(client, url, provider, job, timeout=timeout, most=most))
        try:
            await asyncio.Event().wait()  # it runs there, but its answer never comes
        finally:
            running.cancel()

    async def cancel(client, url, provider, *args, **kwargs):
        if provider == silent:
            raise PeerUnreachable(f"peer {url} is unreachable: connection refused")
        return await real_cancel(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", run)
    monkeypatch.setattr(provider_stops.wire, "cancel", cancel)
    before = balances_of(gateway, providers)
    running = asyncio.ensure_future(run_job(gateway, {"module": module, **SPIN}))
    job, _ = await _replicas_running(gateway, providers)
    cancelled = await (await gateway.post(f"/v1/compute/jobs/{job['id']}/cancel")).json()
    assert cancelled["state"] == "cancelled", cancelled
    replicas = {r["provider"]: r for r in cancelled["replicas"]}
    assert replicas[silent]["lost"] == "did not answer its cancel" and not replicas[silent]["paid"], replicas
    assert replicas[other]["paid"] and cancelled["charge"] == replicas[other]["charge"] > 0, replicas
    assert (await running)[1]["code"] == "job-cancelled"
    await settled(gateway)
    paid = paid_since(gateway, providers, before)  # the other with compiling the module pushed to it
    assert paid == {other: cancelled["charge"] + compiled(job["replicating"][other], "spin"), silent: 0}, paid
    for node in (gateway, *providers):
        await verified(node)
    providers[0].app[NODE].hosted_jobs.cut_short()  # (its run goes on there, unasked: stopped rather than waited for)


async def test_a_replicated_job_whose_node_stops_as_it_cancels_is_settled_cancelled_at_the_start(
        node_factory, monkeypatch) -> None:
    """The gateway stops while its replicas' answers to the cancel are on their way: the start asks each provider
    again for the run it stopped, and the job, its cancel written down, ends `cancelled` with each paid what it
    used once (never judged, so never refused for disagreeing)."""
    from tests.support.jobs import QUIET
    from tests.support.nodes import close_node

    gateway, providers = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "spin", wasi=True)
    real_run, answered = sent_jobs.wire.run, []

    async def held(client, url, provider, job, timeout, most):  # the answers come once the gateway has stopped
        await real_run(client, url, provider, job, timeout=timeout, most=most)
        answered.append(provider)
        await asyncio.Event().wait()

    before = balances_of(gateway, providers)
    jobs = gateway.app[NODE].jobs
    with monkeypatch.context() as patched:
        patched.setattr(sent_jobs.wire, "run", held)
        running = asyncio.ensure_future(jobs.run({"module": module, **SPIN}, None))
        job, _ = await _replicas_running(gateway, providers)
        cancel = asyncio.ensure_future(jobs.cancel(job["id"]))
        await eventually_async(lambda: len(answered) == 2, "both replicas stopped, their answers on their way")
        assert "cancel_asked" in jobs.records.load(job["id"]), jobs.records.load(job["id"])
        await _stopped(running, cancel)
    await close_node(gateway)
    gateway = await node_factory("gateway", **QUIET, **LONG, market={"offer_compute": False})
    await _each_paid_its_own(gateway, providers, job["id"], before)


async def test_a_replica_that_answered_before_the_cancel_is_paid_as_it_answered_and_nothing_of_it_is_stored(
        node_factory, monkeypatch) -> None:
    """One replica has answered its result (its outputs fetched and checked) when the cancel comes, the other's run
    is held before its program starts: the first is paid what it answered, the second stopped and paid what it used,
    and nothing of either is stored."""
    from xsc.compute import hosted_jobs

    gateway, (quick, held) = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "slow", wasi=True)  # about a second of a core, then "done"
    entered, release, reached = asyncio.Event(), asyncio.Event(), asyncio.Event()
    program, real_cancel = hosted_jobs.run_program, held.app[NODE].hosted_jobs.cancel

    async def held_back(compute, *args, **kwargs):
        if compute is held.app[NODE].compute:
            entered.set()
            await release.wait()
        return await program(compute, *args, **kwargs)

    async def cancel_reached(*args, **kwargs):
        reached.set()
        return await real_cancel(*args, **kwargs)

    monkeypatch.setattr(hosted_jobs, "run_program", held_back)
    monkeypatch.setattr(held.app[NODE].hosted_jobs, "cancel", cancel_reached)
    files_before = (await (await gateway.get("/v1/store/files")).json())["files"]
    before = balances_of(gateway, (quick, held))
    running = asyncio.ensure_future(run_job(gateway, {"module": module, **SPIN}))
    jobs = gateway.app[NODE].jobs

    def answered():
        for found in jobs.records.all_jobs() if entered.is_set() else []:
            if found.get("replicating", {}).get(quick.app[IDENTITY].id, {}).get("step") == "checked":
                return found
        return None

    job = await eventually_async(answered, "one replica answered, the other held")
    cancel = asyncio.ensure_future(gateway.post(f"/v1/compute/jobs/{job['id']}/cancel"))
    await reached.wait()  # (the held run begins once its cancel is there: it stops at its first tick)
    release.set()
    cancelled = await (await cancel).json()
    assert cancelled["state"] == "cancelled" and cancelled["outputs"] == [], cancelled
    replicas = {r["provider"]: r for r in cancelled["replicas"]}
    assert replicas[quick.app[IDENTITY].id]["outcome"] == "ok", replicas  # its result, paid as it answered
    assert replicas[held.app[IDENTITY].id]["outcome"] == "cancelled", replicas
    assert all(r["paid"] and r["charge"] > 0 for r in replicas.values()), replicas
    assert (await running)[1]["code"] == "job-cancelled"
    assert (await (await gateway.get("/v1/store/files")).json())["files"] == files_before  # nothing of it stored
    with gateway.app[NODE].db.iterator(prefix=keys.JOB_OUTPUTS) as links:
        assert list(links) == []
    await settle(gateway)
    paid = paid_since(gateway, (quick, held), before)  # each with compiling the module pushed to it
    nodes = {p.app[IDENTITY].id: p for p in (quick, held)}
    assert paid == {p: r["charge"] + await compiled_for(nodes[p], r["provenance"], "slow")
                    for p, r in replicas.items()}, paid
    for node in (gateway, quick, held):
        await verified(node)


async def test_a_replicated_job_whose_cancel_no_provider_heard_before_a_stop_is_cancelled_by_the_start(
        node_factory, monkeypatch) -> None:
    """The gateway writes the cancel's intent, then stops before either provider heard the cancel: both replicas still
    run.  The start sends the cancel to each, each stops its run, and each is paid what its own record says, once."""
    from tests.support.jobs import QUIET
    from tests.support.nodes import close_node

    gateway, providers = await network(node_factory, 2, **LONG)
    module = await deploy(gateway, "spin", wasi=True)

    async def unsent(paid, provider, hosted):  # the stop comes before the cancel is sent
        await asyncio.Event().wait()

    before = balances_of(gateway, providers)
    jobs = gateway.app[NODE].jobs
    with monkeypatch.context() as patched:
        patched.setattr(provider_stops, "ask_to_stop", unsent)
        patched.setattr(job_cancels, "CANCEL_GRACE", 3600.0)
        running = asyncio.ensure_future(jobs.run({"module": module, **SPIN}, None))
        job, _ = await _replicas_running(gateway, providers)
        cancel = asyncio.ensure_future(jobs.cancel(job["id"]))
        await eventually_async(lambda: "cancel_asked" in jobs.records.load(job["id"]), "the cancel's intent written")
        await _stopped(running, cancel)
        await close_node(gateway)  # (its cancels owed are sent again until then: none is heard)
    for p in providers:  # neither heard the cancel: both replicas still run
        assert (await (await p.get("/v1/node/status")).json())["compute"]["running"] == 1
    gateway = await node_factory("gateway", **QUIET, **LONG, market={"offer_compute": False})
    await _each_paid_its_own(gateway, providers, job["id"], before)
    for p in providers:  # stopped by the cancel the start sent
        assert (await (await p.get("/v1/node/status")).json())["compute"]["running"] == 0


async def _stopped(*requests) -> None:
    """What the gateway's stop does to the requests still in flight."""
    for request in requests:
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, XscError):
            await request


async def _each_paid_its_own(gateway, providers, jid: str, before: dict) -> dict:
    """The replicated job `jid` once the gateway's start settled it: `cancelled`, nothing stored, each replica stopped
    and paid what it used, once; every ledger verified."""
    from tests.support.jobs import owed_paid

    async def ended():
        found = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
        return found["state"] not in ("running", "storing") and found

    cancelled = await eventually_async(ended, "the job settled at the start", 60)
    assert cancelled["state"] == "cancelled" and cancelled["outputs"] == [], cancelled
    replicas = {r["provider"]: r for r in cancelled["replicas"]}
    assert len(replicas) == 2, cancelled
    assert all(r["paid"] and r["outcome"] == "cancelled" and r["charge"] > 0 for r in replicas.values()), replicas
    assert cancelled["charge"] == sum(r["charge"] for r in replicas.values()), cancelled
    await owed_paid(gateway, cancelled)
    paid = paid_since(gateway, providers, before)
    nodes = {p.app[IDENTITY].id: p for p in providers}  # each with compiling the module pushed to it
    assert paid == {p: r["charge"] + await compiled_for(nodes[p], r["provenance"], "spin")
                    for p, r in replicas.items()}, paid
    for node in (gateway, *providers):
        await verified(node)
    return cancelled
