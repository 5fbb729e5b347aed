"""Storage deals: which node holds each share of a file this node placed, at what price, until when,
and the payments for it.

A put matches one need slot per share on the market; each share's deal is (holder, bytes, price
per GiB-hour, start, end).  Holding is paid in arrears, per period, for the byte-hours actually
held, and only for periods in which the holder passed its audits:

- a holder with a failed audit since the deal was last paid forfeits that period (it is not paid,
  and the audit has already queued its share for repair);
- a holder with a passed audit since then (and no failure) is paid for everything held since;
- no audit since then: the period waits for the next audit (nothing is lost, nothing is paid blind).
  With audits turned off (`audit.blocks_per_round = 0`) there is nothing to wait for: periods are paid.
This node's own shares are checked by its scrubber: they are paid unless marked damaged.

Every payment is one ledger transfer by receipt (ledger/settlement.py, `Payments.pay`): the local
user pays the holder, with the job reference `store:<storage index>:<share>:<from>:<to>` the holder
checks before it signs the receipt (`HolderTerms.check_receipt`, on the holder's node).

    StorageDeals   the gateway's side: a deal per share placed (LevelDB `s/deals/`), moved by repairs,
                   ended by rm, extended by renewals, paid per period by `pay_due`
    HolderTerms    the holder's side: the terms each share was placed here under (`s/terms/`), refused
                   under this node's ask, and the check of the receipts it is asked to sign
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any


from .. import codec
from .. import keys
from ..db import Database
from ..errors import DealRefused, Forbidden, PeriodPaidAlready, XscError
from ..identity import parse_public_id, public_id
from ..ledger.core.pricing import byte_hours, price_storage, price_storage_period
from ..tasks import in_pool, periodic
from .share_store import ShareStore
from ..units import is_whole_number

log = logging.getLogger(__name__)

RECEIPT_SLACK = 300  # seconds a payment period may run past the lease (clock skew between nodes)
MAX_PRICE = 10**12  # micro-credits per GiB-hour: a million credits, far above any real bid
VERDICT_WAIT = 86400  # seconds a deal over waits for an audit of its holder before its last verdict decides


@dataclass
class StorageDeal:
    si: str  # storage index, hex
    share: int
    node: str  # the holder
    bytes: int  # block bytes of the share
    price: int  # micro-credits per GiB-hour
    start: int  # unix seconds
    end: int  # the lease end
    paid_until: int  # everything before this is settled (paid or forfeited)
    paid: int = 0  # micro-credits paid so far
    forfeited: int = 0  # seconds not paid because an audit failed
    ended: bool = False  # the share left that node (repair moved it, or the file was removed)
    paying: dict | None = None  # the period being paid now ({"to", "job"}), noted before the payment is sent

    def _fields(self) -> dict[str, Any]:
        # One level deep: dataclasses.asdict deep-copies every value, a tenth of a put's time on the loop (and
        # dataclasses.fields, asked for each deal, costs more than the copy).
        return self.__dict__.copy()

    def encode(self) -> bytes:
        return codec.dumps(self._fields())

    def cost(self, seconds: int) -> int:
        return price_storage(self.bytes, seconds, self.price)

    def period_cost(self, start: int, end: int) -> int:
        """What the period from `start` to `end` is paid: the periods of the deal add up to its total, however many
        (the holder asks exactly this: `HolderTerms.check_receipt`)."""
        return price_storage_period(self.bytes, start, end, self.price)

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in self._fields().items() if k != "paying"}, "total": self.cost(self.end - self.start)}


def _promise(deal: StorageDeal) -> int:
    """What `deal` still promises (micro-credits): its cost from `paid_until` to its end, if it runs."""
    return deal.cost(deal.end - deal.paid_until) if not deal.ended and deal.end > deal.paid_until else 0


Pay = Callable[[str, int, dict[str, int], str], Awaitable[str]]  # (payee node, amount, usage, job) -> entry id
PaidFor = Callable[[str], "tuple[str, int] | None"]  # job -> ("paid", amount) | ("pending", cap) | None


class StorageDeals:
    def __init__(self, *, db: Database, me: str, store: ShareStore, pool: Executor, pay: Pay, paid_for: PaidFor,
                 audits_on: bool, payment_interval: float) -> None:
        self.db = db
        self.me = me
        self.store = store
        self.pool = pool
        self.pay = pay
        self.paid_for = paid_for  # asked when a period was being paid as the node stopped
        self.audits_on = audits_on  # off (audit.blocks_per_round = 0): there is no audit to wait for
        self.payment_interval = payment_interval
        self.audits: dict[str, dict[str, int]] = {}
        for key, value in self.db.iterator(prefix=keys.HOLDER_AUDITS):
            self.audits[public_id(key[len(keys.HOLDER_AUDITS):])] = codec.loads(value)
        self._lock = asyncio.Lock()
        self.last_run: dict[str, Any] | None = None
        # summary()'s reading of every deal, kept until a deal is written (`_writes` counts the writes; a
        # reading begun before a write is never kept as current).  The dashboard polls it.
        self._writes = 0
        self._summary: tuple[int, list[StorageDeal], list[StorageDeal], int] | None = None
        # outstanding()'s total: read from every deal once, then kept up by every write of a deal (`_wrote`): every put
        # asks it, and reading every deal grows with what is stored.
        self._outstanding: int | None = None
        self._outstanding_lock = threading.Lock()
        # Held while a deal record is read and written again: a payment run writes what it changed while it runs (in
        # the pool), and a repair may move a share's deal (on the loop) or a removal end it (in the pool) meanwhile.
        self._records = threading.RLock()

    # --- records -------------------------------------------------------------------------
    def record(self, si: bytes, placement: list[str], share_bytes: int, prices: dict[int, int], start: int,
               end: int, shares: set[int] | None = None) -> list[StorageDeal]:
        """The deals of a file's shares (`shares`: of only these, default all), each at its price in `prices`."""
        deals = self.make(si, placement, share_bytes, prices, start, end, shares)
        with self.db.write_batch(sync=True) as batch:
            for key, value in self.entries(si, deals).items():
                batch.put(key, value)
        self.written(deals)
        return deals

    @staticmethod
    def make(si: bytes, placement: list[str], share_bytes: int, prices: dict[int, int], start: int, end: int,
             shares: set[int] | None = None) -> list[StorageDeal]:
        return [StorageDeal(si.hex(), s, node, share_bytes, prices[s], start, end, start)
                for s, node in enumerate(placement) if shares is None or s in shares]

    @staticmethod
    def entries(si: bytes, deals: list[StorageDeal]) -> dict[bytes, bytes]:
        """The records of `deals`, to write in a batch of the caller's (then tell `written`)."""
        return {keys.storage_deal(si, d.share): d.encode() for d in deals}

    def written(self, deals: list[StorageDeal]) -> None:
        """New `deals` are on disk: what they promise counts in `outstanding`."""
        self._wrote(sum(_promise(d) for d in deals))

    def _wrote(self, change: int) -> None:
        """Deals were written (after their batch): `change` is what they promise now less what they promised."""
        with self._outstanding_lock:
            self._writes += 1
            if self._outstanding is not None:
                self._outstanding += change

    def of_file(self, si: bytes) -> list[StorageDeal]:
        return [StorageDeal(**codec.loads(v)) for _, v in self.db.iterator(prefix=keys.storage_deals_of(si))]

    def all(self) -> list[StorageDeal]:
        return [StorageDeal(**codec.loads(v)) for _, v in self.db.iterator(prefix=keys.STORAGE_DEALS)]

    def outstanding(self, now: int | None = None) -> int:
        """What the running deals will still cost until their ends (micro-credits): credit already promised.
        With `now`, from `now` on, read from every deal.  Without, from each deal's `paid_until` on (what is held but
        not paid yet is promised too: it is paid once audited), read from every deal once, then kept up by every
        write of a deal: what a put asks, in time that does not grow with what is stored."""
        if now is not None:
            return self._promised(now)
        with self._outstanding_lock:
            if self._outstanding is not None:
                return self._outstanding
            writes = self._writes
        value = self._promised()
        with self._outstanding_lock:
            if self._writes == writes:  # no deal written while they were read: the total is whole
                self._outstanding = value
        return value

    def recent_outstanding(self) -> int | None:
        """`outstanding()` if it is known without reading every deal (None: read it with `outstanding`, in the
        pool)."""
        return self._outstanding

    def _promised(self, now: int | None = None) -> int:
        if now is None:
            return sum(_promise(d) for d in self.all())
        return sum(d.cost(d.end - max(d.paid_until, now)) for d in self.all()
                   if not d.ended and d.end > max(d.paid_until, now))

    def _save(self, deals: list[StorageDeal]) -> None:
        change = 0
        with self._records, self.db.write_batch(sync=True) as batch:
            for d in deals:
                key = keys.storage_deal(bytes.fromhex(d.si), d.share)
                before = self.db.get(key)
                change += _promise(d) - (_promise(StorageDeal(**codec.loads(before))) if before else 0)
                batch.put(key, d.encode())
        self._wrote(change)

    def _save_paid(self, deals: list[StorageDeal]) -> set[tuple[str, int]]:
        """What a payment run changed in `deals` (read as it began), written onto each deal as it is now.  A deal
        that a repair replaced meanwhile (the share moved: another holder's deal is at its key) is left as it is: the
        run's stale copy would put the old holder back, and the new one would never be paid.  Returns the (storage
        index, share) of the deals written."""
        with self._records:
            current = []
            for d in deals:
                raw = self.db.get(keys.storage_deal(bytes.fromhex(d.si), d.share))
                now = StorageDeal(**codec.loads(raw)) if raw else None
                if now is None or (now.node, now.start) != (d.node, d.start):
                    log.info("share %d of %s moved during a payment run: its new deal is kept", d.share, d.si)
                    continue
                now.paid, now.paid_until, now.forfeited, now.paying = d.paid, d.paid_until, d.forfeited, d.paying
                current.append(now)
            self._save(current)
        return {(d.si, d.share) for d in current}

    def moved(self, si: bytes, moves: Mapping[int, tuple[str, int | None]], at: int,
              also: Callable[[Any], None] | None = None) -> None:
        """A repair put shares on other nodes (share -> (node, price; None: the old deal's price)): each old holder's
        deal ends now (unpaid since its last audit pass: the share left because it failed), the new holder's runs to
        the lease end.  `also(batch)` adds what must be written with them (the file's placement): one synced write,
        or nothing written if it fails."""
        change = 0
        with self._records:
            current = {d.share: d for d in self.of_file(si)}
            with self.db.write_batch(sync=True, transaction=True) as batch:
                for share, (node, price) in moves.items():
                    old = current.get(share)
                    if old is None or old.node == node:
                        continue
                    new = StorageDeal(old.si, share, node, old.bytes, old.price if price is None else price, at,
                                      old.end, at)
                    change += _promise(new) - _promise(old)
                    old.forfeited += max(0, min(at, old.end) - old.paid_until)
                    old.paid_until, old.end, old.ended = at, at, True
                    log.info("share %d of %s moved from %s to %s: %s was paid %d, forfeited %d s", share,
                             old.si, old.node, node, old.node, old.paid, old.forfeited)
                    batch.put(keys.storage_ended(si, share, at), old.encode())
                    batch.put(keys.storage_deal(si, share), new.encode())
                if also is not None:
                    also(batch)
        self._wrote(change)

    def _forget_settled(self, deals: list[StorageDeal], began: int) -> int:
        """Drop the deals of every file that is gone from this node (removed, or its leases ended and collected) once
        each of them is settled to its end: nothing is left to pay or forfeit, and a deal kept would be read by
        every payment run for good.  The deals that ended when a repair moved a share go with them.  `deals`: every
        deal as the payment run left it (each file found settled there is read again before it goes).  Then the
        audit marks of the holders no deal names (`_forget_audits`).  Returns how many files' deals were dropped."""
        by_file: dict[str, list[StorageDeal]] = {}
        for d in deals:
            by_file.setdefault(d.si, []).append(d)
        gone = 0
        kept = set(by_file)
        for si_hex, its_deals in by_file.items():
            si = bytes.fromhex(si_hex)
            if any(d.paid_until < d.end or d.paying is not None for d in its_deals) or self.store.known_file(si):
                continue
            with self._records:
                if any(d.paid_until < d.end or d.paying is not None for d in self.of_file(si)):
                    continue  # moved or extended since it was read
                with self.db.write_batch(sync=True) as batch:
                    for prefix in (keys.storage_deals_of(si), keys.storage_ended_of(si)):
                        for key in self.db.iterator(prefix=prefix, include_value=False):
                            batch.delete(key)
            self._wrote(0)  # settled deals promise nothing: only the summary's reading changes
            gone += 1
            kept.discard(si_hex)
        self._forget_audits({d.node for si_hex in kept for d in by_file[si_hex]}, began)
        return gone

    def _forget_audits(self, named: set[str], began: int) -> None:
        """Drop the audit marks of the holders that no deal names (a deal's verdict is all that reads them): kept,
        they would grow with every node this node ever placed a share on.  A mark written since the payment run
        `began` stays (a share placed on that holder meanwhile)."""
        gone = [node for node, marks in list(self.audits.items())
                if node not in named and max(marks.values(), default=0) < began]
        if gone:
            with self.db.write_batch() as batch:
                for node in gone:
                    batch.delete(keys.holder_audit(parse_public_id(node)))
            for node in gone:
                self.audits.pop(node, None)

    def ended_deals(self, si: bytes) -> list[StorageDeal]:
        """The deals of a file's shares that ended when a repair moved the share, oldest first."""
        return [StorageDeal(**codec.loads(v)) for _, v in self.db.iterator(prefix=keys.storage_ended_of(si))]

    def removed(self, si: bytes, at: int) -> None:
        """The file was removed: its deals end now (what was held until now is still paid)."""
        self.removed_all({si: at})

    def removed_all(self, removed: Mapping[bytes, int]) -> None:
        """`removed` of each file (storage index: when it was removed), in one synced write."""
        with self._records:
            deals = [d for si in removed for d in self.of_file(si) if not d.ended]
            for d in deals:
                d.end, d.ended = min(d.end, removed[bytes.fromhex(d.si)]), True
            self._save(deals)

    def extended(self, si: bytes, lease_end: int, shares: set[int]) -> list[StorageDeal]:
        """The leases of `shares` were renewed to `lease_end`: their deals run (and are paid) until then."""
        with self._records:
            deals = [d for d in self.of_file(si) if not d.ended and d.end < lease_end and d.share in shares]
            for d in deals:
                d.end = lease_end
            self._save(deals)
        return deals

    # --- audits ------------------------------------------------------------------------------
    def note_audit(self, node: str, ok: bool, at: int | None = None) -> None:
        at = int(time.time()) if at is None else at
        marks = self.audits.setdefault(node, {})
        marks["ok" if ok else "failed"] = at
        self.db.put(keys.holder_audit(parse_public_id(node)), codec.dumps(marks))

    def verdict(self, deal: StorageDeal, now: int) -> bool | None:
        """Has the holder earned the period since `paid_until`?  True pay, False forfeit, None wait.  A deal over
        (its file removed, or its lease ended) waits VERDICT_WAIT for an audit of its holder, then its holder's last
        verdict before decides (none: forfeited): nothing of it is audited any more, and a holder with no other
        share of this node's would be audited never again, its deal never settled and its promise kept for good."""
        if deal.node == self.me:
            return deal.share not in self.store.damaged(bytes.fromhex(deal.si))
        if not self.audits_on:
            return True
        marks = self.audits.get(deal.node, {})
        if marks.get("failed", -1) >= deal.paid_until:
            return False
        if marks.get("ok", -1) >= deal.paid_until:
            return True
        if now >= deal.end + VERDICT_WAIT:
            return marks.get("ok", -1) > marks.get("failed", -1)
        return None

    # --- payments ----------------------------------------------------------------------------
    async def pay_due(self, now: int | None = None) -> dict[str, Any]:
        """Pay every deal what it earned since it was last paid; returns what was paid and skipped.

        A run costs two synced writes however many deals it pays: every payment is noted before any is sent (a
        crash in between must not pay a period twice: the next run asks the ledger, `_settle_interrupted`), and
        what the run changed is written once they are sent."""
        began = int(time.time())
        now = began if now is None else now
        summary = {"paid": 0, "payments": 0, "forfeited": 0, "waiting": 0, "failed": 0}
        async with self._lock:
            changed: dict[tuple[str, int], StorageDeal] = {}
            due: list[tuple[StorageDeal, int]] = []
            every_deal = await in_pool(self.pool, self.all)
            for deal in every_deal:
                if deal.paying is not None:
                    if not await self._settle_interrupted(deal, summary):
                        continue
                    changed[deal.si, deal.share] = deal
                paid_until = deal.paid_until
                amount = self._owed(deal, min(now, deal.end), now, summary)
                if amount is not None:
                    due.append((deal, amount))
                elif deal.paid_until != paid_until:
                    changed[deal.si, deal.share] = deal
            if due:
                noted = await in_pool(self.pool, self._save_paid, [deal for deal, _ in due])
                due = [(deal, amount) for deal, amount in due if (deal.si, deal.share) in noted]  # not those moved
            for deal, amount in due:
                if await self._send(deal, amount, summary):
                    changed[deal.si, deal.share] = deal
            if changed:
                await in_pool(self.pool, self._save_paid, list(changed.values()))
            summary["forgotten"] = await in_pool(self.pool, self._forget_settled, every_deal, began)
        self.last_run = {"at": now, **summary}
        return summary

    def _owed(self, deal: StorageDeal, until: int, now: int, summary: dict) -> int | None:
        """What `deal` earned up to `until`, its payment noted in `deal.paying`; None if nothing is to be sent (not
        due, its audits not yet decided, or forfeited: then `paid_until` moves on unpaid)."""
        if until <= deal.paid_until:
            return None
        verdict = self.verdict(deal, now)
        if verdict is None:
            summary["waiting"] += 1
            return None
        if verdict is False:
            deal.forfeited += until - deal.paid_until
            deal.paid_until = until
            summary["forfeited"] += 1
            log.warning("not paying %s for share %d of %s: it failed an audit, or passed none since it was last paid "
                        "and its deal is over", deal.node, deal.share, deal.si)
            return None
        deal.paying = {"to": until, "job": f"store:{deal.si}:{deal.share}:{deal.paid_until}:{until}"}
        return deal.period_cost(deal.paid_until, until)

    async def _send(self, deal: StorageDeal, amount: int, summary: dict) -> bool:
        """Pay the period noted in `deal.paying`; whether it was paid (if not, the next run finds out or retries)."""
        until = deal.paying["to"]
        try:
            await self.pay(deal.node, amount, {"byte_hours": byte_hours(deal.bytes, until - deal.paid_until)},
                           deal.paying["job"])
        except XscError as err:
            summary["failed"] += 1
            summary["why"] = err.with_hint  # `market status` says why beside the count (the last one's)
            log.warning("payment for share %d of %s to %s failed (retried next run): %s", deal.share, deal.si,
                        deal.node, err)
            return False
        deal.paid += amount
        deal.paid_until, deal.paying = until, None
        summary["paid"] += amount
        summary["payments"] += 1
        return True

    async def _settle_interrupted(self, deal: StorageDeal, summary: dict) -> bool:
        """A period was being paid when the node stopped: find out whether it was; whether to go on paying."""
        found = await in_pool(self.pool, self.paid_for, deal.paying["job"])
        if found is not None and found[0] == "pending":
            summary["waiting"] += 1  # the payment retry finishes (or abandons) it first
            return False
        if found is not None:
            deal.paid += found[1]
            deal.paid_until = deal.paying["to"]
        deal.paying = None  # written with what the run changes (a crash before that only asks the ledger again)
        return True

    def start(self) -> None:
        # What the running deals promise, read before the node takes a request: read while puts write deals, the total
        # could not be kept (a deal written meanwhile), and each put's quote would read every deal again.
        self.outstanding()

    def loops(self) -> dict[str, Any]:
        return {"storage-payments": periodic("storage-payments", self.payment_interval, self.pay_due)}

    def close(self) -> None:
        pass

    def summary(self, shown: int | None = None) -> dict[str, Any]:
        """The deals still running, how many are settled, and the last payment run (for `market status`);
        with the newest ended deals too (at most 50).  `shown`: at most that many deals of each list."""
        writes, cached = self._writes, self._summary
        if cached is not None and cached[0] == writes:
            _, running, ended, count = cached
        else:
            every_deal = self.all()
            running = [d for d in every_deal if d.paid_until < d.end]
            ended = [d for d in every_deal if d.paid_until >= d.end]
            count = len(every_deal)
            self._summary = (writes, running, ended, count)
        shown = count if shown is None else shown
        return {"deals": [d.to_json() for d in running[:shown]], "deals_live": len(running),
                "deals_settled": count - len(running), "payments": self.last_run,
                "ended_deals": [d.to_json() for d in ended[max(0, len(ended) - min(50, shown)):]]}

    def of_file_view(self, si: bytes) -> dict[str, Any]:
        """One file's deals, with those that ended when a repair moved a share, and this node's id (the holder its
        rows call "this node")."""
        return {"deals": [d.to_json() for d in self.of_file(si)], "ended": [d.to_json() for d in self.ended_deals(si)],
                "node": self.me}


