"""Remote invokes paid through tabs: one authorization and one ledger transfer per (gateway, provider) per
interval, not per call.  The same idea as ledger/tabs.py, across two nodes (the gateway's side here, the provider's
in compute/provider_tabs.py)::

    gateway (payer)                                   provider
    open: authorize(cap = TAB_CALLS budgets)          (pending on disk: one synced write per tab; nothing held)
    each call: hold its budget under the tab
               POST invoke {..., "tab": true} ----->  checks the authorization (not expired, not closed, its
                                                      cap covers what ran plus what runs plus this budget);
                                                      runs; the run's amount is written with its provenance
                                                      record (one group commit) under c/t/<auth><run>
                <-----------------------------------  {run, tab: {total, count}}
               only its metered amount stays held
    close (after INTERVAL, or when full, once no call is in flight):
    POST tabs/close {authorization} --------------->  countersigns ONE receipt for its total of the tab
    complete(receipt): the payment  <---------------  {receipt}

Held credit follows the work, not the cap: the tab's authorization holds nothing when it is signed; each call
holds its budget under it (`LedgerService.hold_for`: 402 `insufficient-credit` if the payer cannot), and once
answered only what it owes stays held until the tab is paid.  So what a gateway holds for remote invokes is
the budgets of the calls in flight, plus what answered calls owe and is not paid yet (at most one interval's
worth), plus the budgets of calls whose answer was lost (they may have run).

The receipt goes through the one pay-by-receipt path (ledger/settlement.py).  A kill -9 of the gateway leaves the
authorization pending on disk; the payment retry then asks the provider to close the tab (`Payments.add_closer`).  A
kill -9 of the provider loses nothing it acknowledged: each run's amount is on its disk before the answer, and its
total is summed from there.  The gateway pays a receipt only up to its own tally (what the provider's answers said
each call cost, plus the budgets of calls whose answer was lost), whether the close or the payment retry got it: a
provider that inflates its total is not paid at all (the authorization is dropped; its receipt stays unpaid on its
chain, both chains verify).

The tally is on the gateway's disk too (`c/y/<auth>`), from the tab's opening (a synced write, before the
authorization is shown to anyone) until the tab is paid or dropped, so a restart pays what was used and no more:
the calls in flight when the gateway stopped count as lost ones (they may have run), and a tab with no tally was
never shown to anyone and is dropped (`start`; a placed function's left by a node that kept them no tally
was shown, and is held to its cap: `_tally_untracked`).  From the start on, the tab
holds what its tally says it may still be paid, not the cap the ledger holds for any pending authorization
(`_restored`).  It is written unsynced before any call it counts is sent (`TabTallies.write`, the batcher's
`before_send`: a call reserved waits for that write, made once for its whole batch), and once per loop turn in which
answers changed it: one small write per batch of calls and one per turn of answers, never an fsync; the answer of a
call whose provider's record is checked is given only once that write is made (`write_now`: the check it owes is in
it, compute/spot_checks.py).  A kill -9 loses none of it (each write is in the kernel's hands before it returns); a
crash of the machine may lose the writes since the database's last synced write (the tally is then as it was then).

A module a provider lacks is pushed naming the tab whose call found it lacking (`compile_on`): the provider charges
compiling it on that tab, once, and its receipt says so (usage `compiles`, within its amount).  The tab holds that
compile's price (`compile_price` of the module's length at the tab's price, computed here) from before the push is
sent, on disk with its tally, and its receipt is paid up to the tally plus the compiles it claims, never more than
those it was allowed: a provider that claims a compile not pushed on the tab, or more than its price, is refused as
any inflated receipt is.  A receipt without `compiles` (an older provider's) charged none.

A job's tab (`reserve_alone`) is its alone, and its authorization's job reference names it (`job_tab`:
compute:rtab:job:JOB_ID), so both nodes' ledgers say which job each such payment was for.  It is shown to its
provider before the job's record names it, and its run is asked for only once its bytes are sent: its tally counts
the job's budget from then on (`run_asked`), and owes nothing before but the compile of a module pushed for the job
(its cap has room for one, `compile_on`): a job given up before it ran still pays that work, done at a price held
before the push was sent (by the next start, if a kill -9 came first: `unanswered_after_restart`).

A placed function's tab (compute/placements.py) is one this node sends no call on: its callers reach the provider
alone.  Its tally is what the provider's reports said its requests cost (`track`, `reported`: a report that takes
back an earlier one, or makes a request cost more than its budget, is not taken), and its receipt is paid up to that
plus one request's budget for each request the receipt counts past the last report (served since, this node down
included), plus the compile of its module if it was pushed naming the tab (`compile_on`, as for a call's: a
provider's report counts it apart, `compiles`), plus the reading of the files its function mounts if its placement
allowed it (`mount_on`: the price this node computed, held and written with its tally before the placement is sent;
counted apart, `mounts`, and a report or a receipt claiming more is refused as one claiming more compile is); the same
rows, written the same way, and the same check (`_payable`).
From a start on such a tab holds its cap still: its provider may be serving requests under it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable


from .. import keys
from ..db import Database, Error as DatabaseError
from ..errors import InsufficientCredit, PeerRefused, XscError
from ..units import counted
from ..identity import public_id
from ..ledger.core.model import (JOB_TAB_PREFIX, MAX_JOB_BYTES, Authorization, Receipt, encode_authorization,
                                 format_credits)
from ..ledger.settlement import Payments, nothing_owed
from ..net.compute import close_tab
from ..net.peer_client import PeerClient
from ..ledger.receipts import receipt_check
from ..tasks import Locks, in_pool, stop
# What both sides agree on, kept with the provider's side (compute/provider_tabs.py).
from .provider_tabs import JOB, TAB_TTL, compile_price

log = logging.getLogger(__name__)

JOB_TABS = JOB_TAB_PREFIX  # + the job's id: a job's tab (`reserve_alone`), so its payment names the job it paid for
TAB_CALLS = 16  # budgets one tab's cap covers (the most its provider may countersign; not held as such)
INTERVAL = 1.0  # seconds a tab stays open at most
TAB_METERS = frozenset({"fuel", "invokes"})
# A receipt counts compiles, and a placed function's the reading of its files, only when there were any.
TAB_OPTIONAL_METERS = frozenset({"compiles", "mounts"})
# A tab's tally on the gateway's disk: what the answers owe, the budgets of calls in flight or whose answer was
# lost (they may have run), and how many calls of each.
_TALLY = struct.Struct(">QQII")
# A tab some module was pushed for: the same, then the compiles its provider may charge on it (8) and for how many
# modules (4).
_TALLY_COMPILES = struct.Struct(">QQIIQI")
# A placed function's tab's: what its provider's reports said its requests cost, 0, how many requests they counted,
# 0, and the budget of one request (what each request its receipt counts past the reports may have cost).
_REPORTED = struct.Struct(">QQIIQ")
# The same, of one its module was pushed naming (a provider that lacked it): then the compile its provider may charge
# on it (8) and for how many modules (4).
_REPORTED_COMPILES = struct.Struct(">QQIIQQI")
# The same, of one the reading of its function's files may be charged on (its owner placed it there expecting them
# read): then what that reading may cost (8).
_REPORTED_MOUNTS = struct.Struct(">QQIIQQIQ")
# A tab a check of one of its answers made unpayable (GatewayTabs.checked): it owes nothing; how many calls it counted
# and lost, and how many answers were caught and how many records never shown.
_UNPAYABLE = struct.Struct(">IIII")


# --- gateway side --------------------------------------------------------------------------------------
@dataclass
class OpenTab:
    provider: str
    auth: Authorization
    price: int
    opened: float = field(default_factory=time.monotonic)
    reserved: int = 0  # budgets of calls in flight
    metered: int = 0  # what answered calls owe
    count: int = 0
    unknown: int = 0  # calls whose answer was lost (they may have run)
    lost_budget: int = 0  # their budgets: what they may have cost, held until the tab is paid
    in_flight: int = 0
    closing: bool = False
    # A tab this node sends no call on (a placed function's: its callers reach the provider): `metered` and `count`
    # are then what the provider's reports said, and each request its receipt counts past them owes at most this.
    per_request: int = 0
    # Whether the work reserved on it may have run.  A job's tab (`reserve_alone`) is shown to its provider before
    # its run is asked for (`run_asked`): until then nothing can have run under it, and its tally owes nothing.
    asked: bool = True
    # Answers whose provider's record is being checked (compute/spot_checks.py): the tab is not closed before they
    # are, since nothing of a tab is paid once the record of one of its answers does not hold (`checked`).
    checking: int = 0
    forged: int = 0  # answers its provider's records contradict
    unshown: int = 0  # answers whose record its provider never showed
    compiles: int = 0  # what compiling the modules pushed naming it may cost (`GatewayTabs.compile_on`)
    compiled: set[str] = field(default_factory=set)  # those modules (taken up from disk: only how many)
    modules: int = 0  # how many
    mounts: int = 0  # what reading the files of the placed function it pays may cost (`GatewayTabs.mount_on`)

    def may_compile(self, module: str, price: int) -> None:
        """Its provider may charge compiling `module` on it, at most `price` (`GatewayTabs.compile_on`)."""
        self.compiles += price
        self.compiled.add(module)
        self.modules += 1

    def holds(self, ledger: Any, price: int, what: str) -> bool:
        """Whether `price` more for `what` (a compile, a reading) is held under it: only while it is payable and keeps
        room beside it for one request (a placed function's: else the function cannot run there)."""
        try:
            if self.unpayable or price + self.per_request > self.room:
                return False
            ledger.hold_for(self.auth, price)
        except InsufficientCredit as err:
            log.info("%s on %s is not charged on its tab (on this node's line there, if at all): %s", what,
                     self.provider, err)
            return False
        return True

    @property
    def room(self) -> int:
        """What is left under its cap once what it owes, holds and may be charged for compiles is counted."""
        return self.auth.cap - (self.metered + self.reserved + self.lost_budget + self.compiles + self.mounts)

    @property
    def unpayable(self) -> bool:
        """Whether a check of one of its answers found its pay not owed: its tally owes nothing."""
        return bool(self.forged or self.unshown)

    @functools.cached_property
    def hex(self) -> str:
        """The authorization's hex, as every call on the tab carries it (encoded once)."""
        return encode_authorization(self.auth).hex()


class TabTallies:
    """The gateway's tallies of its tabs on disk (keys.tab_tally), and the rows written with them (a check's, owed or
    no longer: compute/spot_checks.py, owed_checks.py).  A tab's first tally is synced (`first`); the later ones are
    written unsynced, once a loop turn in which answers changed them, and before any call is sent (`write`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._changed: dict[bytes, OpenTab] = {}  # tabs whose tally changed since it was written, by authorization id
        self._rows: dict[bytes, bytes | None] = {}  # written with the next tallies (None: deleted): `write_with`
        self._writing: asyncio.Handle | None = None

    async def first(self, tab: OpenTab) -> None:
        """A tab's first tally, synced: on disk before its authorization is shown to anyone (a call, or the retry's
        close, would show it to its provider, who could countersign up to its cap)."""
        await in_pool(None, functools.partial(self.db.put, keys.tab_tally(tab.auth.id), _tally(tab), sync=True))

    def changed(self, tab: OpenTab, soon: bool = True) -> None:
        """`tab`'s tally is to be written: before the next call is sent, and (`soon`) at the end of this loop turn."""
        self._changed[tab.auth.id] = tab
        if soon and self._writing is None:
            self._writing = asyncio.get_running_loop().call_soon(self._write_soon)

    def write_with(self, rows: dict[bytes, bytes | None]) -> None:
        """`rows` written (None: deleted) in the next write of the tallies, at the end of this loop turn at the latest:
        with the tally of the answers of this turn, and before any call is sent."""
        if rows:
            self._rows.update(rows)
            if self._writing is None:
                self._writing = asyncio.get_running_loop().call_soon(self._write_soon)

    def write_now(self) -> bool:
        """What the end of this loop turn would write, written now: before an answer that must not reach its user
        unless its rows are on disk.  Whether it was written (a failed write is logged, and what it held written with
        the next: before any call is sent, or with the next answer or check's outcome)."""
        if self._writing is not None:
            self._writing.cancel()
        return self._write_soon()

    def _write_soon(self) -> bool:
        self._writing = None
        try:
            self.write()
        except Exception:  # kept to write with the next change, or before the next call is sent
            log.exception("writing the tallies of %s and %s failed", counted(len(self._changed), "tab"),
                          counted(len(self._rows), "row"))
            return False
        return True

    def unwritten(self, rows: dict[bytes, bytes | None]) -> bool:
        """Whether one of `rows` was handed to `write_with` and is not written yet (the disk: none, or older)."""
        return any(key in self._rows for key in rows)

    def unwritten_rows(self) -> dict[bytes, bytes | None]:
        """Every row handed to `write_with` and not written yet (None: one to be deleted)."""
        return dict(self._rows)

    def write(self) -> None:
        """Write the tallies changed since they were last written, and the rows handed to `write_with`, in one
        unsynced write: once per loop turn in which answers changed them, and before any call is sent
        (`InvokeBatcher.before_send`), so what a provider may have run is on disk before it can run it.  Raises if the
        write fails (the call is then not sent)."""
        if not self._changed and not self._rows:
            return
        changed, rows = list(self._changed.values()), self._rows
        with self.db.write_batch() as batch:
            for tab in changed:
                batch.put(keys.tab_tally(tab.auth.id), _tally(tab))
            for key, value in rows.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        self._rows = {}
        for tab in changed:
            if self._changed.get(tab.auth.id) is tab:
                del self._changed[tab.auth.id]

    def forget(self, authorization_id: bytes) -> None:
        """The tab is paid or dropped: its tally is of no more use (deleted unsynced: one a crash leaves is deleted
        at the next start, its authorization no longer pending)."""
        self._changed.pop(authorization_id, None)
        try:
            self.db.delete(keys.tab_tally(authorization_id))
        except (DatabaseError, OSError) as exc:
            log.warning("deleting the tally of tab %s failed (%s): the next start deletes it", authorization_id.hex(),
                        exc)

    def on_disk(self) -> int:
        """Tabs whose tally is on disk now (tests)."""
        with self.db.iterator(prefix=keys.TAB_TALLIES, include_value=False) as it:
            return sum(1 for _ in it)

    def close(self) -> None:
        """Write what is left to write now, none of it later."""
        if self._writing is not None:
            self._writing.cancel()
            self._writing = None
        self.write()


