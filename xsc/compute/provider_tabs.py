"""The provider's side of remote invokes paid through tabs (compute/remote_tabs.py is the gateway's): each run's
amount on disk until the tab's receipt is countersigned, and the one receipt a tab closes with.  The constants both
sides agree on (the job reference a tab's authorization begins with, how long it may live, what compiling a pushed
module costs) are here.

A module a gateway pushes for a call on a tab, naming that tab, is compiled at `compile_price`, charged on that tab
once (its record on disk beside the runs', written in the module's own batch: `compile_record`, `compiled`): the
tab's receipt then counts it in its amount and says how much of it was compiles (usage `compiles`), and the gateway
pays it with the runs (compute/remote_tabs.py holds it to the price it computes itself).  A push that names no tab
(an older gateway's) is charged on the gateway's trust line alone, as it always was: an older gateway refuses a
receipt with a meter it does not know.

Reading the files a web function placed here mounts (compute/placed_functions.py) is charged on the placement's tab
the same way (`mounted`: a record of its own on disk, written in the placement's own batch once the files are all
read: `mount_record`), and its receipt says how much of its amount that was (usage `mounts`), which the owner holds
to the price it computes itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from .. import keys
from ..db import Database, Rows
from ..errors import (AuthorizationExpired, AuthorizationReplayed, Conflict, DealRefused, Forbidden, InvalidArgument,
                      NothingOwed)
from ..identity import Identity, parse_public_id, public_id
from ..ledger.core.model import Authorization, Receipt
from ..ledger.core.pricing import price_compute
from ..ledger.service import LedgerService
from ..ledger.store import Count
from ..tasks import waited_out

log = logging.getLogger(__name__)

# Compiling a peer's module is work done for it: priced as this much fuel per byte at the price of the call that
# asked for it.  A module of 1 MiB: 10^10 fuel.
COMPILE_FUEL_PER_BYTE = 10_000

JOB = "compute:rtab"  # the job reference of a tab's authorization (what every tab's begins with)
TAB_TTL = 3600  # seconds a tab's authorization stays valid (the retry has this long to close it)
_RUN = struct.Struct(">QQ")  # amount, fuel; then the public key (32) of the gateway whose call it was
# A compile charged on a tab is a record of the same rows: amount, 0 fuel, the gateway's key, then the module's hash
# (32), which no run's record has; its id is the time (8) and 8 random bytes, as a run's provenance id is.
_COMPILE = _RUN.size + 32 + 32
# Reading the files a placed function mounts, charged on its tab: amount, 0 fuel, the owner's key, then this tag.
_MOUNT_TAG = b"m"
_MOUNT = _RUN.size + 32 + len(_MOUNT_TAG)
AUTH_ID_LEN = 32  # an authorization id: keys.tab_run(authorization id, provenance id)
CLOSED_EMPTY = 4096  # tabs closed with nothing run under them, remembered (the newest) until they expire
# The longest a tab's authorization may run from its first call here (a gateway's are TAB_TTL): a tab its gateway
# lets expire can never be closed (no receipt is signed under an expired authorization), so its run records are
# dropped once it has expired, and at a start once its first run is older than this.
MAX_TAB_TTL = 2 * TAB_TTL


# --- provider side -------------------------------------------------------------------------------------
@dataclass
class PeerTab:
    total: int = 0
    fuel: int = 0
    count: int = 0
    reserved: int = 0
    in_flight: int = 0
    # Of those in flight, the work that has not begun to run (a job waiting for its bytes or its run): its gateway
    # closing the tab gives it up (`close_once`), so the close is answered at once, not once its holder drops it.
    staged: int = 0
    given_up: list[Callable[[], None]] = field(default_factory=list)  # how each holder of staged work drops it
    closed: bool = False
    auth_id: bytes = b""  # its authorization's id (where ProviderTabs keeps it)
    expires_at: int = 0  # its authorization's
    # The node whose calls ran under it: the only one that may run more under it or close it.  Any node that
    # learns an authorization could otherwise spend a gateway's tab, or close it and be counted as its payer.
    gateway: str | None = None
    compiles: int = 0  # of `total`, what compiling modules pushed for its calls cost (`ProviderTabs.compiled`)
    compiled: set[str] = field(default_factory=set)  # those modules (each charged on a tab once)
    mounts: int = 0  # of `total`, what reading the files of the placed function it pays cost (`ProviderTabs.mounted`)

    @property
    def idle(self) -> bool:
        """Nothing ran, runs or is reserved under it: what it would say is read again from disk at no cost."""
        return not (self.count or self.compiles or self.mounts or self.in_flight or self.reserved or self.closed)


class ProviderTabs:
    """Gateways' tabs with this node.  Each run's amount is on disk (`c/t/<auth><run>`) from before its answer
    until the tab's receipt is countersigned: the receipt then states the total for good, and the run records
    are deleted (`prune`; a kill -9 in between leaves them to `sweep` on the next start), so they never pile
    up beyond the tabs still open.  A tab its gateway lets expire unclosed can never be closed (no receipt is
    signed under an expired authorization): it is forgotten with its run records (`expire`, and `sweep` once its
    first run is older than MAX_TAB_TTL, the longest life a tab's authorization may have from its first call).

    A tab is kept in memory only while something runs, is reserved or ran under it: any signed authorization
    names a tab (a stranger signs a fresh one for each request at no cost), and one that is only checked,
    refused, or whose calls all failed leaves nothing behind.  A tab under which
    nothing ran is closed with no receipt (NothingOwed): a receipt is an entry on this node's chain for good,
    a synced write and a signature, and any key may sign an authorization.  Such a tab is remembered closed
    until its authorization expires, at most the CLOSED_EMPTY newest: a call its own gateway sends under one
    forgotten runs on that gateway's trust line, as any call does."""

    def __init__(self, *, db: Database, ledger: LedgerService, node: Identity) -> None:
        self.db, self.ledger, self.node = db, ledger, node
        self._tabs: dict[bytes, PeerTab] = {}
        self._closed_empty: OrderedDict[bytes, int] = OrderedDict()  # authorization id -> when it expires
        self.pruned = 0  # run records deleted since start (metrics, tests)

    def calls(self, authorization_id: bytes) -> int:
        """How many calls the open tab of that authorization has run (0: no such tab open)."""
        tab = self._tabs.get(authorization_id)
        return 0 if tab is None else tab.count

    def prune(self, authorization_id: bytes) -> int:
        """Delete the run records of a tab whose receipt is countersigned; how many there were."""
        with self.db.iterator(prefix=keys.tab_runs(authorization_id), include_value=False) as it:
            found = list(it)
        if found:
            with self.db.write_batch() as batch:
                for key in found:
                    batch.delete(key)
            self.pruned += len(found)
        return len(found)

    def sweep(self, now: float | None = None) -> int:
        """On start: prune every tab whose receipt was countersigned before the last stop, and every tab whose
        first run here is older than MAX_TAB_TTL (its authorization has expired: it is never closed); how many
        records."""
        now = time.time() if now is None else now
        settled, seen = [], set()
        with self.db.iterator(prefix=keys.TAB_RUNS, include_value=False) as it:
            for key in it:  # a tab's runs in the order they ran (a run's id begins with its time)
                auth_id = key[len(keys.TAB_RUNS):len(keys.TAB_RUNS) + AUTH_ID_LEN]
                if auth_id not in seen:
                    seen.add(auth_id)
                    first_run = int.from_bytes(key[len(keys.TAB_RUNS) + AUTH_ID_LEN:][:8], "big") / 1e9
                    if first_run < now - MAX_TAB_TTL or self.ledger.store.receipt_for(auth_id) is not None:
                        settled.append(auth_id)
        pruned = sum(self.prune(a) for a in settled)
        if pruned:
            log.info("pruned %d run records of %d tabs settled or expired before the last stop", pruned, len(settled))
        return pruned

    def expire(self, now: float) -> list[bytes]:
        """Forget the tabs kept whose authorization has expired, with nothing in flight: no receipt can be signed
        under one any more (its gateway is never paid for what ran, as it let it expire), so what is kept of it,
        here and on disk, is dead weight; their authorization ids (the caller prunes their run records)."""
        gone = [t.auth_id for t in self._tabs.values() if t.expires_at < now and not t.in_flight and not t.closed]
        for auth_id in gone:
            del self._tabs[auth_id]
        return gone

    @property
    def kept(self) -> int:
        """Tabs kept in memory now (tests, status)."""
        return len(self._tabs)

    def records(self) -> int:
        """Run records on disk now (tests, status)."""
        with self.db.iterator(prefix=keys.TAB_RUNS, include_value=False) as it:
            return sum(1 for _ in it)

    async def _tab(self, auth: Authorization) -> PeerTab:
        """The tab of `auth` as kept, or as read from disk (not kept: the caller keeps it, see the class)."""
        tab = self._tabs.get(auth.id)
        if tab is None:
            tab = PeerTab(auth_id=auth.id, expires_at=auth.expires_at)
            with self.db.iterator(prefix=keys.tab_runs(auth.id), include_key=False) as it:
                for value in it:  # what was acknowledged before a restart
                    amount, fuel = _RUN.unpack_from(value)
                    tab.total += amount
                    if len(value) >= _COMPILE:
                        tab.compiles += amount
                        tab.compiled.add(value[_RUN.size + 32:_COMPILE].hex())
                    elif len(value) == _MOUNT:
                        tab.mounts += amount
                    else:
                        tab.fuel, tab.count = tab.fuel + fuel, tab.count + 1
                    if len(value) >= _RUN.size + 32:
                        tab.gateway = public_id(value[_RUN.size:_RUN.size + 32])
            signed = await self.ledger.receipt_for(auth.id) is not None
            # Asked once the read is done: a close answered meanwhile (nothing ran) left it closed, and a call kept
            # under it would run for a receipt never signed.
            tab.closed = signed or auth.id in self._closed_empty
            tab = self._tabs.get(auth.id, tab)  # another request's read kept first: that one
        return tab

    def _keep(self, tab: PeerTab) -> PeerTab:
        return self._tabs.setdefault(tab.auth_id, tab)

    def running(self, auth: Authorization, closer: str | None) -> bool:
        """Whether work of `closer`'s runs under the tab of `auth` now (a web function's run is answered before its
        record is written: closing its tab waits for that write).  A tab no work runs under is not kept in memory
        with any in flight: one made up, closed, or read back from disk after a restart."""
        tab = self._tabs.get(auth.id)
        return tab is not None and tab.in_flight > tab.staged and (closer is None or tab.gateway in (None, closer))

    async def standing(self, auth: Authorization) -> PeerTab:
        """The tab of `auth` as it stands: what it ran (summed from its run records after a restart), closed or not."""
        return await self._tab(auth)

    async def reserve(self, auth: Authorization, budget: int, gateway: str | None = None,
                      staged: bool = False, given_up: Callable[[], None] | None = None) -> PeerTab:
        """Room on the tab for a call of `budget` from `gateway`, or refused (closed, its cap used up, or another
        gateway's).  `staged`: work that runs only once its gateway asks (`start`), and is given up if it closes
        the tab first: then `given_up()` is called as the close is answered (its holder gives back what it
        reserved at that moment, not when it next looks)."""
        tab = await self.check(auth, budget)
        _check_gateway(tab, gateway, "call under")
        tab = self._keep(tab)  # `_tab` found none kept: no await since
        if gateway is not None and tab.gateway is None:
            tab.gateway = gateway
        tab.reserved += budget
        tab.in_flight += 1
        tab.staged += staged
        if given_up is not None:
            tab.given_up.append(given_up)
        return tab

    @staticmethod
    def start(tab: PeerTab) -> None:
        """Staged work on `tab` (`reserve(staged=True)`) begins to run: refused if its gateway closed the tab
        meanwhile (it gave the work up), or if its authorization expired since the work was taken (no receipt is
        ever signed under it): nothing run under either would ever be paid."""
        if tab.closed:
            raise AuthorizationReplayed(f"the tab of authorization {tab.auth_id.hex()} is closed: the work reserved "
                                        "under it is given up", hint="send it again (a fresh authorization)")
        if time.time() > tab.expires_at:
            raise AuthorizationExpired(f"the tab of authorization {tab.auth_id.hex()} expired at {tab.expires_at}: "
                                       "nothing run under it could be paid",
                                       hint="send it again (a fresh authorization)")
        tab.staged -= 1

    async def check(self, auth: Authorization, budget: int) -> PeerTab:
        """The open tab of `auth` if it has room for a call of `budget` (nothing reserved, nothing kept), else
        refused."""
        if not auth.job.startswith(JOB):
            raise DealRefused("a tab call needs a tab authorization", hint=f"its job must begin with {JOB}")
        if auth.expires_at > time.time() + MAX_TAB_TTL:
            raise DealRefused(f"a tab's authorization expires within {MAX_TAB_TTL} s of its call, not at "
                              f"{auth.expires_at}", hint="open a tab of a shorter life")
        tab = await self._tab(auth)
        if tab.closed:
            raise AuthorizationReplayed(f"the tab of authorization {auth.id.hex()} is closed",
                                        hint="open a new tab (a fresh authorization)")
        if tab.total + tab.reserved + budget > auth.cap:
            raise DealRefused(f"the tab's cap {auth.cap} does not cover this call's budget {budget} after "
                              f"{tab.total + tab.reserved} used or reserved", hint="open a new tab")
        return tab

    def _remember_closed_empty(self, auth: Authorization) -> None:
        now = time.time()
        while self._closed_empty and (len(self._closed_empty) >= CLOSED_EMPTY
                                      or next(iter(self._closed_empty.values())) < now):
            self._closed_empty.popitem(last=False)
        self._closed_empty[auth.id] = auth.expires_at

    async def reserve_compile(self, auth: Authorization, module: str, price: int, gateway: str) -> PeerTab:
        """Room on the tab of `auth` for compiling `module`, pushed by `gateway` for a call under it, at `price`; or
        refused: a module is charged on a tab once (a gateway names a tab for a module's push once), and the tab must
        be open, `gateway`'s and have room under its cap.  Ended by `compiled`."""
        tab = await self.check(auth, price)
        _check_gateway(tab, gateway, "charge a compile on")
        if module in tab.compiled:
            raise Conflict(f"module {module} was compiled on the tab of authorization {auth.id.hex()} already: a "
                           "compile is charged on a tab once", hint="push it naming no tab")
        return await self.reserve(auth, price, gateway)

    @staticmethod
    def compile_record(tab: PeerTab, module: str, price: int, gateway: str) -> tuple[bytes, bytes]:
        """The record on `tab` of compiling `module` for `gateway` at `price` (`compiled`), to be written with the
        module itself: a kill -9 between the two would leave the module here and its compile charged on no tab (its
        next call or placement finds it, and pushes nothing more)."""
        return _charge_record(tab, price, parse_public_id(gateway) + bytes.fromhex(module))

    async def compiled(self, tab: PeerTab, module: str, price: int, gateway: str,
                       record: tuple[bytes, bytes] | None = None) -> None:
        """Compiling `module` for `gateway`, reserved on `tab` (`reserve_compile`), was done (whatever came of it):
        `price` is on the tab, its record on disk (synced: the receipt counts it from now on, a restart included).
        `record`: its `compile_record`, written with the module if it was new here (then written again: one record
        under its key whatever came of the compile)."""
        def charged() -> None:
            tab.reserved -= price
            tab.in_flight -= 1
            tab.total += price
            tab.compiles += price
            tab.compiled.add(module)

        await self._charged(tab, price, record or self.compile_record(tab, module, price, gateway), charged)

    @staticmethod
    def mount_record(tab: PeerTab, amount: int, owner: str) -> tuple[bytes, bytes]:
        """The record on `tab` of reading `amount`'s worth of the files of `owner`'s placed function (`mounted`), to be
        written with the placement itself: a kill -9 between the two would leave the function served and its
        reading charged on no tab."""
        return _charge_record(tab, amount, parse_public_id(owner) + _MOUNT_TAG)

    async def mounted(self, tab: PeerTab, amount: int, reserved: int, owner: str,
                      record: tuple[bytes, bytes] | None = None) -> None:
        """Reading the files of `owner`'s placed function, `reserved` on `tab` (`reserve`) before any was read, is
        over (whatever came of it) having read `amount`'s worth: that is on the tab, its record on disk (synced: the
        receipt counts it from now on, a restart included), and the rest of what was reserved released.  `record`:
        its `mount_record` of `amount`, written with the placement (then written again: one record under its key)."""
        if amount <= 0:
            self.ran(tab, reserved, None)
            return
        amount = min(amount, reserved)

        def charged() -> None:
            tab.reserved -= reserved
            tab.in_flight -= 1
            tab.total += amount
            tab.mounts += amount

        await self._charged(tab, reserved, record or self.mount_record(tab, amount, owner), charged)

    async def _charged(self, tab: PeerTab, reserved: int, record: tuple[bytes, bytes],
                       charged: Callable[[], None]) -> None:
        """A charge on `tab` for other work than a run, its `record` written synced (the receipt counts it from now on,
        a restart included), then `charged()` (what the tab keeps of it in memory), even if the caller is cancelled
        as it is written (`waited_out`); a write that fails releases the `reserved` it held."""
        done = []

        def ended(_) -> None:
            charged()
            done.append(True)

        try:
            await waited_out(asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self.db.put, *record, sync=True)), ended)
        except BaseException:
            if not done:
                self.ran(tab, reserved, None)
            raise

    @staticmethod
    def owed(auth: Authorization, run, gateway: str | None = None) -> Rows:
        whose = parse_public_id(gateway) if gateway is not None else b""
        return ((keys.tab_run(auth.id, bytes.fromhex(run.provenance_id)),
                 _RUN.pack(run.charge, run.fuel_consumed) + whose),)

    @staticmethod
    def replace_hold(tab: PeerTab, budget: int, charge: int) -> None:
        """A call that held `budget` on `tab` ran and owes `charge` (<= budget), its record not yet written: only
        the charge stays reserved (it is still in flight: the tab closes only once it is written or not); its
        end is then `ran(tab, charge, ...)`."""
        if not 0 <= charge <= budget:
            raise InvalidArgument(f"the metered amount {charge} exceeds the {budget} held for it")
        tab.reserved -= budget - charge

    def ran(self, tab: PeerTab, budget: int, run, staged: bool = False) -> None:
        """A call that held `budget` on `tab` ended, having made `run` (None: it did not run); `staged`: work that
        never began (`start`), given up."""
        tab.reserved -= budget
        tab.in_flight -= 1
        tab.staged -= staged
        if run is not None:
            tab.total += run.charge
            tab.fuel += run.fuel_consumed
            tab.count += 1
        if tab.idle and self._tabs.get(tab.auth_id) is tab:  # its calls all failed: nothing to keep
            del self._tabs[tab.auth_id]

    async def close(self, auth: Authorization) -> Receipt:
        """This node's receipt for everything it ran under the tab (idempotent once closed)."""
        return (await self.close_once(auth))[0]

    async def close_once(self, auth: Authorization, sender: str | None = None,
                         closer: str | None = None, count: Count | None = None,
                         written: Callable[[Receipt], None] | None = None) -> tuple[Receipt, bool]:
        """`close`, and whether this request is the one that closed the tab (False: a repeat, answered with the
        receipt another made): what the receipt pays is counted for its sender once, not on every repeat.
        `sender` is written with the receipt (LedgerService.countersign), and `count`, its count on the sender's
        trust line, in the receipt's batch.  `closer`: the node asking, refused unless its calls are the ones that
        ran under the tab.  `written(receipt)` follows the receipt this request wrote, once it is written, even if the
        request was cut short as it was (LedgerService.countersign)."""
        if not auth.job.startswith(JOB):
            raise DealRefused("not a tab authorization", hint=f"its job must begin with {JOB}")
        existing = await self.ledger.receipt_for(auth.id)
        tab = self._tabs.get(auth.id) if existing is not None else await self._tab(auth)
        if tab is not None:
            _check_gateway(tab, closer, "close")
        if existing is not None:
            return existing, False
        # Work staged under it and not begun is given up: only its gateway closes the tab, and never runs it after.
        if tab.in_flight > tab.staged:
            raise Conflict(f"{tab.in_flight - tab.staged} calls are still running under this tab",
                           hint="close it in a moment")
        if not tab.count and not tab.compiles and not tab.mounts:
            tab.closed = True
            self._tabs.pop(auth.id, None)
            self._remember_closed_empty(auth)
            _give_up(tab)
            raise NothingOwed(f"no call ran under the tab of authorization {auth.id.hex()} here: nothing is "
                              "owed, and no receipt is signed", hint="drop the authorization")
        tab = self._keep(tab)
        first = not tab.closed  # else another close of it is countersigning now
        tab.closed = True  # no call starts under it any more
        _give_up(tab)
        # `compiles` and `mounts` only when there were any: a tab with none is what an older gateway closes, which
        # knows no other meters (and never names a tab on a push: `compiled`).
        usage = {"fuel": tab.fuel, "invokes": tab.count, **({"compiles": tab.compiles} if tab.compiles else {}),
                 **({"mounts": tab.mounts} if tab.mounts else {})}
        receipt = await self.ledger.countersign(self.node, auth, tab.total, usage, verified=True, sender=sender,
                                                count=count, written=written)
        self._tabs.pop(auth.id, None)  # a closed tab is known by its receipt from now on
        self.prune(auth.id)  # its total is in the receipt: the run records have done their work
        return receipt, first


