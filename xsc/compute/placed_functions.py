"""Web functions other nodes place here (the provider's side of net/functions.py): served at this node's web
listener under /fn/OWNER_ID/NAME/, each request run on the owner's tab.

An owner is a stranger until its money checks: the placement's terms (price at or above this node's ask, memory
at its price, an authorization its owner's payer signed to pay this node, not expired, for this very function:
its job reference names the owner and the function) are checked as an invoke's are (PaidCompute.terms), and its
tab must have room for one request and the owner's trust line here must cover one, before anything of the
function is taken.  An owner places at most PER_OWNER functions here, all owners at most MAX_PLACED, and a
function in one placement or withdrawal at a time (a placement sent while another of it, or its withdrawal, is
being made is refused, 409; a withdrawal cuts the placement under way short, its staged files removed and only what
it read charged, and withdraws what was placed before it); a placement takes at most PLACE_TIMEOUT seconds, what its
owner waits for its answer (503 past it, charged as one cut short); a module this
node lacks is refused (404 module-not-found) and the owner may push it (once, within the pushed-module
bounds: ModulePushes.receive), naming the placement's tab to be charged its compile on (a tab's status and receipt
count it apart, `compiles`); the files it mounts, at most MAX_MOUNTED bytes in all, are read from the
network by their capabilities as any node reads them, only while this node keeps DISK_MARGIN free (WebFunctions.room,
counting the files, bodies and answers being written at that moment), and only once their reading (`mount_price` of
the sizes their capabilities say, at the placement's price: what the owner computes too) is reserved on the
placement's tab, which must keep room for one request beside it, and on the owner's line here.  It is used on both
whatever comes of it (cut short: the part read), its record written on the tab (ProviderTabs.mounted) and counted
apart in the tab's status and receipt (`mounts`), so the owner pays it with the tab, within the function's spend cap.
A placement's `mounting` is the most its owner's tab pays for that reading: one below its price is refused (402)
before a byte is read.  A function asking a max_body or
concurrency past this node's (compute.placed_max_body, compute.placed_concurrency) is refused; its requests' bodies
and answers are written only while the disk keeps DISK_MARGIN free (WebFunctions.room).

Each request then holds its budget on the owner's trust line and on its tab (ProviderTabs), and its run's amount
is written with its provenance record (one group commit); its caller is answered before that write, so from the
moment the record is queued only the run's charge stays held.  Once the tab's cap is spent, callers get 402 until
the owner places the function again with its next authorization.  The owner closes the old tab for this node's
receipt (the tab close route) and pays by it.  A withdrawn function answers 404 from then on, and so does one
whose current tab its owner closed, or let expire, without placing the next (it placed the function elsewhere,
gave it up or went away: nothing run under an expired tab can be paid, and its files would stay for good): it is
withdrawn at the first request that finds it so, or by the sweep every SWEEP_INTERVAL seconds (`sweep`).

A placement is kept in LevelDB (`keys.placed`: its spec, price and deal, and the owner's authorization of its
current tab), written in one synced write once its files are in place and before the place call answers (with the
record of their reading on its tab, if they were read: a kill -9 leaves both or neither), and
deleted before it is withdrawn; its files are staged in a directory named by its inputs, so the record never
names files staged for another spec.  At start each is served again at the same URL on the same tab (its total
is summed from the tab's run records, as after any restart) once checked again as when it was placed: an
authorization that does not pay this node, has expired or whose tab is closed, a module no longer here or
files no longer mounted, and the placement is dropped (its owner's check finds it gone and places it again).  Its
counters (requests, errors, earned: `keys.placed_counts`) are served again with it, as written in one unsynced batch
every COUNTS_INTERVAL seconds and at a stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import (AuthorizationExpired, AuthorizationReplayed, Conflict, DealRefused, FunctionUnavailable,
                      InvalidArgument, NotFound, OverCap, QuotaExceeded, SpendCapReached, XscError)
from ..identity import public_id
from ..storage.core.capability import Capability
from ..ledger.core.model import encode_authorization
from ..ledger.core.pricing import price_compute
from ..net.functions import PLACE_TIMEOUT
from ..tasks import in_pool, periodic
from .functions import CONCURRENCY, MAX_BODY, PlacedHere, median_ms
from .jobspec import MAX_INPUTS, Input, parse_input
from .modules import parse_module_id
from .paid import SWEEP_INTERVAL, PaidCompute, not_here
from .provider_tabs import JOB
from .service import InvokeCall
from .store import ComputeStore
from .wasi_io import io_fuel

log = logging.getLogger(__name__)

PER_OWNER = 4  # functions one owner may have placed here at once
MAX_PLACED = 64  # functions all owners together may have placed here
MAX_MOUNTED = 1 << 30  # bytes of stored files one placed function may mount
COUNTS_INTERVAL = 10.0  # seconds between writes of placed functions' counters (requests, errors, earned)
PLACE_NEEDS = frozenset({"function", "price", "memory_price", "authorization", "deal"})
PLACE_MAY = frozenset({"mounting"})  # what the tab pays at most for reading the files it mounts
PLACED_FIELDS = frozenset({"name", "module", "entrypoint", "inputs", "env", "limits", "max_body", "concurrency"})


def web_url(web_listen: str, public: str, peer_url: str) -> str | None:
    """Where callers reach this node's web listener: `public` if set, else web_listen (a wildcard host replaced
    by the host peers reach this node at); None with no listener."""
    if not web_listen:
        return None
    if public:
        return public.rstrip("/")
    host, _, port = web_listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = urlsplit(peer_url).hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


FUNCTION_JOBS = f"{JOB}:fn:"  # the job references of tabs that pay for placed functions


def function_job(owner: str, name: str) -> str:
    """The job reference of the authorizations that pay for `owner`'s function `name` (one per tab)."""
    return f"{FUNCTION_JOBS}{owner}:{name}"


