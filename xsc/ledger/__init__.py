"""The signed ledger: per-account hash chains of Ed25519-signed entries, mutual credit.

Service API for the rest of the node (node/app.py builds one `LedgerService` and hands it to the
services that pay or are paid)::

    await ledger.ensure_credit(payer_identity, amount, promised=0)
        # raises InsufficientCredit (HTTP 402) saying how much is missing; call it BEFORE any work
        # (a pre-check: settle checks the credit limit again, atomically with its write); `promised`:
        # what earlier work will still cost the payer, kept aside (a put's: the leases of earlier puts)
    await ledger.balance(account_key)
        # an account's view; the client account's keeps aside what its puts' leases still promise
        # (the `promised` callable given at construction), as a put's credit check does
    await ledger.hold(payer_identity, amount)       # ensure_credit, then set the amount aside
        # (a compute call's check: what the payer's puts' leases promise is kept aside, as its balance shows)
    await ledger.promised(account_key)             # what that is (0 but for the client account)
    ledger.settle_later(payer_identity, payee_identity, amount, usage, job_ref, held=budget)
        # queue the settlement without waiting for its fsync; the held budget is replaced by the amount
        # at once, and that is released once it is written
    tabs.owe(payer_identity, payee_identity, ref, amount, fuel, held=budget)    # tabs.Tabs
        # many small payments, one transfer per interval (aggregated settlement): the caller has written
        # tabs.owed_record(...) under keys.ledger_owed(ref) durably first; see tabs.py
    ledger.release(payer_identity, amount)         # give back a hold for work that was refused
    entry_id = await ledger.settle(payer_identity, payee_identity, amount, usage, job_ref)
        # usage e.g. {"fuel": 1234} or {"byte_hours": 5678}; job_ref a short text (<= 256 bytes);
        # returns the id (hex) of the payer's new entry; both chains are written in one synced batch;
        # consumes=(key, ...): records of what it pays, deleted with it, NothingOwed if one is gone already

Identities are `xsc.identity.Identity` (the payer is the local user's client key, the payee the
node's key for work this node did).  Amounts are int micro-credits (1 credit =
1,000,000).  Prices (pure, integer math, rounded up once)::

    price_storage(size_bytes, duration_seconds, price_per_gib_hour) -> micro-credits
    price_storage_period(size_bytes, start, end, price_per_gib_hour) -> micro-credits (one period of a lease)
    price_compute(fuel, price_per_fuel_million) -> micro-credits
    byte_hours(size_bytes, duration_seconds) -> the metered usage for a storage receipt

Settlement across nodes (a payer here, a payee on another node; docs/ledger.md "Settlement across
nodes"; `settlement.Payments` is the one pay-by-receipt path the node uses, with its retry)::

    auth = await ledger.authorize(payer_identity, payee_key, cap, job_ref)   # holds cap, durable, pending
    wire = encode_authorization(auth)   # -> the payee's node; decode_authorization(wire) there
    receipt = await ledger.countersign(payee_identity, auth, amount, usage)  # payee's node; idempotent
    wire = receipt.encode()             # -> back to the payer's node; decode_entry(wire) there
    payment = await ledger.complete(payer_identity, receipt)   # payer's node; idempotent, releases the hold
        # count=: the entry's count on its peer's trust line (TrustLines.counting), written in its batch; once
        # begun, either write ends whole even if its caller is cancelled (a stop waits for it)
    ledger.pending(); await ledger.abandon(auth.id)            # expired without a receipt
    await ledger.retire()   # what is not kept for good, past its time (docs/ledger.md "Retention"; a node's loop)

docs/ledger.md describes the records, their canonical encoding and the rules.
"""

from .core.model import (Authorization, Entry, Payment, Receipt, decode_authorization, decode_entry,
                         encode_authorization, entry_json, format_credits)
from .core.pricing import byte_hours, price_budget, price_compute, price_storage, price_storage_period
from .core.rules import AccountState, Audit, Violation
from .service import LedgerService
from .store import LedgerStore, Settlement, new_settlement

__all__ = [
    "Authorization", "Entry", "Payment", "Receipt", "decode_entry", "entry_json", "format_credits",
    "encode_authorization", "decode_authorization",
    "byte_hours", "price_budget", "price_compute", "price_storage", "price_storage_period",
    "AccountState", "Audit", "Violation",
    "LedgerService", "LedgerStore", "Settlement", "new_settlement",
]
