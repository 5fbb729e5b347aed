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

Every payment is one ledger transfer (`payments.pay_node`): the local user pays the holder, with
the job reference `store:<storage index>:<share>:<from>:<to>` the holder checks before it signs
the receipt (`check_storage_receipt`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .. import keys
from ..errors import DealRefused, Forbidden, XscError
from ..identity import parse_public_id
from ..ledger import byte_hours, price_storage
from .context import CONFIG, CPU_POOL, DB, IDENTITY

log = logging.getLogger(__name__)

RECEIPT_SLACK = 300  # seconds a payment period may run past the lease (clock skew between nodes)


@dataclass
class Deal:
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

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    def cost(self, seconds: int) -> int:
        return price_storage(self.bytes, seconds, self.price)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.cost(self.end - self.start)}


def lease_cost(share_bytes: int, seconds: int, price: int) -> int:
    return price_storage(share_bytes, seconds, price)


class DealService:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.db = app[DB]
        self.me = app[IDENTITY].id
        self.audits: dict[str, dict[str, int]] = {}
        for key, value in self.db.iterator(prefix=keys.MARKET_AUDITS):
            from ..identity import public_id

            self.audits[public_id(key[len(keys.MARKET_AUDITS):])] = json.loads(value)
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.last_run: dict[str, Any] | None = None

    # --- records -------------------------------------------------------------------------
    def record(self, si: bytes, placement: list[str], share_bytes: int, prices: dict[int, int], start: int,
               end: int) -> list[Deal]:
        deals = [Deal(si.hex(), s, node, share_bytes, prices[s], start, end, start) for s, node in enumerate(placement)]
        with self.db.write_batch(sync=True) as batch:
            for d in deals:
                batch.put(keys.market_deal(si, d.share), d.encode())
        return deals

    def of_file(self, si: bytes) -> list[Deal]:
        return [Deal(**json.loads(v)) for _, v in self.db.iterator(prefix=keys.market_deals_of(si))]

    def all(self) -> list[Deal]:
        return [Deal(**json.loads(v)) for _, v in self.db.iterator(prefix=keys.MARKET_DEALS)]

    def _save(self, deals: list[Deal]) -> None:
        with self.db.write_batch(sync=True) as batch:
            for d in deals:
                batch.put(keys.market_deal(bytes.fromhex(d.si), d.share), d.encode())

    def moved(self, si: bytes, share: int, node: str, at: int, price: int | None) -> None:
        """A repair put the share on `node`: the old holder's deal ends now (unpaid since its last audit
        pass: the share left because it failed), the new holder's runs to the lease end at `price` (None:
        the old deal's price)."""
        old = next((d for d in self.of_file(si) if d.share == share), None)
        if old is None or old.node == node:
            return
        new = Deal(old.si, share, node, old.bytes, old.price if price is None else price, at, old.end, at)
        old.forfeited += max(0, min(at, old.end) - old.paid_until)
        old.paid_until, old.end, old.ended = at, at, True
        log.info("share %d of %s moved from %s to %s: %s was paid %d, forfeited %d s", share, old.si[:16],
                 old.node[:12], node[:12], old.node[:12], old.paid, old.forfeited)
        with self.db.write_batch(sync=True) as batch:
            batch.put(keys.market_ended_deal(si, share, at), old.encode())
            batch.put(keys.market_deal(si, share), new.encode())

    def ended_deals(self, si: bytes) -> list[Deal]:
        """The deals of a file's shares that ended when a repair moved the share, oldest first."""
        return [Deal(**json.loads(v)) for _, v in self.db.iterator(prefix=keys.market_ended_deals_of(si))]

    def removed(self, si: bytes, at: int) -> None:
        """The file was removed: its deals end now (what was held until now is still paid)."""
        deals = [d for d in self.of_file(si) if not d.ended]
        for d in deals:
            d.end = min(d.end, at)
        self._save(deals)

    def extended(self, si: bytes, lease_end: int, shares: set[int]) -> list[Deal]:
        """The leases of `shares` were renewed to `lease_end`: their deals run (and are paid) until then."""
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
        self.db.put(keys.market_audit(parse_public_id(node)), json.dumps(marks).encode())

    def verdict(self, deal: Deal) -> bool | None:
        """Has the holder earned the period since `paid_until`?  True pay, False forfeit, None wait."""
        if deal.node == self.me:
            from .storage_routes import GATEWAY

            return deal.share not in self.app[GATEWAY].store.damaged(bytes.fromhex(deal.si))
        if self.app[CONFIG].audit.blocks_per_round == 0:
            return True
        marks = self.audits.get(deal.node, {})
        if marks.get("failed", -1) >= deal.paid_until:
            return False
        if marks.get("ok", -1) >= deal.paid_until:
            return True
        return None

    # --- payments ----------------------------------------------------------------------------
    async def pay_due(self, now: int | None = None) -> dict[str, Any]:
        """Pay every deal what it earned since it was last paid; returns what was paid and skipped."""
        from .payments import pay_node

        now = int(time.time()) if now is None else now
        summary = {"paid": 0, "payments": 0, "forfeited": 0, "waiting": 0, "failed": 0}
        async with self._lock:
            deals = await asyncio.get_running_loop().run_in_executor(self.app[CPU_POOL], self.all)
            for deal in deals:
                until = min(now, deal.end)
                if until <= deal.paid_until:
                    continue
                verdict = self.verdict(deal)
                if verdict is None:
                    summary["waiting"] += 1
                    continue
                if verdict is False:
                    deal.forfeited += until - deal.paid_until
                    summary["forfeited"] += 1
                    log.warning("not paying %s for share %d of %s: it failed an audit", deal.node[:12], deal.share,
                                deal.si[:16])
                else:
                    seconds = until - deal.paid_until
                    amount = deal.cost(seconds)
                    job = f"store:{deal.si}:{deal.share}:{deal.paid_until}:{until}"
                    try:
                        await pay_node(self.app, deal.node, amount,
                                       {"byte_hours": byte_hours(deal.bytes, seconds)}, job)
                    except XscError as err:
                        summary["failed"] += 1
                        log.warning("payment for share %d of %s to %s failed (retried next run): %s", deal.share,
                                    deal.si[:16], deal.node[:12], err)
                        continue
                    deal.paid += amount
                    summary["paid"] += amount
                    summary["payments"] += 1
                    self._note_delivered(deal.node, amount)
                deal.paid_until = until
                self._save([deal])
        self.last_run = {"at": now, **summary}
        return summary

    def _note_delivered(self, node: str, amount: int) -> None:
        from .market_routes import MARKET

        if node != self.me and MARKET in self.app:
            self.app[MARKET].note_paid(node, amount, by_them=False)

    async def _run(self) -> None:
        interval = self.app[CONFIG].market.payment_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.pay_due()
            except Exception:
                log.exception("storage payment run failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xsc-deals")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- the holder's side ----------------------------------------------------------------------
