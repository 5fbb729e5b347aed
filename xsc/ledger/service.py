"""The ledger as an asyncio service: what the rest of the node calls.

Concurrency: every write (settlement groups, accepted entries, fork proofs) runs in ONE
writer thread, in submission order, while an asyncio.Lock is held; so no two writes ever
judge the same account head and no update is lost.  Settlements that arrive while a group is
being written queue up and are settled together as the next group (group commit: one synced
write batch per group, each settlement in it whole or not at all), which is what lets many
concurrent settlements share one fsync and the signature work spread over the cores.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from collections.abc import Awaitable, Callable
from typing import Any, Iterator


from .. import codec
from ..db import Database, Rows
from ..errors import AuthorizationNotPending, InvalidArgument, InvalidEntry, XscError, quoted_id
from ..identity import Identity, parse_public_id, public_id
from ..ids import one_starting_with
from .core import rules
from .core.model import (Authorization, Payment, Receipt, authorize, decode_entry, format_credits,
                         normalize_usage)
from ..tasks import waited_out
from .history import LedgerHistory
from .retirement import RETIRE_BATCH
from .store import RETENTION, Count, LedgerStore, Settlement, ThreadedMap, asked_by, new_settlement

MAX_GROUP = 512  # settlements per write batch
MIN_ACCOUNT_PREFIX = 4  # characters of an account id that name it, when no other known account's id starts so
_ID_DIGITS = frozenset("abcdefghijklmnopqrstuvwxyz234567")  # an account id's: lower-case base32
log = logging.getLogger(__name__)


class LedgerService:
    def __init__(self, db: Database, credit_limit: int, *, node: Identity | None = None,
                 client: Identity | None = None, threads: int | None = None, low_balance: int = 10,
                 retention: int = RETENTION, promised: Callable[[], Awaitable[int]] | None = None) -> None:
        cores = max(1, threads or os.cpu_count() or 2)
        # Ed25519 releases the GIL: settlement groups and verification spread signatures over every core.
        self._crypto = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="xsc-ledger-crypto")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsc-ledger-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsc-ledger-reader")
        self.store = LedgerStore(db, credit_limit, ThreadedMap(self._crypto, cores - 1), retention=retention)
        self.retention = retention  # ledger.record_retention: how long proof outlives its settlement (`retire`)
        # The chains as they are read (history, one entry, the export), on the reader thread.
        self.history = LedgerHistory(self.store, self._reader, self.balance)
        if self.store.retirement.index(int(time.time())):
            log.info("the ledger's records written before they had a retirement were given theirs")
        self.credit_limit = credit_limit
        self._client = client.public_key if client is not None else None
        self.roles = {k.public_key: role for k, role in ((node, "node"), (client, "client")) if k is not None}
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Settlement, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._held: dict[bytes, int] = {}  # credit set aside for settlements not yet written
        self.low_balance = low_balance  # percent of the credit limit still available below which we warn
        # What the client account's storage leases still promise (StorageService.promised): the credit every put's
        # check keeps aside, so `balance` keeps it aside too.
        self._promised = promised
        # Authorizations sent to payees on other nodes, awaiting their receipts: their caps stay held,
        # across restarts too (the records are durable).
        self._pending_auths: dict[bytes, Authorization] = self.store.load_pending()
        # What each pending authorization holds: its cap, unless the caller holds in steps (a tab of remote
        # invokes holds what is in flight and what is metered: `hold_for`).  After a restart, its cap, until the
        # caller gives some back (`unhold_for`: a tab of remote invokes, once its tally is read).
        self._auth_held: dict[bytes, int] = {}
        for auth in self._pending_auths.values():
            self._held[auth.payer] = self._held.get(auth.payer, 0) + auth.cap
            self._auth_held[auth.id] = auth.cap

    # --- the API the rest of the node uses ------------------------------------------------
    async def ensure_credit(self, payer: Identity, amount: int, *, promised: int = 0) -> None:
        """Raise InsufficientCredit (saying how much is missing) unless `payer` can pay `amount` now, with `promised`
        (what earlier work will still cost it) kept aside.

        A pre-check before work: `settle` checks the limit again, atomically with the write."""
        self._ensure_credit(payer.public_key, amount, promised)

    def _ensure_credit(self, account: bytes, amount: int, promised: int = 0) -> None:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}")
        spendable = self.store.state(account).balance - self._held.get(account, 0) - promised
        if spendable - amount < -self.credit_limit:
            raise rules.credit_error(account, spendable, amount, self.credit_limit, promised)

    async def hold(self, payer: Identity, amount: int) -> None:
        """Set `amount` aside for work about to run (a compute call) whose settlement will follow (`settle_later`),
        or raise InsufficientCredit: the payer may hold what its balance shows `available`, what its puts' leases
        promise kept aside (`promised`).

        Held credit counts as spent for every later `ensure_credit` and `hold`, so work paid by
        settlements that are not yet written can never add up to more than the payer may spend."""
        await self.ensure_credit(payer, amount, promised=await self.promised(payer.public_key))
        self._held[payer.public_key] = self._held.get(payer.public_key, 0) + amount

    async def promised(self, account: bytes) -> int:
        """What `account`'s storage leases will still cost it (StorageService.promised): the client account's alone
        has leases of its own to pay; 0 for any other."""
        if account != self._client or self._promised is None:
            return 0
        return await self._promised()

    def settle_later(self, payer: Identity, payee: Identity, amount: int, usage: dict[str, int], job_ref: str,
                     *, held: int) -> None:
        """Queue a settlement and return at once.  The `held` budget is released now and replaced by the
        metered `amount`, which stays held until the settlement is written: so held credit never exceeds
        the budgets of the work still running plus what finished work owes (a backlog of whole budgets, held
        until written, made 402s under load).

        For work whose caller should not wait for an fsync (an invoke): the settlement is written by the
        next group commit, and `close()` writes every queued one before the node stops."""
        if amount > held:
            raise InvalidArgument(f"the metered amount {amount} exceeds the {held} held for it")
        request = new_settlement(payer, payee, amount, usage, job_ref, int(time.time()))
        future = asyncio.get_running_loop().create_future()
        account = payer.public_key
        self._held[account] = self._held.get(account, 0) - held + amount
        self._release(account, 0)  # drop an account whose hold is now zero

        def written(f: asyncio.Future) -> None:
            self._release(account, amount)
            if not f.cancelled() and f.exception() is not None:
                log.error("settlement %s was not written: %s", job_ref, f.exception())

        future.add_done_callback(written)
        self._enqueue(request, future)

    def replace_hold(self, payer: Identity, held: int, amount: int) -> None:
        """Work held `held` finished and owes `amount` (<= held): only the amount stays held until it is settled."""
        if amount > held:
            raise InvalidArgument(f"the metered amount {amount} exceeds the {held} held for it")
        self._held[payer.public_key] = self._held.get(payer.public_key, 0) - held + amount
        self._release(payer.public_key, 0)

    def add_hold(self, account: bytes, amount: int) -> None:
        """Hold `amount` owed for work already acknowledged (re-established from disk on start): never refused."""
        self._held[account] = self._held.get(account, 0) + amount

    def release(self, payer: Identity, amount: int) -> None:
        """Give back credit held for work that will not be settled (it was refused before it ran)."""
        self._release(payer.public_key, amount)

    def _release(self, account: bytes, amount: int) -> None:
        left = self._held.get(account, 0) - amount
        if left > 0:
            self._held[account] = left
        else:
            self._held.pop(account, None)

    def _enqueue(self, request: Settlement, future: asyncio.Future) -> None:
        self._pending.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())

    async def settle(self, payer: Identity, payee: Identity, amount: int, usage: dict[str, int], job_ref: str, *,
                     puts: Rows = (), deletes: tuple[bytes, ...] = (),
                     consumes: tuple[bytes, ...] = ()) -> str:
        """Settle a transfer for work `payee` did for `payer`; returns the id (hex) of the payer's entry.

        `puts` and `deletes` are written in the same synced batch, only if the transfer is settled.  `consumes`:
        records of what the transfer pays, deleted with it; NothingOwed, nothing settled, if one is gone already."""
        request = new_settlement(payer, payee, amount, usage, job_ref, int(time.time()))
        request.puts, request.deletes, request.consumes = puts, deletes, consumes
        future = asyncio.get_running_loop().create_future()
        self._enqueue(request, future)
        payment = await asyncio.shield(future)
        return payment.id.hex()

    async def _drain(self) -> None:
        """Settle queued requests group by group until none is left (runs even if callers go away)."""
        loop = asyncio.get_running_loop()
        while self._pending:
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            async with self._lock:
                now = int(time.time())
                try:
                    results = await loop.run_in_executor(self._writer, self.store.settle, [r for r, _ in group], now)
                except Exception as exc:  # nothing of the group was stored
                    results = [exc] * len(group)
            for (_, future), result in zip(group, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    # --- settlement across nodes ------------------------------------------------------
    async def authorize(self, payer: Identity, payee: bytes, cap: int, job_ref: str, *, ttl: int = 3600,
                        claim: tuple[int, dict[str, int]] | None = None, hold: int | None = None) -> Authorization:
        """Payer side, before the work: hold `cap`, sign an authorization for `payee`, and record it pending.

        With `hold`, only that much is held now: the caller holds the rest in steps, as the work it authorizes
        starts (`hold_for`, `unhold_for`), so held credit follows the work in flight, not the cap.  (After a
        restart a pending authorization holds its whole cap, what the payee may claim, until the caller gives back
        what it will not pay.)

        The pending record (and the `claim`, the amount and usage to ask the payee to countersign, if the payer
        already knows them) is on disk before this returns, so a crash never loses track of a promise the payee may
        act on; a restart holds it again.  A caller cancelled as it is written waits for it, and then it goes."""
        if not isinstance(payee, bytes) or len(payee) != 32:
            raise InvalidArgument("payee must be a 32-byte account key")
        if payee == payer.public_key:
            raise InvalidArgument("payer and payee must differ", hint="settle the node's own work with settle()")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 30 * 86400:
            raise InvalidArgument(f"ttl must be 1 to {30 * 86400} seconds, not {ttl!r}")
        claim_bytes = None
        if claim is not None:
            amount, usage = claim
            _check_amount(amount)
            if amount > cap:
                raise InvalidArgument(f"the claimed amount {amount} exceeds the cap {cap}")
            claim_bytes = codec.dumps({"amount": amount, "usage": dict(normalize_usage(usage))})
        held = cap if hold is None else hold
        if not 0 <= held <= cap:
            raise InvalidArgument(f"the amount held {held} must be 0 to the cap {cap}")
        # Not `hold`: what the leases promise is paid through authorizations like this one (a storage period's).
        await self.ensure_credit(payer, held)
        self._held[payer.public_key] = self._held.get(payer.public_key, 0) + held
        auth, written = None, []
        try:
            auth = authorize(payer, payee, cap, job_ref, int(time.time()) + ttl, os.urandom(16))
            await waited_out(asyncio.get_running_loop().run_in_executor(
                self._writer, self.store.add_pending, auth, claim_bytes), written.append)
        except BaseException:
            self.release(payer, held)
            if written:  # (cancelled once it was written)
                _withdraw(self._writer, self.store, auth.id)
            raise
        self._pending_auths[auth.id] = auth
        self._auth_held[auth.id] = held
        return auth

    def hold_for(self, auth: Authorization, amount: int, *, promised: int = 0) -> None:
        """Hold `amount` more under pending authorization `auth` (work it pays is starting), or raise
        InsufficientCredit; `promised` (`promised(auth.payer)`, for a compute call) kept aside, as `hold` does.
        Never above its cap: the most the payee may claim is held already."""
        held = self._auth_held.get(auth.id)
        if held is None:
            raise AuthorizationNotPending(f"authorization {auth.id.hex()} is not pending here")
        more = min(amount, auth.cap - held)
        self._ensure_credit(auth.payer, more, promised)
        self._held[auth.payer] = self._held.get(auth.payer, 0) + more
        self._auth_held[auth.id] = held + more

    def unhold_for(self, auth: Authorization, amount: int) -> None:
        """Give back `amount` held under `auth` (work it paid ended owing less than its budget)."""
        held = self._auth_held.get(auth.id)
        if held is None:
            return
        less = min(amount, held)
        self._auth_held[auth.id] = held - less
        self._release(auth.payer, less)

    def held_for(self, authorization_id: bytes) -> int:
        return self._auth_held.get(authorization_id, 0)

    def held(self, account: bytes) -> int:
        """Credit of `account` set aside now: budgets of work running, settlements not yet written."""
        return self._held.get(account, 0)

    def holding(self) -> dict[bytes, int]:
        """Every account that has credit set aside now, and how much (a copy)."""
        return dict(self._held)

    def pending(self) -> list[Authorization]:
        """Authorizations sent to payees elsewhere and not completed yet, soonest to expire first."""
        return sorted(self._pending_auths.values(), key=lambda a: (a.expires_at, a.id))

    def is_pending(self, authorization_id: bytes) -> bool:
        """Whether an authorization sent to a payee elsewhere is still neither completed nor dropped."""
        return authorization_id in self._pending_auths

    def claim(self, authorization_id: bytes) -> tuple[int, dict[str, int]] | None:
        """The amount and usage recorded with a pending authorization (None if it has none)."""
        data = self.store.claim(authorization_id)
        if data is None:
            return None
        record = codec.loads(data)
        return record["amount"], record["usage"]

    async def countersign(self, payee: Identity, authorization: Authorization, amount: int,
                          usage: dict[str, int], *, verified: bool = False, sender: str | None = None,
                          count: Count | None = None, written: Callable[[Receipt], None] | None = None) -> Receipt:
        """Payee side: append the receipt for `amount` and `usage` under the payer's authorization, its count on its
        sender's trust line (`count`: TrustLines.counting) in its batch and then `written(receipt)`, cancelled or not.

        Idempotent: an authorization already countersigned here with the same amount and usage gets its
        stored receipt back (another amount or usage is refused: ReceiptMismatch), neither counted nor `written` again:
        those follow the one call that wrote it, whichever of the requests for it that was."""
        _check_amount(amount)
        if not isinstance(authorization, Authorization):
            raise InvalidEntry("not an authorization")
        usage_pairs, now = normalize_usage(usage), int(time.time())

        def write() -> tuple[Receipt, bool]:  # (in the writer: whether this call wrote it, or found it written)
            fresh = self.store.settled_by(authorization.id) is None
            return self.store.countersign(payee, authorization, amount, usage_pairs, now, verified=verified,
                                          sender=sender, count=count), fresh

        def ended(outcome: tuple[Receipt, bool]) -> None:
            if outcome[1] and written is not None:
                written(outcome[0])

        async with self._lock:
            return (await waited_out(asyncio.get_running_loop().run_in_executor(self._writer, write), ended))[0]

    def check_countersign(self, payee: Identity, authorization: Authorization, amount: int,
                          usage: dict[str, int]) -> None:
        """What `countersign` refuses in the authorization and the claim themselves, whatever the chain holds
        (a negative or huge amount, bad usage, payer = payee, amount over the cap, an expired authorization), raised
        before a payee's own check of the claim records anything of it (a storage period counted as paid)."""
        _check_amount(amount)
        if not isinstance(authorization, Authorization):
            raise InvalidEntry("not an authorization")
        now = int(time.time())
        # (its body is encoded as it is made: an amount or a usage value past 2^63-1 is refused there)
        receipt = Receipt(payee.public_key, 1, b"\0" * 32, amount, now, normalize_usage(usage), authorization)
        rules.check_transfer(receipt)
        rules.check_fresh(receipt, now)

    async def complete(self, payer: Identity, receipt: Receipt,
                       also: Callable[[Payment], dict[bytes, bytes]] | None = None, *,
                       count: Count | None = None, written: Callable[[Payment], None] | None = None) -> Payment:
        """Payer side: append the payment countersigning the payee's receipt; drop the pending record, release
        the hold.  Idempotent: a receipt already completed gets its stored payment back, and nothing more is done.
        The rows `also(payment)` (what counts the payment elsewhere) and its count on its payee's trust line
        (`count`) are written in the payment's own batch, then `written(payment)`, all even if the caller is
        cancelled (`waited_out`)."""
        if not isinstance(receipt, Receipt):
            raise InvalidEntry("not a receipt: the payee must return its receipt entry")

        def completed(payment: Payment) -> None:
            # Pending until now: this call wrote the payment (a receipt completed before was no longer pending).
            if (auth := self._pending_auths.pop(receipt.authorization.id, None)) is not None:
                self._release(auth.payer, self._auth_held.pop(auth.id, auth.cap))
                if written is not None:
                    written(payment)

        async with self._lock:  # (cancelled, it waited for the write: what is kept in memory follows what was written)
            return await waited_out(asyncio.get_running_loop().run_in_executor(
                self._writer, functools.partial(self.store.complete, also=also, count=count), payer, receipt,
                int(time.time())), completed)

    async def abandon(self, authorization_id: bytes, *, force: bool = False) -> None:
        """Drop a pending authorization that expired without a receipt, and release its hold.

        Unless `force`, refused until it expired by more than the allowed clock skew: until then the
        payee may still countersign it (and a receipt would then have no payment).  A caller cancelled as its record
        is deleted waits for the delete: then it is neither pending nor held here, as on disk."""
        auth = self._pending_auths.get(authorization_id)
        if auth is None:
            raise AuthorizationNotPending(f"authorization {authorization_id.hex()} is not pending here")
        if not force and time.time() <= auth.expires_at + rules.CLOCK_SKEW:
            raise InvalidArgument(f"authorization {authorization_id.hex()} may still be countersigned until "
                                  f"{auth.expires_at + rules.CLOCK_SKEW}", hint="ask the payee for its receipt first")

        def dropped(_) -> None:
            if self._pending_auths.pop(authorization_id, None) is not None:
                self._release(auth.payer, self._auth_held.pop(authorization_id, auth.cap))

        async with self._lock:  # (cancelled, it waited for the delete: memory follows the disk)
            await waited_out(asyncio.get_running_loop().run_in_executor(
                self._writer, self.store.drop_pending, authorization_id), dropped)

    async def receipt_for(self, authorization_id: bytes) -> Receipt | None:
        """The receipt on a chain here that settled this authorization (payee side), if any."""
        return await self._read(self.store.receipt_for, authorization_id)

    async def asked_by(self, authorization_id: bytes) -> str | None:
        """The node that asked for the receipt under this authorization (`LedgerStore.countersign`), if kept."""
        return await self._read(asked_by, self.store.db, authorization_id)

    async def payment_for(self, authorization_id: bytes) -> Payment | None:
        return await self._read(self.store.payment_for, authorization_id)

    # --- entries from counterparties ----------------------------------------------------
    async def accept(self, encoded: list[bytes]) -> list[dict]:
        entries = []
        for n, data in enumerate(encoded):
            try:
                entries.append(decode_entry(data))
                rules.check_publishable(entries[-1])
            except InvalidEntry as exc:
                raise InvalidEntry(f"entry #{n + 1}: {exc.message}", hint="send entries in their canonical encoding "
                                   "as served by GET /v1/ledger/accounts/{id}/chain") from None
        if not entries:
            raise InvalidArgument("no entries given", hint='send {"entries": ["<hex>", ...]}')
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(
                self._writer, self.store.accept, entries, int(time.time()))

    # --- reads -----------------------------------------------------------------------------
    def account_key(self, text: str) -> bytes:
        """An account from its text form, a unique prefix of at least 4 characters of a known account's, or the
        role names `client` (the local user) and `node`."""
        for key, role in self.roles.items():
            if text == role:
                return key
        try:
            return parse_public_id(text)
        except XscError:
            if not (MIN_ACCOUNT_PREFIX <= len(text) < 52 and set(text) <= _ID_DIGITS):
                raise InvalidArgument(f"not an account: {quoted_id(text)}", hint="give an account id or a prefix of "
                                      "one (see: xsc ledger accounts), or client or node") from None
        known = {public_id(k): k for k in set(self.store.accounts) | set(self.roles)}
        return known[one_starting_with(text, known, what="known account", listing="xsc ledger accounts")]

    async def balance(self, account: bytes) -> dict[str, Any]:
        """`account_view` of `account`, the client account's with what its storage leases still promise kept aside:
        its `available` is what a put's credit check lets it spend."""
        if account != self._client or self._promised is None:
            return self.account_view(account)
        return self.account_view(account, await self.promised(account))

    def account_view(self, account: bytes, promised: int | None = None) -> dict[str, Any]:
        """The account's balance, credit and what it can spend; with `promised`, that much less (and said)."""
        state = self.store.state(account)
        held = self._held.get(account, 0)
        available = max(0, state.balance + self.credit_limit - held - (promised or 0))
        view = {
            "account": public_id(account),
            "role": self.roles.get(account),
            "balance": state.balance,
            "balance_credits": format_credits(state.balance),
            "credit_limit": self.credit_limit,
            "held": held,  # set aside for work not settled yet (pending authorizations, running calls)
            "available": available,
            "low": self.is_low(available),
            "low_balance_percent": self.low_balance,
            "seq": state.seq,
            "head": state.head.hex() if state.seq else None,
            "forked": state.forked,
        }
        if promised is not None:
            view["promised"] = promised  # the leases of puts still to pay, as their holders hold the shares
        return view

    def status(self, client: bytes, node: bytes) -> dict[str, Any]:
        """The ledger's part of the node status: the local user's and the node's balances."""
        client_view, node_view = self.account_view(client), self.account_view(node)
        return {"client_account": client_view["account"], "client_balance": client_view["balance"],
                "node_balance": node_view["balance"], "credit_limit": self.credit_limit}

    def is_low(self, available: int) -> bool:
        """Whether `available` credit is below `low_balance` percent of the credit limit (integer math)."""
        return available * 100 < self.low_balance * self.credit_limit

    def accounts(self) -> list[dict[str, Any]]:
        keys = set(self.store.accounts) | set(self.roles)
        views = [self.account_view(k) for k in keys]
        return sorted(views, key=lambda v: (v["role"] is None, v["role"] or "", v["account"]))

    def opening_entries(self) -> Iterator[tuple[bytes, Any]]:
        """Each account's first chain entry, (account, Receipt or Payment): one read an account, synchronous (a
        backfill's, as the node starts)."""
        for account in list(self.store.accounts):
            first = self.store.chain(account, 0, 1)
            if first:
                yield account, decode_entry(first[0])

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def verify(self, now: int | None = None) -> dict:
        started = time.perf_counter()
        report = await self._read(self.store.verify, int(time.time()) if now is None else now)
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["credit_limit"] = self.credit_limit
        return report

    async def retire(self, now: int | None = None) -> int:
        """Delete the records that are not kept for good and whose time has passed (Retirement.retire); how
        many.  Balances and entries never change by it."""
        now, retired = int(time.time()) if now is None else now, 0
        while True:
            async with self._lock:
                done = await asyncio.get_running_loop().run_in_executor(self._writer, self.store.retirement.retire, now)
            retired += done
            if done < RETIRE_BATCH:
                return retired

    # --- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        """Finish queued settlements, then stop the threads (the database is closed by the node)."""
        while self._drainer is not None and not self._drainer.done():
            await self._drainer
        async with self._lock:
            for pool in (self._writer, self._reader, self._crypto):
                pool.shutdown(wait=True)


def _withdraw(writer: Executor, store: LedgerStore, authorization_id: bytes) -> None:
    """An authorization whose caller was cancelled once its pending record was written: no payee ever saw it
    (`authorize` never returned it), so nothing can be claimed under it, and its record is deleted by the writer's
    next write, its hold released by the caller.  Never shown, it is not pending here meanwhile: no retry sends it."""
    try:
        writer.submit(store.drop_pending, authorization_id)
    except RuntimeError:  # (the writer is shut down: the next start drops it, or pays its claim, as after a kill -9)
        log.warning("authorization %s is left pending: its caller was cancelled as it was written, as the ledger "
                    "stopped writing", authorization_id.hex())


def _check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}")


__all__ = ["LedgerService"]
