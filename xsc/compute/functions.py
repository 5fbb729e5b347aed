"""Web functions: WASI programs that answer HTTP requests (WAGI), served on a listener of their own and paid by
their owner (the node's user).

A request runs its function as a job runs a program (compute/job_sandbox.py): the request's variables in the
environment (REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, SERVER_NAME, SERVER_PORT, CONTENT_TYPE,
CONTENT_LENGTH, HTTP_*, WAGI's X_MATCHED_ROUTE, X_RAW_PATH_INFO and X_FULL_URL, ...), its body on
stdin (at most the function's `max_body`, else 413 before it is read), the stored files the function mounts
under /in (staged once, when it is served), no /out.  Its stdout is a CGI response: header lines (`Status:`,
`Content-Type`, `Location`, ...), a blank line, the body.  Headers a function may not set are dropped: hop-by-hop
ones, and any cookie named like the node's own (`xsc_...`: cookies do not keep to a port, and the dashboard is on
the same host).  (compute/cgi.py makes the environment and reads the answer's head.)  A `Range:` request on a 200
answer gets 206 and the bytes asked for; a conditional GET that names the answer's validator, 304, and one whose
If-Match or If-Unmodified-Since does not hold, 412; a GET of /fn/NAME,
301 to /fn/NAME/ (compute/web_answers.py); a function's own Content-Length is checked, not sent.

A function served `on_market` is not run here: it is placed on a provider the market offers
(compute/placements.py), which serves it at its own listener under /fn/OWNER_ID/NAME/ and runs each request
on this node's tab with it (compute/placed_functions.py); a request for it here is redirected there.  The
provider's side is this same code: a placed function is served with a bill on the owner's tab (`TabBill`)
where the owner's own functions are billed to the local ledger (`LedgerBill`); `PlacedHere` keeps the functions
placed here and their files (reached as `placed_here`).

A small request is tried first, in a web runner (a child process) or on the event loop's thread
(compute/web_on_loop.py); the rest run on workers.
Every request is a run, metered and recorded like any (its provenance record names the function and the request
line) and charged to the owner's tab (ledger/tabs.py: one transfer per interval for all of them).  Its caller is
answered once the run has ended, not once its record's group write is on disk: a kill -9 between the two loses
the record and its charge together, never one without the other.  The owner caps
what a function spends an hour (`spend_cap`): once the runs of the last hour reach it, callers get 402 and nothing
more is charged.  A function runs at most `concurrency` requests at once (503 past it); one past its deadline is
stopped and answered 504.  The functions are records in LevelDB (compute/store.py), and so is what each spent by
the minute (written with each run's record: a restart does not reset the cap); the counters are kept in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol
from urllib.parse import quote

from .. import codec
from ..db import Rows
from ..errors import (ComputeBusy, FunctionFailed, FunctionTimedOut, FunctionUnavailable,
                      InvalidArgument, NotFound, PayloadTooLarge, PreconditionFailed, RangeNotSatisfiable,
                      SpendCapReached, XscError, quoted_id)
from ..identity import Identity
from ..storage.core.capability import Capability
from ..storage.core.ranges import content_range, parse_range
from ..tasks import in_pool
from ..units import plural_for
from . import provenance
from .limits import bounded_size, named
from .job_inputs import open_stored
from .job_sandbox import Sandboxed, admit, record_and_owe, sandboxed
from .jobspec import Input, JobSpec, parse_input, parse_job
from .service import ComputeService, InvokeCall
from .store import ComputeStore
from .hosted_jobs import DISK_MARGIN
from .wasi_io import OUTPUT_CAP, Streams, io_fuel
from .cgi import MAX_HEAD, ReadFn, Request, environment, parse_cgi
from .web_answers import check_length, conditional, slash_location, with_ranges
from .web_on_loop import ON_LOOP_BODY, LoopRuns
from .web_output import CHUNK, FOLLOW_AFTER, DiskRoom, Pipes, Spill, wake

FIELDS = ("name", "module", "entrypoint", "inputs", "env", "limits", "max_body", "concurrency", "spend_cap",
          "on_market")
MAX_BODY = 16 * 1024 * 1024  # a request body's default cap (max_body: at most MAX_BODY_CEILING)
MAX_BODY_CEILING = 1 << 30
MAX_RESPONSE = 1 << 30  # bytes of stdout a function may answer (written to disk, streamed to the caller)
CONCURRENCY = 8
MOUNT_TAG = "XSC_MOUNT_TAG_"  # then a mounted file's NAME: its tag, in each request's environment (_mount_tags)
PLACED_DIR = ".placed"  # under work_dir: functions other nodes placed here (no function's name starts with '.')
_NODE_ID = re.compile(r"[a-z2-7]{52}")  # a node id, as the first segment of a placed function's path
HOUR_MINUTES = 60  # the spend cap's window: this minute and the 59 before it
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
STREAM_BYTES = 256 * 1024  # an answer this long is sent while its run goes on (shorter: once it ends)
STREAM_AFTER = 0.05  # seconds a run goes on before what it has written is sent

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """A function's answer: its status and headers, and its body from byte `first` of what its run writes, to
    `last` (inclusive) once the run has ended, or streamed while it runs (`last` None: sent as it is written,
    and cut short if the run then fails).  `finish` records and charges the run; `release` follows it."""

    status: int
    headers: list[tuple[str, str]]
    stdout: Spill
    first: int
    last: int | None  # first > last: an empty body
    stdin: Path | None = None
    finish: Finish | None = None
    declared: int | None = None  # the Content-Length its function's head declares, checked against what it writes

    @property
    def length(self) -> int:
        assert self.last is not None
        return self.last - self.first + 1

    @property
    def framed_length(self) -> int | None:
        """The Content-Length it is sent with: its length once its run has ended; streamed, the length its function
        declares (checked once it has written it: cut short if it falls short, what it writes past it not sent),
        else None (chunked)."""
        if self.last is not None:
            return max(0, self.length)
        return self.declared if self.status not in (204, 304) else None

    def whole(self) -> bytes | None:
        """The body at once, if the run has ended and it is in memory (sent in one write); else None."""
        if self.last is None or self.stdout.on_disk:
            return None
        return self.stdout.read(self.first, max(0, self.length))

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it is written; a run that fails once its headers are out raises its error here."""
        offset = self.first
        while True:
            end = self.stdout.size if self.last is None else self.last + 1
            if offset < end:
                length = min(CHUNK, end - offset)
                chunk = (await in_pool(None, self.stdout.read, offset, length) if self.stdout.on_disk
                         else self.stdout.read(offset, length))
                yield chunk
                offset += len(chunk)
            elif self.last is not None or self.finish is None:
                return
            elif self.finish.ran.done():
                await self.finish()  # a run that failed raises its error: the caller's body is cut short
                if offset >= self.stdout.size:
                    check_length(self.declared, offset - self.first)  # or the body it sent is cut short
                    return
            else:  # a chunk's worth, the run's end, or what came within STREAM_AFTER
                more = self.stdout.more(offset + CHUNK)
                await asyncio.wait([more, self.finish.ran], timeout=STREAM_AFTER,
                                   return_when=asyncio.FIRST_COMPLETED)
                more.cancel()

    async def release(self) -> None:
        """Once the run has ended (whatever became of the caller), its files."""
        if self.finish is not None:
            try:
                await self.finish()
            except XscError:
                pass  # answered already
        self.stdout.close()
        if self.stdout.on_disk or self.stdin is not None:
            await in_pool(None, _remove, self.stdout.path, self.stdin)


