"""What a remote job's tab was paid, and by which ledger entry, is kept with the job's records by the payment's own
write (compute/job_payments.py): `xsc compute job` shows it after the ledger's mark of the payment by its
authorization is retired (once the authorization expires), and after a restart."""

from __future__ import annotations

from tests.support.compute import deploy
from tests.support.jobs import network, owed_paid, restarted, run_job, settle
from xsc.ledger.core.rules import CLOCK_SKEW
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
    assert payment is not None and payment.receipt.amount == job["charge"] > 0
    shown = {"provider": pay["provider"], "amount": job["charge"], "entry": payment.id.hex()}
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]

    assert await ledger.retire(payment.authorization.expires_at + CLOCK_SKEW + 1) > 0
    assert await ledger.payment_for(bytes.fromhex(pay["authorization"])) is None  # the ledger's mark is gone
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]

    gateway, _ = await restarted(node_factory, gateway, jid)
    assert (await (await gateway.get(f"/v1/compute/jobs/{jid}")).json())["payments"] == [shown]
