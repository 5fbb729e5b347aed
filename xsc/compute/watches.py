"""Watches: a job kept run over every object under an S3 prefix, its outputs written under another prefix.

    xsc compute watch NAME SPEC --on s3://BUCKET/PREFIX --to s3://BUCKET2/PREFIX2 [--as /in/NAME]

Each object under the watched prefix is a datum.  Its datum hash is the SHA-256 of the watch's module, its
canonical spec and the object's content (size and ETag): a datum whose hash is done is skipped; a changed object
is run again; a new module or spec (the same NAME watched again) runs every datum again.  The job of a datum is
an ordinary deterministic job (compute/jobs.py), run where the market places it and paid like any job, with the
object mounted read-only at `--as` (default /in/data); PARALLEL datums of a watch run at once.  Each file it stores becomes an object
of the target: `PREFIX2 + REL` for its stored stdout, `PREFIX2 + REL + "/" + NAME` for /out/NAME (REL: the input
key less the watched prefix).  An object deleted from the watched prefix deletes the objects its datum wrote.
Watches chain: one may watch what another writes, never in a ring (each output a new datum of the next, for ever):
`add` refuses the watch that would close one, and a ring a store holds from before is paused as the node starts.

What is done is on disk (compute/store.py): the watch and each datum done (its hash, the objects it wrote, its
job), written once the datum's outputs are recorded in the bucket index; the objects it is about to write are
named in its record before the first is, with no hash (not done).  A kill -9 between a datum's job and its
record runs the job again at the next start; its job is deterministic, so that run is answered from the job's
record (replayed: not run, not paid again), unless the files it wrote were removed since: then it runs.  The
objects a kill -9 left half written stay the datum's: written over by its next run, whatever its input holds
then, or deleted with its input.  The
watches pass over their prefixes at start (once the jobs' recovery has ended), whenever the bucket index changes
(`wake`), and every SCAN seconds in any case while a watch runs; with none (or all paused), the loop sleeps until
one is added or resumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any

from .. import codec
from ..buckets.core.names import check_key
from ..errors import InvalidArgument, NotFound, XscError, quoted_id
from ..storage.core.capability import Capability
from ..tasks import in_pool, woken
from .job_answers import node_failure
from .jobspec import mount_name, parse_job, parse_target
from .store import ComputeStore

log = logging.getLogger(__name__)

SCAN = 5.0  # seconds between passes when nothing wakes them
MAX_WATCHES = 64
PARALLEL = 4  # datums of one watch run at once (their jobs spread over the providers the market offers)
LAST_ERROR = 300  # characters of a watch's last error, its hint aside (kept whole: the command that fixes it)
LAST_HINT = 1000  # characters of that hint at most (this node's own words: a bound none of its hints comes near)
MAX_TOLD = 1024  # failures whose traceback was logged, remembered so that a datum failing at each pass logs it once
WRITE_HINT = "watch it again with a shorter --to prefix"  # for an object key over its 1,024 bytes
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # whole: fullmatch ($ would take a final newline)


class Watches:
    def __init__(self, *, jobs: Any, index: Any, store: ComputeStore) -> None:
        self.jobs = jobs  # compute/jobs.py: JobService (runs each datum's job)
        self.index = index  # buckets/index.py: S3Index (the objects watched and written)
        self.store = store  # the watches and their datums done
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0  # passes over every watch since start (tests wait for one)
        self.asleep = False  # no watch runs: the loop sleeps until one is added or resumed (tests, status)
        self._backlog: dict[str, int] = {}  # watch -> datums its pass found due and not yet done
        self._watched: frozenset[str] = frozenset()  # the buckets watches are on: a change elsewhere wakes nothing
        self._writing = asyncio.Lock()  # held while a datum's outputs become objects
        self._told: set[tuple[str, str, str]] = set()  # (watch, input, error) whose traceback the log has had

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._rewatch()

    def _rewatch(self) -> None:
        self._watched = frozenset(w["on"][0] for w in self.store.watches())

    def loops(self) -> dict[str, Any]:
        return {"watches": self._run}

    def close(self) -> None:
        self._loop = None  # the index's changes wake nothing any more

    def wake(self, bucket: str | None = None) -> None:
        """An object of `bucket` was written or deleted (from any thread): pass over the watches soon if one is on
        that bucket (a wake-up per write to a bucket nobody watches costs the loop a turn for nothing).  Without
        a bucket: pass soon whatever changed."""
        if self._loop is not None and (bucket is None or bucket in self._watched):
            self._loop.call_soon_threadsafe(self._woken.set)

    # --- the user's watches ------------------------------------------------------------------
    def add(self, body: Any) -> dict[str, Any]:
        """Watch a prefix (or replace the watch of that name: its datums run again if its module or spec changed)."""
        if not isinstance(body, dict) or set(body) - {"name", "spec", "on", "to", "as"}:
            raise InvalidArgument('send {"name", "spec", "on": "s3://B/P", "to": "s3://B2/P2", "as": "/in/data"}')
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgument("a watch's name is 1 to 64 letters, digits, '.', '_' or '-'")
        mount, spec = body.get("as", "/in/data"), body.get("spec") or {}
        if not isinstance(mount, str):
            raise InvalidArgument('a watch\'s "as" is the path its objects are mounted at, e.g. "/in/data"')
        try:
            mount_name(mount)
        except InvalidArgument as err:  # said of --as, not of the job input it would have made
            raise InvalidArgument(f"--as: {err.message}", hint="a watch mounts each object as a file, e.g. "
                                  "--as /in/data; it gives no stdin") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("inputs", []), list):
            raise InvalidArgument('a watch\'s "spec" is a job\'s fields: {"module", "entry", "inputs": [...], ...}',
                                  hint="see `xsc compute run --help`")
        spec = dict(spec)
        spec["deterministic"] = True  # a datum's job run again (after a crash) is answered from its record
        parse_job(_datum_spec(spec, mount, "s3://bucket/key"))  # each datum's job, checked now
        on, to = parse_target(body.get("on"), "--on"), parse_target(body.get("to"), "--to")
        if _overlap(on, to):
            raise InvalidArgument("a watch cannot write where it watches", hint="give --to another prefix")
        ring = _ring(name, on, to, self.store.watches())
        if ring:  # each turn a new datum of the next, paid, its key longer: for ever
            raise InvalidArgument(f"watch {name!r} would close a ring of watches, each writing where the next "
                                  f"watches: {' -> '.join([*ring, ring[0]])}",
                                  hint=f"give --to a prefix no watch of the ring watches, or remove one: "
                                       f"xsc compute unwatch {ring[-1]}")
        for bucket in {on[0], to[0]}:
            self.index.bucket(bucket)  # NoSuchBucket: say so now
        existing = self.store.watch(name)
        if existing is None and len(self.store.watches()) >= MAX_WATCHES:
            raise InvalidArgument(f"this node keeps at most {MAX_WATCHES} watches", hint="remove one first")
        watch = {"name": name, "spec": spec, "on": list(on), "to": list(to), "as": mount,
                 "created": time.time(), "runs": 0, "skips": 0, "failures": 0, "spend": 0, "last_error": None,
                 "last_run": None, "paused": None}
        if existing is not None:  # its counters go on
            watch.update({k: existing[k] for k in ("created", "runs", "skips", "failures", "spend")},
                         last_run=existing.get("last_run"))
        self.store.save_watch(watch)
        self._resume_opened()  # (its ring, if it was in one, opened by its new --to)
        self._rewatch()
        self._backlog.pop(name, None)  # read again from its prefix until its next pass
        self.wake()  # (from the pool's thread: an asyncio.Event is the loop's to set)
        return watch

    def remove(self, name: str) -> dict[str, Any]:
        watch = self.store.watch(name)
        if watch is None:
            raise NotFound(f"no watch named {quoted_id(name)}", hint="list them: xsc compute watches")
        self.store.remove_watch(name)
        self._resume_opened()
        self._rewatch()
        self._backlog.pop(name, None)
        self.wake()  # (a watch its ring's opening resumed)
        return watch

    def list(self) -> list[dict[str, Any]]:
        """Every watch with its counters and its backlog: objects under its prefix whose datum is not done (as the
        last pass found it, less what was done since; read from the prefix for a watch no pass has looked at)."""
        return [{"paused": None, **w,
                 "backlog": self._backlog[w["name"]] if w["name"] in self._backlog else len(self._due(w))}
                for w in self.store.watches()]

    # --- rings saved before `add` refused them -------------------------------------------------
    def _pause_rings(self) -> None:
        """Each watch of a ring paused (kept, not run): a ring runs for ever, each output a new datum of the next,
        paid.  `add` refuses one; a store may hold one saved before it did."""
        watches = self.store.watches()
        for watch in watches:
            ring = _ring_of(watch, watches)
            if ring and not watch.get("paused"):
                watch["paused"] = (f"it is in a ring of watches, each writing where the next watches: "
                                   f"{' -> '.join([*ring, ring[0]])}; none of them runs until the ring is opened "
                                   f"(xsc compute unwatch {ring[-1]}, or watch {ring[0]} again with another --to)")
                self.store.save_watch(watch)
                log.warning("watch %s paused: %s", watch["name"], watch["paused"])

    def _resume_opened(self) -> None:
        """The paused watches no ring holds any more resumed (a watch of their ring removed, or given another --to)."""
        watches = self.store.watches()
        for watch in watches:
            if watch.get("paused") and not _ring_of(watch, watches):
                watch["paused"] = None
                self.store.save_watch(watch)
                log.info("watch %s resumed: the ring of watches it was in is opened", watch["name"])

    # --- passes ------------------------------------------------------------------------------
    async def _run(self) -> None:
        # The first pass comes at start, once the jobs a stop cut short are settled (a datum's among them is answered
        # from its record, not run beside its recovery), or SCAN seconds on at the latest: what a kill -9 cut short,
        # or what changed while the node was down, waits for no scan.
        await in_pool(None, self._pause_rings)
        await woken(self.jobs.recovered, SCAN)
        reaped = False
        while True:
            self._woken.clear()
            running = False
            for watch in self.store.watches():
                if watch.get("paused"):
                    continue
                running = True
                try:
                    await self._pass(watch)
                except Exception as err:  # (its prefix unreadable: a full disk) the next watch's pass goes on
                    self._unexpected(watch["name"], "", err)
            if not reaped and self.jobs.recovered.is_set():  # after a pass: it wrote those still due
                reaped = True
                await self._reap(self.jobs.cut_short)
            self.passes += 1
            if running or not reaped:
                await woken(self._woken, SCAN)
                continue
            # No watch runs (none, or all paused in a ring): a scan would find nothing to do until `add` or `remove`
            # changes that, and each wakes the loop.
            self.asleep = True
            try:
                await self._woken.wait()
            finally:
                self.asleep = False

    async def _pass(self, watch: dict[str, Any]) -> None:
        name = watch["name"]
        try:
            due = await in_pool(None, self._due, watch)
        except XscError as err:  # its bucket is gone: nothing to do until it is back
            log.info("watch %s: %s", name, err.message)
            return
        self._backlog[name] = len(due)
        for key, record, what in due:
            if what == "gone":
                await self._forget(watch, key, record)
                self._done_one(name)
        limit = asyncio.Semaphore(PARALLEL)

        async def one(key: str, datum: str) -> None:
            async with limit:
                try:
                    if self.store.watch(name) is not None:  # not removed meanwhile
                        await self._datum(watch, key, datum)
                except Exception as err:  # a full disk, a bug: this datum fails, the other datums and watches go on
                    self._unexpected(name, key, err)
                self._done_one(name)

        await asyncio.gather(*(one(key, datum) for key, datum, what in due if what == "run"))

    def _done_one(self, name: str) -> None:
        if name in self._backlog:  # (a watch removed meanwhile has none)
            self._backlog[name] -= 1

    def _due(self, watch: dict[str, Any]) -> list[tuple[str, Any, str]]:
        """(key, datum hash, "run") for each object whose datum is not done; (key, its record, "gone") for each
        datum whose object is no longer there."""
        (bucket, prefix), name = watch["on"], watch["name"]
        current = dict(self.index.objects(bucket, prefix))
        done = self.store.datums(name)
        due: list[tuple[str, Any, str]] = []
        for key, summary in current.items():
            datum = datum_hash(watch, summary)
            if done.get(key, {}).get("datum") != datum:
                due.append((key, datum, "run"))
        due += [(key, record, "gone") for key, record in done.items() if key not in current]
        return due

    async def _datum(self, watch: dict[str, Any], key: str, datum: str) -> None:
        """Run the datum's job, write its outputs as objects of the target, then record the datum done."""
        (bucket, prefix), (to_bucket, to_prefix) = watch["on"], watch["to"]
        spec = _datum_spec(watch["spec"], watch["as"], f"s3://{bucket}/{key}")
        rel = key[len(prefix):]
        try:
            job = await self.jobs.run(spec)
            if job.get("replayed") and not await self._all_stored(job):
                # Its files were removed since: once refused as objects, they were garbage, and a new run, paid, would
                # be refused again.
                if self._unwritable(watch, key, job, to_bucket, _targets(job, to_prefix + rel)):
                    return
                job = await self.jobs.run(spec, fresh=True)
        except XscError as err:
            self._count(watch["name"], failures=1, last_error=_failed(key, err),
                        spend=err.details.get("charged", 0) or 0,
                        last_run=_last_run(key, err.details.get("id"), "failed", []))
            log.warning("watch %s: %s failed: %s", watch["name"], key, err.message)
            return
        async with self._writing:  # datums run at once: which objects are taken is checked and changed by one
            if not await self._all_stored(job):
                # Another datum of the same job (its run replayed) was written first, refused as an object, and its
                # files removed as garbage: an object naming them would name nothing.  The next pass runs it again.
                self._count(watch["name"], failures=1, last_error=f"{key}: its job's outputs were removed as another "
                            "datum's refused output: it runs again at the next pass",
                            last_run=_last_run(key, job["id"], "failed", []))
                return
            await self._write(watch, key, datum, job, to_bucket, to_prefix + rel)

    async def _write(self, watch: dict[str, Any], key: str, datum: str, job: dict[str, Any], to_bucket: str,
                     base: str) -> None:
        """The datum's outputs as objects under `base` (unless one would replace an object it did not write), and
        the datum recorded done."""
        previous = self.store.datum(watch["name"], key)
        targets = _targets(job, base)
        taken = await in_pool(None, self._taken, to_bucket, targets, (previous or {}).get("objects", []), job["id"])
        if taken is not None:  # another datum's output ("a" writes a/x, "a/x" its stdout) or the user's object
            self._count(watch["name"], failures=1,
                        last_error=f"{key}: its output would replace s3://{to_bucket}/{taken}, which it did not write",
                        last_run=_last_run(key, job["id"], "failed", []))
            log.warning("watch %s: %s would replace s3://%s/%s: not written", watch["name"], key, to_bucket, taken)
            return
        # Named before they are written, the datum not done (no hash: due whatever its input holds): a kill -9 while
        # they are written leaves them this datum's, for its next run to write over (its input changed meanwhile,
        # even back to what its last run read) or to delete (its input gone), never another's nor nobody's.
        ours = (previous or {}).get("objects", [])
        self.store.save_datum(watch["name"], key, {**(previous or {}), "datum": None,
                                                    "objects": ours + [t for t in targets if t not in ours]})
        written: list[str] = []
        for output, target in zip(job["outputs"], targets):
            record = {"parts": [{"cap": output["capability"], "size": output["size"]}], "etag": output["md5"],
                      "content_type": "binary/octet-stream", "metadata": {"xsc-job": job["id"]},
                      "modified": time.time()}
            try:
                garbage = await in_pool(None, self.index.put, to_bucket, target, record)
            except XscError as err:  # a key over S3's bound, the target's bucket gone: this datum fails, not the loop
                self._not_written(watch, key, job, to_bucket, target, err, written)
                await self._collect(err.details.get("garbage") or [])  # (those no other object refers to)
                return
            await self._collect(garbage)
            written.append(target)
        stale = [k for k in (previous or {}).get("objects", []) if k not in written]
        if stale:
            await self._collect(await in_pool(None, self.index.delete_many, to_bucket, stale))
        self.store.save_datum(watch["name"], key, {"datum": datum, "objects": written, "job": job["id"]})
        replayed = job.get("replayed", False)
        self._count(watch["name"], runs=0 if replayed else 1, skips=1 if replayed else 0, spend=job["charged"],
                    last_run=_last_run(key, job["id"], "replayed" if replayed else "done", written))

    def _unwritable(self, watch: dict[str, Any], key: str, job: dict[str, Any], to_bucket: str,
                    targets: list[str]) -> bool:
        """Whether one of the datum's targets is a key no object can have (the datum failed, saying so)."""
        for target in targets:
            try:
                check_key(target)
            except InvalidArgument as err:
                self._not_written(watch, key, job, to_bucket, target, err, [])
                return True
        return False

    def _not_written(self, watch: dict[str, Any], key: str, job: dict[str, Any], to_bucket: str, target: str,
                     err: XscError, written: list[str]) -> None:
        shown = target if len(target) <= 80 else target[:60] + "…"
        said = f"{key}: its output s3://{to_bucket}/{shown} cannot be written: {err.message}"
        hint = WRITE_HINT if err.details.get("s3_code") == "KeyTooLongError" else err.hint
        self._count(watch["name"], failures=1, spend=job["charged"],
                    last_error=said[:LAST_ERROR] + (f" ({hint})" if hint else ""),
                    last_run=_last_run(key, job["id"], "failed", written))
        log.warning("watch %s: %s: %s", watch["name"], key, said)

    def _taken(self, bucket: str, targets: list[str], ours: list[str], job_id: str) -> str | None:
        """The first of `targets` an object not written by this datum holds (this datum's: listed in its record, or
        written by its job before a crash kept it from the record), if any."""
        for target in targets:
            if target in ours:
                continue
            try:
                found = self.index.get(bucket, target)
            except NotFound:
                continue
            if found.get("metadata", {}).get("xsc-job") != job_id:
                return target
        return None

    async def _forget(self, watch: dict[str, Any], key: str, record: dict[str, Any]) -> None:
        """The input is gone; so are the objects its datum wrote, and their files."""
        try:
            await self._collect(await in_pool(None, self.index.delete_many, watch["to"][0], record.get("objects", [])))
        except XscError as err:
            log.info("watch %s: could not delete the outputs of %s: %s", watch["name"], key, err.message)
        self.store.remove_datum(watch["name"], key)

    async def _reap(self, cut_short: list[str]) -> None:
        """The files of datums' jobs a stop cut short, finished at the start (from their providers' answers), that no
        object holds: their datum's input changed before the stop, so no pass writes them, and nothing else would
        remove them.  (A datum still due whose job's files went runs it afresh: `_datum`.)"""
        caps: list[str] = []
        for jid in cut_short:
            job = await in_pool(None, self.jobs.records.load, jid)
            if job is not None and job.get("state") == "done" and self._of_a_datum(job):
                caps += [o["capability"] for o in job.get("outputs") or []]
        try:
            if caps:
                await self._collect(await in_pool(None, self.index.reconcile, caps))
        except Exception:  # a full disk: the files stay, as they would have
            log.exception("the outputs of the watches' jobs a stop cut short could not be removed")

    def _of_a_datum(self, job: dict[str, Any]) -> bool:
        """Whether the job is one a watch ran for a datum: its spec the watch's with an object of its prefix mounted."""
        asked = job.get("again") or {}
        *given, last = asked.get("inputs") or [""]
        source, _, mount = last.rpartition(":")
        for watch in self.store.watches():
            (bucket, prefix), spec = watch["on"], watch["spec"]
            if asked.get("module") == spec["module"] and mount == watch["as"] and given == spec.get("inputs", []) \
                    and all((asked.get(k) or None) == (spec.get(k) or None) for k in ("argv", "env", "stdin")) \
                    and source.startswith(f"s3://{bucket}/{prefix}"):
                return True
        return False

    async def _all_stored(self, job: dict[str, Any]) -> bool:
        return all([await self.jobs.storage.stored(Capability.parse(o["capability"])) for o in job["outputs"]])

    async def _collect(self, garbage: list[str]) -> None:
        """Files no object refers to any more (a datum's outputs replaced or deleted): removed from the store."""
        for text in garbage:
            try:
                await self.jobs.storage.removals.remove(Capability.parse(text))
            except XscError as err:  # the S3 front's collector may have been first
                log.debug("removing %s: %s", text[:40], err.message)
        if garbage:
            await in_pool(None, self.index.forget_garbage, garbage)

    def _unexpected(self, name: str, key: str, err: Exception) -> None:
        """A failure no XscError said (an OSError, a bug) on the watch's datum `key` ("": its pass): recorded as the
        datum's failure, and logged with its traceback the first time it comes (each pass tries the datum again)."""
        said = f"{key + ': ' if key else ''}{node_failure(err).message}"[:LAST_ERROR]  # as a job's caller is told it
        told = (name, key, said)
        if told in self._told:
            log.warning("watch %s: %s (again)", name, said)
        else:
            if len(self._told) >= MAX_TOLD:
                self._told.clear()
            self._told.add(told)
            log.error("watch %s: %s", name, said, exc_info=err)
        self._count(name, failures=1, last_error=f"{said} (the node's log has its traceback)",
                    last_run=_last_run(key, None, "failed", []) if key else None)

    # --- records -----------------------------------------------------------------------------
    def _count(self, name: str, *, runs: int = 0, skips: int = 0, failures: int = 0, spend: int = 0,
               last_error: str | None = None, last_run: dict[str, Any] | None = None) -> None:
        watch = self.store.watch(name)
        if watch is None:
            return
        watch.update(runs=watch["runs"] + runs, skips=watch["skips"] + skips, failures=watch["failures"] + failures,
                     spend=watch["spend"] + spend)
        if last_error is not None:
            watch["last_error"] = last_error
        if last_run is not None:
            watch["last_run"] = last_run
        self.store.save_watch(watch)


