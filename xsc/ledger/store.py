"""The ledger on LevelDB: chains, account records, settled-authorization marks, fork proofs.

Synchronous and single-writer: `LedgerService` runs every write method in one thread,
so the in-memory account records never race.  Every write is one LevelDB write batch
with sync=True: entries, their index, the account records they change and the
settled-authorization marks land together or not at all.  Signature work goes
through `parallel_map`, which spreads it over threads (Ed25519 releases the GIL).  What goes once its time has
passed is ledger/retirement.py's (`LedgerStore.retirement`).
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence


from .. import keys
from ..db import Database, Rows
from ..errors import (AuthorizationNotPending, AuthorizationReplayed, EntryNotFound, ForkDetected, InvalidArgument,
                      InvalidEntry, LedgerError, NothingOwed, ReceiptMismatch, WrongPayee, XscError, quoted_id)
from ..identity import Identity, public_id
from ..ids import one_starting_with
from .core import rules
from .core.model import (Authorization, Entry, Payment, Receipt, decode_authorization, decode_entry,
                         encode_authorization, format_credits, normalize_usage)
from .core.rules import AccountState
from .retirement import Retirement, guard_row

# Signatures this node makes with its own keys are not verified again (three re-verifies were a third
# of an invoke's CPU); what comes from other nodes always is.  Tests turn this self-check on (tests/conftest.py).
SELF_CHECK_ENV = "XSC_LEDGER_SELF_CHECK"
AUTHORIZATION_TTL = 600  # seconds a locally issued authorization stays valid
RETENTION = 30 * 86400  # ledger.record_retention's default
NODE_ID_LENGTH = 52  # characters of a node's id (identity.public_id)
MIN_CHUNK = 16  # below this many signature operations per thread, threading costs more than it saves

ParallelMap = Callable[[Callable, Sequence], list]

PaymentRows = Callable[[Payment], dict[bytes, bytes]]  # rows written in a payment's batch, made from it
# The rows that count a receipt or a payment on its peer's trust line (TrustLines.counting), for its authorization and
# amount: entered around the batch that writes the entry, whose rows it gives, so the count lands with it or not at all.
Count = Callable[[Authorization, int], AbstractContextManager[dict[bytes, bytes]]]


def serial_map(fn: Callable, items: Sequence) -> list:
    return [fn(item) for item in items]


class ThreadedMap:
    """Map a pure function over items in chunks: one chunk in the calling thread, the rest in the pool."""

    def __init__(self, executor: Executor, helpers: int) -> None:
        self.executor, self.helpers = executor, helpers

    def __call__(self, fn: Callable, items: Sequence) -> list:
        n = len(items)
        parts = min(self.helpers + 1, n // MIN_CHUNK)
        if parts < 2:
            return [fn(item) for item in items]
        bounds = [n * i // parts for i in range(parts + 1)]
        futures = [self.executor.submit(serial_map, fn, items[bounds[i]:bounds[i + 1]]) for i in range(1, parts)]
        out = [fn(item) for item in items[:bounds[1]]]
        for future in futures:
            out.extend(future.result())
        return out


@dataclass
class Settlement:
    """One transfer to settle: the payer's authorization (signed here if unsigned) and the metered amount."""

    payer: Identity
    payee: Identity
    authorization: Authorization
    amount: int
    usage: tuple[tuple[str, int], ...]
    # Written or deleted in the same synced batch as the settlement, only if it is settled (aggregated
    # settlement: the refs it covers, and the records of what was owed that it pays).
    puts: Rows = ()
    deletes: tuple[bytes, ...] = ()
    # Records of what is owed that the transfer pays: it is settled only if each is still there (not deleted by an
    # earlier transfer, in this group or before), and deletes them in its batch.  So a transfer made from such a
    # record is settled once, however often it is asked for (a refund retried after a crash).
    consumes: tuple[bytes, ...] = ()


def _still_owed(db: Database, req: Settlement, consumed: set[bytes]) -> None:
    """NothingOwed unless every record `req` consumes is still there (and not consumed earlier in its group)."""
    if any(key in consumed or db.get(key) is None for key in req.consumes):
        raise NothingOwed(f"{req.authorization.job}: what it pays was paid already")