class TabBill:
    """A placed function's requests, each held on its owner's trust line and tab here and owed on that tab."""

    def __init__(self, paid: PaidCompute, owner: str, auth, price: int, deal: dict[str, Any],
                 closed: Callable[[TabBill], Awaitable[XscError]]) -> None:
        self.paid, self.owner, self.auth = paid, owner, auth
        self.closed = closed  # its tab found closed: what its caller is told (the function may be withdrawn)
        self.requester, self.rate = public_id(auth.payer), price
        self._deal = {**deal, "gateway": owner, "price": price, "authorization": auth.id.hex()}
        self.tab = None

    def deal(self, name: str) -> dict[str, Any]:
        return {**self._deal, "function": name}

    async def hold(self, budget: int) -> None:
        if time.time() > self.auth.expires_at:  # no receipt can be signed under it now: what it ran is never paid
            raise await self.closed(self)
        self.paid.reserve(self.owner, budget)
        try:
            self.tab = await self.paid.provider_tabs.reserve(self.auth, budget, self.owner)
        except DealRefused:
            self.paid.release(self.owner, budget)
            # Its owner renews a tab well before it is spent, unless its spend cap leaves no room for the next one:
            # which of the two this is, only the owner knows.
            raise SpendCapReached("this function's owner has spent what it authorized for it here",
                                  hint="retry later: once its owner authorizes its next tab, or, if its spend cap for "
                                       "the hour is reached, once the hour turns") from None
        except AuthorizationReplayed:
            self.paid.release(self.owner, budget)
            raise await self.closed(self) from None
        except BaseException:
            self.paid.release(self.owner, budget)
            raise

    def release(self, budget: int) -> None:
        self.paid.provider_tabs.ran(self.tab, budget, None)
        self.paid.release(self.owner, budget)

    def record(self, compute, run, record: dict, module_hash: bytes, budget: int, also=()):
        """The run recorded with what it owes on the tab, in the journal's next group commit.  From the moment it
        is queued only its charge stays held, on the owner's line and on the tab: a web function's callers are
        answered before their records are written, and their whole budgets held until then would refuse the
        next callers (402).  Not written: what is held is released and nothing is owed."""
        tab, tabs = self.tab, self.paid.provider_tabs
        try:
            written = compute.journal.append(record, module_hash, (*tabs.owed(self.auth, run, self.owner), *also),
                                             awaited=False)
        except BaseException:
            self.release(budget)
            raise
        charge = min(run.charge, budget)
        tabs.replace_hold(tab, budget, charge)
        self.paid.release(self.owner, budget - charge)

        def owed(_) -> None:
            done = not written.cancelled() and written.exception() is None
            tabs.ran(tab, charge, run if done else None)
            self.paid.used(self.owner, charge, run if done else None)
            if done:
                self.paid.market.offer.note_fuel(run.fuel_consumed)

        written.add_done_callback(owed)
        return written