def _overlap(one: tuple[str, str], other: tuple[str, str]) -> bool:
    """Whether an object can be under both prefixes (one holds the other)."""
    return one[0] == other[0] and (one[1].startswith(other[1]) or other[1].startswith(one[1]))


def _ring(name: str, on: tuple[str, str], to: tuple[str, str], watches: list[dict[str, Any]]) -> list[str]:
    """The watches from `name` (watching `on`, writing `to`) round to itself, each writing where the next watches,
    if the others (its old self left out) close such a ring with it; else []."""
    others = {w["name"]: (tuple(w["on"]), tuple(w["to"])) for w in watches if w["name"] != name}
    paths, seen = [[name]], {name}
    while paths:  # breadth first: the shortest ring, at most MAX_WATCHES long
        path = paths.pop(0)
        writes = to if len(path) == 1 else others[path[-1]][1]
        if len(path) > 1 and _overlap(writes, on):
            return path
        for other, (watched, _) in others.items():
            if other not in seen and _overlap(writes, watched):
                seen.add(other)
                paths.append([*path, other])
    return []


def _ring_of(watch: dict[str, Any], watches: list[dict[str, Any]]) -> list[str]:
    """The ring of watches `watch` is in, among `watches`: [its name] alone if it writes where it watches."""
    on, to = tuple(watch["on"]), tuple(watch["to"])
    return [watch["name"]] if _overlap(on, to) else _ring(watch["name"], on, to, watches)