def _sign(job: tuple[Identity, bytes]) -> bytes:
    identity, body = job
    return identity.sign(body)


def new_settlement(payer: Identity, payee: Identity, amount: int, usage: dict, job_ref: str, now: int) -> Settlement:
    """A settlement of work the payee already did, under a fresh authorization capped at the amount."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}")
    auth = Authorization(payer.public_key, payee.public_key, amount, os.urandom(16), now + AUTHORIZATION_TTL, job_ref)
    return Settlement(payer, payee, auth, amount, normalize_usage(usage))


class LedgerStore:
    def __init__(self, db: Database, credit_limit: int, parallel_map: ParallelMap = serial_map, *,
                 self_check: bool | None = None, retention: int = RETENTION) -> None:
        self.db = db
        self.retention = retention  # ledger.record_retention: settled marks go this long after their expiry
        self.self_check = os.environ.get(SELF_CHECK_ENV) == "1" if self_check is None else self_check
        self.credit_limit = credit_limit
        self.map = parallel_map
        self.retirement = Retirement(db, retention, self.payment_for, self.receipt_for)
        self.accounts: dict[bytes, AccountState] = {
            key[len(keys.LEDGER_ACCOUNTS):]: AccountState.decode(value)
            for key, value in db.iterator(prefix=keys.LEDGER_ACCOUNTS)
        }

    # --- reads ---------------------------------------------------------------------
    def state(self, account: bytes) -> AccountState:
        found = self.accounts.get(account)  # (not .get(account, AccountState()): that makes one on every call)
        return AccountState() if found is None else found

    def settled_by(self, authorization_id: bytes) -> bytes | None:
        return self.db.get(keys.ledger_settled(authorization_id))

    def chain(self, account: bytes, from_seq: int = 1, limit: int | None = None) -> list[bytes]:
        it = self.db.iterator(start=keys.ledger_entry(account, max(from_seq, 0)), stop=keys.ledger_entry(account, 2**64 - 1),
                              include_key=False)
        with it:
            return list(itertools.islice(it, limit))

    def history(self, account: bytes, limit: int) -> list[Entry]:
        """An account's newest entries first."""
        return [decode_entry(data) for data in self.history_data(account, limit)]

    def history_data(self, account: bytes, limit: int) -> list[bytes]:
        """An account's newest entries first, as stored (their canonical encoding)."""
        it = self.db.iterator(prefix=keys.ledger_chain(account), reverse=True, include_key=False)
        with it:
            return list(itertools.islice(it, limit))

    def entry(self, ref: str) -> Entry:
        """An entry by its id in hex, or an unambiguous prefix of at least 8 hex digits."""
        ref = ref.strip().lower()
        if len(ref) < 8 or len(ref) > 64 or any(c not in "0123456789abcdef" for c in ref):
            raise InvalidArgument(f"not an entry id: {quoted_id(ref)}", hint="an entry id is hex, 8 digits at least: "
                                  "`xsc ledger history` lists them")
        where = _where(self.db, ref)
        account, seq = where[:32], int.from_bytes(where[32:40], "big")
        data = self.db.get(keys.ledger_entry(account, seq))
        if data is None:
            raise LedgerError(f"ledger index names entry {ref} but it is not stored", hint="run: xsc ledger verify")
        return decode_entry(data)

    def entries(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every stored entry: (account, seq, encoded), chain by chain."""
        with self.db.iterator(prefix=keys.LEDGER_ENTRIES) as it:
            for key, value in it:
                account, seq = keys.split_ledger_entry(key)
                yield account, seq, value

    def forks(self) -> list[tuple[bytes, int, bytes]]:
        with self.db.iterator(prefix=keys.LEDGER_FORKS) as it:
            return [(*keys.split_ledger_fork(key)[:2], value) for key, value in it]

    # --- settlement ------------------------------------------------------------------
    def settle(self, requests: Sequence[Settlement], now: int) -> list[Payment | XscError]:
        """Settle a group of transfers in one synced write batch, each judged against the state the ones before it
        left, exactly as if they had been settled one by one: each one's payment entry, or its error."""
        results: list[Payment | XscError | None] = [None] * len(requests)
        unsigned = [i for i, r in enumerate(requests) if not r.authorization.signature]
        for i, sig in zip(unsigned, self.map(_sign, [(requests[i].payer, requests[i].authorization.body)
                                                      for i in unsigned])):
            requests[i].authorization = requests[i].authorization.signed(sig)
        # Authorizations signed here a moment ago need no check; one that came signed is verified.
        outside = [i for i, r in enumerate(requests) if i not in set(unsigned)] if unsigned else range(len(requests))
        auth_ok = [True] * len(requests)
        checks_in = [(requests[i].authorization.payer, requests[i].authorization.signature,
                      requests[i].authorization.body, "authorization") for i in outside]
        for i, ok in zip(outside, self.map(rules.signature_ok, checks_in) if checks_in else ()):
            auth_ok[i] = ok
        work: dict[bytes, AccountState] = {}
        settled: dict[bytes, bytes] = {}
        planned: list[tuple[int, Receipt, Payment]] = []
        consumed: set[bytes] = set()
        for i, req in enumerate(requests):
            try:
                _still_owed(self.db, req, consumed)
                receipt, payment = self._plan(req, auth_ok[i], work, settled, now)
            except XscError as exc:
                results[i] = exc
                continue
            consumed.update(req.consumes)
            planned.append((i, receipt, payment))
        jobs = [job for i, r, p in planned for job in ((requests[i].payee, r.body), (requests[i].payer, p.body))]
        sigs = self.map(_sign, jobs)
        entries: list[Entry] = []
        for n, (i, receipt, payment) in enumerate(planned):
            receipt = receipt.signed(sigs[2 * n])
            payment = Payment(payment.account, payment.seq, payment.prev, receipt, sigs[2 * n + 1], payment.body)
            entries += [receipt, payment]
            results[i] = payment
        self._self_check([entry.signatures()[0] for entry in entries])
        if entries:
            puts = {k: v for i, _, _ in planned for k, v in requests[i].puts}
            deletes = [k for i, _, _ in planned for k in (*requests[i].deletes, *requests[i].consumes)]
            self._write(entries, work, settled, puts, deletes)
        return results  # type: ignore[return-value]

    def _self_check(self, checks: list) -> None:
        """Test-only (`self_check`): verify signatures this node just made; a signing fault must never reach
        the chains."""
        if self.self_check and checks and not all(self.map(rules.signature_ok, checks)):
            raise LedgerError("a freshly made ledger signature does not verify; nothing was stored",
                              hint="the node's crypto library or keys are broken; check its log")

    def _plan(self, req: Settlement, auth_ok: bool, work: dict[bytes, AccountState], settled: dict[bytes, bytes],
              now: int) -> tuple[Receipt, Payment]:
        auth = req.authorization
        if not auth_ok:
            raise InvalidEntry("the authorization's signature is invalid")
        if auth.payer != req.payer.public_key or auth.payee != req.payee.public_key:
            raise InvalidEntry("the authorization names other accounts than payer and payee")
        payee_state = work.get(auth.payee) or self.state(auth.payee)
        receipt = Receipt(auth.payee, payee_state.seq + 1, payee_state.head, req.amount, now, req.usage, auth)
        rules.check_transfer(receipt)
        rules.check_fresh(receipt, now)
        settled_by = settled.get(auth.id) or self.settled_by(auth.id)
        new_payee = rules.check_append(payee_state, receipt, settled_by=settled_by, credit_limit=self.credit_limit)
        payer_state = work.get(auth.payer) or self.state(auth.payer)
        payment = Payment(auth.payer, payer_state.seq + 1, payer_state.head, receipt)
        new_payer = rules.check_append(payer_state, payment, settled_by=receipt.id, credit_limit=self.credit_limit)
        work[auth.payee], work[auth.payer] = new_payee, new_payer
        settled[auth.id] = receipt.id
        return receipt, payment

    def _write(self, entries: Sequence[Entry], work: dict[bytes, AccountState], settled: dict[bytes, bytes],
               puts: dict[bytes, bytes] | None = None, deletes: Iterable[bytes] = ()) -> None:
        """All or nothing: every record is encoded first (an encoding error raises before the batch exists),
        and the batch is transactional (plyvel writes a plain batch even when its `with` block raises)."""
        records: list[tuple[bytes, bytes]] = []
        for entry in entries:
            records.append((keys.ledger_entry(entry.account, entry.seq), entry.encode()))
            records += _index_rows(entry)
        records += [(keys.ledger_settled(auth_id), receipt_id) for auth_id, receipt_id in settled.items()]
        # Each settled mark goes once no entry under its authorization is taken any more (rules.check_remembered).
        expiry = {entry.authorization.id: entry.authorization.expires_at for entry in entries}
        records += [guard_row(keys.ledger_settled(auth_id), expiry[auth_id], self.retention) for auth_id in settled]
        records += [(keys.ledger_account(account), state.encode()) for account, state in work.items()]
        records += list((puts or {}).items())
        deleted = list(deletes)
        with self.db.write_batch(transaction=True, sync=True) as batch:
            for key, value in records:
                batch.put(key, value)
            for key in deleted:
                batch.delete(key)
        self.accounts.update(work)

    # --- settlement across nodes ------------------------------------------------------
    # The payer's node keeps each authorization it sent to a payee elsewhere as *pending* (`l/p/`) until
    # the payee's receipt comes back; the payee's node appends that receipt to its own chain (countersign),
    # the payer's node then appends the payment embedding it and drops the pending record in the same batch
    # (complete).  Each half is one synced batch, so a crash leaves either half whole or absent.
    def load_pending(self) -> dict[bytes, Authorization]:
        with self.db.iterator(prefix=keys.LEDGER_PENDING) as it:
            return {key[len(keys.LEDGER_PENDING):]: decode_authorization(value) for key, value in it}

    def add_pending(self, authorization: Authorization, claim: bytes | None) -> None:
        encoded = encode_authorization(authorization)
        with self.db.write_batch(transaction=True, sync=True) as batch:
            batch.put(keys.ledger_pending(authorization.id), encoded)
            if claim is not None:
                batch.put(keys.ledger_claim(authorization.id), claim)

    def claim(self, authorization_id: bytes) -> bytes | None:
        return self.db.get(keys.ledger_claim(authorization_id))

    # --- aggregated settlement (tabs.py) -----------------------------------------------------
    def owed(self) -> list[tuple[bytes, bytes]]:
        """Every record of acknowledged work not settled yet: (ref, record)."""
        with self.db.iterator(prefix=keys.LEDGER_OWED) as it:
            return [(key[len(keys.LEDGER_OWED):], value) for key, value in it]

    def covers(self, merkle_root: bytes) -> bytes | None:
        return self.db.get(keys.ledger_covers(merkle_root))

    def drop_pending(self, authorization_id: bytes) -> bool:
        if self.db.get(keys.ledger_pending(authorization_id)) is None:
            return False
        with self.db.write_batch(transaction=True, sync=True) as batch:
            batch.delete(keys.ledger_pending(authorization_id))
            batch.delete(keys.ledger_claim(authorization_id))
        return True

    def stored(self, entry_id: bytes) -> Entry | None:
        """The entry with this id, if a chain here holds it."""
        where = self.db.get(keys.ledger_id(entry_id))
        if where is None:
            return None
        data = self.db.get(keys.ledger_entry(where[:32], int.from_bytes(where[32:40], "big")))
        return None if data is None else decode_entry(data)

    def receipt_for(self, authorization_id: bytes) -> Receipt | None:
        """The receipt stored on a chain here that settled this authorization, if any."""
        receipt_id = self.settled_by(authorization_id)
        entry = None if receipt_id is None else self.stored(receipt_id)
        return entry if isinstance(entry, Receipt) else None

    def payment_for(self, authorization_id: bytes) -> Payment | None:
        """The payment with which this node completed the authorization, if it did."""
        payment_id = self.db.get(keys.ledger_completed(authorization_id))
        entry = None if payment_id is None else self.stored(payment_id)
        return entry if isinstance(entry, Payment) and entry.authorization.id == authorization_id else None

    def countersign(self, payee: Identity, auth: Authorization, amount: int, usage: tuple[tuple[str, int], ...],
                    now: int, *, verified: bool = False, sender: str | None = None,
                    count: Count | None = None) -> Receipt:
        """The payee's half: append its signed receipt for `amount` under `auth` (or return the one it made).

        `verified`: the caller has already checked the payer's signature on `auth` (it is not checked twice).
        `sender`: the node that asked for it, written with the receipt (`asked_by`; `senders` unless `count`)."""
        if auth.payee != payee.public_key:
            raise WrongPayee(f"authorization {auth.id.hex()} pays account {public_id(auth.payee)}, "
                             f"not this node's account {public_id(payee.public_key)}",
                             hint="send the authorization to the node whose account it names as payee")
        if not verified and not rules.signature_ok((auth.payer, auth.signature, auth.body, "authorization")):
            raise InvalidEntry(f"authorization {auth.id.hex()}: the payer's signature is invalid",
                               hint="the payer must sign the authorization's canonical body")
        if self.settled_by(auth.id) is not None:
            receipt = self.receipt_for(auth.id)
            if receipt is None:
                raise AuthorizationReplayed(f"authorization {auth.id.hex()} was already settled elsewhere; "
                                            "an authorization settles at most once")
            if (receipt.amount, receipt.usage) != (amount, usage):
                raise ReceiptMismatch(
                    f"authorization {auth.id.hex()} was already countersigned for "
                    f"{format_credits(receipt.amount)} credits and usage {dict(receipt.usage)}, not "
                    f"{format_credits(amount)} and {dict(usage)}", hint="an authorization settles at most once",
                    receipt=receipt.id.hex())
            return receipt
        state = self.state(payee.public_key)
        receipt = Receipt(payee.public_key, state.seq + 1, state.head, amount, now, usage, auth)
        rules.check_transfer(receipt)
        rules.check_fresh(receipt, now)
        new_state = rules.check_append(state, receipt, settled_by=None, credit_limit=self.credit_limit)
        receipt = receipt.signed(payee.sign(receipt.body))
        self._self_check([receipt.signatures()[0]])
        rows = {} if sender is None else _sender_rows(auth, receipt.id, sender, self.retention, count is None)
        with _counting(count, auth, amount) as counted:
            self._write([receipt], {payee.public_key: new_state}, {auth.id: receipt.id}, {**rows, **counted})
        return receipt

    def sender_counted(self, authorization_id: bytes) -> None:
        self.db.delete(keys.ledger_sender(authorization_id))

    def senders(self) -> list[tuple[bytes, str, Receipt | None]]:
        """(authorization id, sender node id, the receipt if found) of receipts whose sender's trust line has not
        counted them yet."""
        with self.db.iterator(prefix=keys.LEDGER_SENDERS) as it:
            found = [(key[len(keys.LEDGER_SENDERS):], value) for key, value in it]
        out: list[tuple[bytes, str, Receipt | None]] = []
        for authorization_id, value in found:
            if len(value) > NODE_ID_LENGTH:
                sender, receipt = value[32:], self.stored(value[:32])
            else:
                sender, receipt = value, self.receipt_for(authorization_id)
            out.append((authorization_id, sender.decode(), receipt if isinstance(receipt, Receipt) else None))
        return out

    def owed_counted(self, authorization_id: bytes) -> None:
        self.db.delete(keys.ledger_uncounted(authorization_id))

    def uncounted_payments(self) -> list[tuple[bytes, Payment | None]]:
        """(authorization id, the payment if found) of this node's payments whose payee's trust line has not
        counted them as owed yet."""
        with self.db.iterator(prefix=keys.LEDGER_UNCOUNTED) as it:
            found = [(key[len(keys.LEDGER_UNCOUNTED):], value) for key, value in it]
        out: list[tuple[bytes, Payment | None]] = []
        for authorization_id, payment_id in found:
            payment = self.stored(payment_id)
            out.append((authorization_id, payment if isinstance(payment, Payment) else None))
        return out

    def complete(self, payer: Identity, receipt: Receipt, now: int, also: PaymentRows | None = None,
                 count: Count | None = None) -> Payment:
        """The payer's half: append the payment countersigning the payee's receipt (or return the one made), with the
        rows `also(payment)` and `count` (else `uncounted_payments`) in its batch (made from the payment: its id)."""
        auth = receipt.authorization
        if auth.payer != payer.public_key:
            raise InvalidEntry(f"receipt {receipt.id.hex()} is for an authorization of account "
                               f"{public_id(auth.payer)}, not {public_id(payer.public_key)}")
        done = self.payment_for(auth.id)
        if done is not None:
            if done.receipt.id != receipt.id:
                raise ReceiptMismatch(f"authorization {auth.id.hex()} was already completed with receipt "
                                      f"{done.receipt.id.hex()}, not {receipt.id.hex()}",
                                      payment=done.id.hex())
            return done
        pending = self.db.get(keys.ledger_pending(auth.id))
        if pending is None:
            raise AuthorizationNotPending(f"authorization {auth.id.hex()} is not pending on this node "
                                          "(never issued here, or abandoned after it expired)",
                                          hint="only a receipt for a pending authorization can be completed")
        if pending != encode_authorization(auth):
            raise InvalidEntry(f"receipt {receipt.id.hex()} embeds another authorization than the one issued")
        if not rules.signature_ok(receipt.signatures()[0]):
            raise InvalidEntry(f"receipt {receipt.id.hex()}: the payee's signature is invalid")
        rules.check_transfer(receipt)
        if receipt.settled_at > now + rules.CLOCK_SKEW:
            raise InvalidEntry(f"receipt {receipt.id.hex()} is dated in the future",
                               hint="check the payee's clock")
        fork = self._conflict(receipt)  # this node may hold the payee's chain too
        if fork is not None:
            self._record_fork(fork)
            raise ForkDetected(f"account {public_id(fork.account)} equivocated: two signed entries claim seq "
                               f"{fork.seq}; the proof is kept and the account marked",
                               account=public_id(fork.account), seq=fork.seq)
        rules.check_replay(receipt, self.settled_by(auth.id))
        state = self.state(payer.public_key)
        payment = Payment(payer.public_key, state.seq + 1, state.head, receipt)
        new_state = rules.check_append(state, payment, settled_by=receipt.id, credit_limit=self.credit_limit)
        payment = payment.signed(payer.sign(payment.body))
        self._self_check([payment.signatures()[0]])
        # The completed mark makes a repeated complete return this payment.  Once the authorization has expired
        # (by more than the clock skew a payee's receipt may have) no receipt under it is completed again anyway:
        # it is not pending (this batch deletes that).
        completed = keys.ledger_completed(auth.id)
        rows = {completed: payment.id, keys.ledger_retire(max(auth.expires_at, now) + rules.CLOCK_SKEW, completed): b"",
                **({keys.ledger_uncounted(auth.id): payment.id} if count is None else {}),
                **(also(payment) if also else {})}
        with _counting(count, auth, receipt.amount) as counted:
            self._write([payment], {payer.public_key: new_state}, {auth.id: receipt.id}, puts={**rows, **counted},
                        deletes=(keys.ledger_pending(auth.id), keys.ledger_claim(auth.id)))
        return payment

    # --- entries from counterparties ----------------------------------------------------
    def accept(self, entries: Sequence[Entry], now: int) -> list[dict]:
        """Store entries other nodes made, in order, after full validation: all of them or none.

        An entry already stored is skipped.  A validly signed entry that conflicts with a stored one
        (same account and seq, other content) is a fork: its proof is stored, the account marked, and
        the request refused with ForkDetected."""
        checks = [c for e in entries for c in e.signatures()]
        for check, ok in zip(checks, self.map(rules.signature_ok, checks)):
            if not ok:
                entry = next(e for e in entries if check in e.signatures())
                raise InvalidEntry(f"{rules.describe(entry)}: invalid {check[3]} signature")
        work: dict[bytes, AccountState] = {}
        settled: dict[bytes, bytes] = {}
        stored: list[Entry] = []
        outcome = []
        for entry in entries:
            try:
                if self._stored_id(entry.account, entry.seq) == entry.id:
                    outcome.append({"id": entry.id.hex(), "account": public_id(entry.account), "seq": entry.seq,
                                    "status": "duplicate"})
                    continue
                fork = self._conflict(entry)
                if fork is not None:
                    self._record_fork(fork)
                    raise ForkDetected(
                        f"account {public_id(fork.account)} equivocated: two signed entries claim seq {fork.seq}; "
                        f"the proof is kept and the account marked", account=public_id(fork.account), seq=fork.seq)
                if entry.receipt.settled_at > now + rules.CLOCK_SKEW:
                    raise InvalidEntry(f"{rules.describe(entry)} is dated in the future", hint="check the sender's clock")
                rules.check_remembered(entry, now, self.retention)
                state = work.get(entry.account) or self.state(entry.account)
                auth_id = entry.authorization.id
                settled_by = settled.get(auth_id) or self.settled_by(auth_id)
                work[entry.account] = rules.check_append(state, entry, settled_by=settled_by,
                                                         credit_limit=self.credit_limit)
                settled[auth_id] = entry.receipt.id
                stored.append(entry)
                outcome.append({"id": entry.id.hex(), "account": public_id(entry.account), "seq": entry.seq,
                                "status": "stored"})
            except XscError as exc:
                if not isinstance(exc, ForkDetected):
                    exc.message = f"{rules.describe(entry)}: {exc.message}"
                exc.details.setdefault("entry", entry.id.hex())
                raise
        if stored:
            self._write(stored, work, settled)
        return outcome

    def _stored_id(self, account: bytes, seq: int) -> bytes | None:
        data = self.db.get(keys.ledger_entry(account, seq))
        return None if data is None else decode_entry(data).id

    def _conflict(self, entry: Entry) -> Entry | None:
        """A validly signed entry that contradicts a stored one (same account and seq), if `entry` is or holds one."""
        candidates: list[Entry] = [entry]
        if isinstance(entry, Payment):
            candidates.append(entry.receipt)  # the payee signed it: it binds the payee's chain too
        for candidate in candidates:
            stored = self._stored_id(candidate.account, candidate.seq)
            if stored is not None and stored != candidate.id:
                return candidate
        return None

    def _record_fork(self, entry: Entry) -> None:
        state = self.state(entry.account)
        marked = AccountState(state.seq, state.head, state.balance, True)
        proof, record = entry.encode(), marked.encode()
        with self.db.write_batch(transaction=True, sync=True) as batch:
            batch.put(keys.ledger_fork(entry.account, entry.seq, entry.id), proof)
            batch.put(keys.ledger_account(entry.account), record)
        self.accounts[entry.account] = marked

    # --- verification --------------------------------------------------------------------
    def verify(self, now: int | None = None) -> dict:
        """Audit every chain (and the tables that go with them) from one consistent snapshot.

        The walk collects signature checks; every VERIFY_BATCH of them is verified on all cores
        while the walk waits.  (Overlapping the walk with verification is slower: the walk holds
        the GIL and starves the threads coming back from Ed25519.)"""
        now = int(time.time()) if now is None else now
        audit = rules.Audit(self.credit_limit, marks_kept_from=now - self.retention - rules.CLOCK_SKEW)
        failed: list = []

        def check(checks: list) -> None:
            failed.extend(c for c, ok in zip(checks, self.map(rules.signature_ok, checks)) if not ok)

        def flush() -> None:
            if len(audit._new_checks) >= VERIFY_BATCH:
                check(audit.take_signature_checks())

        snapshot = self.db.snapshot()
        try:
            stored = {key[len(keys.LEDGER_ACCOUNTS):]: AccountState.decode(value)
                      for key, value in snapshot.iterator(prefix=keys.LEDGER_ACCOUNTS)}
            with snapshot.iterator(prefix=keys.LEDGER_ENTRIES) as it:
                records = ((*keys.split_ledger_entry(key), value) for key, value in it)
                for account, group in itertools.groupby(records, key=lambda r: r[0]):
                    chain = ((seq, value) for _, seq, value in group)
                    audit.chain(account, _flushing(chain, flush), stored.pop(account, None))
            for account, state in stored.items():
                audit.orphan_account(account, state)
            with snapshot.iterator(prefix=keys.LEDGER_FORKS) as it:
                for key, value in it:
                    account, seq, _ = keys.split_ledger_fork(key)
                    audit.fork(account, seq, value)
            check(audit.take_signature_checks())
            check(audit.deferred_checks())
            with snapshot.iterator(prefix=keys.LEDGER_IDS) as it:
                for key, value in it:
                    audit.index(key[len(keys.LEDGER_IDS):], value[:32], int.from_bytes(value[32:40], "big"))
            with snapshot.iterator(prefix=keys.LEDGER_SETTLED) as it:
                for key, value in it:
                    audit.used(key[len(keys.LEDGER_SETTLED):], value)
        finally:
            snapshot.close()
        return audit.finish(failed)


def _index_rows(entry: Entry) -> list[tuple[bytes, bytes]]:
    """Where an entry is found: by its id, and a payment by its receipt's too (the id its payee's node shows)."""
    where = entry.account + entry.seq.to_bytes(8, "big")
    rows = [(keys.ledger_id(entry.id), where)]
    if isinstance(entry, Payment):
        rows.append((keys.ledger_receipt(entry.receipt.id), where))
    return rows


def _where(db: Database, ref: str) -> bytes:
    """The account and seq of the entry whose id starts with `ref` (hex, 8 digits at least), or else of the payment
    whose receipt's id does: a transfer's halves have ids of their own, and the one both nodes show is the receipt's."""
    start = bytes.fromhex(ref[: len(ref) // 2 * 2])
    for index in (keys.LEDGER_IDS, keys.LEDGER_RECEIPTS):
        with db.iterator(prefix=index + start) as it:
            found = {k[len(index):].hex(): v for k, v in itertools.islice(it, 1000)}
        if any(i.startswith(ref) for i in found):
            break
    return found[one_starting_with(ref, found, what="ledger entry", whats="ledger entries", missing=EntryNotFound,
                                   listing="xsc ledger history (a transfer's payment is found on either node by its "
                                           "receipt's id, the payee's entry id)")]


def _sender_rows(auth: Authorization, receipt_id: bytes, sender: str, retention: int,
                 uncounted: bool) -> dict[bytes, bytes]:
    """The node that asked for a receipt: as the one node besides its payer's the receipt is shown to, as long as its
    settled mark (`l/k/`), and, `uncounted`, until its trust line counts it (`l/n/`)."""
    rows = dict((guard_row(keys.ledger_asked(auth.id), auth.expires_at, retention),
                 (keys.ledger_asked(auth.id), sender.encode())))
    if uncounted:
        rows[keys.ledger_sender(auth.id)] = receipt_id + sender.encode()
    return rows


def _counting(count: Count | None, auth: Authorization, amount: int) -> AbstractContextManager[dict[bytes, bytes]]:
    return nullcontext({}) if count is None else count(auth, amount)


def asked_by(db: Database, authorization_id: bytes) -> str | None:
    """The node that asked for the receipt under this authorization, if one did and it is still kept."""
    value = db.get(keys.ledger_asked(authorization_id))
    return None if value is None else value.decode("ascii", "replace")


VERIFY_BATCH = 4096  # signature checks verified together (bounds the memory the walk holds)


def _flushing(records: Iterable, flush: Callable[[], None]) -> Iterator:
    for n, record in enumerate(records):
        if n % 64 == 0:
            flush()
        yield record