class GatewayTabs:
    def __init__(self, *, db: Database, payments: Payments, client: PeerClient, peers: Any,
                 interval: float = INTERVAL) -> None:
        self.db, self.payments, self.client, self.peers, self.interval = db, payments, client, peers, interval
        self.ledger = payments.ledger
        self.refused_receipts = 0  # receipts above this node's tally, not paid (metrics, tests)
        self._open: dict[str, OpenTab] = {}
        # Every tab of this run not paid or dropped yet, by authorization id: its tally bounds the receipt the
        # payment retry pays, when closing it failed (a lost answer: the provider may hold a receipt already).
        self._unpaid: dict[bytes, OpenTab] = {}
        self._opening: Locks[str] = Locks()  # provider -> one tab opened at a time (kept while in use)
        self._closing: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._owing = asyncio.Event()  # a tab is kept unpaid: the loop, asleep while none was open, wakes (`_owes`)
        self.asleep = False  # whether the loop sleeps until then: no tab open (tests, status)
        self.tallies = TabTallies(db)
        payments.add_closer(JOB, self._close_for_retry, payable=self._payable, paid=self._paid_by_retry,
                            dropped=self._dropped_by_retry)

    @property
    def opening(self) -> int:
        """Providers a tab is being opened with now, or waited for (tests)."""
        return len(self._opening)

    async def reserve(self, provider: str, price: int, budget: int, room: Callable[[], int] = lambda: 0) -> OpenTab:
        """The open tab with `provider` at `price` that covers `budget` more (opening one if needed, its cap TAB_CALLS
        budgets and `room()` to compile the call's module: `compile_on`; a cap holds nothing)."""
        # Kept aside from what the call may hold, as the payer's balance shows it; asked first: between finding a
        # usable tab and reserving on it nothing waits (the tab could be closed meanwhile).
        promised = await self.ledger.promised(self.payments.payer.public_key)
        tab = self._usable(provider, price, budget)
        if tab is None:
            async with self._opening.one(provider):
                tab = self._usable(provider, price, budget)
                if tab is None:
                    old = self._open.pop(provider, None)
                    if old is not None:
                        self._retire(old)
                    auth = await self.payments.authorize(provider, budget * TAB_CALLS + room(), JOB, ttl=TAB_TTL,
                                                         hold=0)
                    self.payments.keep_off(auth.id)  # the retry closes no tab still open (until `_close`)
                    opened = OpenTab(provider, auth, price)
                    try:
                        await self.tallies.first(opened)
                    except BaseException:
                        with self.payments.working(auth.id):
                            await self._drop(opened)
                        raise
                    tab = self._open[provider] = self._owes(opened)
        self.ledger.hold_for(tab.auth, budget, promised=promised)  # or InsufficientCredit: nothing reserved
        tab.reserved += budget
        tab.in_flight += 1
        # Written just before the call is sent (`TabTallies.write`, the batcher's `before_send`), with the calls of its
        # batch: a call queued for a batch is on no provider's side before that, so no write of its own is due.
        self.tallies.changed(tab, soon=False)
        return tab

    async def reserve_alone(self, provider: str, price: int, budget: int, job: str, room: int = 0) -> OpenTab:
        """A tab of its own for one piece of work (the job `job`, its id), closed as soon as it is answered: what is
        refused or abandoned on it is that work alone.  Its cap has `room` to compile its module, if it is pushed."""
        promised = await self.ledger.promised(self.payments.payer.public_key)
        auth = await self.payments.authorize(provider, budget + room, job_tab(job), ttl=TAB_TTL, hold=0)
        self.payments.keep_off(auth.id)
        tab = self._owes(OpenTab(provider, auth, price, closing=True, asked=False))
        try:
            self.ledger.hold_for(tab.auth, budget, promised=promised)
            tab.reserved, tab.in_flight = budget, 1
            await self.tallies.first(tab)
        except BaseException:
            await self._drop(tab)
            raise
        return tab

    def run_asked(self, tab: OpenTab) -> None:
        """The work on a tab of its own (`reserve_alone`) is about to be asked to run: from now on it may have run, so
        its budget counts in its tally, written now, before the request is sent (raises if the write fails: the run
        is then not asked for).  A stop before this leaves a tally that owes nothing: the payment retry pays no
        receipt above it, whatever the provider, shown the authorization already, countersigns."""
        tab.asked = True
        self.tallies.changed(tab)
        self.tallies.write()

    async def abandon(self, tab: OpenTab, budget: int) -> None:
        """The work on a tab of its own (`reserve_alone`) whose result never came, or could not be trusted:
        nothing of it is paid.  Its authorization is dropped, so a receipt the provider countersigns for it
        later is refused (both chains still verify)."""
        tab.reserved -= budget
        tab.in_flight -= 1
        with self.payments.working(tab.auth.id):
            await self._drop(tab)  # and what it held is released

    # --- a job's tab a restart left pending, finished as the job's record says ---------------------------
    def hold_off(self, authorization_id: bytes) -> bool:
        """Keep the payment retry off a tab a restart left pending until its job says what it owes
        (`owed_after_restart`) or that nothing of it is paid (`unanswered_after_restart`): the retry alone would
        pay its receipt up to its cap.  Whether it is still pending."""
        if self._pending(authorization_id) is None:
            return False
        self.payments.keep_off(authorization_id)
        return True

    def owed_after_restart(self, authorization_id: bytes, amount: int) -> bool:
        """A tab a restart left pending whose work was answered, checked and recorded as owing `amount`: closed
        now, its receipt paid up to that amount (not up to its cap), once.  Whether it was still pending."""
        auth = self._pending(authorization_id)
        if auth is None:
            return False
        tab = self._owes(_owing(auth, amount, self._unpaid.get(authorization_id)))
        # On disk before its close is sent, in place of the tally a stop left (its whole budget, or nothing if its run
        # was first asked for by the start; the compile it allowed kept): the record naming its charge may be replaced
        # (the job run again) before it is paid, and the next start's retry then goes by this.
        self.tallies.changed(tab)
        self._spawn_close(tab)
        return True

    def owed_after_failure(self, authorization_id: bytes, amount: int) -> bool:
        """A tab of its own whose work was answered, checked and recorded owing `amount`, and whose payment step then
        failed: paid as a start pays it (`owed_after_restart`), unless its close was begun already (each tab is
        closed once).  Whether it was left to pay."""
        tab = self._unpaid.get(authorization_id)
        return (tab is None or tab.in_flight > 0) and self.owed_after_restart(authorization_id, amount)

    async def unanswered_after_restart(self, authorization_id: bytes) -> None:
        """A tab a restart left pending whose work's outputs never came: nothing of it is paid, as when its answer
        never comes (`abandon`), but the compile of a module pushed for work whose run was never asked for (its tally
        counts no call): closed for it, as that work given up before a stop is (`answered` with nothing run)."""
        auth, tab = self._pending(authorization_id), self._unpaid.get(authorization_id)
        if auth is None:
            return
        if tab is not None and tab.compiles and not (tab.count or tab.unknown or tab.lost_budget or tab.in_flight
                                                     or tab.unpayable):
            self.tallies.changed(tab)
            self._spawn_close(tab)
            return
        with self.payments.working(auth.id):
            await self._drop(OpenTab(public_id(auth.payee), auth, 0))

    def still_pending(self, authorization_id: bytes) -> bool:
        """Whether a tab a restart left pending can still be paid (neither paid nor dropped since)."""
        return self._pending(authorization_id) is not None

    # --- a placed function's tab: what its requests cost is what its provider reported -------------------
    async def track(self, auth: Authorization, per_request: int, price: int) -> OpenTab:
        """Keep a tally of a tab whose requests this node never sees (a placed function's, at `price`): nothing
        reported yet, each request at most `per_request`.  Synced before its authorization is shown to anyone, as a
        tab's first tally (`TabTallies.first`).  Its module pushed to a provider lacking it names it (`compile_on`)."""
        tab = OpenTab(public_id(auth.payee), auth, price, closing=True, per_request=per_request)
        await self.tallies.first(tab)
        return self._owes(tab)

    def reported(self, authorization_id: bytes, total: int, count: int, compiles: Any = 0, mounts: Any = 0) -> bool:
        """The provider's report of a tracked tab: `count` requests ran under it, owing `total`, of which `compiles`
        for compiling the module pushed naming it and `mounts` for reading the files its function mounts.  Taken
        into its tally (written unsynced, as a tab's changes are) unless it takes back an earlier report, says a
        request cost more than its budget, claims a compile or a reading above what was allowed on the tab
        (`compile_on`, `mount_on`) or passes the cap; whether it was taken."""
        tab = self._unpaid.get(authorization_id)
        ran = None if tab is None or not tab.per_request else _reported_runs(tab, total, count, compiles, mounts)
        if ran is None:
            return False
        if (ran, count) != (tab.metered, tab.count):
            tab.metered, tab.count = ran, count
            self.tallies.changed(tab)
        return True

    async def payable(self, auth: Authorization, receipt: Receipt) -> bool:
        """Whether a receipt for one of this node's tabs is within its tally (`_payable`): the owner of a tab it
        closes itself asks it before it pays."""
        return await self._payable(auth, receipt)

    async def refused(self, auth: Authorization) -> None:
        """A tracked tab nothing will ever be countersigned for: its authorization dropped, its tally forgotten."""
        await self._drop(self._unpaid.get(auth.id) or OpenTab(public_id(auth.payee), auth, 0))

    def settled(self, authorization_id: bytes) -> None:
        """A tracked tab paid: its tally forgotten."""
        self._unpaid.pop(authorization_id, None)
        self.tallies.forget(authorization_id)

    def _owes(self, tab: OpenTab) -> OpenTab:
        """`tab` kept until it is paid or dropped (`_unpaid`); the loop, asleep while nothing was owed, wakes."""
        self._unpaid[tab.auth.id] = tab
        self._owing.set()
        return tab

    def _pending(self, authorization_id: bytes) -> Authorization | None:
        return next((a for a in self.ledger.pending() if a.id == authorization_id), None)

    def _usable(self, provider: str, price: int, budget: int) -> OpenTab | None:
        tab = self._open.get(provider)
        if tab is None or tab.price != price or budget > tab.room or time.time() > tab.auth.expires_at - TAB_TTL / 2:
            return None
        return tab

    def compile_on(self, tab: OpenTab, module: str, wasm: bytes) -> str | None:
        """The tab (authorization id hex) a push of `module` (`wasm`) for work on `tab` names to be charged its compile,
        `compile_price` at the tab's price, held and written with its tally first; None (no room, pushed, unpayable).
        A placed function's tab must keep room beside it for one request (else the function cannot run there)."""
        price = compile_price(len(wasm), tab.price)
        if module in tab.compiled or not tab.holds(self.ledger, price, f"compiling module {module}"):
            return None
        tab.may_compile(module, price)
        self.tallies.changed(tab)
        self.tallies.write()  # (raises if it fails: the push is not sent)
        return tab.auth.id.hex()

    def mount_on(self, tab: OpenTab, price: int) -> bool:
        """Whether the provider of a placed function's `tab` may charge reading the files it mounts on it, at most
        `price` (`placed_functions.mount_price`, computed here): held and written with its tally first, as a compile."""
        if not tab.holds(self.ledger, price, "reading the files its function mounts"):
            return False
        tab.mounts += price
        self.tallies.changed(tab)
        self.tallies.write()  # (raises if it fails: the placement is not sent)
        return True

    def answered(self, tab: OpenTab, budget: int, amount: int | None) -> None:
        """A call on `tab` ended: it owes `amount` (None: refused before it ran, or its answer was lost)."""
        self.tallies.changed(tab)  # (before `_ended` may spawn its close: the write comes first)
        self._ended(tab, budget, amount)
        self.ledger.unhold_for(tab.auth, budget - (amount or 0))  # only what it owes stays held

    def lost(self, tab: OpenTab, budget: int) -> None:
        """A call on `tab` whose answer was lost: it may have run, so its budget stays held until the tab is paid.
        (Its tally on disk is unchanged: a call in flight counts there as a lost one.)"""
        tab.unknown += 1
        tab.lost_budget += budget
        self._ended(tab, budget, None)

    def checking(self, tab: OpenTab, rows: dict[bytes, bytes | None]) -> None:
        """An answer on `tab` is to be held to its provider's record: the tab is not closed until it is (`checked`).
        `rows` keep the check owed across a stop: written with the tally that counts the answer (`answered` follows)."""
        tab.checking += 1
        self.tallies.write_with(rows)

    def owed_check(self, authorization_id: bytes) -> OpenTab | None:
        """At a start: the tab, left pending, of an answer whose check a stop left owed, kept off the payment retry
        and not closed until the check says whether it is paid (`checked`); None if it is paid or dropped."""
        tab = self._unpaid.get(authorization_id)
        if tab is None or tab.per_request:
            return None
        tab.checking += 1
        self.payments.keep_off(authorization_id)
        return tab

    def checked_tab(self, authorization_id: bytes) -> OpenTab | None:
        """The tab, not paid nor dropped, of an answer whose check is owed and counted on it already (`checking`,
        `owed_check`); None if it is paid or dropped."""
        tab = self._unpaid.get(authorization_id)
        return None if tab is None or tab.per_request else tab

    def checked(self, tab: OpenTab, unpaid: bool = False, struck: bool = False,
                rows: dict[bytes, bytes | None] | None = None) -> None:
        """An answer on `tab` was held to its provider's record.  If that found it `unpaid` (its record contradicts
        it or was refused, `struck`; or was never shown), nothing of the tab is paid, whatever its calls charged, as
        a forged job output's tab is not: its tally owes nothing from now on (on disk too, for a restart's retry),
        and its receipt is refused (`_payable`).  `rows` (the check no longer owed) are written with that tally."""
        tab.checking -= 1
        self.tallies.write_with(rows or {})
        if unpaid:
            tab.forged += struck
            tab.unshown += not struck
            self.tallies.changed(tab)
            if self._open.get(tab.provider) is tab:  # no more calls on a tab its provider will not be paid
                del self._open[tab.provider]
                tab.closing = True
        if tab.closing and tab.in_flight == 0 and tab.checking == 0:
            self._spawn_close(tab)

    def _ended(self, tab: OpenTab, budget: int, amount: int | None) -> None:
        tab.reserved -= budget
        tab.in_flight -= 1
        if amount is not None:
            tab.metered += amount
            tab.count += 1
        if tab.closing and tab.in_flight == 0 and tab.checking == 0:
            self._spawn_close(tab)

    def _retire(self, tab: OpenTab) -> None:
        tab.closing = True
        if tab.in_flight == 0 and tab.checking == 0:
            self._spawn_close(tab)

    def _spawn_close(self, tab: OpenTab) -> None:
        task = asyncio.create_task(self._close(tab))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, tab: OpenTab) -> None:
        with self.payments.working(tab.auth.id):  # from its end on, the retry may finish it
            # Nothing ran or compiled under it: nothing will ever be countersigned.
            if tab.count == 0 and tab.unknown == 0 and not tab.compiles and not tab.mounts:
                await self._drop(tab)
                return
            try:
                url = self.peers.peer(tab.provider).url
                try:
                    receipt = await close_tab(self.client, url, tab.provider, tab.hex,
                                              check=receipt_check(tab.provider, tab.auth, meters=TAB_METERS,
                                                                  optional=TAB_OPTIONAL_METERS))
                except PeerRefused as err:
                    if not nothing_owed(err):
                        raise
                    await self._drop(tab)  # its calls whose answers were lost never ran there
                    return
                if not await self._payable(tab.auth, receipt):
                    return
                await self.payments.complete(tab.provider, tab.auth, receipt)
                self.tallies.forget(tab.auth.id)
            except (XscError, OSError, DatabaseError) as exc:  # the payment retry closes it later
                log.info("closing a tab with %s failed (%s); the payment retry closes it", tab.provider, exc)
                self.payments.failed(tab.auth.id, str(exc))

    async def _drop(self, tab: OpenTab) -> None:
        """Nothing of `tab` is paid: its authorization is dropped (what it held released), and its tally forgotten."""
        await self.payments.refused(tab.auth)
        self._unpaid.pop(tab.auth.id, None)
        self.tallies.forget(tab.auth.id)

    def _restored(self, auth: Authorization) -> OpenTab | None:
        """The tally on disk of a tab an earlier run of this node left pending, as a tab closing (None: none)."""
        value = _read_tally(self.db, auth)
        return None if value is None else self._owes(_taken_up(auth, value, self.ledger))

    async def _paid_by_retry(self, auth: Authorization, receipt: Receipt) -> None:
        self._dropped_by_retry(auth)

    def _dropped_by_retry(self, auth: Authorization) -> None:
        """The payment retry ended a tab on its own (paid it, or gave up on it: expired, refused): forgotten now."""
        self._unpaid.pop(auth.id, None)
        self.tallies.forget(auth.id)

    async def _payable(self, auth: Authorization, receipt: Receipt) -> bool:
        """Whether the provider's receipt for a tab is at most this node's tally of it (what the provider's answers
        said, and what lost calls may have cost); else nothing of the tab is paid and False.  The closing of the tab
        and the payment retry alike ask it: a provider that countersigns an inflated total and drops the answer to
        the close would otherwise be paid it by the retry, which fetches the receipt it holds.  A tab this run did
        not open is held to the tally this node wrote for it (the calls in flight when it stopped counting as lost).
        A placed function's tab is held to what its provider's reports said, plus one request's budget for each
        request the receipt counts past them (they ran after the last report this node took).  A tab it kept no
        tally of is paid up to the cap its payer signed."""
        tab = self._unpaid.get(auth.id) or self._restored(auth)
        if tab is None:
            return True
        refused = _over_tally(tab, receipt)
        if refused is None:
            self._unpaid.pop(auth.id, None)  # the receipt is the one this authorization will ever have: it is paid
            return True
        why, strike = refused
        self.refused_receipts += 1
        log.error("provider %s %s: refusing to pay it", tab.provider, why)
        if strike:
            self.payments.on_strike(tab.provider, f"{why}: not paid")
        await self._drop(tab)
        return False

    async def _close_for_retry(self, provider: str, url: str, auth: Authorization) -> Receipt:
        return await close_tab(self.client, url, provider, encode_authorization(auth).hex(),
                               check=receipt_check(provider, auth, meters=TAB_METERS, optional=TAB_OPTIONAL_METERS))

    def start(self) -> None:
        """Take up the tallies of the tabs the last run left pending; delete those of tabs paid or dropped since; drop
        the tabs left pending with no tally."""
        pending = {auth.id: auth for auth in self.ledger.pending()}
        with self.db.iterator(prefix=keys.TAB_TALLIES, include_value=False) as it:
            ids = {key[len(keys.TAB_TALLIES):] for key in it}
        ids |= _tally_untracked(self.db, pending, ids)
        for auth_id in ids:
            if auth_id not in pending:
                self.tallies.forget(auth_id)
            elif auth_id not in self._unpaid:
                self._restored(pending[auth_id])
        # A tab's first tally is on disk before its authorization is shown to anyone: one pending with none was opened
        # as the node stopped and never shown, so nothing is owed under it.  The payment retry would show it to its
        # provider (closing it), who could countersign its whole cap: it is dropped first.
        unshown = [a for a in pending.values()
                   if a.job.startswith(JOB) and a.id not in ids and a.id not in self._unpaid]
        for auth in unshown:
            self.payments.keep_off(auth.id)
        self._task = asyncio.create_task(self._run(unshown), name="xsc-remote-tabs")

    async def _run(self, unshown: list[Authorization]) -> None:
        for auth in unshown:
            with self.payments.working(auth.id):
                try:
                    await self._drop(OpenTab(public_id(auth.payee), auth, 0))
                except (XscError, DatabaseError, OSError) as exc:  # left to the retry (which holds it to its cap)
                    log.warning("dropping tab %s, never shown to its provider, failed: %s", auth.id.hex(), exc)
        # Asleep until a tab can next be due: the soonest open one's end (`interval` after its opening), or, none open,
        # until one is (`_owes`).  A tab not open (closing, or a placed function's, unpaid for as long as the function
        # stays placed) is paid by its close or the payment retry, which tell when they end it (`_dropped_by_retry`).
        while True:
            if not self._open:
                self._owing.clear()
                self.asleep = True
                try:
                    await self._owing.wait()
                finally:
                    self.asleep = False
                continue
            await asyncio.sleep(min(tab.opened for tab in self._open.values()) + self.interval - time.monotonic())
            now = time.monotonic()
            for provider, tab in list(self._open.items()):
                if now - tab.opened >= self.interval:
                    del self._open[provider]
                    self._retire(tab)

    async def close(self) -> None:
        await stop(self._task)
        for provider in list(self._open):
            self._retire(self._open.pop(provider))
        await asyncio.gather(*self._closing, return_exceptions=True)
        self.tallies.close()  # of the tabs whose close failed: the next start's retry pays them up to these


