"""What a job's record says of the payments of its latest run's providers (`xsc compute job`): each made (its ledger
entry, as `xsc ledger history` lists it), still owed (the payment retry's tries of it and when the next is), or owed
no more (dropped unpaid).  What each job tab was paid, and by which entry, is kept with the job's records by the
payment's own batch (`c/jp` + its authorization id, `paid_row`): the ledger finds a payment by its authorization only
until the authorization expires (an hour for a job's tab), the job's records for as long as they are kept
(job_retention.py forgets them with the job, and those no job's record names any more)."""

from __future__ import annotations

import re
from typing import Any

from .. import codec, keys
from ..db import Database
from ..ledger.core.model import JOB_TAB_PREFIX, Authorization, Payment

_AUTHORIZATION = re.compile(r"[0-9a-f]{64}")


def keep_paid(payments: Any) -> None:
    """Every job tab's payment (settlement.Payments), however it is made, writes what it paid in its own batch."""
    payments.add_rows(JOB_TAB_PREFIX, paid_row)


def paid_row(auth: Authorization, payment: Payment) -> dict[bytes, bytes]:
    """What a job tab's payment writes in its own batch: what it paid, by which entry (a kill -9 leaves both or
    neither)."""
    return {keys.job_payment(auth.id): codec.dumps({"amount": payment.receipt.amount, "entry": payment.id.hex()})}


def payments(ledger: Any, retry: Any, job: dict[str, Any], db: Database) -> dict[str, Any]:
    """{"payments": [one per tab the record says its run owes (`paid_on`)]} (nothing if it owes none).  `retry`: the
    node's payments (settlement.Payments), whose `next_try` says how its tries of a payment owed went."""
    made = []
    for pay in job.get("paid_on", []):
        authorization = bytes.fromhex(pay["authorization"])
        if (kept := db.get(keys.job_payment(authorization))) is not None:
            made.append({"provider": pay["provider"], **codec.loads(kept)})
            continue
        payment = ledger.store.payment_for(authorization)
        if payment is not None:  # (paid by a node that did not keep `paid_row` yet, its mark not retired yet)
            made.append({"provider": pay["provider"], "amount": payment.receipt.amount, "entry": payment.id.hex()})
            continue
        shown = {"provider": pay["provider"], "amount": pay["charge"], "entry": None}
        if ledger.is_pending(authorization):  # owed: being paid, or left to the retry by a try that failed
            made.append({**shown, "owed": True, **(retry.next_try(authorization) or {})})
        else:  # dropped unpaid (or paid by a node that did not keep `paid_row` yet, its mark retired since)
            made.append({**shown, "owed": False})
    return {"payments": made} if made else {}


# --- for the retention sweep (job_retention.py) ------------------------------------------------------
def tabs_of(job: dict[str, Any]) -> list[str]:
    """The authorizations of the tabs a job's record says it owes or waits on (remote_answers.tabs_to_hold)."""
    return [t.get("authorization", "") for t in job.get("answered", {}).get("pays", []) + job.get("paid_on", [])
            if isinstance(t, dict)]


def paid_rows(db: Database) -> set[bytes]:
    """The keys of what job tabs were paid.  Read before the job records: a tab is named by its job's record before
    it is paid, so each is named by a record read after unless none names it any more (its job forgotten, or run
    again: a run names its own tabs)."""
    with db.iterator(prefix=keys.JOB_PAYMENTS, include_value=False) as rows:
        return set(rows)


def rows_of(tabs: list[str], rows: set[bytes]) -> list[bytes]:
    """Those of `rows` that say what the tabs `tabs` (authorizations, hex) were paid."""
    return [key for a in tabs if _AUTHORIZATION.fullmatch(a) and (key := keys.job_payment(bytes.fromhex(a))) in rows]


def unnamed(rows: set[bytes], tabs: set[str], most: int) -> list[bytes]:
    """Those of `rows` whose tab is not among `tabs` (those the job records read name), `most` at most."""
    return [key for key in sorted(rows) if key[len(keys.JOB_PAYMENTS):].hex() not in tabs][:max(most, 0)]


__all__ = ["keep_paid", "paid_row", "paid_rows", "payments", "rows_of", "tabs_of", "unnamed"]
