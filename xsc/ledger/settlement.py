"""Payment by receipt across nodes: the one path every payment to another node takes, and its retry.

Payer side (the local user pays a node for work it did; storage deals and remote invokes alike)::

    entry_id = await payments.pay(payee_node_id, amount, usage, job_ref)      # work already done
    auth = await payments.authorize(payee_node_id, cap, job_ref, ttl=...)     # work about to be done
    payment = await payments.complete(payee_node_id, auth, receipt)           # the receipt it sent back

For this node `pay` is a local `settle`.  For another node the payer's node signs an authorization
(capped, its cap held, recorded pending on disk), asks the payee's node to countersign a receipt into
its chain and appends the payment embedding that receipt to the payer's chain (`complete`).  Every
receipt that comes back is checked whole (ledger/receipts.answered_receipt, a strike against its payee if it does
not check) before the ledger verifies its signature and writes it.  If the payee cannot be reached, or its answer is lost, the authorization
stays pending and the retry task finishes it later: it asks the payee whether it countersigned,
completes with that receipt, else asks again until the authorization expires, then abandons it.  Both
halves are idempotent, so a retry after any crash of either node ends with both halves stored once.

Payee side::

    payments.add_check("store", check)            # check(sender, authorization, amount, usage) raises if wrong
    receipt = await payments.countersign(sender, authorization, amount, usage, job)

A job kind (the job reference up to its first ':') with no check is refused.  A repeated request for an
authorization already countersigned gets the stored receipt without asking the check again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Protocol

from .. import units
from ..errors import (ClaimRefused, Forbidden, InvalidArgument, InvalidEntry, NothingOwed, PeerError, PeerMisbehaved,
                      PeerNotFound, PeerRefused, PeerUnreachable, PeriodPaidAlready, PrepaymentNotCollectable,
                      PrepaymentRefused, WrongPayee, XscError, quoted)
from ..identity import Identity, parse_public_id, public_id, verify
from ..net.peer_client import PeerClient, their_words
from .dropped import DroppedPayments
from .receipts import ask_receipt, fetch_receipt
from .retry_schedule import RetrySchedule
from ..tasks import periodic, woken_loop
from .core.model import Authorization, Payment, Receipt, format_credits
from .core.rules import CLOCK_SKEW, check_publishable
from .service import LedgerService

log = logging.getLogger(__name__)

PAY_TTL = 86_400  # seconds a payment for work already done may take to reach a payee that is down
# A payee unreachable this long after the authorization expired is given up on: its hold is released.  (If it
# did countersign, it holds a receipt this node never pays: its chain and ours both still verify.)
GIVE_UP_AFTER = 86_400
# Statuses with which a payee says it will not countersign this claim, whatever the retries.
DEFINITIVE_REFUSALS = frozenset({400, 402, 403, 404, 409, 422})

RECENT = 7 * 86_400  # seconds a payment dropped unpaid is counted in the node's status

MAX_PREPAY = units.MAX_PREPAY

ReceiptCheck = Callable[[str, Authorization, int, dict[str, int]], Awaitable[None]]
# (total, peer, authorization, amount) -> the rows that count a receipt ("paid") or a payment ("owed") on the peer's
# trust line, for the ledger to write in that entry's own batch: a stop or a kill -9 leaves both or neither.
Counting = Callable[[str, str, Authorization, int], AbstractContextManager[dict[bytes, bytes]]]


class PeerView(Protocol):
    """Where a node is: its descriptor (url, key), or PeerNotFound."""

    def peer(self, node_id: str) -> Any: ...


def job_kind(job: str) -> str:
    return job.partition(":")[0]


def nothing_owed(err: BaseException) -> bool:
    """The payee says nothing was done under an authorization (a tab it ran no call of): it will never
    countersign it, so its payer drops it.  Safe to believe: at worst a payee is not paid."""
    return isinstance(err, PeerRefused) and err.details.get("peer_code") == NothingOwed.code


def prepay_refusal(node_id: str, exc: PeerError) -> tuple[str, str]:
    """Why node `node_id` refused a prepayment, and what to do, one line each.  Its claim refused: the documented rule
    (docs/peers.md), a prepayment counts only out of what its payee owes its payer, with the most the payee says it
    can still take; the credit its user gives this node changes nothing of that (its work then needs no prepayment).
    Any other refusal: in the payee's words, quoted as its own (its "this node" is the payee)."""
    if _refused_claim(exc):
        room = exc.details.get("peer_collectable")
        if not room:
            return (f"node {node_id} refused the prepayment: it owes this node nothing",
                    "a prepayment counts only out of what its payee owes its payer; nothing was paid")
        # Room it still takes is either its debt to this node or, where its user recognises this node, this node's
        # debt to it for work it did here and was not paid yet: said whole, as "owes its payer" alone is untrue of
        # the second (the payee owes nothing, and takes the prepayment all the same).
        return (f"node {node_id} refused the prepayment: it takes at most {format_credits(room)} credits now",
                "a prepayment counts only out of what its payee owes its payer and, if its user recognises the "
                "payer, what the payer owes it for work done there not paid yet; nothing was paid")
    return f'node {node_id} refused the prepayment, saying: "{their_words(exc)}"', "nothing was paid"