class Finish:
    """What follows a request's run, once, whoever comes first (the request, its streamed answer, or its
    release when the caller hung up): the run's end awaited and its failure raised (504 past its deadline); the
    run recorded, charged and counted in its function's hour.  Its caller is answered once the run has ended,
    without waiting for its record's group write (job_sandbox.record_and_owe: a record not written is not
    charged)."""

    def __init__(self, functions: WebFunctions, served: Served, request: Request, spec: JobSpec, prepared, signature,
                 limits, budget: int, streams: tuple[Spill, Spill], ran: asyncio.Future, started: int,
                 argv: list[str], bill: Bill) -> None:
        self._args = (functions, served, request, spec, prepared, signature, limits, budget, streams, started, argv,
                      bill)
        self.ran = ran
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()  # the caller's error, or None
        self._begun = False

    async def __call__(self) -> None:
        if not self._begun:
            self._begun = True
            try:
                self.ended.set_result(await self._end())
            except asyncio.CancelledError:
                self.ended.cancel()  # the node is stopping: those waiting for it are told so
                raise
            except BaseException as exc:
                self.ended.set_exception(exc)
        await _settled(self.ended)
        if (error := self.ended.result()) is not None:
            raise error

    async def _end(self) -> XscError | None:
        functions, served, request, spec, prepared, signature, limits, budget, streams, started, argv, bill = self._args
        stdout, stderr = streams
        try:
            await _settled(self.ran)
            outcome = self.ran.result()
            await _settled(stdout.drained, stderr.drained)  # their last bytes read (their pipes closed with the run)
        except BaseException:
            bill.release(budget)
            stdout.close()
            stderr.close()
            raise
        outcome.stderr = stderr.read(0, stderr.size)  # counted in its record; a function's log is not kept
        outcome.over_cap = "stdout" if stdout.over else "stderr" if stderr.over else None
        refusal = _refused(outcome, stdout, limits.fuel)
        functions._record(served, request, spec, prepared, signature, limits,
                          Sandboxed(outcome, started, argv, [], refusal), budget, bill)
        if stdout.full is not None:
            return stdout.full
        if outcome.trap_kind == "deadline":
            return FunctionTimedOut(f"the function ran past its deadline of {limits.timeout:g} s and was stopped",
                                    hint="its owner may give it more time: xsc compute serve --timeout",
                                    **named("timeout", limits.timeout, "xsc compute serve --timeout"))
        if outcome.limit is not None:  # out of its fuel or memory: its owner's flag raises it
            raised = "xsc compute serve " + outcome.limit["raised_by"]
            return FunctionFailed(f"the function failed: {outcome.message}", hint=f"its owner may raise it: {raised}",
                                  **{**outcome.limit, "raised_by": raised})
        if outcome.trap_kind is not None or refusal is not None:
            return FunctionFailed(f"the function failed: {outcome.message if outcome.trap_kind else refusal}")
        return None


def _body_limit(cap: int) -> dict[str, Any]:
    """A request body's refusal for its function's max_body: the limit named, and what its owner raises it with."""
    return {"hint": f"send at most {cap:,} bytes; its owner may take more: xsc compute serve --max-body SIZE",
            **named("max_body", cap, "xsc compute serve --max-body")}


class Bill(Protocol):
    """Who pays for a function's requests, and how a run's charge is owed."""

    requester: str  # the account its runs' records name
    rate: int  # micro-credits per million fuel its runs are priced at

    def deal(self, name: str) -> dict[str, Any]: ...

    async def hold(self, budget: int) -> None: ...

    def release(self, budget: int) -> None: ...

    def record(self, compute: ComputeService, run, record: dict, module_hash: bytes, budget: int,
               also: Rows) -> asyncio.Future: ...


class LedgerBill:
    """The owner's own functions: each run held on, and owed to this node on, the owner's local tab."""

    def __init__(self, ledger: Any, tabs: Any, payer: Identity, node: Identity, bid: int) -> None:
        self.ledger, self.tabs, self.payer, self.node = ledger, tabs, payer, node
        self.requester, self.rate = payer.id, bid

    def deal(self, name: str) -> dict[str, Any]:
        return {"function": name}

    async def hold(self, budget: int) -> None:
        await self.ledger.hold(self.payer, budget)

    def release(self, budget: int) -> None:
        self.ledger.release(self.payer, budget)

    def record(self, compute: ComputeService, run, record: dict, module_hash: bytes, budget: int,
               also: Rows) -> asyncio.Future:
        return record_and_owe(compute, self.ledger, self.tabs, self.payer, self.node, run, record, module_hash,
                              budget, also, awaited=False)


class _Running:
    """What follows the run a request started, once it has started (what the request's counters follow)."""

    finish: Finish | None = None