def _tally_untracked(db: Database, pending: dict[bytes, Authorization], ids: set[bytes]) -> set[bytes]:
    """On data a node wrote while it kept no tally of placed functions' tabs (none says TABS_TALLIED): each such
    tab pending with no tally was shown, its function served under it, and is held to its cap as it was then.
    That is written as its tally, with the mark, in one synced batch, so no start drops it as never shown; the
    ids of those tabs."""
    if db.get(keys.TABS_TALLIED) is not None:
        return set()
    shown = [a for a in pending.values()
             if a.job.startswith(JOB) and a.job != JOB and not a.job.startswith(JOB_TABS) and a.id not in ids]
    with db.write_batch(sync=True) as batch:
        for auth in shown:
            batch.put(keys.tab_tally(auth.id), _REPORTED.pack(auth.cap, 0, 0, 0, 1))
        batch.put(keys.TABS_TALLIED, b"")
    return {auth.id for auth in shown}


def _read_tally(db: Database, auth: Authorization) -> bytes | None:
    """The tally on disk of `auth`'s tab (None: none).  A start must not fail on an unreadable one: the tab is then held
    to its cap, written as its tally (gone, the next start would take the tab for one never shown and drop it, its
    provider unpaid for what ran)."""
    value = db.get(keys.tab_tally(auth.id))
    if value is None or len(value) in (_TALLY.size, _REPORTED.size, _UNPAYABLE.size, _TALLY_COMPILES.size,
                                       _REPORTED_COMPILES.size, _REPORTED_MOUNTS.size):
        return value
    log.error("the tally of tab %s is unreadable (%d bytes): it is paid up to its cap", auth.id.hex(), len(value))
    value = _REPORTED.pack(auth.cap, 0, 0, 0, 1)
    try:
        db.put(keys.tab_tally(auth.id), value)
    except (DatabaseError, OSError) as exc:
        log.warning("writing the tally of tab %s failed (%s): the next start drops it", auth.id.hex(), exc)
    return value