def _refused_claim(err: BaseException) -> bool:
    """The payee checked a claim and will not countersign it (ClaimRefused)."""
    return isinstance(err, PeerRefused) and err.details.get("peer_code") == ClaimRefused.code


class Payments:
    def __init__(self, *, ledger: LedgerService, payer: Identity, node: Identity, peers: PeerView,
                 client: PeerClient, retry_interval: float,
                 on_paid: Callable[[str, int, bool], None] = lambda peer, amount, by_them: None,
                 on_countersigned: Callable[[str, Authorization, int], None] = lambda peer, authorization, amount: None,
                 on_strike: Callable[[str, str], None] = lambda peer, why: None,
                 on_owed: Callable[[str, Authorization, int], None] = lambda peer, authorization, amount: None,
                 collectable: Callable[[str], int] = lambda peer: 0,
                 owe_counted: Callable[[Authorization], bool] = lambda authorization: True,
                 counting: Counting | None = None) -> None:
        self.ledger = ledger
        self.payer = payer  # the local user's account
        self.node = node  # this node's account: the payee of work done here
        self.peers = peers
        self.client = client
        self.retry_interval = retry_interval
        self.on_paid = on_paid  # (peer, amount, by_them): who pays whom is recognised by the market
        self.on_countersigned = on_countersigned  # (peer, authorization, amount): its trust line (once each)
        self.on_strike = on_strike  # (peer, why): a misbehaviour (a refused claim, a bad receipt): quarantine
        self.on_owed = on_owed  # (peer, authorization, amount): the local user paid a peer (once each)
        self.collectable = collectable  # peer -> what a prepayment from it may carry (its trust line)
        self.owe_counted = owe_counted  # authorization -> whether on_owed counted this node's payment under it
        # a count's rows, in its entry's batch (TrustLines.counting); None: on_countersigned and on_owed count after it
        self.counting = counting
        self.checks: dict[str, ReceiptCheck] = {}
        # job prefix -> how to get the receipt of a pending authorization that has no claim: the payee states
        # the amount (a tab of remote invokes: the provider's total, bounded by the cap).
        self.closers: dict[str, Callable[[str, str, Authorization], Awaitable[Receipt]]] = {}
        # job prefix -> whether the retry may pay a receipt the payee made (its own check of the amount: a tab's
        # gateway pays no more than its tally, however the receipt reached it); False: it dropped the authorization.
        self.payable: dict[str, Callable[[Authorization, Receipt], Awaitable[bool]]] = {}
        # job prefix -> what to do once the retry paid a receipt (a function's spend counts it).
        self.paid_by_retry: dict[str, Callable[[Authorization, Receipt], Awaitable[None]]] = {}
        # job prefix -> what follows once the retry ended one unpaid (given up on, refused, expired): forgotten.
        self.dropped_by_retry: dict[str, Callable[[Authorization], None]] = {}
        # job prefix -> the rows a payment of it writes in its own batch, however it is paid (a function's spend, what
        # a job's record shows it paid).
        self.rows: dict[str, Callable[[Authorization, Payment], dict[bytes, bytes]]] = {}
        # Payments to other nodes given up on after their payer was told they were pending: told again where it looks.
        self.dropped = DroppedPayments(ledger.store.db)
        self._busy: set[bytes] = set()
        self.schedule = RetrySchedule(retry_interval)  # when each payment left pending is tried next
        self._why: dict[bytes, str] = {}  # why the try under way left its payment pending
        self._wake = asyncio.Event()

    # --- payer side ----------------------------------------------------------------------
    async def pay(self, payee_node_id: str, amount: int, usage: dict[str, int], job_ref: str) -> str:
        """The local user pays node `payee_node_id` for work it already did; returns the payer's entry id (hex).

        Raises InsufficientCredit before anything is sent; PeerUnreachable if the payee cannot be reached now
        (the payment stays pending and is retried in the background); PeerRefused if it refused the claim."""
        if payee_node_id == self.node.id:
            return await self.ledger.settle(self.payer, self.node, amount, usage, job_ref)
        url = self.peers.peer(payee_node_id).url  # an unknown node: refused before anything is held
        auth = await self.ledger.authorize(self.payer, parse_public_id(payee_node_id), amount, job_ref, ttl=PAY_TTL,
                                           claim=(amount, usage))
        with self.working(auth.id):
            try:
                receipt = await ask_receipt(self.client, url, payee_node_id, auth, amount, usage)
            except PeerUnreachable as exc:
                raise PeerUnreachable(
                    f"payment of {format_credits(amount)} credits to node {payee_node_id} is pending: {exc.message}",
                    hint="it is retried in the background until the payee answers: xsc ledger payments shows how it "
                         "ends", authorization=auth.id.hex(),
                    **exc.details) from None
            except PeerRefused as exc:
                if exc.details.get("peer_status") in DEFINITIVE_REFUSALS:  # else (busy, a clock problem...): retried
                    await self._settle_refusal(payee_node_id, url, auth)
                raise exc
            payment = await self._pay_by(self.payer, payee_node_id, receipt,
                                         noted=lambda payment: self.on_paid(payee_node_id, amount, False))
        return payment.id.hex()

    async def prepay(self, payee_node_id: Any, amount: Any) -> dict[str, Any]:
        """Pay `amount` to node `payee_node_id` ahead of work (`xsc ledger prepay`): a node that does not
        recognise this one takes on its work only within what it prepaid (ledger/trust.py)."""
        if not isinstance(payee_node_id, str):
            raise InvalidArgument('send {"node": NODE_ID, "amount": MICRO_CREDITS}')
        parse_public_id(payee_node_id)
        if payee_node_id == self.node.id:
            raise InvalidArgument("this is this node's own id: prepay the node that will do the work")
        if type(amount) is not int or not 1 <= amount <= MAX_PREPAY:
            # Said in credits too: the CLI's user typed credits, the API's caller sent micro-credits.
            given = (f"{amount} ({format_credits(amount)} credits)" if type(amount) is int and abs(amount) < 10**24
                     else quoted(amount))
            raise InvalidArgument(f"a prepayment is 1 to {MAX_PREPAY} micro-credits (at most "
                                  f"{format_credits(MAX_PREPAY)} credits), not {given}")
        try:
            entry = await self.pay(payee_node_id, amount, {}, f"prepay:{os.urandom(8).hex()}")
        except PeerRefused as exc:
            if isinstance(exc, PeerMisbehaved) or exc.details.get("peer_status") not in DEFINITIVE_REFUSALS:
                raise  # garbage, or busy (its payment is retried): the peer's fault or the network's, 502
            why, hint = prepay_refusal(payee_node_id, exc)
            raise PrepaymentRefused(why, hint=hint, node=payee_node_id, **exc.details) from None
        return {"node": payee_node_id, "amount": amount, "entry": entry}

    async def authorize(self, payee_node_id: str, cap: int, job_ref: str, *, ttl: int,
                        hold: int | None = None) -> Authorization:
        """Hold `cap` (or only `hold`: the caller holds the rest in steps, LedgerService.hold_for) for work
        `payee_node_id` is about to do (its receipt then comes back with the work)."""
        return await self.ledger.authorize(self.payer, self.peers.peer(payee_node_id).key, cap, job_ref, ttl=ttl,
                                           hold=hold)

    async def complete(self, payee_node_id: str, auth: Authorization, receipt: Receipt) -> Payment:
        """Pay by the receipt the payee sent back for `auth` (checked whole by `answered_receipt`, which struck it if
        it did not check); one whose signature does not hold is struck here."""
        with self.working(auth.id):
            try:
                payment = await self._pay_by(self.payer, payee_node_id, receipt, self._rows(auth),
                                             noted=lambda payment: self.on_paid(payee_node_id, receipt.amount, False))
            except InvalidEntry as exc:
                self.on_strike(payee_node_id, f"sent a receipt that does not check: {exc.message}")
                raise
        return payment

    def paid_for(self, job_ref: str, recent: int = 2000) -> tuple[str, int] | None:
        """Whether the local user already paid for `job_ref`: ("paid", amount) if one of its `recent` newest
        entries settles it, ("pending", cap) if an authorization for it waits for its receipt, else None.
        (What a payer asks after a crash between paying and noting that it paid.)"""
        for auth in self.ledger.pending():
            if auth.job == job_ref and auth.payer == self.payer.public_key:
                return "pending", auth.cap
        for entry in self.ledger.store.history(self.payer.public_key, recent):
            if entry.authorization.job == job_ref and isinstance(entry, Payment):  # one of 0 too: a period paid 0
                return "paid", entry.receipt.amount
        return None

    async def refused(self, auth: Authorization) -> None:
        """The payee refused before doing any work: nothing will ever be countersigned."""
        await self.ledger.abandon(auth.id, force=True)

    async def _settle_refusal(self, payee_node_id: str, url: str, auth: Authorization) -> None:
        """The payee refused to countersign: unless it holds a receipt anyway, drop the authorization."""
        try:
            receipt = await fetch_receipt(self.client, url, payee_node_id, auth)
        except XscError:
            return  # unknown: the retry task finds out
        if receipt is not None:
            await self._pay_by(self.payer, payee_node_id, receipt)
        else:
            await self.ledger.abandon(auth.id, force=True)

    # --- payee side ----------------------------------------------------------------------
    def add_check(self, kind: str, check: ReceiptCheck) -> None:
        self.checks[kind] = check

    def add_closer(self, job_prefix: str, closer: Callable[[str, str, Authorization], Awaitable[Receipt]], *,
                   payable: Callable[[Authorization, Receipt], Awaitable[bool]] | None = None,
                   paid: Callable[[Authorization, Receipt], Awaitable[None]] | None = None,
                   dropped: Callable[[Authorization], None] | None = None,
                   rows: Callable[[Authorization, Payment], dict[bytes, bytes]] | None = None) -> None:
        """How the retry gets the receipt of a pending authorization of this job prefix that has no claim (of
        prefixes that both match, the longer one's closer); whether it may pay the receipt it got (`payable`), and
        what follows once it paid it (`paid`), whether the closer made that receipt or the payee already held it
        (the answer to its owner's own close was lost), and once it ended one unpaid (`dropped`: given up on, refused by
        its payee, expired).  `rows`: what a payment of it writes in its own batch,
        whoever pays it (`complete` or the retry), so that a kill -9 leaves no payment without them."""
        self.closers[job_prefix] = closer
        if rows is not None:
            self.add_rows(job_prefix, rows)
        if payable is not None:
            self.payable[job_prefix] = payable
        if paid is not None:
            self.paid_by_retry[job_prefix] = paid
        if dropped is not None:
            self.dropped_by_retry[job_prefix] = dropped

    def add_rows(self, job_prefix: str, rows: Callable[[Authorization, Payment], dict[bytes, bytes]]) -> None:
        """What a payment under an authorization of this job prefix writes in its own batch, whoever pays it
        (`complete` or the retry), so that a kill -9 leaves no payment without them (of prefixes that both match,
        the longer one's)."""
        self.rows[job_prefix] = rows

    def _rows(self, auth: Authorization) -> Callable[[Payment], dict[bytes, bytes]] | None:
        rows = self._for_job(self.rows, auth)
        return None if rows is None else functools.partial(rows, auth)

    @staticmethod
    def _for_job(table: dict[str, Any], auth: Authorization) -> Any:
        """The entry of `table` for the most particular job prefix `auth.job` starts with, or None."""
        return max(((p, c) for p, c in table.items() if auth.job.startswith(p)), default=(None, None),
                   key=lambda found: len(found[0]))[1]

    async def receipt_for(self, sender: str, authorization_id: bytes) -> Receipt | None:
        """This node's receipt under the authorization, if `sender` is a party to it: the node that asked for it, or
        the node whose key is its payer.  Any other learns nothing of it, not even that it exists."""
        receipt = await self.ledger.receipt_for(authorization_id)
        if receipt is None or sender == public_id(receipt.authorization.payer):
            return receipt
        return receipt if await self.ledger.asked_by(authorization_id) == sender else None

    async def countersign(self, sender: str, auth: Authorization, amount: int, usage: dict[str, int],
                          job: str | None = None) -> Receipt:
        """This node's receipt for work it did for `sender`, once the claim is checked; idempotent."""
        if job is not None and job != auth.job:
            raise InvalidEntry("job does not match the authorization's job reference")
        check_publishable(auth, amount=amount, usage=usage if isinstance(usage, dict) else None)
        if auth.payee != self.node.public_key:
            raise WrongPayee(f"the authorization pays account {public_id(auth.payee)}, not this node "
                             f"({self.node.id})", hint="send it to the node whose account it names as payee")
        if not verify(auth.payer, auth.signature, auth.body):
            raise InvalidEntry("the authorization's payer signature is invalid")
        if await self.ledger.receipt_for(auth.id) is None:  # already countersigned: the check passed then
            # What the ledger would refuse anyway is refused before the check: a check records the claim as paid
            # (a storage period), and a claim under an expired authorization, never countersigned, left its period
            # paid for nothing.
            self.ledger.check_countersign(self.node, auth, amount, usage)
            check = self.checks.get(job_kind(auth.job))
            if check is None:
                known = ", ".join(sorted(self.checks)) or "none"
                raise ClaimRefused(f"this node settles no work of kind {job_kind(auth.job)!r} (job {auth.job!r})",
                                   hint=f"job kinds it settles: {known}")
            try:
                await check(sender, auth, amount, usage)
            except (PrepaymentNotCollectable, PeriodPaidAlready):
                raise  # an honest payer asks so too (following `xsc ledger prepay`; after this node's crash): no strike
            except XscError as exc:
                self.on_strike(sender, f"asked for a receipt this node refused: {exc.message}")
                raise
        count = None if self.counting is None else functools.partial(self.counting, "paid", sender)
        # What the sender paid raises its recognition here (on_paid) once per authorization, by the request that wrote
        # the receipt, even if it is cut short as it does: a repeat (a lost answer retried, or a replay of the same
        # request, by the sender or any node that saw it) gets the stored receipt, and noted on each it raised the
        # sender's weight at will.
        receipt = await self.ledger.countersign(self.node, auth, amount, usage, verified=True, sender=sender,
                                                count=count, written=lambda receipt: self.on_paid(sender, amount, True))
        if count is None:
            self.on_countersigned(sender, auth, receipt.amount)
            self.ledger.store.sender_counted(auth.id)  # its line counted it: nothing left for a restart to count
        return receipt

    async def check_prepayment(self, sender: str, auth: Authorization, amount: int, usage: dict[str, int]) -> None:
        """The receipt check of a prepayment (`prepay:<random>`): money received ahead of work, no usage, and
        no more than this node can collect from the sender (`collectable`: a payer's signature alone is worth
        nothing, so a fresh payer, many payers or a huge amount mint no credit)."""
        tag = auth.job.partition(":")[2]
        if not (1 <= len(tag) <= 32 and tag.isalnum() and tag.isascii()):
            raise Forbidden(f"not a prepayment job reference: {auth.job[:80]!r}", hint="prepay:<up to 32 letters>")
        if usage or not 1 <= amount <= MAX_PREPAY:
            raise Forbidden(f"a prepayment is 1 to {MAX_PREPAY} micro-credits with no usage")
        room = self.collectable(sender)
        if amount > room:
            raise PrepaymentNotCollectable(
                f"this node can collect {format_credits(room)} credits from node {sender}, not the "
                f"{format_credits(amount)} prepaid: a prepayment counts only out of what this node owes its payer",
                hint="earn credit on this node first (work its user pays you for), or ask its user to recognise "
                     "you (xsc market recognize PEER WEIGHT --credit AMOUNT)", collectable=room)

    # --- the retry of pending payments ----------------------------------------------------
    @contextmanager
    def working(self, authorization_id: bytes) -> Iterator[None]:
        """Keep the retry task off an authorization a caller is finishing itself."""
        self._busy.add(authorization_id)
        try:
            yield
        finally:
            self._busy.discard(authorization_id)

    def keep_off(self, authorization_id: bytes) -> None:
        """Keep the retry task off an authorization its owner is still using (a tab still open), until a
        `working` block on it ends.  Not kept across a restart: the retry then finishes what is left."""
        self._busy.add(authorization_id)

    def wake(self) -> None:
        self._wake.set()

    def failed(self, authorization_id: bytes, error: str) -> None:
        """Its owner failed to finish the payment under `authorization_id` (a tab's close: its payee unreachable, the
        ledger's write refused): the retry tries it again soon, then less and less often (retry_schedule.py)."""
        self.schedule.failed(authorization_id, error)
        self.wake()

    def next_try(self, authorization_id: bytes) -> dict | None:
        """How the tries of a pending payment went and when the next is (RetrySchedule.of); None if none failed."""
        return self.schedule.of(authorization_id)

    def start(self) -> None:
        self.count_uncounted()

    async def _pay_by(self, payer: Identity, payee_node_id: str, receipt: Receipt,
                      rows: Callable[[Payment], dict[bytes, bytes]] | None = None,
                      noted: Callable[[Payment], None] | None = None) -> Payment:
        """The payment by `receipt` written with its count as owed on its payee's line, in one batch; then `noted`."""
        count = None if self.counting is None else functools.partial(self.counting, "owed", payee_node_id)
        payment = await self.ledger.complete(payer, receipt, rows, count=count, written=noted)
        if count is None:
            self._owed(payee_node_id, receipt.authorization, receipt.amount)
        return payment

    def _owed(self, payee_node_id: str, auth: Authorization, amount: int) -> None:
        """The local user's payment under `auth` is on the ledger: counted as owed on the payee's line, once."""
        self.on_owed(payee_node_id, auth, amount)
        self.ledger.store.owed_counted(auth.id)

    def count_uncounted(self, recent: int = 64) -> int:
        """What a kill -9 left between a synced ledger write and the trust line that counts it, counted now, however
        long the node was down (each authorization is counted once, so counting again is harmless): receipts this
        node countersigned and payments its user made to other nodes, each written with a record that its count
        deletes (`l/n/`, `l/w/`); and, for payments written without one, the newest of the local user's to other
        nodes not counted as owed (in chain order: the first counted one ends the walk).  Returns how many."""
        counted = 0
        for authorization_id, sender, receipt in self.ledger.store.senders():
            if receipt is not None:
                self.on_countersigned(sender, receipt.authorization, receipt.amount)
                counted += 1
            self.ledger.store.sender_counted(authorization_id)
        for authorization_id, payment in self.ledger.store.uncounted_payments():
            if payment is not None:
                self.on_owed(public_id(payment.authorization.payee), payment.authorization, payment.receipt.amount)
                counted += 1
            self.ledger.store.owed_counted(authorization_id)
        for entry in self.ledger.store.history(self.payer.public_key, recent):
            auth = entry.authorization
            # A transfer whose receipt a chain here holds was settled whole on this node (to this node, or to an
            # account it keeps: an S3 user's funding), by `settle`: no other node is owed anything for it.
            if not isinstance(entry, Payment) or self.ledger.store.stored(entry.receipt.id) is not None:
                continue
            if self.owe_counted(auth):
                break
            self.on_owed(public_id(auth.payee), auth, entry.receipt.amount)
            counted += 1
        if counted:
            # A crash (a kill -9, a power cut) leaves them: a clean stop counts each as it is written.
            log.warning("counted %s the last run left off the trust lines (it ended between writing them to the "
                        "ledger and counting them)", units.counted(counted, "settlement"))
        return counted

    def loops(self) -> dict[str, Any]:
        # Its first pass runs at once (payments left pending by the last run), then on wake or as the next try comes
        # due (retry_schedule.py: at most an interval apart).
        return {"payments-retry": woken_loop("retrying pending payments", self._wake, self.schedule.wait,
                                             functools.partial(self.retry_all, due=True)),
                # the ledger's records not kept for good go at most an hour late (a tenth of a shorter retention)
                "ledger-retention": periodic("ledger-retention", min(3600.0, self.ledger.retention / 10),
                                             self.ledger.retire)}

    def close(self) -> None:
        pass

    async def retry_all(self, due: bool = False) -> dict[str, int]:
        """One pass over every pending authorization (`due`: those whose try is due, the loop's passes); returns how
        many ended in each outcome."""
        outcome: dict[str, int] = {}
        pending = self.ledger.pending()
        self.schedule.keep_only({auth.id for auth in pending})
        for auth in pending:
            # Taken one after the other: one dropped since the pass began (a tab a start refused to pay) is not asked
            # of its payee, who would countersign a receipt no payment here ever matches.
            if due and auth.id in self._busy and self.schedule.due(auth.id):
                self.schedule.put_off(auth.id)
            if auth.id in self._busy or not self.ledger.is_pending(auth.id) or due and not self.schedule.due(auth.id):
                continue
            with self.working(auth.id):
                try:
                    result = await self.retry(auth)
                except Exception as exc:  # (the ledger's write refused, say): tried again, the others tried now
                    log.exception("retrying payment %s failed", auth.id.hex())
                    result, self._why[auth.id] = "pending", f"{type(exc).__name__}: {exc}"
            if result == "pending" and self.ledger.is_pending(auth.id):
                self.schedule.failed(auth.id, self._why.pop(auth.id, "its payee holds no receipt for it yet"))
            else:
                self.schedule.ended(auth.id)
                dropped = self._for_job(self.dropped_by_retry, auth)
                if dropped is not None and not self.ledger.is_pending(auth.id) and result == "abandoned":
                    dropped(auth)
            self._why.pop(auth.id, None)
            outcome[result] = outcome.get(result, 0) + 1
        return outcome

    async def retry(self, auth: Authorization) -> str:
        """Finish one pending authorization if its payee can be reached: completed, pending or abandoned."""
        node_id = public_id(auth.payee)
        payer = next((i for i in (self.payer, self.node) if i.public_key == auth.payer), None)
        now = time.time()
        try:
            url = self.peers.peer(node_id).url
            receipt = await fetch_receipt(self.client, url, node_id, auth)
            if receipt is None and now <= auth.expires_at:
                claim = self.ledger.claim(auth.id)
                closer = self._for_job(self.closers, auth)  # the most particular kind of work's own
                if claim is not None:
                    receipt = await ask_receipt(self.client, url, node_id, auth, *claim)
                elif closer is not None:
                    receipt = await closer(node_id, url, auth)
        except (PeerUnreachable, PeerNotFound) as exc:
            if now > auth.expires_at + CLOCK_SKEW + GIVE_UP_AFTER:
                log.warning("giving up on authorization %s: payee %s unreachable since it expired (%s)",
                            auth.id.hex(), node_id, exc)
                claimed = self.ledger.claim(auth.id)
                await self.ledger.abandon(auth.id)
                self._dropped(auth, claimed, f"node {node_id} could not be reached until a day after the payment "
                                             "expired", "nothing was paid; once that node is up, pay it again")
                return "abandoned"
            log.info("payment %s to %s still pending: %s", auth.id.hex(), node_id, exc)
            self._why[auth.id] = exc.message
            return "pending"
        except PeerError as exc:  # the payee refused, or answered nonsense: try again later
            if nothing_owed(exc) or _refused_claim(exc):
                # It will never countersign it: nothing was done under it, or it checked the claim and refuses it
                # (it holds no receipt for it, or it would have answered with that).  Kept pending, its amount
                # would stay held until it expires (PAY_TTL), spending the user's credit on nothing.
                claimed = self.ledger.claim(auth.id)
                await self.ledger.abandon(auth.id, force=True)
                # An idle tab dropped (a restart leaves each open one to this retry) loses nothing: no warning.
                log.log(logging.WARNING if _refused_claim(exc) else logging.INFO,
                        "dropped payment %s to %s: the payee will not countersign it (%s)", auth.id.hex(), node_id, exc)
                if _refused_claim(exc):
                    self._dropped(auth, claimed, *self._refusal(auth, node_id, exc))
                return "abandoned"
            log.warning("payment %s to %s still pending: %s", auth.id.hex(), node_id, exc)
            self._why[auth.id] = exc.message
            return "pending"
        if receipt is not None:
            if payer is None:
                return "pending"
            payable = self._for_job(self.payable, auth)
            if payable is not None and not await payable(auth, receipt):
                return "abandoned"  # a receipt for more than is owed: not paid, its authorization dropped
            await self._pay_by(payer, node_id, receipt, self._rows(auth),
                               noted=lambda payment: self.on_paid(node_id, receipt.amount, False))
            paid = self._for_job(self.paid_by_retry, auth)
            if paid is not None:
                await paid(auth, receipt)
            log.info("completed payment %s to %s (%s credits)", auth.id.hex(), node_id, format_credits(receipt.amount))
            return "completed"
        if now > auth.expires_at + CLOCK_SKEW:
            # The payee has no receipt and can no longer make one: nothing is owed.
            claimed = self.ledger.claim(auth.id)
            await self.ledger.abandon(auth.id)
            self._dropped(auth, claimed, f"it expired before node {node_id} countersigned it",
                          "nothing was paid; pay it again if it is still owed")
            log.info("abandoned authorization %s to %s: it expired without a receipt", auth.id.hex(),
                     node_id)
            return "abandoned"
        return "pending"

    async def check_balance(self) -> dict:
        """The `ledger:balance` check of /health: warn when the local user's available credit is below
        `[ledger] low_balance` % of the credit limit."""
        view = await self.ledger.balance(self.payer.public_key)
        out = {"componentType": "component", "observedValue": view["available"], "observedUnit": "micro-credits",
               "status": "warn" if view["low"] else "pass",
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if view["low"]:
            out["output"] = (f"low balance: {format_credits(view['available'])} credits left to spend, below "
                             f"{self.ledger.low_balance}% of the {format_credits(view['credit_limit'])} credit limit")
        return out

    def _dropped(self, auth: Authorization, claimed: tuple[int, dict[str, int]] | None, why: str, hint: str) -> None:
        """Keep for its payer a payment it was told is pending (one with a claim: work done, a prepayment) and that
        this node dropped unpaid: why, and what to do (its hold is released)."""
        if claimed is None:
            return  # a tab's or a job's authorization: its own work tells its owner
        self.dropped.add(auth.id, {"authorization": auth.id.hex(), "node": public_id(auth.payee), "amount": claimed[0],
                                   "job": auth.job, "dropped_at": int(time.time()), "why": why, "hint": hint},
                         int(time.time()))

    def _refusal(self, auth: Authorization, node_id: str, exc: PeerError) -> tuple[str, str]:
        """Why a payee refused a claim, and what to do: a prepayment's said as `prepay` says it when refused at once;
        any other's in the payee's words, quoted as its own (its "this node" is the payee, not the node its payer
        reads them on)."""
        if job_kind(auth.job) == "prepay":
            return prepay_refusal(node_id, exc)
        return (f'node {node_id} refused it, saying: "{their_words(exc)}"',
                "nothing was paid: the credits it held are free again")

    def view(self) -> dict[str, list[dict]]:
        """The payments to other nodes not settled yet, and those dropped unpaid (`GET /v1/ledger/payments`).  A
        pending one's `amount` is what it holds of its payer's credit, as `held` counts it: what it claims (work done,
        a prepayment), or a tab's spent and under way, not its `cap` (the most its payee may claim)."""
        pending = []
        for auth in self.ledger.pending():
            claimed = self.ledger.claim(auth.id)
            # `live`: its owner is using it (an open tab, a payment being made), so the retry leaves it alone
            pending.append({"authorization": auth.id.hex(), "node": public_id(auth.payee), "job": auth.job,
                            "amount": self.ledger.held_for(auth.id) if claimed is None else claimed[0],
                            "cap": auth.cap, "expires_at": auth.expires_at, "live": auth.id in self._busy})
        return {"pending": pending, "dropped": self.dropped.newest()}

    def status(self) -> dict:
        pending = self.ledger.pending()
        # `open`: those of `pending` in use (an open tab, a payment being made), which `xsc ledger payments` lists
        # apart, not waiting for a retry; `dropped_recent`: those of the last week, which `xsc node status` tells (all
        # of them: `xsc ledger payments`).
        live = [a for a in pending if a.id in self._busy]
        return {"pending": len(pending), "pending_amount": sum(self.ledger.held_for(a.id) for a in pending),
                "open": len(live), "open_amount": sum(self.ledger.held_for(a.id) for a in live),
                "dropped": self.dropped.count(), "dropped_recent": self.dropped.count(int(time.time()) - RECENT)}


__all__ = ["Counting", "DEFINITIVE_REFUSALS", "MAX_PREPAY", "PAY_TTL", "Payments", "PeerView", "ReceiptCheck",
           "job_kind", "nothing_owed"]
