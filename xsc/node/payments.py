"""Paying another node: settlement by receipt across nodes, and the retry of unfinished payments.

The local user (`app[CLIENT_IDENTITY]`) pays a node for work it did::

    entry_id = await pay_node(app, payee_node_id, amount, usage, job_ref)

For this node it is a local `settle`.  For another node: the payer's node signs an authorization
(capped at the amount, its cap held, recorded pending on disk), asks the payee's node to countersign
a receipt into its chain (`POST /v1/peer/ledger/receipts`, see receipt_routes) and appends the payment
embedding that receipt to the payer's chain (`complete`).  If the payee cannot be reached, or its answer
is lost, the authorization stays pending and the retry task finishes it later: it asks the payee whether
it countersigned (`GET /v1/peer/ledger/receipts/{auth id}`), completes with that receipt, else asks again
until the authorization expires, then abandons it (releasing the hold).  Both halves are idempotent, so
a retry after any crash of either node ends with both halves stored exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager
from typing import Iterator

from aiohttp import web

from ..errors import InvalidEntry, PeerError, PeerNotFound, PeerRefused, PeerUnreachable, XscError
from ..identity import Identity, parse_public_id, public_id
from ..ledger import Authorization, Receipt, decode_entry, encode_authorization, format_credits
from ..ledger.rules import CLOCK_SKEW
from .context import CLIENT_IDENTITY, CONFIG, IDENTITY
from .ledger_routes import LEDGER
from .peers import PEERS
from .status import STATUS_PARTS

log = logging.getLogger(__name__)

RECEIPTS_PATH = "/v1/peer/ledger/receipts"
PAY_TTL = 86_400  # seconds a payment for work already done may take to reach a payee that is down
# A payee unreachable this long after the authorization expired is given up on: its hold is released.  (If it
# did countersign, it holds a receipt this node never pays: its chain and ours both still verify.)
GIVE_UP_AFTER = 86_400
# Statuses with which a payee says it will not countersign this claim, whatever the retries.
DEFINITIVE_REFUSALS = frozenset({400, 402, 403, 404, 409, 422})


class Payments:
    """The retry of pending remote payments (a background task), and which ones are being worked on now."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._busy: set[bytes] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @contextmanager
    def working(self, authorization_id: bytes) -> Iterator[None]:
        """Keep the retry task off an authorization a caller is finishing itself."""
        self._busy.add(authorization_id)
        try:
            yield
        finally:
            self._busy.discard(authorization_id)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xsc-payments-retry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        interval = self.app[CONFIG].ledger.settle_retry_interval
        while True:
            try:
                await self.retry_all()
            except Exception:  # one bad round must never end the retries
                log.exception("retrying pending payments failed")
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def retry_all(self) -> dict[str, int]:
        """One pass over every pending authorization; returns how many ended in each outcome."""
        outcome: dict[str, int] = {}
        for auth in self.app[LEDGER].pending():
            if auth.id in self._busy:
                continue
            with self.working(auth.id):
                result = await self.retry(auth)
            outcome[result] = outcome.get(result, 0) + 1
        return outcome

    async def retry(self, auth: Authorization) -> str:
        """Finish one pending authorization if its payee can be reached: completed, pending or abandoned."""
        ledger, node_id = self.app[LEDGER], public_id(auth.payee)
        payer = _local_identity(self.app, auth.payer)
        now = time.time()
        try:
            receipt = await fetch_receipt(self.app, node_id, auth)
            if receipt is None and now <= auth.expires_at:
                claim = ledger.claim(auth.id)
                if claim is not None:
                    receipt = await ask_receipt(self.app, node_id, auth, *claim)
        except (PeerUnreachable, PeerNotFound) as exc:
            if now > auth.expires_at + CLOCK_SKEW + GIVE_UP_AFTER:
                log.warning("giving up on authorization %s: payee %s unreachable since it expired (%s)",
                            auth.id.hex()[:16], node_id[:12], exc)
                await ledger.abandon(auth.id)
                return "abandoned"
            log.info("payment %s to %s still pending: %s", auth.id.hex()[:16], node_id[:12], exc)
            return "pending"
        except PeerError as exc:  # the payee refused, or answered nonsense: try again later
            log.warning("payment %s to %s still pending: %s", auth.id.hex()[:16], node_id[:12], exc)
            return "pending"
        if receipt is not None:
            if payer is None:
                return "pending"
            await ledger.complete(payer, receipt)
            log.info("completed payment %s to %s (%s credits)", auth.id.hex()[:16], node_id[:12],
                     format_credits(receipt.amount))
            return "completed"
        if now > auth.expires_at + CLOCK_SKEW:
            # The payee has no receipt and can no longer make one: nothing is owed.
            await ledger.abandon(auth.id)
            log.info("abandoned authorization %s to %s: it expired without a receipt", auth.id.hex()[:16],
                     node_id[:12])
            return "abandoned"
        return "pending"


PAYMENTS = web.AppKey("payments", Payments)


def _local_identity(app: web.Application, account: bytes) -> Identity | None:
    for identity in (app[CLIENT_IDENTITY], app[IDENTITY]):
        if identity.public_key == account:
            return identity
    return None


def _peer_url(app: web.Application, node_id: str) -> str:
    return app[PEERS].peer(node_id).url