def _taken_up(auth: Authorization, value: bytes, ledger: Any) -> OpenTab:
    """A tally read from disk (`GatewayTabs._restored`) as a tab closing; what the ledger holds for it made what the
    tally may still be paid."""
    if len(value) in (_REPORTED.size, _REPORTED_COMPILES.size, _REPORTED_MOUNTS.size):
        compiles = modules = mounts = 0
        if len(value) == _REPORTED_MOUNTS.size:
            metered, _, count, _, per_request, compiles, modules, mounts = _REPORTED_MOUNTS.unpack(value)
        elif len(value) == _REPORTED_COMPILES.size:
            metered, _, count, _, per_request, compiles, modules = _REPORTED_COMPILES.unpack(value)
        else:
            metered, _, count, _, per_request = _REPORTED.unpack(value)
        # Its provider may still be serving requests under it, each up to its budget: its cap stays held.
        return OpenTab(public_id(auth.payee), auth, 0, metered=metered, count=count, closing=True,
                       per_request=per_request, compiles=compiles, modules=modules, mounts=mounts)
    if len(value) == _UNPAYABLE.size:
        count, unknown, forged, unshown = _UNPAYABLE.unpack(value)
        ledger.unhold_for(auth, ledger.held_for(auth.id))
        return OpenTab(public_id(auth.payee), auth, 0, count=count, unknown=unknown, closing=True, forged=forged,
                       unshown=unshown)
    compiles = modules = 0
    if len(value) == _TALLY_COMPILES.size:
        metered, at_risk, count, unknown, compiles, modules = _TALLY_COMPILES.unpack(value)
    else:
        metered, at_risk, count, unknown = _TALLY.unpack(value)
    # The ledger held its cap again at the start; no receipt above the tally is paid (`_payable`), so the rest
    # of the cap is the payer's to spend now, not once the tab is closed.
    over = ledger.held_for(auth.id) - (metered + at_risk + compiles)
    if over > 0:
        ledger.unhold_for(auth, over)
    return OpenTab(public_id(auth.payee), auth, 0, metered=metered, count=count, unknown=unknown,
                   lost_budget=at_risk, closing=True, compiles=compiles, modules=modules)


