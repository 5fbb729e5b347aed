"""A remote job's payment that fails once the job is done (its provider unreachable as its tab is closed, or a fault
of this node's in its payment step) is made by the running node's payment retry (ledger/settlement.py, its tries
scheduled by ledger/retry_schedule.py), each tab paid once: the job is answered done, `xsc compute job` shows the
payment owed and its next try, and once the provider is back it is paid, without a restart of the user's node.
The payment retry's interval is an hour here: only the tries a failure schedules can pay it while the test waits."""

from __future__ import annotations

import asyncio
import errno

from tests.support.cli import ok, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import QUIET, balances, compiled, compiled_for, network, restarted, run_job, verified
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.node import CLIENT_IDENTITY, IDENTITY, TOKEN
from xsc.node.appkeys import NODE
from xsc.units import format_credits

HOURLY = {"ledger": {"settle_retry_interval": 3600}}


def _port(node) -> int:
    return int(node.app[NODE].config.node.listen.rsplit(":", 1)[1])


def _stopping_once_done(gateway, providers: list) -> list[int]:
    """The providers stopped just after the gateway writes its next remote job done, before it pays them: their
    ports (to start them again on)."""
    answers, ports = gateway.app[NODE].jobs.answers, [_port(p) for p in providers]
    real = answers.store_answered

    async def then_the_providers_stop(job, run):
        done = await real(job, run)
        answers.store_answered = real
        for provider in providers:
            await close_node(provider)
        return done

    answers.store_answered = then_the_providers_stop
    return ports


async def _shown(gateway, jid: str) -> dict:
    return await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()


def _pending(gateway, job: dict) -> set[str]:
    owed = {pay["authorization"] for pay in job["paid_on"]}
    return owed & {a.id.hex() for a in gateway.app[NODE].ledger.pending()}


def _receipts(provider, job: dict) -> list[int]:
    """The amounts of the receipts `provider` countersigned for the job's tabs (its chain: one per tab paid)."""
    owed = {pay["authorization"] for pay in job["paid_on"]}
    node = provider.app[NODE]
    return [e.amount for e in node.ledger.store.history(node.identity.public_key, 100)
            if e.authorization.id.hex() in owed]


async def test_a_jobs_payment_its_provider_was_down_for_is_made_once_it_is_back_without_a_restart(
        node_factory) -> None:
    gateway, (provider,) = await network(node_factory, **HOURLY)
    module = await deploy(gateway, "outputs", wasi=True)
    before = balances(gateway, provider)
    (port,) = _stopping_once_done(gateway, [provider])
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    assert status == 201 and job["state"] == "done" and job["charge"] > 0, job  # what the job is: done

    async def tried() -> dict | None:
        (payment,) = (await _shown(gateway, job["id"]))["payments"]
        return payment if payment.get("tries", 0) >= 2 else None

    payment = await eventually_async(tried, "the payment tried again while its provider is down", 30)
    assert payment["owed"] and payment["entry"] is None and payment["amount"] == job["charge"], payment
    assert "unreachable" in payment["error"] and payment["next_try"] > 0, payment
    shown = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job",
                                       job["id"], env={"XSC_TOKEN": gateway.app[TOKEN], "COLUMNS": "200"}))
    (line,) = [line for line in shown.splitlines() if line.strip().startswith("payment")]
    assert line.split()[:4] == ["payment", format_credits(job["charge"]), "credits", "owed:"], shown
    assert "failed, the last:" in line and "unreachable" in line and "; the next in " in line, line

    provider = await node_factory("provider0", **QUIET, **HOURLY, node={"listen": f"127.0.0.1:{port}"})
    await eventually_async(lambda: not _pending(gateway, job), "the job's tab paid once its provider is back", 60)
    owed = job["charge"] + compiled(job, "outputs")  # its charge, and compiling the module pushed to it
    after = balances(gateway, provider)
    assert (after[0] - before[0], after[1] - before[1]) == (-owed, owed)  # paid once
    assert _receipts(provider, job) == [owed]
    assert gateway.app[NODE].paid.gateway_tabs.refused_receipts == 0
    (payment,) = (await _shown(gateway, job["id"]))["payments"]
    assert payment["entry"] and "tries" not in payment, payment
    assert gateway.app[NODE].ledger.held(gateway.app[CLIENT_IDENTITY].public_key) == 0
    for node in (gateway, provider):
        await verified(node)


async def test_a_replicated_jobs_payments_its_providers_were_down_for_are_each_made_once(node_factory) -> None:
    gateway, providers = await network(node_factory, providers=2, **HOURLY)
    module = await deploy(gateway, "outputs", wasi=True)
    before = [balances(gateway, p) for p in providers]
    ports = _stopping_once_done(gateway, providers)
    status, job = await run_job(gateway, {"module": module, "stdin": "-", "deterministic": True, "replicas": 2},
                                stdin=b"abc")
    assert status == 201 and job["state"] == "done" and len(job["paid_on"]) == 2, job

    async def both_tried() -> bool:
        return all(p.get("tries", 0) >= 1 for p in (await _shown(gateway, job["id"]))["payments"])

    await eventually_async(both_tried, "each replica's payment tried again", 30)
    providers = [await node_factory(f"provider{i}", **QUIET, **HOURLY, node={"listen": f"127.0.0.1:{port}"})
                 for i, port in enumerate(ports)]
    await eventually_async(lambda: not _pending(gateway, job), "each replica's tab paid once its provider is back", 60)
    charges = {pay["provider"]: pay["charge"] for pay in job["paid_on"]}
    for provider, (paid, earned) in zip(providers, before):  # each with compiling the module pushed to it
        charge = charges[provider.app[IDENTITY].id]
        owed = charges[provider.app[IDENTITY].id] = charge + await compiled_for(provider, job["run"], "outputs")
        assert balances(gateway, provider)[1] - earned == owed and charge > 0 and _receipts(provider, job) == [owed]
    assert before[-1][0] - balances(gateway, providers[-1])[0] == sum(charges.values())
    for node in (gateway, *providers):
        await verified(node)


async def test_a_payment_step_this_node_fails_is_made_by_the_retry_and_not_again_at_the_start(
        node_factory, monkeypatch) -> None:
    """A fault of this node's own in the step that pays a done job's provider (not the provider's): the job is
    answered done, and its tab is paid by the running node, once; the next start pays it nothing more."""
    gateway, (provider,) = await network(node_factory, **HOURLY)
    module = await deploy(gateway, "outputs", wasi=True)
    sent = gateway.app[NODE].jobs.sent
    before = balances(gateway, provider)

    def failing(returned):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sent, "pay", failing)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, stdin=b"abc")
    monkeypatch.undo()
    assert status == 201 and job["state"] == "done" and job["charge"] > 0, job
    await eventually_async(lambda: not _pending(gateway, job), "the job's tab paid while the node runs", 30)
    paid = balances(gateway, provider)
    owed = job["charge"] + compiled(job, "outputs")  # its charge, and compiling the module pushed to it
    assert (paid[0] - before[0], paid[1] - before[1]) == (-owed, owed)
    gateway, _ = await restarted(node_factory, gateway, job["id"])
    assert balances(gateway, provider) == paid and _receipts(provider, job) == [owed]
    await verified(gateway)