def _charge_record(tab: PeerTab, amount: int, what: bytes) -> tuple[bytes, bytes]:
    """The record of `amount` charged on `tab` for other work than a run (`what`: whose, and which): its id the time
    and random bytes, as a run's provenance id is."""
    return keys.tab_run(tab.auth_id, time.time_ns().to_bytes(8, "big") + os.urandom(8)), _RUN.pack(amount, 0) + what


def compile_price(size: int, price: int) -> int:
    """What compiling a peer's module of `size` bytes costs it, at `price` micro-credits per million fuel."""
    return price_compute(size * COMPILE_FUEL_PER_BYTE, price)


def _give_up(tab: PeerTab) -> None:
    """The work staged under a tab its gateway closed is given up: each holder drops its own (checking that it has
    not begun: a holder whose work ran is past caring), once."""
    holders, tab.given_up = tab.given_up, []
    for drop in holders:
        drop()


def _check_gateway(tab: PeerTab, node: str | None, what: str) -> None:
    if node is not None and tab.gateway is not None and node != tab.gateway:
        raise Forbidden(f"the tab of authorization {tab.auth_id.hex()} is another gateway's: node {node} cannot "
                        f"{what} it", hint="a gateway opens its own tab (a fresh authorization)")


__all__ = ["AUTH_ID_LEN", "COMPILE_FUEL_PER_BYTE", "JOB", "MAX_TAB_TTL", "PeerTab", "ProviderTabs", "TAB_TTL",
           "compile_price"]