def job_tab(job: str) -> str:
    """The job reference of a job's tab: every tab's prefix, which any provider takes a tab by (`ProviderTabs.check`),
    and the job's id, which each side's `xsc ledger history` then shows its payment for.  An id too long to sign
    (never a job's: 64 hex digits) leaves the tab named by the prefix alone."""
    label = JOB_TABS + job
    return label if len(label.encode()) <= MAX_JOB_BYTES else JOB


def _tally(tab: OpenTab) -> bytes:
    """A tab's tally as written: the calls in flight count as lost ones (if this node stops, they may have run)."""
    if tab.per_request:
        if tab.mounts:
            return _REPORTED_MOUNTS.pack(tab.metered, 0, tab.count, 0, tab.per_request, tab.compiles, tab.modules,
                                         tab.mounts)
        if tab.compiles:
            return _REPORTED_COMPILES.pack(tab.metered, 0, tab.count, 0, tab.per_request, tab.compiles, tab.modules)
        return _REPORTED.pack(tab.metered, 0, tab.count, 0, tab.per_request)
    if tab.unpayable:
        return _UNPAYABLE.pack(tab.count, tab.unknown + tab.in_flight, tab.forged, tab.unshown)
    if not tab.asked:
        metered, at_risk, count, unknown = tab.metered, tab.lost_budget, tab.count, tab.unknown
    else:
        metered, at_risk, count, unknown = (tab.metered, tab.lost_budget + tab.reserved, tab.count,
                                            tab.unknown + tab.in_flight)
    if tab.compiles:
        return _TALLY_COMPILES.pack(metered, at_risk, count, unknown, tab.compiles, tab.modules)
    return _TALLY.pack(metered, at_risk, count, unknown)