def held_deal(db, si: bytes, share: int) -> dict | None:
    raw = db.get(keys.market_held(si, share))
    return json.loads(raw) if raw else None


def forget_held_deal(app: web.Application, si: bytes, share: int) -> None:
    app[DB].delete(keys.market_held(si, share), sync=True)


def accept_deal(app: web.Application, si: bytes, share: int, uploader: str, price: Any, share_bytes: int) -> None:
    """A gateway offers this node a share at `price` per GiB-hour: refuse it under our ask, else keep its terms."""
    from .market_routes import MARKET

    if type(price) is not int or price < 0:
        raise DealRefused("a share upload must name its deal price (micro-credits per GiB-hour, an integer)",
                          hint="place shares through the market (xsc store put)")
    ask = app[MARKET].honoured_ask("storage") if MARKET in app else None
    if ask is None:
        raise DealRefused("this node does not offer storage now", hint="choose another provider (xsc market book)")
    if price < ask:
        raise DealRefused(f"the deal price {price} is under this node's ask of {ask} per GiB-hour",
                          hint="the market moved: match the need again", ask=ask, price=price)
    app[DB].put(keys.market_held(si, share), json.dumps({"uploader": uploader, "price": price, "bytes": share_bytes}).encode(), sync=True)


async def check_storage_receipt(app: web.Application, sender: str, authorization, amount: int,
                                usage: dict[str, int]) -> None:
    """Sign a storage receipt only for a share we hold (or held) for `sender`, for at most the byte-hours of
    the period it names, and at no less than the deal price."""
    from .storage_routes import GATEWAY

    parts = authorization.job.split(":")
    if len(parts) != 5 or not all(p.isdigit() for p in parts[2:]) or len(parts[1]) != 64:
        raise Forbidden(f"not a storage job reference: {authorization.job[:80]!r}",
                        hint="store:<storage index>:<share>:<from>:<to>")
    si, share, start, end = bytes.fromhex(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
    deal = held_deal(app[DB], si, share)
    meta = app[GATEWAY].store.share_meta(si, share)
    if deal is None or deal["uploader"] != sender:
        raise Forbidden("this node holds no share of that file for the sender", hint="pay the share's holder")
    if end <= start or end > int(time.time()) + RECEIPT_SLACK:
        raise Forbidden("the payment period is not a past period", hint="pay for time already held")
    if meta is not None and end > meta.lease_expiry + RECEIPT_SLACK:
        raise Forbidden("the payment period runs past the share's lease", hint="renew the lease first")
    stored = deal["bytes"]
    expected = byte_hours(stored, end - start)
    if set(usage) != {"byte_hours"} or usage["byte_hours"] != expected:
        raise Forbidden(f"the usage claimed does not match the share held: expected byte_hours={expected}")
    if amount < price_storage(stored, end - start, deal["price"]):
        raise Forbidden("the amount is under the deal price", hint=f"the deal is {deal['price']} per GiB-hour")