def _check_receipt(node_id: str, data: object, auth: Authorization, amount: int | None = None,
                   usage: dict[str, int] | None = None) -> Receipt:
    """The receipt a payee sent back, checked to be for exactly what was asked (its signature: by complete)."""
    try:
        receipt = decode_entry(bytes.fromhex(data["receipt"]))  # type: ignore[index]
    except (TypeError, KeyError, ValueError, InvalidEntry) as exc:
        raise PeerRefused(f"node {node_id} answered with no readable receipt: {exc}") from None
    if not isinstance(receipt, Receipt) or receipt.account != auth.payee:
        raise PeerRefused(f"node {node_id} answered with an entry that is not its receipt")
    if receipt.authorization.body != auth.body or receipt.authorization.signature != auth.signature:
        raise PeerRefused(f"node {node_id} answered with a receipt for another authorization")
    if amount is not None and (receipt.amount, dict(receipt.usage)) != (amount, dict(sorted(usage.items()))):
        raise PeerRefused(f"node {node_id} countersigned {format_credits(receipt.amount)} credits for "
                          f"{dict(receipt.usage)}, not the {format_credits(amount)} for {usage} asked")
    return receipt


async def ask_receipt(app: web.Application, payee_node_id: str, authorization: Authorization, amount: int,
                      usage: dict[str, int]) -> Receipt:
    """Ask the payee's node to countersign `amount` and `usage` under `authorization`; its receipt, checked.

    Raises PeerUnreachable (no answer: it may or may not have countersigned), PeerRefused (it refused)."""
    url = _peer_url(app, payee_node_id)
    body = {"authorization": encode_authorization(authorization).hex(), "amount": amount, "usage": dict(usage),
            "job": authorization.job}
    response = await app[PEERS].request(url, "POST", RECEIPTS_PATH, json=body, to=payee_node_id)
    return _check_receipt(payee_node_id, response.json(), authorization, amount, usage)


async def fetch_receipt(app: web.Application, payee_node_id: str, authorization: Authorization) -> Receipt | None:
    """The receipt the payee's node made for `authorization`, or None if it has made none."""
    url = _peer_url(app, payee_node_id)
    try:
        response = await app[PEERS].request(url, "GET", f"{RECEIPTS_PATH}/{authorization.id.hex()}",
                                            to=payee_node_id)
    except PeerRefused as exc:
        if exc.details.get("peer_status") == 404:
            return None
        raise
    return _check_receipt(payee_node_id, response.json(), authorization)


async def pay_node(app: web.Application, payee_node_id: str, amount: int, usage: dict[str, int], job_ref: str) -> str:
    """The local user pays node `payee_node_id` for work it already did; returns the payer's entry id (hex).

    Raises InsufficientCredit before anything is sent; PeerUnreachable if the payee cannot be reached now
    (the payment stays pending and is retried in the background); PeerRefused if it refused the claim."""
    ledger, payer = app[LEDGER], app[CLIENT_IDENTITY]
    if payee_node_id == app[IDENTITY].id:
        return await ledger.settle(payer, app[IDENTITY], amount, usage, job_ref)
    payee = parse_public_id(payee_node_id)
    app[PEERS].peer(payee_node_id)  # an unknown node: refused before anything is held
    auth = await ledger.authorize(payer, payee, amount, job_ref, ttl=PAY_TTL, claim=(amount, usage))
    payments = app[PAYMENTS]
    with payments.working(auth.id):
        try:
            receipt = await ask_receipt(app, payee_node_id, auth, amount, usage)
        except PeerUnreachable as exc:
            raise PeerUnreachable(
                f"payment of {format_credits(amount)} credits to node {payee_node_id} is pending: {exc.message}",
                hint="it is retried in the background until the payee answers", authorization=auth.id.hex(),
                **exc.details) from None
        except PeerRefused as exc:
            status = exc.details.get("peer_status")
            if status in DEFINITIVE_REFUSALS:  # else (busy, bad gateway, a clock problem...): retried later
                await _settle_refusal(app, payee_node_id, auth)
            raise exc
        payment = await ledger.complete(payer, receipt)
    return payment.id.hex()


async def _settle_refusal(app: web.Application, payee_node_id: str, auth: Authorization) -> None:
    """The payee refused to countersign: unless it holds a receipt anyway, drop the authorization."""
    try:
        receipt = await fetch_receipt(app, payee_node_id, auth)
    except XscError:
        return  # unknown: the retry task finds out
    if receipt is not None:
        await app[LEDGER].complete(_local_identity(app, auth.payer), receipt)  # type: ignore[arg-type]
    else:
        await app[LEDGER].abandon(auth.id, force=True)


async def _payments(app: web.Application):
    payments = Payments(app)
    app[PAYMENTS] = payments
    payments.start()  # its first pass runs at once: payments left pending by the last run
    try:
        yield
    finally:
        await payments.close()


def _status(app: web.Application) -> dict:
    pending = app[LEDGER].pending()
    return {"pending": len(pending), "pending_amount": sum(a.cap for a in pending)}


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_payments)
    app[STATUS_PARTS]["payments"] = _status


__all__ = ["PAYMENTS", "Payments", "ask_receipt", "fetch_receipt", "pay_node", "setup"]
