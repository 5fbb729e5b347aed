"""What a job's record says of the payments of its latest run's providers (`xsc compute job`): each made (its ledger
entry, as `xsc ledger history` lists it), still owed (the payment retry's tries of it and when the next is), or
owed no more (dropped unpaid, or paid long enough ago that its entry is no longer found by its authorization)."""

from __future__ import annotations

from typing import Any


def payments(ledger: Any, retry: Any, job: dict[str, Any]) -> dict[str, Any]:
    """{"payments": [one per tab the record says its run owes (`paid_on`)]} (nothing if it owes none).  `retry`: the
    node's payments (settlement.Payments), whose `next_try` says how its tries of a payment owed went."""
    made = []
    for pay in job.get("paid_on", []):
        authorization = bytes.fromhex(pay["authorization"])
        payment = ledger.store.payment_for(authorization)
        if payment is not None:
            made.append({"provider": pay["provider"], "amount": payment.receipt.amount, "entry": payment.id.hex()})
            continue
        shown = {"provider": pay["provider"], "amount": pay["charge"], "entry": None}
        if ledger.is_pending(authorization):  # owed: being paid, or left to the retry by a try that failed
            made.append({**shown, "owed": True, **(retry.next_try(authorization) or {})})
        else:  # paid, its mark retired once its authorization expired (payment_for then finds none), or dropped
            made.append({**shown, "owed": False})
    return {"payments": made} if made else {}


__all__ = ["payments"]
