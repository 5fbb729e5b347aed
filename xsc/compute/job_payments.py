"""What a job's record says of the payments of its latest run's providers (`xsc compute job`): each made (its ledger
entry, as `xsc ledger history` lists it), still owed (the payment retry's tries of it and when the next is), or owed
no more (dropped unpaid).  What each job tab was paid, and by which entry, is kept with the job's records from the
payment's own batch (`paid_row`): the ledger finds a payment by its authorization only until the authorization
expires (an hour for a job's tab), the job's records for as long as they are kept."""

from __future__ import annotations

from typing import Any, Callable

from .. import codec, keys
from ..ledger.core.model import Authorization, Payment

Paid = Callable[[str], dict[str, Any] | None]  # authorization (hex) -> {"amount", "entry"} kept by `paid_row`


def paid_row(auth: Authorization, payment: Payment) -> dict[bytes, bytes]:
    """What a job tab's payment writes in its own batch (settlement.Payments.add_rows): what it paid, by which entry.
    A kill -9 leaves both or neither."""
    return {keys.job_payment(auth.id): codec.dumps({"amount": payment.receipt.amount, "entry": payment.id.hex()})}


def payments(ledger: Any, retry: Any, job: dict[str, Any], paid: Paid) -> dict[str, Any]:
    """{"payments": [one per tab the record says its run owes (`paid_on`)]} (nothing if it owes none).  `retry`: the
    node's payments (settlement.Payments), whose `next_try` says how its tries of a payment owed went; `paid`: what
    `paid_row` kept of a payment made."""
    made = []
    for pay in job.get("paid_on", []):
        authorization = bytes.fromhex(pay["authorization"])
        if (kept := paid(pay["authorization"])) is not None:
            made.append({"provider": pay["provider"], "amount": kept["amount"], "entry": kept["entry"]})
            continue
        payment = ledger.store.payment_for(authorization)
        if payment is not None:  # (paid before its row was kept with the job's records)
            made.append({"provider": pay["provider"], "amount": payment.receipt.amount, "entry": payment.id.hex()})
            continue
        shown = {"provider": pay["provider"], "amount": pay["charge"], "entry": None}
        if ledger.is_pending(authorization):  # owed: being paid, or left to the retry by a try that failed
            made.append({**shown, "owed": True, **(retry.next_try(authorization) or {})})
        else:  # dropped unpaid (or paid before its row was kept, its mark retired once its authorization expired)
            made.append({**shown, "owed": False})
    return {"payments": made} if made else {}


__all__ = ["Paid", "paid_row", "payments"]