def _reported_runs(tab: OpenTab, total: Any, count: Any, compiles: Any, mounts: Any) -> int | None:
    """What a provider's report of a placed function's `tab` says its requests cost (`total` less `compiles` and
    `mounts`, the compile and the reading of its files counted apart: the tally's `metered`), if the report checks
    (`GatewayTabs.reported`): neither above what this node allowed on the tab; else None."""
    if not (type(total) is int and type(count) is int and type(compiles) is int and type(mounts) is int
            and 0 <= compiles <= tab.compiles and 0 <= mounts <= tab.mounts and compiles + mounts <= total
            and total <= tab.auth.cap):
        return None
    ran = total - compiles - mounts
    return ran if tab.metered <= ran <= count * tab.per_request and tab.count <= count else None


def _owing(auth: Authorization, amount: int, was: OpenTab | None) -> OpenTab:
    """A tab whose work was answered owing `amount` (`GatewayTabs.owed_after_restart`), closing: it allows its provider
    the compiles it allowed as `was` (as a start took it up, or as it ran), if any."""
    compiles = {} if was is None else {"compiles": was.compiles, "modules": was.modules}
    return OpenTab(public_id(auth.payee), auth, 0, metered=amount, count=1, closing=True, **compiles)


def _over_tally(tab: OpenTab, receipt: Receipt) -> tuple[str, bool] | None:
    """None if `receipt` is within `tab`'s tally (`GatewayTabs._payable`); else why not, and whether its provider is
    struck for it.  The compiles it claims count up to what the modules pushed naming the tab cost, and no further: a
    receipt that claims more compiles than that, or than its own amount, is refused whole."""
    usage = dict(receipt.usage)
    claimed, mounts, counted_calls = usage.get("compiles", 0), usage.get("mounts", 0), usage.get("invokes", 0)
    tally = 0 if tab.unpayable else tab.metered + tab.lost_budget + min(claimed, tab.compiles) + min(mounts,
                                                                                                     tab.mounts)
    if tab.per_request:
        tally += max(0, counted_calls - tab.count) * tab.per_request
    overclaimed = claimed > tab.compiles or mounts > tab.mounts or claimed + mounts > receipt.amount
    if receipt.amount <= tally and not overclaimed:
        return None
    past = (f"; its receipt counts {counted_calls}, each past those at most {format_credits(tab.per_request)}"
            if tab.per_request else "")
    checks = (f", {tab.forged} contradicted by its own records and {tab.unshown} whose record it never showed: "
              "nothing of it is owed" if tab.unpayable else "")
    compiles = (f", {format_credits(claimed)} of it for compiles where the {counted(tab.modules, 'module')} pushed "
                f"naming it cost at most {format_credits(tab.compiles)}" if claimed or tab.compiles else "")
    reading = (f", {format_credits(mounts)} of it for reading its function's files where that cost at most "
               f"{format_credits(tab.mounts)}" if mounts or tab.mounts else "")
    why = (f"countersigned {format_credits(receipt.amount)} credits for a tab of {tab.count} calls whose answers "
           f"owed {format_credits(tab.metered)} ({tab.unknown} answers lost{checks}{past}{compiles}{reading})")
    # A tab its checks made unpayable: a caught provider was struck then, and one that never showed a record is not
    # struck; its receipt may count just what it ran.
    return why, not tab.unpayable and (overclaimed or _claims_what_it_did_not_do(tab, counted_calls))


def _claims_what_it_did_not_do(tab: OpenTab, counted: int) -> bool:
    """Whether a receipt counting `counted` calls (or requests) over `tab`'s tally can only be a claim for money not
    owed.  It is when it counts no more than the answers (or reports) its provider gave said ran: their total is
    then the provider's own word for what it is owed; or, on a tab this node sends its calls on, more calls than
    were ever sent.  It may be honest when what it counts past those are calls whose answer was lost, or a placed
    function's requests past the last report: a call that leaves a limit unset runs under its provider's ceiling,
    which may be above the one this node's budget (and a placed function's per-request figure) is made with."""
    if counted <= tab.count:
        return True
    return not tab.per_request and counted > tab.count + tab.unknown


__all__ = ["GatewayTabs", "JOB_TABS", "OpenTab", "TAB_CALLS", "TAB_OPTIONAL_METERS", "job_tab"]
