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
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import plyvel

from ..errors import InvalidArgument, InvalidEntry, XscError
from ..identity import Identity, parse_public_id, public_id
from . import rules
from .model import decode_entry, entry_json, format_credits
from .store import LedgerStore, Settlement, ThreadedMap, new_settlement

MAX_GROUP = 512  # settlements per write batch
log = logging.getLogger(__name__)


class LedgerService:
    def __init__(self, db: plyvel.DB, credit_limit: int, *, node: Identity | None = None,
                 client: Identity | None = None, threads: int | None = None) -> None:
        cores = max(1, threads or os.cpu_count() or 2)
        # Ed25519 releases the GIL: settlement groups and verification spread signatures over every core.
        self._crypto = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="xsc-ledger-crypto")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsc-ledger-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xsc-ledger-reader")
        self.store = LedgerStore(db, credit_limit, ThreadedMap(self._crypto, cores - 1))
        self.credit_limit = credit_limit
        self.roles = {k.public_key: role for k, role in ((node, "node"), (client, "client")) if k is not None}
        self._lock = asyncio.Lock()
        self._pending: list[tuple[Settlement, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._held: dict[bytes, int] = {}  # credit set aside for settlements not yet written

    # --- the API the rest of the node uses ------------------------------------------------
    async def ensure_credit(self, payer: Identity, amount: int) -> None:
        """Raise InsufficientCredit (saying how much is missing) unless `payer` can pay `amount` now.

        A pre-check before work: `settle` checks the limit again, atomically with the write."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidArgument(f"amount must be a non-negative integer of micro-credits, not {amount!r}")
        spendable = self.store.state(payer.public_key).balance - self._held.get(payer.public_key, 0)
        if spendable - amount < -self.credit_limit:
            raise rules.credit_error(payer.public_key, spendable, amount, self.credit_limit)

    async def hold(self, payer: Identity, amount: int) -> None:
        """Set `amount` aside for a settlement that will follow (`settle_later`), or raise InsufficientCredit.

        Held credit counts as spent for every later `ensure_credit` and `hold`, so work paid by
        settlements that are not yet written can never add up to more than the payer may spend."""
        await self.ensure_credit(payer, amount)
        self._held[payer.public_key] = self._held.get(payer.public_key, 0) + amount

    def settle_later(self, payer: Identity, payee: Identity, amount: int, usage: dict[str, int], job_ref: str,
                     *, held: int) -> None:
        """Queue a settlement and return at once; the `held` credit is released when it is written.

        For work whose caller should not wait for an fsync (an invoke): the settlement is written by the
        next group commit, and `close()` writes every queued one before the node stops.  A crash in
        between loses the provider's payment for that work, never the payer's credit."""
        request = new_settlement(payer, payee, amount, usage, job_ref, int(time.time()))
        future = asyncio.get_running_loop().create_future()

        def written(f: asyncio.Future) -> None:
            self.release(payer, held)
            if not f.cancelled() and f.exception() is not None:
                log.error("settlement %s was not written: %s", job_ref, f.exception())

        future.add_done_callback(written)
        self._enqueue(request, future)

    def release(self, payer: Identity, amount: int) -> None:
        """Give back credit held for work that will not be settled (it was refused before it ran)."""
        left = self._held.get(payer.public_key, 0) - amount
        if left > 0:
            self._held[payer.public_key] = left
        else:
            self._held.pop(payer.public_key, None)

    def _enqueue(self, request: Settlement, future: asyncio.Future) -> None:
        self._pending.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())

    async def settle(self, payer: Identity, payee: Identity, amount: int, usage: dict[str, int], job_ref: str) -> str:
        """Settle a transfer for work `payee` did for `payer`; returns the id (hex) of the payer's entry."""
        request = new_settlement(payer, payee, amount, usage, job_ref, int(time.time()))
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

    # --- entries from counterparties ----------------------------------------------------
    async def accept(self, encoded: list[bytes]) -> list[dict]:
        entries = []
        for n, data in enumerate(encoded):
            try:
                entries.append(decode_entry(data))
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
        """An account from its text form, or the role names `client` (the local user) and `node`."""
        for key, role in self.roles.items():
            if text == role:
                return key
        try:
            return parse_public_id(text)
        except XscError:
            raise InvalidArgument(f"not an account: {text!r}",
                                  hint="give an account id (see: xsc ledger accounts), or client or node") from None

    def account_view(self, account: bytes) -> dict[str, Any]:
        state = self.store.state(account)
        return {
            "account": public_id(account),
            "role": self.roles.get(account),
            "balance": state.balance,
            "balance_credits": format_credits(state.balance),
            "credit_limit": self.credit_limit,
            "available": max(0, state.balance + self.credit_limit),
            "seq": state.seq,
            "head": state.head.hex() if state.seq else None,
            "forked": state.forked,
        }

    def accounts(self) -> list[dict[str, Any]]:
        keys = set(self.store.accounts) | set(self.roles)
        views = [self.account_view(k) for k in keys]
        return sorted(views, key=lambda v: (v["role"] is None, v["role"] or "", v["account"]))

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def chain(self, account: bytes, from_seq: int, limit: int) -> list[dict]:
        records = await self._read(self.store.chain, account, from_seq, limit)
        return [entry_json(decode_entry(data)) for data in records]

    async def history(self, account: bytes, limit: int) -> list[dict]:
        return [entry_json(e) for e in await self._read(self.store.history, account, limit)]

    async def entry(self, ref: str) -> dict:
        return entry_json(await self._read(self.store.entry, ref))

    def export_lines(self) -> Iterator[bytes]:
        """Every entry as one JSON line (blocking: iterate in a thread)."""
        import json

        for _, _, data in self.store.entries():
            yield json.dumps(entry_json(decode_entry(data)), sort_keys=True).encode() + b"\n"

    async def verify(self) -> dict:
        started = time.perf_counter()
        report = await self._read(self.store.verify)
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["credit_limit"] = self.credit_limit
        return report

    # --- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        """Finish queued settlements, then stop the threads (the database is closed by the node)."""
        while self._drainer is not None and not self._drainer.done():
            await self._drainer
        async with self._lock:
            for pool in (self._writer, self._reader, self._crypto):
                pool.shutdown(wait=True)


__all__ = ["LedgerService"]