@dataclass
class Served:
    """A function being served: its record, its runs in flight, what it spent in the last hour, its counters."""

    record: dict[str, Any]
    bill: Bill
    owner: str | None = None  # the node that placed it here (None: this node's user's own)
    in_flight: int = 0
    spent: dict[int, int] = field(default_factory=dict)  # minute (since the epoch) -> what its runs cost
    # minute -> what the receipts for its requests on the market paid (kept apart: their rows are written with the
    # payments, its runs' totals with their records)
    paid: dict[int, int] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))
    spend: int = 0
    reserved: int = 0  # under a spend cap: the budgets of its runs in flight, the most they may still cost
    plan: tuple | None = None  # what its requests run (WebFunctions._plan)
    env: dict[str, str] = field(init=False)  # its owner's, and its mounts' tags (made once: `_mount_tags`)

    def __post_init__(self) -> None:
        # Served again, or on a start: what it spent in all is counted from then on, but never as less than the hour
        # it kept (in all 0 beside an hour's 5 read as a fault)
        self.spend = self.spend or sum(self.spent.values()) + sum(self.paid.values())
        self.env = {**self.record["env"], **_mount_tags(self.record["inputs"])}

    def spent_this_hour(self, minute: int) -> int:
        return sum(amount for spent in (self.spent, self.paid) for m, amount in spent.items()
                   if m > minute - HOUR_MINUTES)

    def add(self, minute: int, amount: int) -> list[int]:
        """`amount` spent in `minute`; the minutes past the hour are dropped as a new minute begins (so a function
        served for months keeps an hour's of them, whoever calls it), and returned: their records go too."""
        gone = [] if minute in self.spent else [m for m in self.spent if m <= minute - HOUR_MINUTES]
        for old in gone:
            del self.spent[old]
        self.spent[minute] = self.spent.get(minute, 0) + amount
        self.spend += amount
        return gone


class PlacedHere:
    """The functions other nodes placed here (compute/placed_functions.py takes their placements and withdrawals),
    served under /fn/OWNER_ID/NAME/: each with the bill of its owner's tab, its files mounted under
    work_dir/PLACED_DIR/OWNER/NAME/ in a directory named by its inputs.  Its spec is checked and its files staged as
    a function of this node's own (`check` and `mount`: WebFunctions')."""

    def __init__(self, work_dir: Path, check: Callable[[Any], dict[str, Any]],
                 mount: Callable[..., Awaitable[None]]) -> None:
        self.work_dir = work_dir
        self.check = check
        self.mount = mount
        self._placed: dict[tuple[str, str], Served] = {}  # (owner, name) -> it

    async def host(self, owner: str, body: Any, bill: Bill, mounting: Callable[[], Awaitable[None]],
                   keep: Callable[[dict[str, Any]], None], staged: Callable[[int], None] | None = None
                   ) -> dict[str, Any]:
        """Serve a function `owner` placed here, billed to `bill`; placed again with the same spec, only its bill
        changes (its owner's next tab), and with the same files they are not read again.  `mounting` is called
        before its files are read, once the disk has room for them (it may refuse), `staged` with the bytes of each
        part of them written; `keep` is given its record once its files are in place, before it is served (what was
        placed is then on disk)."""
        record = self.check({**body, "on_market": False})
        record["owner"], record["mounted"] = owner, _digest(record["inputs"])
        key = (owner, record["name"])
        served = self._placed.get(key)
        if served is not None and _same(served.record, record):
            keep(served.record)
            served.bill = bill
            return served.record
        mounted = self.directory(record)
        if served is None or served.record["mounted"] != record["mounted"] or not mounted.exists():
            try:
                await self.mount(record, mounted / "in", "place it on another provider", mounting, staged)
            except asyncio.CancelledError:  # cut short (a withdrawal, its deadline), its files maybe moved into
                # place already: they are no one's (with none served before, neither is the function's folder)
                await _to_its_end(shutil.rmtree, mounted if served is not None else mounted.parent, True)
                raise
        keep(record)
        self._placed[key] = Served(record, bill, owner=owner)
        await in_pool(None, _remove_siblings, mounted)  # the files of its spec before, if they were others
        return record

    def restore(self, record: dict[str, Any], bill: Bill, counts: dict[str, Any] | None = None) -> None:
        """A placed function kept on disk served again after a restart, checked again as when it was placed (its
        module here and runnable, its limits within this node's) and its files still where they were mounted; its
        counters from where they were kept (`counts`: requests, errors, earned)."""
        self.check({k: v for k, v in record.items() if k in FIELDS})
        if record["mounted"] != _digest(record["inputs"]) or not self.directory(record).is_dir():
            raise NotFound(f"the files function {record['name']!r} mounts are no longer here", hint="place it again")
        counts = counts if isinstance(counts, dict) else {}
        kept = [n if type(n := counts.get(k, 0)) is int and n >= 0 else 0 for k in ("requests", "errors", "earned")]
        self._placed[(record["owner"], record["name"])] = Served(record, bill, owner=record["owner"], requests=kept[0],
                                                                 errors=kept[1], spend=kept[2])

    def prune(self) -> int:
        """Remove the files of placed functions no longer served here (withdrawn, or dropped at a restart); how
        many directories."""
        root = self.work_dir / PLACED_DIR
        kept = {self.directory(served.record) for served in self._placed.values()}
        stale = [path for path in root.glob("*/*/*") if path not in kept]
        stale += [path for path in root.glob("*/*") if not any(k.parent == path for k in kept)]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return len(stale)

    async def drop(self, owner: str, name: str) -> Served:
        """A placed function withdrawn: requests for it are refused from now on (404)."""
        served = self._placed.pop((owner, name), None)
        if served is None:
            raise NotFound(f"no function {name[:64]!r} of yours is served here", hint="place it first")
        await in_pool(None, shutil.rmtree, self.work_dir / PLACED_DIR / owner / name, True)
        return served

    def directory(self, record: dict[str, Any]) -> Path:
        """Where a placed function's files are mounted (under `in/`): one directory for each set of inputs, so a
        placement kept on disk never names files staged for another."""
        return self.work_dir / PLACED_DIR / record["owner"] / record["name"] / record["mounted"]

    def get(self, owner: str, name: str) -> Served | None:
        return self._placed.get((owner, name))

    def all(self) -> list[tuple[str, str, Served]]:
        """(owner, name, served) of every function other nodes placed here."""
        return [(owner, name, served) for (owner, name), served in self._placed.items()]

    def by(self, owner: str) -> int:
        return sum(1 for o, _ in self._placed if o == owner)

    @property
    def count(self) -> int:
        return len(self._placed)

    def close(self) -> None:
        self._placed = {}