# --- the holder's side ----------------------------------------------------------------------
class HolderTerms:
    """The terms each share held here was placed under, and the receipts this node signs for holding them."""

    def __init__(self, *, db: Database, store: ShareStore, ask: Callable[[], int | None]) -> None:
        self.db = db
        self.store = store
        self.ask = ask  # the lowest storage price this node takes now (None: it offers no storage)

    def get(self, si: bytes, share: int) -> dict | None:
        raw = self.db.get(keys.holder_terms(si, share))
        return codec.loads(raw) if raw else None

    def forget(self, si: bytes, share: int) -> None:
        self.db.delete(keys.holder_terms(si, share), sync=True)

    def check_price(self, price: Any) -> int:
        """A gateway offers this node a share at `price` per GiB-hour: refused under our ask."""
        if type(price) is not int or not 0 <= price <= MAX_PRICE:
            raise DealRefused("a share upload must name its deal price (micro-credits per GiB-hour, an integer)",
                              hint="place shares through the market (xsc store put)")
        ask = self.ask()
        if ask is None:
            raise DealRefused("this node does not offer storage now", hint="choose another provider (xsc market book)")
        if price < ask:
            raise DealRefused(f"the deal price {price} is under this node's ask of {ask} per GiB-hour",
                              hint="the market moved: match the need again", ask=ask, price=price)
        return price

    @staticmethod
    def check_payer(payer: Any) -> str | None:
        """The account a gateway names as the payer of a share (None: the first account that pays it)."""
        if payer is None:
            return None
        if not isinstance(payer, str) or len(payer) > 64:
            raise DealRefused("the payer of a share upload must be an account id", hint="see: xsc ledger balance")
        parse_public_id(payer)
        return payer

    @staticmethod
    def new(uploader: str, price: int, share_bytes: int, placed: int, payer: str | None = None) -> dict:
        terms = {"uploader": uploader, "price": price, "bytes": share_bytes, "placed": placed, "paid_until": placed}
        if payer is not None:
            terms["payer"] = payer
        return terms

    @staticmethod
    def entry(si: bytes, share: int, terms: dict) -> dict[bytes, bytes]:
        """The record to publish with the share (ShareStore.publish `also`)."""
        return {keys.holder_terms(si, share): codec.dumps(terms)}

    def _paid(self, si: bytes, share: int, terms: dict, until: int, payer: str) -> None:
        paid = {**terms, "paid_until": max(until, terms.get("paid_until", 0)), "payer": terms.get("payer", payer),
                "paid": True}
        if paid != terms:
            self.db.put(keys.holder_terms(si, share), codec.dumps(paid))

    def unpaid(self, before: int) -> list[tuple[bytes, int, dict]]:
        """The shares held for other nodes that nobody has paid for since `before` (nor were placed since)."""
        out = []
        for key, value in self.db.iterator(prefix=keys.HOLDER_TERMS):
            terms = codec.loads(value)
            if max(terms.get("placed", 0), terms.get("paid_until", 0)) < before:
                si, share = keys.split_holder_terms(key)
                out.append((si, share, terms))
        return out

    async def check_receipt(self, sender: str, authorization, amount: int, usage: dict[str, int]) -> None:
        """Sign a storage receipt only for a share we hold (or held) for `sender`, paid by the account the deal
        names, for the byte-hours of a past period since the deal began, at exactly the deal price (an amount
        above it would credit this node with what nobody owes: a stranger's throwaway key could push its
        balance anywhere), as a period of the lease is priced: `price_storage_period`, which may be 0."""
        parts = authorization.job.split(":")
        if len(parts) != 5 or not all(is_whole_number(p) for p in parts[2:]) or len(parts[1]) != 64:
            raise Forbidden(f"not a storage job reference: {authorization.job[:80]!r}",
                            hint="store:<storage index>:<share>:<from>:<to>")
        si, share, start, end = bytes.fromhex(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
        terms = self.get(si, share)
        meta = self.store.share_meta(si, share)
        if terms is None or terms["uploader"] != sender:
            raise Forbidden("this node holds no share of that file for the sender", hint="pay the share's holder")
        if end <= start or end > int(time.time()) + RECEIPT_SLACK:
            raise Forbidden("the payment period is not a past period", hint="pay for time already held")
        if meta is not None and end > meta.lease_expiry + RECEIPT_SLACK:
            raise Forbidden("the payment period runs past the share's lease", hint="renew the lease first")
        stored = terms["bytes"]
        expected = byte_hours(stored, end - start)
        if set(usage) != {"byte_hours"} or usage["byte_hours"] != expected:
            raise Forbidden(f"the usage claimed does not match the share held: expected byte_hours={expected}")
        payer = public_id(authorization.payer)
        if "payer" in terms and payer != terms["payer"]:
            raise Forbidden(f"the deal for that share is paid by account {terms['payer']}, not {payer}",
                            hint="pay from the account the upload named (or that paid it first)")
        if start < terms.get("placed", 0) - RECEIPT_SLACK:
            raise Forbidden("the payment period starts before the deal began", hint="pay for time already held")
        # Each receipt is an entry on this node's chain for good: the same second claimed again and again, each time
        # with a fresh authorization, made as many of them.  So a period must reach past what is paid (at most a
        # receipt a second of the lease).  It may begin before that: a payer that gave up on a payment this node
        # had countersigned (this node unreachable for a day) pays from where its own record ends.
        paid_until = terms.get("paid_until", 0)
        if terms.get("paid") and end <= paid_until:
            raise PeriodPaidAlready(f"the share is paid up to {paid_until}: a period ending at {end} is paid already",
                            hint="pay from where the last payment ended", paid_until=paid_until)
        due = price_storage_period(stored, start, end, terms["price"])
        if amount != due:
            raise Forbidden(f"the amount {amount} is not the deal price for that period ({due} micro-credits: "
                            f"{terms['price']} per GiB-hour for {expected} byte-hours)", hint="pay exactly what is due")
        # Its receipt is signed next: the holder counts the period as paid, and the deal's payer is now fixed.
        self._paid(si, share, terms, end, payer)


__all__ = ["HolderTerms", "RECEIPT_SLACK", "StorageDeal", "StorageDeals"]