class PlacedFunctions:
    def __init__(self, *, placed: PlacedHere, paid: PaidCompute, store: ComputeStore,
                 web_url: Callable[[], str | None], max_body: int = MAX_BODY, concurrency: int = CONCURRENCY) -> None:
        self.placed = placed  # serves them, with the node's own (WebFunctions.placed_here)
        # the most a placed function may ask (compute.placed_max_body, compute.placed_concurrency): with the room
        # its requests find on disk (WebFunctions.room), what bounds the disk strangers' callers write
        self.max_body, self.concurrency = max_body, concurrency
        self.paid = paid  # a placement's terms are checked, and its requests held, as an invoke's are
        self.store = store  # the placements, kept across restarts
        self.web_url = web_url  # where this node's web listener is reached (None: it serves no functions)
        self._kept: dict[tuple[str, str], tuple[int, int, int]] = {}  # counters as last written
        # functions being placed, not served yet: counted in the quotas (else placements sent at once all pass them)
        self._placing: Counter[tuple[str, str]] = Counter()
        # (owner, name) being placed or withdrawn -> done once it is: one at a time, as each moves or removes the
        # files under the function's folder that the other may be moving into place
        self._moving: dict[tuple[str, str], asyncio.Future] = {}
        self._under_way: dict[tuple[str, str], asyncio.Task] = {}  # placements being made: a withdrawal cuts them

    def start(self) -> None:
        """The placements kept on disk served again, each checked again (dropped if it no longer checks), with the
        counters kept of it."""
        counts = self.store.placed_counts()
        for (owner, name), placement in self.store.placements():
            try:
                record = placement["function"]
                if (record["owner"], record["name"]) != (owner, name):
                    raise InvalidArgument("its record names another function")
                self._within(record)  # (this node's caps may have been lowered since)
                self.placed.restore(record, self._bill(owner, name, placement), counts.get((owner, name)))
            except (XscError, KeyError, TypeError, ValueError) as err:  # what no longer checks, or does not read
                log.info("function %s of %s is not served again: %s", name, owner,
                         getattr(err, "message", repr(err)))
                self.store.remove_placement(owner, name)
        self.placed.prune()
        self._kept = {(owner, name): _counts(served) for owner, name, served in self.placed.all()}
        if stale := {key: None for key in counts if key not in self._kept}:  # of functions not served again, or
            self.store.save_placed_counts(stale)  # withdrawn while a batch of them was being written

    def close(self) -> None:
        """What is placed stays on disk, served again at the next start; its counters are written."""
        _, changed = self._changed_counts()
        if changed:
            self.store.save_placed_counts(changed)

    def loops(self) -> dict[str, Any]:
        return {"placed-functions-sweep": periodic("sweeping placed functions whose tab ended", SWEEP_INTERVAL,
                                                   self.sweep),
                "placed-functions-counts": periodic("keeping placed functions' counters", COUNTS_INTERVAL,
                                                    self.keep_counts)}

    async def keep_counts(self) -> int:
        """The counters of the placed functions that counted something since they were last kept, written in one
        batch every COUNTS_INTERVAL and at a stop (without fsync, and never by a request: the web path is not
        slowed by it; a kill -9 loses what they counted since the batch before); how many."""
        now, changed = self._changed_counts()
        if changed:
            await in_pool(None, self.store.save_placed_counts, changed)
        self._kept = now
        return len(changed)

    def _changed_counts(self) -> tuple[dict, dict[tuple[str, str], dict[str, int]]]:
        """Every placed function's counters now (read on the loop, where they count), and those changed since they
        were last kept."""
        now = {(owner, name): _counts(served) for owner, name, served in self.placed.all()}
        return now, {key: dict(zip(("requests", "errors", "earned"), counts)) for key, counts in now.items()
                     if self._kept.get(key) != counts}

    async def sweep(self, now: float | None = None) -> list[tuple[str, str]]:
        """Withdraw the placements whose current tab expired, or was closed, with no next one placed (`_closed`):
        their owner went away, so no request may come to find it, and their records and files (up to MAX_MOUNTED
        bytes each) would stay until a restart; the (owner, name) of each withdrawn."""
        now = time.time() if now is None else now
        ended = []
        for owner, name, served in self.placed.all():
            auth = served.bill.auth
            if now > auth.expires_at or await in_pool(None, self.paid.ledger.store.receipt_for, auth.id) is not None:
                ended.append((owner, name, served.bill))
        withdrawn = []
        for owner, name, bill in ended:
            if isinstance(await self._closed(owner, name, bill), NotFound):  # (not: placed meanwhile on its next tab)
                withdrawn.append((owner, name))
        return withdrawn

    def _bill(self, owner: str, name: str, placement: dict[str, Any]) -> TabBill:
        """The bill of a placement kept on disk, on the tab it was placed with, if its authorization still pays."""
        auth = self.paid.authorization(placement["authorization"])
        if time.time() > auth.expires_at:
            raise AuthorizationExpired(f"its authorization expired at {auth.expires_at}", hint="place it again")
        if auth.job != function_job(owner, name):
            raise DealRefused("its authorization does not pay for it", hint="place it again")
        if self.paid.ledger.store.receipt_for(auth.id) is not None:
            raise AuthorizationReplayed("its tab is closed", hint="place it again")
        return self._tab_bill(owner, name, auth, placement["price"], placement["deal"])

    async def place(self, owner: str, body: Any) -> dict[str, Any]:
        """A function `owner` places here (or its next tab): its terms checked before anything of it is taken."""
        web = self.web_url()
        if web is None:
            # said to the owner placing it, on its own node: "this node" would name the owner's
            raise DealRefused("the provider serves no web functions (its node.web_listen is not set)",
                              hint="place it on another provider")
        if not isinstance(body, dict) or not PLACE_NEEDS <= set(body) <= PLACE_NEEDS | PLACE_MAY:
            raise InvalidArgument(f"send {{{', '.join(sorted(PLACE_NEEDS))}}} and maybe {{{', '.join(PLACE_MAY)}}}")
        function = body["function"]
        if not isinstance(function, dict) or not set(function) <= PLACED_FIELDS or \
                not isinstance(function.get("name"), str) or not isinstance(function.get("module"), str):
            raise InvalidArgument(f"a placed function is {{{', '.join(sorted(PLACED_FIELDS))}}}")
        if parse_module_id(function["module"]).hex() != function["module"]:  # looked up as it is written
            raise InvalidArgument("a placed function's module is its id, 64 lower-case hex digits")
        self._within(function)
        allowed = body.get("mounting")
        if allowed is not None and (type(allowed) is not int or allowed < 0):
            raise InvalidArgument("a placement's mounting is what its tab pays at most for reading the files it "
                                  "mounts, a whole number of micro-credits, 0 or more")
        price, deal, auth = self.paid.terms(body)
        name = function["name"]
        if auth.job != function_job(owner, name):
            raise DealRefused("the authorization does not pay for this function of yours",
                              hint=f"its job must be {function_job(owner, '<name>')}")
        key = (owner, name)
        if key in self._moving:  # its files and record are being made or removed: two at once would take the other's
            raise Conflict(f"your function {name[:64]!r} is being placed or withdrawn here already",
                           hint="place it again once that is answered")
        placing = [o for o, n in self._placing if self.placed.get(o, n) is None]  # (once served: counted so)
        if self.placed.get(owner, name) is None and (
                self.placed.by(owner) + placing.count(owner) >= PER_OWNER
                or self.placed.count + len(placing) >= MAX_PLACED):
            raise QuotaExceeded(f"this node serves at most {PER_OWNER} functions of one owner and {MAX_PLACED} in "
                                "all", hint="place it on another provider", retry_after=60)
        self._placing[key] += 1
        moved = self._moving[key] = asyncio.get_running_loop().create_future()
        placing = self._under_way[key] = asyncio.ensure_future(self._place(owner, name, function, price, deal, auth,
                                                                           web, allowed))
        try:
            return await placing
        except asyncio.CancelledError:
            if not placing.cancelled() or asyncio.current_task().cancelling():
                raise  # (this request is being cancelled: not a withdrawal)
            raise Conflict(f"your function {name[:64]!r} was withdrawn while it was being placed",
                           hint="place it again if it is to be served") from None
        finally:
            del self._under_way[key]
            self._placing[key] -= 1
            if not self._placing[key]:
                del self._placing[key]
            self._moved(key, moved)

    async def _place(self, owner: str, name: str, function: dict[str, Any], price: int, deal: dict[str, Any], auth,
                     web: str, allowed: int | None) -> dict[str, Any]:
        """A placement whose terms are checked and which the quotas leave room for: its tab and the owner's line
        checked, its module and files looked at, and it served; reading its files charged on its tab, up to
        `allowed` (None: its cap)."""
        budget = self._budget(function, price)
        await self.paid.provider_tabs.check(auth, budget)  # closed (a replay), or too small for one request
        self.paid.reserve(owner, budget, "a request's budget")  # its line here covers one request ...
        self.paid.release(owner, budget)  # ... which holds it again when it comes
        if not self.paid.compute.registry.has_module(function["module"]):
            self.paid.pushes.expect(owner, function["module"], price, auth)  # its compile charged on this tab
            raise not_here(function["module"])
        mounted = mounted_size(function)
        if mounted > MAX_MOUNTED:
            raise OverCap(f"the function mounts {mounted:,} bytes; a placed function mounts at most {MAX_MOUNTED:,}")
        bill = self._tab_bill(owner, name, auth, price, deal)
        reading = mount_price(mounted, price)
        reserved = read = 0
        on_tab = charged = None

        async def mounting() -> None:  # only a new or changed function's files are read
            nonlocal reserved, on_tab
            if not reading:
                return
            if allowed is not None and reading > allowed:
                raise SpendCapReached(f"reading the files the function mounts costs {reading:,} micro-credits here; "
                                      f"its tab pays at most {allowed:,} for it",
                                      hint="place it again on a tab that pays reading its files")
            try:  # its tab keeps room for one request beside it: else the function could not run here
                await self.paid.provider_tabs.check(auth, reading + budget)
            except DealRefused:
                raise DealRefused(f"the tab's cap {auth.cap:,} does not cover reading the files the function mounts "
                                  f"({reading:,} micro-credits here) beside one request's budget ({budget:,})",
                                  hint="place it on a tab with room for both") from None
            on_tab = await self.paid.provider_tabs.reserve(auth, reading, owner)
            try:
                self.paid.reserve(owner, reading, "reading the files it mounts")
            except BaseException:
                self.paid.provider_tabs.ran(on_tab, reading, None)
                on_tab = None
                raise
            reserved = reading

        def keep(record: dict[str, Any]) -> None:  # its files all read: the reading's record goes with it
            nonlocal charged
            also = () if on_tab is None else (self.paid.provider_tabs.mount_record(on_tab, reserved, owner),)
            self.store.save_placement(owner, name, {"function": record, "price": price, "deal": deal,
                                                    "authorization": encode_authorization(auth).hex()}, also)
            charged = also[0] if also else None

        def staged(size: int) -> None:
            nonlocal read
            read += size

        deadline, cut = asyncio.timeout(PLACE_TIMEOUT), False  # past it its owner has stopped waiting for the answer
        try:
            async with deadline:
                record = await self.placed.host(owner, function, bill, mounting, keep, staged)
        except asyncio.CancelledError:  # a withdrawal's
            cut = True
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
            cut = True
            raise FunctionUnavailable(f"the files the function mounts were not read within {PLACE_TIMEOUT:g} s",
                                      hint="place it again, or on another provider") from None
        finally:
            if on_tab is not None:  # read (or begun) whatever came of it: used; cut short, the part read (a
                # withdrawal's or the deadline's doing, not the owner's files')
                used = min(reserved, mount_price(read, price)) if cut and charged is None else reserved
                if self.paid.trust is not None:
                    self.paid.trust.use(owner, used, reserved=reserved)
                await self.paid.provider_tabs.mounted(on_tab, used, reserved, owner, charged)  # paid with the tab
        return {"url": f"{web}/fn/{owner}/{record['name']}/", "authorization": auth.id.hex()}

    def _tab_bill(self, owner: str, name: str, auth, price: int, deal: dict[str, Any]) -> TabBill:
        return TabBill(self.paid, owner, auth, price, deal, lambda bill: self._closed(owner, name, bill))

    async def _closed(self, owner: str, name: str, bill: TabBill) -> XscError:
        """A request found its function's tab closed, or expired.  Still the function's current tab: its owner
        closed it or let it expire without placing the next (it placed the function elsewhere while this node was
        down, or gave it up, or went away), so the function is withdrawn: its files go, and nothing more is run
        that no receipt could pay.  Else it has just been placed with its next tab: the caller may retry."""
        if (owner, name) in self._moving:  # left to what is under way (the function placed on its next tab, maybe)
            return FunctionUnavailable("this function is being placed here again, or withdrawn",
                                       hint="retry in a moment")
        served = self.placed.get(owner, name)
        if served is None or served.bill is not bill:
            return FunctionUnavailable("this function has just moved to its owner's next tab here",
                                       hint="retry in a moment")
        log.info("function %s of %s withdrawn: its tab here is closed or expired", name, owner)
        try:
            await self.withdraw(owner, name)
        except NotFound:
            pass  # another request withdrew it first
        return NotFound(f"no function {name[:64]!r} of node {owner} is served here: its tab is closed or "
                        "expired")

    async def withdraw(self, owner: str, name: str) -> dict[str, Any]:
        """A function withdrawn (its owner's DELETE, or `_closed`).  One that comes while a placement of it is being
        made cuts that placement short (its files may take PLACE_TIMEOUT to read: the owner is answered at once),
        waits for it to be over and withdraws what was placed before it: the owner's latest word is that it be
        served no more, so a withdrawal answered is never followed by that placement being served (nor does it
        remove the function's folder while that placement moves its files into it).  A placement that comes
        meanwhile is refused (409, `place`)."""
        key = (owner, name)
        before, moved = self._moving.get(key), asyncio.get_running_loop().create_future()
        self._moving[key] = moved
        try:
            cut = False
            if before is not None:
                placing = self._under_way.get(key)
                cut = placing is not None and placing.cancel()
                await asyncio.wait([before])
            if self.placed.get(owner, name) is None:  # refused before the synced write: a name costs no fsync
                if cut:  # what was being placed is not, and will not be, served
                    return {"withdrawn": name}
                raise NotFound(f"no function {name[:64]!r} of yours is served here", hint="place it first")
            self.store.remove_placement(owner, name)  # first: a kill -9 from here on leaves it withdrawn
            await self.placed.drop(owner, name)
        finally:
            self._moved(key, moved)
        return {"withdrawn": name}

    def _moved(self, key: tuple[str, str], moved: asyncio.Future) -> None:
        """A placement or withdrawal of `key` is over: what waits for it goes on."""
        if self._moving.get(key) is moved:
            del self._moving[key]
        moved.set_result(None)

    async def status(self, owner: str, name: str) -> dict[str, Any]:
        """A placed function's URL, its counters here and what its current tab has run (the owner's check that it
        is served; after a restart, its tab's runs before it too)."""
        served = self.placed.get(owner, name)
        web = self.web_url()
        if served is None or web is None:
            raise NotFound(f"no function {name[:64]!r} of yours is served here", hint="place it again")
        bill = served.bill
        tab = await self.paid.provider_tabs.standing(bill.auth)
        return {"url": f"{web}/fn/{owner}/{name}/", "requests": served.requests, "errors": served.errors,
                "p50_ms": median_ms(served.latencies),
                "tab": {"authorization": bill.auth.id.hex(), "total": tab.total, "count": tab.count,
                        "compiles": tab.compiles, "mounts": tab.mounts}}

    def hosted(self) -> list[dict[str, Any]]:
        """The functions other nodes placed here, each with its owner, where callers reach it, its counters and
        what its runs earned (charged on its owners' tabs since it was placed here, as its other counters: kept across
        restarts, `keep_counts`)."""
        web = self.web_url()
        return [{"owner": owner, "name": name, "module": served.record["module"], "path": f"/fn/{owner}/{name}/",
                 "url": None if web is None else f"{web}/fn/{owner}/{name}/", "requests": served.requests,
                 "errors": served.errors, "in_flight": served.in_flight, "p50_ms": median_ms(served.latencies),
                 "earned": served.spend}
                for owner, name, served in sorted(self.placed.all(), key=lambda item: item[:2])]

    def _within(self, function: dict[str, Any]) -> None:
        """Refused (413) if it asks for bodies or requests at once past what this node takes of a placed function."""
        max_body, concurrency = function.get("max_body", MAX_BODY), function.get("concurrency", CONCURRENCY)
        if type(max_body) is int and max_body > self.max_body:
            raise OverCap(f"the function's max_body is {max_body:,} bytes; this node takes placed functions of at most "
                          f"{self.max_body:,}", hint="place it on another provider, or with a lower --max-body")
        if type(concurrency) is int and concurrency > self.concurrency:
            raise OverCap(f"the function's concurrency is {concurrency}; this node takes placed functions of at most "
                          f"{self.concurrency}", hint="place it on another provider, or with a lower --concurrency")

    def _budget(self, function: dict[str, Any], price: int) -> int:
        limits = function.get("limits") or {}
        if not isinstance(limits, dict):
            raise InvalidArgument("a function's limits are an object")
        call = InvokeCall(function["module"], function.get("entrypoint", "_start"), [], limits.get("fuel"),
                          limits.get("memory"), limits.get("timeout"), True)
        return self.paid.compute.budget(call, price)