class WebFunctions:
    def __init__(self, *, compute: ComputeService, storage: Any, ledger: Any, tabs: Any, payer: Identity,
                 node: Identity, store: ComputeStore, work_dir: Path, bid: int, placements: Any,
                 web_url: Callable[[], str | None], web_runners: int = 0) -> None:
        self.compute = compute
        self.web_url = web_url  # where callers reach this node's web listener (None: it has none)
        self.placements = placements  # xsc.compute.placements.Placements: where functions on the market are
        self.storage = storage  # xsc.storage.files.StorageService: the files a function mounts
        self.payer = payer  # the owner: every request of its own functions is charged to it
        self.store = store
        self.work_dir = work_dir
        self.room = DiskRoom(work_dir, DISK_MARGIN)  # what functions' requests write on disk
        self.bill = LedgerBill(ledger, tabs, payer, node, bid)
        self._served: dict[str, Served] = {}
        self.placed_here = PlacedHere(work_dir, self._checked, self._mount)  # functions other nodes placed here
        self._paying: dict[bytes, int] = {}  # authorization id -> the minute its payment's row names (`paying`)
        self._made = False  # work_dir exists
        self.in_flight = 0  # requests of every function, from their admission until their run has ended
        self.on_loop = LoopRuns(compute, web_runners)  # small requests tried in a runner, or on the loop's thread

    def start(self) -> None:
        for stale in self.work_dir.glob("std*-*"):  # a request's stdin or answer left by a crash
            stale.unlink(missing_ok=True)
        for staged in self.work_dir.glob("in-*"):  # files being staged when a crash came
            shutil.rmtree(staged, ignore_errors=True)
        records = self.store.functions()
        for record in records:
            if _NODE_ID.fullmatch(record["name"]):  # kept from before `serve` refused such names
                log.warning("function %s is not served: a function's name may not be a node's id (/fn/NODE_ID/NAME/ "
                            "is where that node's placed functions answer); serve it again under another name "
                            "(xsc compute serve NAME %s ...) and remove it: xsc compute unserve %s", record["name"],
                            record["module"], record["name"])
        self._served = {r["name"]: self._served_from(r) for r in records if not _NODE_ID.fullmatch(r["name"])}

    def close(self) -> None:
        self._served = {}
        self.placed_here.close()
        self.on_loop.close()

    # --- the owner's functions ---------------------------------------------------------------
    async def serve(self, body: Any) -> dict[str, Any]:
        """Serve a function (or replace the one of that name): its spec checked, its files staged (on the
        market: placed on a provider, which stages them)."""
        record = self._checked(body)
        if _NODE_ID.fullmatch(record["name"]):
            # /fn/NODE_ID/ is where that node's placed functions answer: a function of this name would take them
            raise InvalidArgument(f"a function's name may not be a node's id ({record['name']!r}): /fn/NODE_ID/NAME/ "
                                  "is where the functions that node places here answer",
                                  hint="name it otherwise, e.g. with a '-' in it")
        if not record["on_market"]:
            await self._mount(record, self.work_dir / record["name"] / "in",
                              "free space on this node's disk, or mount smaller files")
        why = await self.placements.check(record) if record["on_market"] else None  # a cap that never places it: 400
        self.store.save_function(record)
        self._served[record["name"]] = self._served_from(record)  # what it spent this hour still counts
        if record["on_market"]:
            self.placements.wake()
            return {**record, **({"not_placed": why} if why else {})}
        return {**record, "url": self._url(record["name"])}

    def _url(self, name: str) -> str | None:
        """Where callers reach a function this node serves itself (None: this node has no web listener)."""
        base = self.web_url()
        return None if base is None else f"{base}/fn/{name}/"

    async def _mount(self, record: dict[str, Any], mounted: Path, hint: str,
                     mounting: Callable[[], Awaitable[None]] | None = None,
                     staged: Callable[[int], None] | None = None) -> None:
        """The files `record` mounts staged, then moved to `mounted`, only if the disk has room for them (`hint`
        says what to do if not) beside the files, bodies and answers being written; `mounting` is called once they
        fit, before they are read, `staged` with the bytes of each part written."""
        items = [parse_input(text) for text in record["inputs"]]
        size = sum(Capability.parse(item.cap).size for item in items)
        staging = Path(tempfile.mkdtemp(prefix="in-", dir=self._dir()))
        try:
            self.room.check(size, "the files the function mounts", hint)
            if mounting is not None:
                await mounting()
            self.room.writing += size
            try:
                for item in items:
                    await self._stage(item, staging / item.name, staged)
            finally:
                self.room.writing -= size
            await _to_its_end(_swap, staging, mounted)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _served_from(self, record: dict[str, Any]) -> Served:
        """Served with what it spent this hour: as counted here if it is served already (its runs whose records
        are still to be written among them), else as kept with its runs' records."""
        served, since = self._served.get(record["name"]), _minute() - HOUR_MINUTES + 1
        if served is not None:
            return Served(record, self.bill, spent=served.spent, paid=served.paid)
        return Served(record, self.bill, spent=self.store.function_spend(record["name"], since),
                      paid=self.store.function_paid(record["name"], since))

    async def unserve(self, name: str) -> dict[str, Any]:
        served = self._served.pop(name, None)
        if served is None and _NODE_ID.fullmatch(name):  # kept, not served (`start`): its record may go
            served = next((Served(r, self.bill) for r in self.store.functions() if r["name"] == name), None)
        if served is None:
            raise NotFound(f"no function named {quoted_id(name)}", hint="list them: xsc compute functions")
        self.store.remove_function(name)
        await in_pool(None, shutil.rmtree, self.work_dir / name, True)
        if served.record["on_market"]:
            self.placements.wake()  # withdrawn from its provider
        return served.record

    def functions(self) -> list[dict[str, Any]]:
        now = _minute()
        return [{**s.record, "requests": s.requests, "errors": s.errors, "in_flight": s.in_flight,
                 "p50_ms": median_ms(s.latencies), "spend": s.spend, "spent_this_hour": s.spent_this_hour(now),
                 **(self.placements.where(s.record["name"]) if s.record["on_market"] else
                    {"url": self._url(s.record["name"])})}
                for s in self._served.values()]

    def paying(self, name: str, authorization_id: bytes, amount: int) -> dict[bytes, bytes]:
        """The row that keeps a receipt for a function's requests on the market in its hour, written in the
        payment's own batch (a kill -9 between the two would leave it out, and the cap would let the function spend
        it again); none for a function no longer served.  `paid_for` counts it once the payment is written."""
        if name not in self._served:
            return {}
        minute = self._paying[authorization_id] = _minute()
        return self.store.function_paid_row(name, minute, authorization_id, amount)

    async def paid_for(self, name: str, authorization_id: bytes, amount: int) -> None:
        """What the provider of a function on the market was paid for its requests, its row written with the
        payment (`paying`): counted in its hour, in the minute the row names."""
        minute, served = self._paying.pop(authorization_id, None), self._served.get(name)
        if minute is None or served is None:
            return
        # Counted before anything waits: from the payment's write on, the tab is no longer pending, and a next
        # tab's cap (placements._room) must find it in the hour instead.
        new = minute not in served.paid
        served.paid[minute] = served.paid.get(minute, 0) + amount
        served.spend += amount
        if new and (gone := [m for m in served.paid if m <= minute - HOUR_MINUTES]):
            for old in gone:
                del served.paid[old]
            # their rows too (not the payment's business: one a kill -9 leaves is deleted by the next read)
            await in_pool(None, self.store.function_paid, name, minute - HOUR_MINUTES + 1)

    def left_this_hour(self, name: str) -> int | None:
        """What a function may still spend this hour (None: no cap; 0: none, or no such function)."""
        served = self._served.get(name)
        if served is None:
            return 0
        cap = served.record["spend_cap"]
        return None if cap is None else max(0, cap - served.spent_this_hour(_minute()))

    def _checked(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - set(FIELDS):
            raise InvalidArgument(f"a function's fields are {', '.join(FIELDS)}", hint="xsc compute serve --help")
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgument(f"a function's name is 1 to 63 lower-case letters, digits and '-', not "
                                  f"{str(name)[:80]!r}", hint="name it so, e.g.: xsc compute serve my-site MODULE")
        if not isinstance(body.get("module"), str):  # (parse_job would ask a job spec for it)
            raise InvalidArgument("a web function needs a module id (field 'module')",
                                  hint="deploy it first: xsc compute deploy FILE.wasm --wasi")
        inputs = body.get("inputs", [])
        spec = parse_job({"module": body.get("module"), "entrypoint": body.get("entrypoint", "_start"),
                          "env": body.get("env", {}), "inputs": inputs, "limits": body.get("limits") or {},
                          "outputs": False})
        if any(item.s3 is not None for item in spec.inputs):
            raise InvalidArgument("a function mounts stored files by their capabilities (CAP:/in/NAME)")
        self.compute.program(spec.module, spec.entrypoint)  # deployed, and its entrypoint runs as a program
        self.compute.limits(InvokeCall(spec.module, spec.entrypoint, [], spec.fuel, spec.memory, spec.timeout, True))
        max_body = bounded_size(body.get("max_body", MAX_BODY), "max_body", MAX_BODY_CEILING,
                                "a function may take")
        concurrency = _whole(body.get("concurrency", CONCURRENCY), "concurrency", 1, 256)
        spend_cap = body.get("spend_cap")
        if spend_cap is not None:
            spend_cap = _whole(spend_cap, "spend_cap", 0, 10**15)
        on_market = body.get("on_market", False)
        if type(on_market) is not bool:
            raise InvalidArgument(f"on_market is true or false, not {on_market!r}")
        return {"name": name, "module": spec.module, "entrypoint": spec.entrypoint, "inputs": list(inputs),
                "env": dict(spec.env), "limits": spec.asked, "max_body": max_body, "concurrency": concurrency,
                "spend_cap": spend_cap, "on_market": on_market, "created": provenance.timestamp(time.time_ns())}

    async def _stage(self, item: Input, path: Path, staged: Callable[[int], None] | None = None) -> None:
        """A stored file read to `path`, `staged` told the bytes of each chunk written."""
        chunks = await open_stored(self.storage, Capability.parse(item.cap), f"input {item.path}")
        async with contextlib.aclosing(chunks):
            with open(path, "wb") as out:
                async for chunk in chunks:
                    await in_pool(None, out.write, chunk)
                    if staged is not None:
                        staged(len(chunk))

    def _dir(self) -> Path:
        if not self._made:  # once: a request's run makes no system call it does not need
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._made = True
        return self.work_dir

    # --- a request ---------------------------------------------------------------------------
    def admit(self, name: str, request: Request) -> tuple[Served, Request, str | None]:
        """The function a request is for (`name`: this node's own, or an owner's id then the name of a function
        it placed here, at the start of the request's path), and refusals that need nothing of the body: no such
        function, a body over its cap, too many at once, its hour's spend reached.  Last, where a GET or HEAD of the
        function's own path without its '/' is redirected (`slash_location`), or None: decided before any refusal
        but the first, as a redirect runs nothing and costs nothing."""
        # /fn/NODE_ID/ is only ever that node's placed functions: never a function of this node's own
        served = None if _NODE_ID.fullmatch(name) else self._served.get(name)
        if served is None:
            placed, _, rest = request.path_info[1:].partition("/")
            served = self.placed_here.get(name, placed)
            if served is None:
                if placed and _NODE_ID.fullmatch(name):
                    # a caller of a placed function (/fn/OWNER_ID/NAME/) gone from here is told of that function
                    raise NotFound(f"no function named {quoted_id(placed)} placed here by node {name}")
                raise NotFound(f"no function named {quoted_id(name)} here")
            # no encoded '/' (path_info): the raw path has the same segments
            raw_placed, _, raw_rest = request.raw_path_info[1:].partition("/")
            request = replace(request, path_info="/" + rest, raw_path_info="/" + raw_rest,
                              script_name=f"{request.script_name}/{raw_placed}")
        record = served.record
        if request.raw_path_info == "/" and not request.target.endswith("/") and not record["on_market"] and (
                location := slash_location(request.method, request.target, request.script_name, request.query)):
            return served, request, location
        content_length = request.content_length
        if content_length is not None and content_length > record["max_body"]:
            raise PayloadTooLarge(f"the body is {content_length:,} bytes; this function takes at most "
                                  f"{record['max_body']:,}", **_body_limit(record["max_body"]))
        if served.in_flight >= record["concurrency"]:
            raise ComputeBusy(f"the function runs {served.in_flight} {plural_for(served.in_flight, 'request')} "
                              "already, its most at once", hint="retry in a moment")
        cap = record["spend_cap"]
        if cap is not None:
            spent = served.spent_this_hour(_minute())
            if spent >= cap:
                raise _cap_spent(record)
            # What the runs in flight may still cost counts against the cap: else as many runs as its concurrency,
            # admitted just under it, each spent up to its budget past it.  One run at a time always may start.
            if served.in_flight and not record["on_market"] and spent + served.reserved + self._budget(served) > cap:
                raise ComputeBusy(f"this function's hourly spend cap ({cap:,} micro-credits) leaves room for no more "
                                  f"than the {served.in_flight} requests it runs", hint="retry in a moment")
        return served, request, None

    def _budget(self, served: Served) -> int:
        """The most one of a function's runs may cost."""
        _, call, _ = served.plan or self._plan(served)
        return self.compute.budget(call, served.bill.rate)

    async def call(self, name: str, request: Request) -> Answer:
        served, request, location = self.admit(name, request)
        if location is not None:
            return Answer(301, [("Location", location)], Spill.empty(asyncio.get_running_loop()), 0, -1)
        if served.record["on_market"]:
            return self._elsewhere(served, request)
        served.in_flight += 1
        self.in_flight += 1
        reserved = 0 if served.record["spend_cap"] is None else self._budget(served)
        served.reserved += reserved
        started, running = time.monotonic(), _Running()
        try:
            answer = await self._call(served, request, running)
        except BaseException as exc:
            # a 412 or 416 answers what its caller asked of a run that did not fail: not the function's error
            self._count(served, started, running.finish, not isinstance(exc, (PreconditionFailed, RangeNotSatisfiable)),
                        reserved)
            raise
        self._count(served, started, running.finish, answer.status >= 500, reserved)
        return answer

    def _count(self, served: Served, started: float, finish: Finish | None, failed: bool, reserved: int) -> None:
        """A request counted once its run has ended (a streamed answer's run ends after it is answered), and what
        it reserved of its function's spend cap given back (its charge is in the hour by then)."""
        def ended(end: asyncio.Future | None = None) -> None:
            served.in_flight -= 1
            self.in_flight -= 1
            served.reserved -= reserved
            served.requests += 1
            served.latencies.append((time.monotonic() - started) * 1000)
            if failed or (end is not None and (end.cancelled() or end.exception() is not None or end.result())):
                served.errors += 1

        if finish is None:
            ended()
        else:
            finish.ended.add_done_callback(ended)

    async def _call(self, served: Served, request: Request, running: _Running) -> Answer:
        record = served.record
        spec, call, limits = served.plan or self._plan(served)
        prepared, signature = self.compute.program(spec.module, spec.entrypoint)
        bill = served.bill  # a placed function's next tab bills the requests that start after it
        budget = self.compute.budget(call, bill.rate)
        await bill.hold(budget)
        loop = asyncio.get_running_loop()
        room = self.room  # the node's own functions' callers are strangers too: the same rule as placed ones'
        stdout, stderr, stdin = Spill(self._dir(), loop, MAX_RESPONSE, room), Spill(self._dir(), loop, OUTPUT_CAP), None
        streams = Streams(refuse_over_cap=True, env=dict(sorted({**served.env, **environment(request)}.items())),
                          inputs_dir=self._mounted(served) if record["inputs"] else None)
        try:
            try:
                argv, started, ran, read = [spec.module], time.time_ns(), None, request.read
                if self.on_loop.may_try(prepared, spec.entrypoint, bool(record["inputs"]), request.content_length):
                    ran, read = await self._on_loop(served, request, prepared, spec.entrypoint, signature, argv,
                                                    limits, streams, (stdout, stderr))
                if ran is None:
                    if request.content_length:  # refused before a byte of it is read
                        room.check(request.content_length, "the request's body")
                    stdin, size = await _body_to(read, self.work_dir, record["max_body"], room)
                    streams.env["CONTENT_LENGTH"] = str(size)  # a chunked body's too, once it is read
                    admit(self.compute)
                    streams.stdin, streams.prepaid_fuel = None if stdin is None else str(stdin), io_fuel(size)
                    started = time.time_ns()
                    pipes = Pipes(stdout, stderr)
                    ran = sandboxed(self.compute, prepared, spec.entrypoint, signature, argv, limits, streams,
                                    around=pipes)
                    pipes.started(ran)
            except BaseException:
                bill.release(budget)
                raise
            finish = running.finish = Finish(self, served, request, spec, prepared, signature, limits, budget,
                                             (stdout, stderr), ran, started, argv, bill)
            ranged = _header(request.headers, "range")
            # a range is cut from the whole answer, and a HEAD is told its whole length: they wait for the run's end
            if ranged is None and request.method != "HEAD":
                if (answer := await _while_running(request, stdout, ran, stdin, finish)) is not None:
                    return answer
            await finish()
            head = await in_pool(None, stdout.read, 0, MAX_HEAD) if stdout.on_disk else stdout.read(0, MAX_HEAD)
            status, headers, offset, declared = parse_cgi(head)
            check_length(declared, stdout.size - offset)
            answer = _http(Answer(status, headers, stdout, offset, stdout.size - 1, stdin, finish), request)
            return _ranged(answer, ranged, _header(request.headers, "if-range"))
        except BaseException:
            stderr.close()
            await Answer(0, [], stdout, 0, -1, stdin, running.finish).release()
            raise

    async def _on_loop(self, served: Served, request: Request, prepared, entrypoint: str, signature,
                       argv: list[str], limits, streams: Streams, spills: tuple[Spill, Spill]
                       ) -> tuple[asyncio.Future | None, ReadFn]:
        """The request tried in a runner or on the loop (web_on_loop.py): the future of its run's outcome, done,
        its output in `spills`; or None and its body, for a worker's run."""
        body, whole = await _prefix(request.read, ON_LOOP_BODY)
        if len(body) > served.record["max_body"]:
            raise PayloadTooLarge(f"the body is over this function's {served.record['max_body']:,} bytes",
                                  **_body_limit(served.record["max_body"]))
        if whole:
            streams.prepaid_fuel = io_fuel(len(body))
            streams.env["CONTENT_LENGTH"] = str(len(body))  # a chunked body's too
            alone = self.in_flight == 1
            if alone:  # the requests read in the same turn of the loop start after this one: counted once they have
                await asyncio.sleep(0)
                alone = self.in_flight == 1
            tried = await self.on_loop.attempt(prepared, entrypoint, signature, argv, limits, streams, body,
                                               alone=alone)
            if tried is not None:
                outcome, out, err = tried
                for spill, written in zip(spills, (out, err)):
                    spill.take([written] if written else [])
                ran = asyncio.get_running_loop().create_future()
                ran.set_result(outcome)
                return ran, request.read
        return None, _replay(body, None if whole else request.read)

    def _plan(self, served: Served) -> tuple[JobSpec, InvokeCall, Any]:
        """What each request of a function runs (its environment aside: the request's), made once."""
        record = served.record
        asked = record["limits"]
        spec = JobSpec(record["module"], record["entrypoint"], (), tuple(sorted(record["env"].items())), "-",
                       (), False, fuel=asked.get("fuel"), memory=asked.get("memory"), timeout=asked.get("timeout"),
                       bytes_in=record["max_body"], stdout_to_store=True, bytes_out=MAX_RESPONSE)
        call = InvokeCall(spec.module, spec.entrypoint, [], spec.fuel, spec.memory, spec.timeout, True)
        served.plan = (spec, call, self.compute.limits(call))
        return served.plan

    def _mounted(self, served: Served) -> str:
        record = served.record
        where = self.work_dir / record["name"] if served.owner is None else self.placed_here.directory(record)
        return str(where / "in")

    def _elsewhere(self, served: Served, request: Request) -> Answer:
        """A request here for a function served on the market: sent to where its provider serves it (307: the
        method and body go with it), or 503 while it is not placed (402 while its spend cap keeps it unplaced)."""
        url = self.placements.where(served.record["name"]).get("url")
        if url is None and self.placements.capped(served.record["name"]):
            raise _cap_spent(served.record)
        if url is None:
            raise FunctionUnavailable("this function is being placed on a provider", hint="retry in a moment")
        # the path as it was sent (decoded and encoded again, bytes that are not UTF-8 would be lost)
        raw = request.raw_path_info.lstrip("/").encode("utf-8", "surrogateescape")
        location = url + quote(raw, safe="/%!$&'()*+,;=:@~") + (f"?{request.query}" if request.query else "")
        return Answer(307, [("Location", location)], Spill.empty(asyncio.get_running_loop()), 0, -1)

    def _record(self, served: Served, request: Request, spec: JobSpec, prepared, signature, limits, ran,
                budget: int, bill: Bill) -> None:
        """The request's run recorded with what it owes on the owner's tab and what its function spent this minute,
        in the journal's next group (job_sandbox.record_and_owe); counted in its hour at once, and no longer if
        its record is not written."""
        name = served.record["name"]
        run, rec = self.compute.job_run(spec.module, spec.entrypoint, signature, ran.argv, limits, ran.outcome,
                                        ran.started, bill.requester, bill.rate, bill.deal(name),
                                        {"function": name, "request": f"{request.method} {request.path_info}"[:1024]})
        minute = _minute()
        gone = served.add(minute, run.charge)  # on the loop: no run's charge is lost
        # what the owner's own functions spent this minute is kept (a placed one's owner keeps its own count)
        spent = () if served.owner is not None else self.store.function_spend_entries(name, minute,
                                                                                       served.spent[minute], gone)

        def uncount() -> None:
            served.spent[minute] = served.spent.get(minute, 0) - run.charge
            served.spend -= run.charge

        try:
            recorded = bill.record(self.compute, run, rec, prepared.module_hash, budget, spent)
        except BaseException:
            uncount()
            raise
        recorded.add_done_callback(lambda _: uncount() if recorded.cancelled() or recorded.exception() else None)


async def _while_running(request: Request, stdout: Spill, ran: asyncio.Future, stdin: Path | None,
                         finish: Finish) -> Answer | None:
    """The answer streamed while its run goes on, once its head is written (None: answered once the run has ended).
    Its head is sent then, and commits it: a run that fails later cuts its body short.  A 304 or 412 has no body to
    send before the run ends, so it waits for that end, as a whole answer does: a run that fails is answered its
    failure, as its record says, not a 304 or 412."""
    head = await _head_while_running(stdout, ran)
    if head is None:
        return None
    try:
        status, headers, offset, declared = parse_cgi(head)
        answer = _http(Answer(status, headers, stdout, offset, None, stdin, finish, declared), request)
    except FunctionFailed:
        return None  # answered once the run has ended
    except PreconditionFailed:
        await finish()
        raise
    if answer.last is not None:  # no body: a 304
        await finish()
    return answer


def _http(answer: Answer, request: Request) -> Answer:
    """The answer as HTTP has it: a 200 says its ranges may be asked for; one whose validator a GET or HEAD's
    condition names is 304, with no body, and one its `If-Match` or `If-Unmodified-Since` does not hold of is 412
    (its run still recorded and charged)."""
    headers = conditional(request.method, answer.status, answer.headers, request.headers)
    if headers is not None:
        return replace(answer, status=304, headers=headers, last=answer.first - 1, declared=None)
    answer.headers = with_ranges(answer.status, answer.headers)
    return answer


def _ranged(answer: Answer, header: str | None, if_range: str | None) -> Answer:
    """The answer, or the range of it a `Range:` asks (206).  With an `If-Range` that is not the answer's strong
    ETag or its Last-Modified, the whole answer (RFC 9110 13.1.5): a caller resuming a download of an answer since
    changed would otherwise splice bytes of two answers."""
    if header is None or answer.status != 200:
        return answer
    if if_range is not None and not _validates(answer.headers, if_range.strip()):
        return answer
    byte_range = parse_range(header, answer.length)
    if byte_range is None:
        return answer
    first, last = byte_range
    kept = [(k, v) for k, v in answer.headers if k.lower() != "content-range"]  # one, the node's: of what it sends
    return replace(answer, status=206, headers=[*kept, ("Content-Range", content_range(first, last, answer.length))],
                   first=answer.first + first, last=answer.first + last)


def _validates(headers: list[tuple[str, str]], if_range: str) -> bool:
    if if_range.startswith(('"', "W/")):
        return not if_range.startswith("W/") and _header(headers, "etag") == if_range
    return _header(headers, "last-modified") == if_range


def _refused(outcome, stdout: Spill, fuel: int) -> str | None:
    """Charge the bytes of the answer as a job's stored stdout is charged; why the answer is refused, if it is.  A run
    refused so that had not trapped is given the refusal as its trap (kind `storage-full`, `output-limit` or
    `out-of-fuel`, as the caller is answered): its signed record says its answer was refused, not "ok"."""
    sent = io_fuel(stdout.size)
    kind = refusal = None
    if outcome.trap_kind is None and outcome.fuel_consumed + sent > fuel:
        kind = "out-of-fuel"
        refusal = f"sending its {stdout.size:,}-byte answer costs {sent:,} fuel, more than its fuel limit has left"
    outcome.fuel_consumed = min(fuel, outcome.fuel_consumed + sent)
    if outcome.over_cap is not None:
        kind, refusal = "output-limit", f"its {outcome.over_cap} went over its cap"
    if stdout.full is not None:  # the caller is answered 507 (Finish)
        kind, refusal = "storage-full", "this node had no room on disk for its answer"
    if refusal is not None and outcome.trap_kind is None:
        outcome.trap_kind, outcome.message = kind, refusal
    return refusal


def _remove(*paths: Path | None) -> None:
    """Each file emptied, then removed: a handle on it still open (wasmtime's on a run's stdin may be closed a moment
    after the run has ended, on a busy machine) would hold its room on disk until then, where the next caller needs
    it."""
    for path in paths:
        if path is not None:
            try:
                os.truncate(path, 0)
            except OSError:
                pass  # gone already, or not ours to empty: removed all the same
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # removed at the next start


async def _head_while_running(stdout: Spill, run: asyncio.Future) -> bytes | None:
    """The answer's CGI head (up to its blank line), to stream the answer while the run goes on: once the run has
    written STREAM_BYTES or gone on for STREAM_AFTER seconds, and its head is complete.  None if the run ends first
    (a quick answer is sent whole, in one write; its writes never wake the loop) or writes MAX_HEAD bytes without a
    blank line, or goes over its cap first (nothing sent yet: refused whole, 502, once the run ends)."""
    loop = asyncio.get_running_loop()
    deadline, wanted = loop.time() + STREAM_AFTER, STREAM_BYTES
    if not run.done():  # nothing is read before FOLLOW_AFTER (see Pipes): until then, only the run's end counts
        await _done_within(run, FOLLOW_AFTER)
    while not run.done():
        if stdout.drained.done():  # nothing more is read (past its cap, or every byte is in): the run's end decides
            await _settled(run)
            return None
        if stdout.size >= wanted or loop.time() >= deadline:
            written = stdout.read(0, MAX_HEAD)
            if b"\n\n" in written or b"\r\n\r\n" in written:
                return written
            if len(written) >= MAX_HEAD:
                return None
            wanted = stdout.size + 1  # the head is not complete: its next write
        more = stdout.more(wanted)
        left = deadline - loop.time()
        await asyncio.wait([more, run], timeout=left if left > 0 else None, return_when=asyncio.FIRST_COMPLETED)
        more.cancel()
    return None


async def _done_within(future: asyncio.Future, seconds: float) -> None:
    """Once `future` is done or `seconds` have passed (one waiter and one timer: a quick run's end is awaited
    without asyncio.wait's machinery)."""
    waiter = asyncio.get_running_loop().create_future()
    timer = waiter.get_loop().call_later(seconds, wake, waiter)
    future.add_done_callback(lambda _: wake(waiter))
    try:
        await waiter
    finally:
        timer.cancel()


async def _settled(*futures: asyncio.Future) -> None:
    """Once each of `futures` is done (a waiter cancelled cancels none of them)."""
    pending = [future for future in futures if not future.done()]
    if pending:
        await asyncio.wait(pending)


async def _prefix(read: ReadFn, limit: int) -> tuple[bytes, bool]:
    """At most `limit` + 1 bytes of a body, and whether that is all of it."""
    parts, size = [], 0
    while size <= limit:
        chunk = await read(limit + 1 - size)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


def _replay(first: bytes, rest: ReadFn | None) -> ReadFn:
    """A body's reader again: `first`, then what `rest` reads (if any)."""
    held = first

    async def read(n: int) -> bytes:
        nonlocal held
        if held:
            chunk, held = held[:n], held[n:]
            return chunk
        return await rest(n) if rest is not None else b""

    return read


async def _body_to(read: ReadFn, directory: Path, cap: int, room: DiskRoom) -> tuple[Path | None, int]:
    """The request's body in a file in `directory` (its path and size), or None with no body; each chunk written
    only if the disk has `room` for it."""
    chunk = await read(CHUNK)
    if not chunk:
        return None, 0
    handle, name = tempfile.mkstemp(prefix="stdin-", dir=directory)
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk:
                size += len(chunk)
                if size > cap:
                    raise PayloadTooLarge(f"the body is over this function's {cap:,} bytes", **_body_limit(cap))
                room.check(len(chunk), "the request's body")
                room.writing += len(chunk)
                try:
                    await in_pool(None, out.write, chunk)
                finally:
                    room.writing -= len(chunk)
                chunk = await read(CHUNK)
    except BaseException:
        await in_pool(None, _remove, Path(name))
        raise
    return Path(name), size


def _same(served: dict[str, Any], placed: dict[str, Any]) -> bool:
    """Whether a placement is the function served already (its tab aside)."""
    return {k: v for k, v in served.items() if k != "created"} == {k: v for k, v in placed.items() if k != "created"}


def _mount_tags(inputs: list[str]) -> dict[str, str]:
    """MOUNT_TAG + NAME for each stored file a function mounts at /in/NAME: a tag of that file (SHA-256 over a tag,
    its capability's key and its manifest hash, in hex), the same wherever and however often it is staged, so a
    function can give its answer a strong ETag without reading the file.  Not the manifest hash itself: a holder of
    the file's shares knows that, and would learn from an ETag which public page its shares are."""
    tags = {}
    for text in inputs:
        item = parse_input(text)
        cap = Capability.parse(item.cap)
        tags[MOUNT_TAG + item.name] = hashlib.sha256(b"xsc:mount-tag:v1:" + cap.key + cap.manifest_hash).hexdigest()
    return tags


def _digest(inputs: list[str]) -> str:
    """A name for a set of mounted inputs (the directory its files are staged in)."""
    return hashlib.sha256(codec.dumps(inputs)).hexdigest()[:32]


def _remove_siblings(directory: Path) -> None:
    for other in directory.parent.iterdir():
        if other != directory:
            shutil.rmtree(other, ignore_errors=True)


async def _to_its_end(fn: Callable[..., Any], *args: Any) -> None:
    """fn(*args) on a worker, waited for to its end even if the caller is cancelled meanwhile (then cancelled once
    it has ended): a rename cut short on the loop goes on on its thread, and would leave what the caller removes."""
    work = asyncio.get_running_loop().run_in_executor(None, fn, *args)  # (in_pool's, as a future to wait for again)
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([work])
        raise


def _swap(staged: Path, mounted: Path) -> None:
    """The newly staged files take the place of the old ones (on a worker)."""
    if mounted.exists():
        shutil.rmtree(mounted)
    mounted.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(mounted)
    mounted.chmod(0o555)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _cap_spent(record: dict[str, Any]) -> SpendCapReached:
    """The 402 of a function whose spend cap is spent: a cap of 0 never is anything else, so its callers are not told
    to come back within the hour, and its owner is told how to raise it."""
    cap = record["spend_cap"]
    if cap == 0:
        market = " --on-market" if record["on_market"] else ""
        return SpendCapReached("this function's owner lets it spend nothing (its spend cap is 0 micro-credits an hour): "
                               "it serves no request", hint=f"its owner raises the cap by serving it again: xsc compute "
                               f"serve {record['name']} MODULE{market} --spend-cap MICROCREDITS")
    return SpendCapReached(f"this function's owner spends at most {cap:,} micro-credits an hour on it, and that is spent",
                           hint="retry within the hour")


def _minute() -> int:
    return int(time.time() // 60)


def median_ms(values) -> float | None:
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 3) if ordered else None


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(f"{what} is a whole number from {low} to {high:,}, not {value!r}")
    return value


__all__ = ["Answer", "WebFunctions"]