def _failed(key: str, err: XscError) -> str:
    """A datum's failure as its watch shows it: its key and the job's message within LAST_ERROR, and its hint whole
    (a job's message leaves its id to the hint's command: `xsc compute rerun ID`, cut it would run another job)."""
    hint = f" ({err.hint[:LAST_HINT]})" if err.hint else ""
    return f"{key}: {err.message}"[:LAST_ERROR] + hint


def _last_run(key: str, job: Any, state: str, objects: list[str]) -> dict[str, Any]:
    """What the watch's latest datum came to: a job that stored nothing wrote no object, and says so here."""
    return {"at": time.time(), "input": key, "job": job if isinstance(job, str) else None, "state": state,
            "objects": objects}


def _targets(job: dict[str, Any], base: str) -> list[str]:
    """The keys of a datum's objects: its job's stored stdout at `base`, each file it left in /out under it."""
    return [base + ("" if o["name"] == "stdout" else "/" + o["name"].removeprefix("out/")) for o in job["outputs"]]


def _datum_spec(spec: dict[str, Any], mount: str, source: str) -> dict[str, Any]:
    """The job of one datum: the watch's spec with the object mounted."""
    return {**spec, "inputs": [*spec.get("inputs", []), f"{source}:{mount}"]}


def datum_hash(watch: dict[str, Any], summary: dict[str, Any]) -> str:
    """The datum of one object under a watch: its module and spec, where the object goes in, and its content."""
    named = {"spec": watch["spec"], "as": watch["as"], "size": summary["size"], "etag": summary["etag"]}
    return hashlib.sha256(b"xsc/datum/1\n" + codec.canonical(named)).hexdigest()


__all__ = ["Watches", "datum_hash"]
