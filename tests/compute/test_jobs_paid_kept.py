"""What a remote job's tab was paid, and by which ledger entry, is kept with the job's records by the payment's own
write (compute/job_payments.py): `xsc compute job` shows it after the ledger's mark of the payment by its
authorization is retired (once the authorization expires), and after a restart; so for a job whose checked answer
was paid though the job failed (its outputs not stored) or was interrupted."""

from __future__ import annotations

import asyncio
import errno

from tests.support.cli import ok, xsc_in_process
from tests.support.compute import deploy
from tests.support.jobs import compiled, compiled_for, failing_after, network, owed_paid, restarted, run_job, settle
from xsc import keys
from xsc.ledger.core.rules import CLOCK_SKEW
from xsc.node import TOKEN
from xsc.node.appkeys import NODE


async def test_a_paid_jobs_payment_keeps_its_entry_and_amount_once_its_authorization_expired(node_factory) -> None:
    gateway, _ = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    status, job = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    assert status == 201 and job["state"] == "done", job
    jid = job["id"]
    await settle(gateway)
    await owed_paid(gateway, job)
    ledger = gateway.app[NODE].ledger
    (pay,) = job["paid_on"]
    payment = await ledger.payment_for(bytes.fromhex(pay["authorization"]))
    owed = job["charge"] + compiled(job, "outputs")  # its charge, and compiling the module pushed to its provider
    assert payment is not None and payment.receipt.amount == owed and job["charge"] > 0
    shown = {"provider": pay["provider"], "amount": owed, "entry": payment.id.hex()}
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]

    assert await ledger.retire(payment.authorization.expires_at + CLOCK_SKEW + 1) > 0
    assert await ledger.payment_for(bytes.fromhex(pay["authorization"])) is None  # the ledger's mark is gone
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]

    gateway, _ = await restarted(node_factory, gateway, jid)
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]


async def _payment_kept(node_factory, gateway, provider, record: dict) -> None:
    """The payment of the job `record`'s checked answer shown by `xsc compute job`, and its row kept, once made, after
    the ledger's mark is retired, after a sweep of the job records and after a restart, the job's state as it was."""
    jid, jobs = record["id"], gateway.app[NODE].jobs
    await settle(gateway)
    await owed_paid(gateway, record)
    (pay,) = record["paid_on"]
    authorization = bytes.fromhex(pay["authorization"])
    payment = await jobs.ledger.payment_for(authorization)
    # Its charge, and compiling the module pushed to its provider.
    owed = record["charge"] + await compiled_for(provider, record["id"], "outputs")
    assert payment is not None and payment.receipt.amount == owed and record["charge"] > 0
    shown = {"provider": pay["provider"], "amount": owed, "entry": payment.id.hex()}
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]
    assert await jobs.ledger.retire(payment.authorization.expires_at + CLOCK_SKEW + 1) > 0
    assert await jobs.ledger.payment_for(authorization) is None
    await jobs.forget_ended()  # (the job is kept: a row its record names is not loose)
    assert gateway.app[NODE].db.get(keys.job_payment(authorization)) is not None
    gateway, _ = await restarted(node_factory, gateway, jid)
    shown_again = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
    assert (shown_again["state"], shown_again["payments"]) == (record["state"], [shown]), shown_again
    line = ok(await asyncio.to_thread(xsc_in_process, "--node", str(gateway.make_url("")), "compute", "job", jid,
                                      env={"XSC_TOKEN": gateway.app[TOKEN]}))
    assert payment.id.hex()[:12] in line, line


async def test_a_remote_job_that_failed_to_store_its_checked_outputs_keeps_its_payment_shown(node_factory,
                                                                                            monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs
    failing_after(jobs.storage, monkeypatch, 0, OSError(errno.EIO, "Input/output error"))
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (503, "node-failed"), problem
    record = jobs.records.load(problem["id"])
    assert record["state"] == "failed" and "answered" not in record, record
    assert [p["charge"] for p in record["paid_on"]] == [problem["charged"]] and problem["charged"] > 0, record
    await _payment_kept(node_factory, gateway, provider, {**record, "charge": problem["charged"]})


async def test_a_remote_job_interrupted_once_its_answer_was_checked_keeps_its_payment_shown(node_factory,
                                                                                           monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    module = await deploy(gateway, "outputs", wasi=True)
    jobs = gateway.app[NODE].jobs

    def failing(*args):  # once its checked answer is written down (`storing`), before its outputs are stored
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jobs.dealing, "invoked", failing)
    status, problem = await run_job(gateway, {"module": module, "stdin": "-"}, b"abc")
    monkeypatch.undo()
    assert (status, problem["code"]) == (503, "node-failed"), problem
    record = jobs.records.load(problem["id"])
    assert record["state"] == "interrupted" and "answered" not in record, record
    assert len(record["paid_on"]) == 1 and record["paid_on"][0]["charge"] > 0, record
    await _payment_kept(node_factory, gateway, provider, {**record, "charge": record["paid_on"][0]["charge"]})