def _counts(served) -> tuple[int, int, int]:
    return served.requests, served.errors, served.spend


def mount_price(size: int, price: int) -> int:
    """What reading `size` bytes of a placed function's stored files costs its owner here, at `price` per million
    fuel: as much as a run reading them through a WASI stream."""
    return price_compute(io_fuel(size), price)


def mounted_size(function: dict[str, Any]) -> int:
    """The bytes of the stored files `function` mounts, as their capabilities say (what its owner and its provider
    alike price its reading by: `mount_price`)."""
    return sum(Capability.parse(item.cap).size for item in _inputs(function))


def _inputs(function: dict[str, Any]) -> list[Input]:
    """The stored files a placed function mounts, each named by its capability (bounded before any is read)."""
    inputs = function.get("inputs", [])
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS or not all(isinstance(i, str) for i in inputs):
        raise InvalidArgument(f"a function's inputs are a list of at most {MAX_INPUTS} CAP:/in/NAME")
    items = [parse_input(text) for text in inputs]
    if any(item.cap is None for item in items):
        raise InvalidArgument("a placed function mounts stored files by their capabilities (CAP:/in/NAME)")
    return items


__all__ = ["FUNCTION_JOBS", "MAX_PLACED", "PER_OWNER", "PlacedFunctions", "TabBill", "function_job", "mount_price",
           "mounted_size", "web_url"]
