"""The owner's side of web functions served on the market: each is placed on a provider the market offers, which
serves it at its own web listener (compute/placed_functions.py), and paid through tabs.

Every `interval` seconds (node.placement_interval), and whenever a function is served or unserved, each function
served `on_market` is kept placed:

- not placed: the market is asked for a provider (never this node), an authorization of the function's own job
  reference is signed for TAB_REQUESTS request budgets, compiling the module (paid.compile_room) and reading the
  files the function mounts (placed_functions.mount_price, as the provider prices it; its whole cap held here: the
  owner cannot overspend), and the function is placed with it, the reading allowed on the tab first
  (GatewayTabs.mount_on: held and written with its tally) and its price sent as the most the tab pays for it
  (`mounting`); with a spend cap, no authorization is signed unless what the cap leaves holds one request's budget,
  that reading and, on a provider that said it lacks the module, its compile.  A provider lacking the module is
  pushed it naming the tab, which pays its compile as a call's or a job's tab does (GatewayTabs.compile_on: its
  price held under the tab and written with its tally before the push is sent), and only if the tab keeps room for
  one request beside it: else nothing is pushed and the function is not placed there (with a spend cap, as one whose
  cap leaves too little).  A provider that refuses is left out and the next one asked.  The authorization of a
  refused placement is dropped, or, if a compile was charged on it, its tab closed and paid for that; that of one
  whose answer was lost goes to the payment retry (it may have reached the provider, and what ran under it is
  paid).
- placed: the provider is asked how its tab stands; once the tab is RENEW checks old or has used half its cap
  (or the function was served again with changes), the function is placed again with a fresh authorization (the
  provider bills the requests that start after it to the new tab), and the old tab is closed for the provider's
  receipt and paid by it (payments retry it if that fails).  A provider that does not answer for LOST_AFTER
  checks, or no longer serves the function, is left: its tab goes to the payment retry (which closes it and pays
  what it ran) and the function is placed on another provider.
- unserved: it is withdrawn from its provider and its tab closed and paid.

This node never sees the requests: what the provider's checks say its tab ran is taken into the tab's tally
(remote_tabs.GatewayTabs.track, on disk from before the authorization is sent), and a receipt is paid only up to it,
plus one request's budget for each request the receipt counts past the last report, plus the compile of its module
if it was pushed naming the tab and the reading of its files if its placement allowed it (the report and the receipt
count them apart, `compiles` and `mounts`); above that nothing is paid.
What each receipt pays (closed here, or by the payment retry) is counted in the function's spend, its row written in
the payment's own batch (`WebFunctions.paying`, `paid_for`); a spend cap bounds each authorization by what is left of the hour less the caps of the
function's tabs not paid yet (`_room`: a restart leaves them to the payment retry), so a provider answers 402 once the
cap is reached; a cap set or lowered under what an open tab allows ends that tab.

Why a function is not placed is tried again every round, and logged once per reason (again after SAID_AGAIN).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..errors import (InsufficientCredit, InvalidArgument, ModuleNotFound, PeerRefused, PeerUnreachable,
                      SpendCapReached, XscError)
from ..ledger.core.model import Authorization, Receipt, encode_authorization
from ..ledger.core.rules import CLOCK_SKEW
from ..ledger.receipts import receipt_check
from ..ledger.settlement import nothing_owed
from ..market.core.models import WEB_TAG
from ..net import functions as wire
from ..net.compute import close_tab
from ..tasks import woken_loop
from ..units import counted
from .paid import compile_room
from .placed_functions import FUNCTION_JOBS, function_job, mount_price, mounted_size
from .provider_tabs import TAB_TTL
from .remote_tabs import TAB_METERS, TAB_OPTIONAL_METERS, OpenTab
from .service import InvokeCall

log = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between checks of where each function is served (node.placement_interval)
RENEW = 12  # checks a tab stays open at most (a minute by default)
LOST_AFTER = 4  # checks' worth of seconds a provider may fail to answer before its function is placed elsewhere
TAB_REQUESTS = 16  # request budgets one tab's authorization covers (all of it held here while it is open)
MAX_TRIES = 3  # providers asked in one round before the function waits for the next
SAID_AGAIN = 600.0  # seconds before a reason a function is not placed, logged once, is logged again


@dataclass
class Placement:
    provider: str
    url: str  # where callers reach the function
    tab: OpenTab  # what this node keeps of the tab it is placed on (GatewayTabs.track)
    price: int
    function: dict[str, Any]  # what was placed (served again with changes: placed again)
    counters: dict[str, Any] = field(default_factory=dict)  # its requests, errors, p50_ms there, as last told
    placed: float = field(default_factory=time.monotonic)
    failing_since: float | None = None

    @property
    def auth(self) -> Authorization:
        return self.tab.auth

    def half_spent(self, used: int) -> bool:
        """Whether its provider's report that its tab owes `used` says the requests used half of what its cap leaves
        them (beside the compile of its module and the reading of its files charged on it, if any)."""
        besides = self.tab.compiles + self.tab.mounts
        return 2 * (used - besides) >= self.auth.cap - besides


class Placements:
    def __init__(self, *, paid: Any, store: Any, me: str, bid: int,
                 paying: Callable[[str, bytes, int], dict[bytes, bytes]],
                 on_paid: Callable[[str, bytes, int], Awaitable[None]],
                 left_this_hour: Callable[[str], int | None], interval: float = INTERVAL) -> None:
        self.paid = paid  # xsc.compute.paid.PaidCompute: the market's deals, payments, the peers and the client
        self.store = store  # xsc.compute.store.ComputeStore: the owner's functions
        self.me, self.bid = me, bid
        # (function name, authorization id, micro-credits): a receipt for its requests about to be paid, the rows
        # that count it in the function's spend (written in the payment's batch); and once it is paid
        self.paying, self.on_paid = paying, on_paid
        self.left_this_hour = left_this_hour  # (function name): what its spend cap leaves this hour, None: no cap
        self.interval, self.renew, self.lost_after = interval, RENEW * interval, LOST_AFTER * interval
        self._placed: dict[str, Placement] = {}
        self._unplaced: dict[str, str] = {}  # why the last try to place a function failed: its owner is told
        self._capped: set[str] = set()  # functions not placed because their spend cap leaves too little
        # module -> the providers that answered they lack it and were not pushed it (a tab with no room for its
        # compile): none is signed a tab for it again while the spend cap leaves no room for that compile
        self._lacking: dict[str, set[str]] = {}
        # per function not placed, each reason logged and when: a round every `interval` repeats them all
        self._logged: dict[str, dict[str, float]] = {}
        self._wake = asyncio.Event()
        self.asleep = False  # nothing on the market nor placed: the loop sleeps until `wake` (tests, status)
        self.moves = 0  # functions placed again elsewhere since start (status, tests)
        paid.payments.add_closer(FUNCTION_JOBS, self._close_for_retry, paid=self._paid_by_retry,
                                 rows=lambda auth, payment: self.paying(_function(auth), auth.id,
                                                                         payment.receipt.amount))

    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        return {"function-placements": woken_loop("keeping web functions placed", self._wake, self.interval,
                                                  self._round)}

    async def close(self) -> None:
        pass  # what is still placed stays: after a restart the tabs go to the payment retry

    def wake(self) -> None:
        self._wake.set()

    def where(self, name: str) -> dict[str, Any]:
        """Where a function on the market is served now: its URL and provider, and its requests, errors and median
        latency there as the provider last told them; while it is not placed, why the last try failed (if one
        did)."""
        placement = self._placed.get(name)
        if placement is None:
            return {"not_placed": self._unplaced[name]} if name in self._unplaced else {}
        return {"url": placement.url, "provider": placement.provider, **placement.counters}

    def capped(self, name: str) -> bool:
        """Whether function `name` is not placed because its spend cap leaves less than a request's budget this
        hour (its callers are told 402, not to retry in a moment)."""
        return name in self._capped and name not in self._placed

    async def keep(self) -> bool:
        """One round: every function on the market placed and its tab renewed; withdrawn ones taken off.  Whether a
        function is on the market or placed (else nothing is to check until one is served on the market)."""
        records = {r["name"]: r for r in self.store.functions() if r.get("on_market")}
        for name in [n for n in self._placed if n not in records]:
            await self._withdraw(name, self._placed.pop(name))
        for name in [n for n in self._unplaced if n not in records]:
            del self._unplaced[name]
        self._capped &= set(records)
        modules = {r["module"] for r in records.values()}
        self._lacking = {m: providers for m, providers in self._lacking.items() if m in modules}
        for name in [n for n in self._logged if n not in records]:
            del self._logged[name]
        await asyncio.gather(*(self._keep(record) for record in records.values()))
        return bool(records or self._placed)

    async def _round(self) -> None:
        if not await self.keep():
            # Nothing to check until a function is served on the market, which wakes the loop (`wake`; one served
            # during the round woke it already: the wait ends at once), rather than reading them all every interval.
            self.asleep = True
            try:
                await self._wake.wait()
            finally:
                self.asleep = False

    async def _keep(self, record: dict[str, Any]) -> None:
        name = record["name"]
        placement = self._placed.get(name)
        if placement is None:
            await self._place(record, set())
            return
        try:
            answer = await wire.status(self.paid.client, self._peer_url(placement.provider), placement.provider,
                                       self.me, name)
        except (PeerUnreachable, PeerRefused, XscError) as err:
            now = time.monotonic()
            placement.failing_since = placement.failing_since or now
            gone = isinstance(err, PeerRefused) and err.details.get("peer_status") == 404
            if gone or now - placement.failing_since >= self.lost_after:
                log.warning("function %s: provider %s stopped serving it (%s): placing it elsewhere", name,
                            placement.provider, err.message)
                del self._placed[name]
                self._let_go(placement.auth)
                self.moves += 1
                await self._place(record, {placement.provider})
            return
        placement.failing_since = None
        placement.counters = _counters(answer)
        self._reported(name, placement, answer.get("tab"))
        left = self._room(name, besides=placement.auth.id)
        if left is not None and placement.auth.cap > left:
            # Its spend cap was set or lowered since this tab was authorized: the tab could spend past it.  It is
            # ended (withdrawn and paid) and the function placed again on a tab the cap bounds, if it leaves one.
            del self._placed[name]
            await self._withdraw(name, placement)
            await self._place(record, set())
            return
        used = answer.get("tab", {}).get("total", 0) if isinstance(answer.get("tab"), dict) else 0
        used = used if type(used) is int else 0
        if time.monotonic() - placement.placed >= self.renew or placement.half_spent(used) \
                or placed_function(record) != placement.function:
            await self._renew(record, placement, used)

    def _reported(self, name: str, placement: Placement, tab: Any) -> None:
        """What the provider says its current tab's requests cost, taken into the tab's tally (the most its
        receipt is paid, with a request's budget for each request it counts past the report) if it checks."""
        if not isinstance(tab, dict) or tab.get("authorization") != placement.auth.id.hex():
            return  # (a report of its previous tab, answered before the next one was placed: nothing to take)
        if not self.paid.gateway_tabs.reported(placement.auth.id, tab.get("total"), tab.get("count"),
                                               tab.get("compiles", 0), tab.get("mounts", 0)):
            log.info("function %s: provider %s reported its tab ran %r requests owing %r (%r of it compiles, %r "
                     "reading its files), which does not check (fewer than it reported before, more than their "
                     "budgets, or a compile or a reading above what this node allowed): not taken", name,
                     placement.provider, tab.get("count"), tab.get("total"), tab.get("compiles"), tab.get("mounts"))

    async def _place(self, record: dict[str, Any], left_out: set[str]) -> None:
        name = record["name"]
        self._capped.discard(name)
        over = self.paid.provider_terms.passing_over()  # as a call's provider is chosen (PaidCompute.invoke)
        tries, refusal = 0, None
        while tries < MAX_TRIES:
            try:
                # only a provider with a web listener can serve it (its compute ask says so): never one without
                assignment = await self.paid.dealing.compute_deal(self._call(record).fuel or 0, self.bid,
                                                                  frozenset(left_out | {self.me}) | over.left_out(),
                                                                  require_tags=(WEB_TAG,))
            except XscError as err:
                if over.exhausted():
                    continue
                self._failed(name, logging.INFO, err, f"no provider on the market now ({err.message})")
                # a provider's refusal says more than that no other one is left after it
                self._unplaced[name] = refusal or err.message
                return
            # A placed function's requests are paid on its tab, never served from the allocation: its deal holds
            # nothing of it (its callers are strangers, what they ran is its provider's word, and a placement lives
            # for hours: docs/allocation.md, "Serving").
            self.paid.dealing.ended(assignment)
            provider = assignment.provider
            if await over.passes(provider):
                continue
            tries += 1
            try:
                self._placed[name] = await self._placed_on(record, provider, assignment.price,
                                                           {"need": assignment.need_id, "provider": provider,
                                                            "price": assignment.price})
                log.info("function %s is served by %s at %s", name, provider, self._placed[name].url)
                self._unplaced.pop(name, None)
                self._logged.pop(name, None)
                return
            except (PeerRefused, PeerUnreachable) as err:
                refusal = self._unplaced[name] = f"provider {provider} refused it: {err.message}"
                self._failed(name, logging.WARNING, err, refusal, provider)
                self.paid.provider_terms.wanted_prepayment(provider, err)
                left_out.add(provider)
            except XscError as err:  # this node's own refusal (too little credit for the tab): the next round
                # a spend cap spent is what its owner asked for: no warning
                self._failed(name, logging.INFO if isinstance(err, SpendCapReached) else logging.WARNING, err,
                             f"not placed: {err.message}")
                self._unplaced[name] = err.with_hint
                if isinstance(err, SpendCapReached):
                    self._capped.add(name)
                return

    def _failed(self, name: str, level: int, err: XscError, message: str, provider: str = "") -> None:
        """Log why a try to place function `name` failed, unless the same reason was logged in the last SAID_AGAIN
        seconds (its owner's list, `where`, always has the latest).  A reason is its error's codes, and the
        provider's that refused it: a message names a fresh need and window each round."""
        details = err.details or {}
        needs = details.get("needs") if isinstance(details.get("needs"), dict) else {}
        reason = f"{provider}:{err.code}:{details.get('peer_code', '')}:{','.join(sorted(map(str, needs.values())))}"
        now = time.monotonic()
        logged = self._logged.setdefault(name, {})
        for old in [r for r, at in logged.items() if now - at >= SAID_AGAIN]:
            del logged[old]
        if reason not in logged:
            logged[reason] = now
            log.log(level, "function %s: %s", name, message)

    async def _placed_on(self, record: dict[str, Any], provider: str, price: int, deal: dict[str, Any]) -> Placement:
        """The function placed on `provider` with a fresh authorization (dropped if the placement fails): only if its
        spend cap leaves room for one request, reading the files it mounts and, if the provider answered before that
        it lacks the module, compiling it; else nothing is signed nor sent."""
        compile, mounting = compile_room(self.paid.compute, record["module"], price), self._mounting(record, price)
        lacking = provider in self._lacking.get(record["module"], ())
        tab = await self._authorize(record, provider, price, compile, mounting, lacking)
        if tab is None:
            raise self._cap_refusal(record, price, compile if lacking else 0, mounting)
        try:
            url = await self._send(record, provider, price, deal, tab, mounting)
        except BaseException as err:
            await self._unsent(record["name"], tab, err)
            raise
        return Placement(provider, url, tab, price, placed_function(record))

    async def check(self, record: dict[str, Any]) -> str | None:
        """Function `record` as it is served on the market, judged by the market now: refused if its spend cap is below
        one request's budget at the price it would be placed at (it could never be placed); why it cannot be placed
        now if no provider is on the market (it waits for one, and there is no price to judge a cap by); else None."""
        call, cap, name = self._call(record), record["spend_cap"], record["name"]
        try:
            assignment = await self.paid.dealing.compute_deal(call.fuel or 0, self.bid, frozenset({self.me}),
                                                              require_tags=(WEB_TAG,))
        except XscError as err:
            return f"no provider on the market now ({err.message})"
        self.paid.dealing.ended(assignment)  # a quote: nothing is placed on it
        price = assignment.price
        budget = self.paid.compute.budget(call, price)
        compile, mounting = compile_room(self.paid.compute, record["module"], price), self._mounting(record, price)
        least = budget + mounting
        if cap is not None and cap < least:
            reading = f", and reading the files it mounts there, {mounting:,}" if mounting else ""
            raise InvalidArgument(
                f"a spend cap of {counted(cap, 'micro-credit')} an hour is below one request's budget at the market's "
                f"price now, {budget:,} (the most a request within its limits may cost){reading}: {name} could never "
                "be placed", hint=f"a cap of at least {least}, or a lower --fuel, --memory or --timeout: xsc compute "
                                  f"serve {name} {record['module']} ... --on-market --spend-cap {least}",
                field="spend_cap", least=least)
        if cap is not None and cap < least + compile:
            return (f"its spend cap places it only on a provider that has its module already: compiling it on one that "
                    f"lacks it costs {compile:,} more this hour (a cap of at least {least + compile} places it on any: "
                    f"xsc compute serve {name} {record['module']} ... --on-market --spend-cap {least + compile})")
        return None

    def _mounting(self, record: dict[str, Any], price: int) -> int:
        """What reading the files function `record` mounts costs a provider placing it at `price`, as it prices it
        (placed_functions.mount_price of the sizes their capabilities say)."""
        return mount_price(mounted_size(record), price) if record.get("inputs") else 0

    def _cap_refusal(self, record: dict[str, Any], price: int, compile: int = 0, mounting: int = 0,
                     besides: bytes | None = None) -> SpendCapReached:
        """Why a function is not placed while its spend cap leaves less than one request's budget (and `compile`, the
        price of compiling its module on a provider that lacks it, and `mounting`, of reading the files it mounts
        there), with the cap that would place it (a request's budget is its limits' worst case, mostly far more than
        it costs); `besides`: the tab it is not placed on."""
        name, cap = record["name"], record["spend_cap"]
        budget = self.paid.compute.budget(self._call(record), price)
        left = self._room(name, besides) or 0
        unpaid = (self.left_this_hour(name) or 0) - left
        compiling = f" and compiling its module there, which its provider lacks, {compile:,}" if compile else ""
        reading = f" and reading the files it mounts there, {mounting:,}" if mounting else ""
        least = cap - left + budget + compile + mounting
        return SpendCapReached(
            f"its spend cap leaves {left:,} micro-credits this hour"
            f"{f' beside the {unpaid:,} its tabs not paid yet may still be paid' if unpaid else ''}, less than one "
            f"request's budget of {budget:,} (the most a request within its fuel, memory and time limits may cost)"
            f"{compiling}{reading}",
            hint=f"serve it again, with its other options as before, under a cap of at least {least} or with a lower "
                 f"--fuel, --memory or --timeout: xsc compute serve {name} {record['module']} ... --on-market "
                 f"--spend-cap {least}",
            budget=budget, left=left, **({"compile": compile} if compile else {}),
            **({"mounting": mounting} if mounting else {}))

    def _compile_refusal(self, record: dict[str, Any], tab: OpenTab) -> InsufficientCredit:
        """Why the function is not placed on a provider lacking its module whose compile its tab cannot pay beside
        one request (nothing is pushed: a push naming no tab would leave the compile on this node's trust line
        there, outside the function's spend)."""
        compile = compile_room(self.paid.compute, record["module"], tab.price)
        if record["spend_cap"] is not None:
            return self._cap_refusal(record, tab.price, compile, tab.mounts, besides=tab.auth.id)
        return InsufficientCredit(f"compiling its module on provider {tab.provider}, which lacks it ({compile:,} "
                                  "micro-credits), cannot be held on its tab now",
                                  hint="check what this node may spend: xsc ledger balance")

    async def _unsent(self, name: str, tab: OpenTab, err: BaseException) -> None:
        """An authorization whose placement failed: dropped if the provider refused it (nothing can run under
        it), or this node did before pushing the module; closed and paid at once if a compile was charged on it
        before the provider refused (the compile was done, as for a job given up before it ran); else left to the
        payment retry (the placement may have reached the provider before its answer was lost: what ran under it is
        then paid, nothing if nothing did)."""
        if isinstance(err, PeerRefused) and (tab.compiles or tab.mounts):
            # (its receipt, or nothing-owed if neither the push nor the reading was done)
            await self._pay(name, tab.provider, tab.auth)
        elif isinstance(err, (PeerRefused, InsufficientCredit)):
            await self.paid.gateway_tabs.refused(tab.auth)  # and what it held is released
        else:
            self._let_go(tab.auth)

    async def _renew(self, record: dict[str, Any], placement: Placement, used: int) -> None:
        # The provider has the module it serves and the files it mounts: the next tab keeps room for compiling a
        # module, or reading files, only if the function was served again with others.
        price = placement.price
        compile = compile_room(self.paid.compute, record["module"], price) \
            if record["module"] != placement.function["module"] else 0
        mounting = self._mounting(record, price) if record["inputs"] != placement.function["inputs"] else 0
        tab = await self._authorize(record, placement.provider, price, compile, mounting, False)
        if tab is None:
            # Its spend cap is held by this tab, so no next tab can be had beside it.  Left open, the tab would be
            # neither paid (its runs never counted in the hour, so the cap never leaves room) nor renewed until it
            # expires, unpaid.  Once it cannot take another request, is half spent, half its life is gone or the
            # function was served again with changes, it is ended (withdrawn and paid) and the function placed
            # again when the cap leaves a request's budget.
            budget = self.paid.compute.budget(self._call(record), placement.price)
            if placement.half_spent(used) or used + budget > placement.auth.cap \
                    or time.monotonic() - placement.placed >= TAB_TTL / 2 \
                    or placed_function(record) != placement.function:
                del self._placed[record["name"]]
                await self._withdraw(record["name"], placement)
            return
        try:
            await self._send(record, placement.provider, price, {"provider": placement.provider, "price": price}, tab,
                             mounting)
        except (PeerRefused, PeerUnreachable, InsufficientCredit) as err:
            await self._unsent(record["name"], tab, err)
            log.info("function %s: renewing its tab with %s failed (%s)", record["name"], placement.provider,
                     err.message)
            return
        old, placement.tab, placement.placed = placement.auth, tab, time.monotonic()
        placement.function = placed_function(record)
        await self._pay(record["name"], placement.provider, old)

    async def _authorize(self, record: dict[str, Any], provider: str, price: int, compile: int, mounting: int,
                         lacking: bool) -> OpenTab | None:
        """A fresh tab for the function with `provider` (its authorization signed and its tally on disk), its cap
        TAB_REQUESTS request budgets, room to compile its module (`compile`: used only if the provider lacks it) and
        to read the files it mounts (`mounting`), bounded by what its spend cap leaves (`_room`); None, nothing
        signed, if that is less than one request's budget and `mounting` (and `compile`, if the provider is known to
        be `lacking` the module): such a tab could not place it.  Room left unused by a push or a reading is the
        requests' (the provider serves them up to the cap)."""
        call = self._call(record)
        budget = self.paid.compute.budget(call, price)
        cap = budget * TAB_REQUESTS + compile + mounting
        left = self._room(record["name"])
        if left is not None:
            cap = min(cap, left)
            if cap < budget + mounting + (compile if lacking else 0):
                return None
        auth = await self.paid.payments.authorize(provider, cap, function_job(self.me, record["name"]), ttl=TAB_TTL)
        self.paid.payments.keep_off(auth.id)  # the retry closes no tab still open
        try:
            # The provider alone sees the requests: what its receipt is paid is held to what it reports they cost,
            # before and after a restart of this node (remote_tabs.GatewayTabs.track).
            return await self.paid.gateway_tabs.track(auth, budget, price)
        except BaseException:
            with self.paid.payments.working(auth.id):
                await self.paid.payments.refused(auth)
            raise

    def _room(self, name: str, besides: bytes | None = None) -> int | None:
        """What function `name`'s spend cap leaves for a tab this hour (None: no cap): what is left of the hour, less
        the caps of its tabs not paid yet (but `besides`).  Any of them may still be paid up to its cap: its provider
        may serve requests under it until it is closed, the one it is placed on and those left to the payment retry
        (a provider gone quiet, a restart of this node) alike, and what a receipt pays counts in the hour only then."""
        left = self.left_this_hour(name)
        if left is None:
            return None
        job, now = function_job(self.me, name), time.time()
        # (past its expiry and the clock skew, no provider takes a request under a tab any more)
        return max(0, left - sum(a.cap for a in self.paid.ledger.pending()
                                 if a.job == job and a.id != besides and now <= a.expires_at + CLOCK_SKEW))

    async def _send(self, record: dict[str, Any], provider: str, price: int, deal: dict[str, Any],
                    tab: OpenTab, mounting: int) -> str:
        """The function placed on `tab`, which pays reading the files it mounts (at most `mounting`: allowed on the
        tab before it is sent, `GatewayTabs.mount_on`) and, if the provider lacks its module, compiling it."""
        url = self._peer_url(provider)
        if mounting and not self.paid.gateway_tabs.mount_on(tab, mounting):
            raise InsufficientCredit(f"reading the files the function mounts on provider {provider} ({mounting:,} "
                                     "micro-credits) cannot be held on its tab now",
                                     hint="check what this node may spend: xsc ledger balance")
        body = {"function": placed_function(record),
                "price": price, "memory_price": self.paid.compute.memory_price,
                "authorization": tab.hex, "deal": deal, "mounting": mounting}
        try:
            return await wire.place(self.paid.client, url, provider, self.me, body)
        except PeerRefused as err:
            if err.details.get("peer_code") != ModuleNotFound.code:
                raise
        # Its compile charged on the tab, as a call's or a job's is; pushed naming none, it would stay on this node's
        # trust line there, outside the function's spend and cap: not pushed then.
        lacking = self._lacking.setdefault(record["module"], set())
        lacking.add(provider)
        await self.paid.push(url, provider, self._call(record), tab, unpaid=lambda: self._compile_refusal(record, tab))
        lacking.discard(provider)
        return await wire.place(self.paid.client, url, provider, self.me, body)

    async def _pay(self, name: str, provider: str, auth: Authorization) -> None:
        """Close a tab for the provider's receipt and pay by it (the payment retry does it if this fails)."""
        with self.paid.payments.working(auth.id):
            try:
                try:
                    receipt = await close_tab(self.paid.client, self._peer_url(provider), provider,
                                              encode_authorization(auth).hex(),
                                              check=receipt_check(provider, auth, meters=TAB_METERS,
                                                                  optional=TAB_OPTIONAL_METERS))
                except PeerRefused as err:
                    if not nothing_owed(err):
                        raise
                    await self.paid.gateway_tabs.refused(auth)  # no request ran under it: nothing is paid
                    return
                if not await self.paid.gateway_tabs.payable(auth, receipt):
                    return  # above what the provider reported: nothing of it is paid (logged)
                payment = await self.paid.payments.complete(provider, auth, receipt)
                self.paid.gateway_tabs.settled(auth.id)
            except (XscError, OSError) as exc:
                log.info("closing function %s's tab with %s failed (%s); the payment retry closes it", name,
                         provider, exc)
                self.paid.payments.wake()
                return
        await self.on_paid(name, auth.id, payment.receipt.amount)

    async def _close_for_retry(self, provider: str, url: str, auth: Authorization) -> Receipt:
        """The payment retry's close of a function's tab (a provider that went away, or one left open by a
        restart)."""
        return await close_tab(self.paid.client, url, provider, encode_authorization(auth).hex(),
                               check=receipt_check(provider, auth, meters=TAB_METERS, optional=TAB_OPTIONAL_METERS))

    async def _paid_by_retry(self, auth: Authorization, receipt: Receipt) -> None:
        """What the payment retry paid for a function's tab is counted in the function's spend, whether it closed
        the tab or found the receipt the provider already held (the answer to this node's own close was lost):
        uncounted, the function's spend cap would let it spend that much again."""
        self.paid.gateway_tabs.settled(auth.id)
        await self.on_paid(_function(auth), auth.id, receipt.amount)

    def _let_go(self, auth: Authorization) -> None:
        """A tab this node no longer uses: the payment retry closes it (and pays what ran) when it can."""
        with self.paid.payments.working(auth.id):
            pass  # ends the keep_off: the retry may take it from now on
        self.paid.payments.wake()

    async def _withdraw(self, name: str, placement: Placement) -> None:
        try:
            await wire.withdraw(self.paid.client, self._peer_url(placement.provider), placement.provider, name)
        except (PeerRefused, PeerUnreachable) as err:
            log.info("withdrawing function %s from %s failed (%s)", name, placement.provider, err.message)
        await self._pay(name, placement.provider, placement.auth)

    def _call(self, record: dict[str, Any]) -> InvokeCall:
        limits = record["limits"]
        call = InvokeCall(record["module"], record["entrypoint"], [], limits.get("fuel"), limits.get("memory"),
                          limits.get("timeout"), True)
        return InvokeCall(call.module, call.function, [], self.paid.compute.limits(call).fuel, call.memory,
                          call.timeout, True)

    def _peer_url(self, provider: str) -> str:
        return self.paid.peers.peer(provider).url


def _function(auth: Authorization) -> str:
    """The name of the function a tab's authorization is for (its job: placed_functions.function_job)."""
    return auth.job.rpartition(":")[2]


def _counters(answer: dict[str, Any]) -> dict[str, Any]:
    """A provider's counters of a function it serves, those that are what they say (a peer's word)."""
    counters = {k: answer.get(k) for k in ("requests", "errors") if type(answer.get(k)) is int and answer[k] >= 0}
    p50 = answer.get("p50_ms")
    if type(p50) in (int, float) and 0 <= p50 <= 1e9:
        counters["p50_ms"] = float(p50)
    return counters


def placed_function(record: dict[str, Any]) -> dict[str, Any]:
    """What a provider is told of a function it serves (its spend cap and the rest are the owner's business)."""
    return {k: record[k] for k in ("name", "module", "entrypoint", "inputs", "env", "limits", "max_body",
                                   "concurrency")}


__all__ = ["Placements", "RENEW", "LOST_AFTER"]
