"""Maps: one job per input, with a record of their own, so that a map cut short goes on where it stopped.

    xsc compute map TARGET --over CAP... [--over s3://BUCKET/PREFIX] [--as /in/NAME|-]
    xsc compute map --resume MAP_ID

The CLI asks for the map (`create`: its module, spec, mount, sources and the inputs they named, every bound checked
before anything is written), then for each input's job (`run_input`), --parallel at once.  The map's record is the
node's (compute/store.py): its head (id, module, mount, counts of inputs done and failed), what it was asked (its
spec, its sources as given: written once) and, per input, its name, its state (pending, running, done, failed), the
job's id once it is known (before the job runs) and its outputs once it is done, written with the head's counts in
one synced write.

A map resumed asks again for every input not done.  An input done is answered from its record: not run, not paid
again.  An input whose job was in flight when the node stopped is asked again as that job, whose record
(compute/jobs.py) takes it up: a remote run is finished from its provider's answer, a local run cut short (never
paid) runs again, and a run that ended done after the map last heard of it, which its job's record names as this
input's (`map`), is answered from that record, not run again.  An input that failed runs again.

Maps are kept MAX_MAPS at most: the newest map made past them forgets the oldest that has ended, every input done or
failed (its record only: its jobs and their outputs stay).  A map with inputs still to run is never forgotten so (its
user would lose `--resume` for work in flight): with MAX_MAPS of them a new map is refused until one ends, or its user
forgets one (`forget`, `xsc compute unmap MAP_ID`): one that has ended at once; one with inputs still to run only when
told to give them up (`cancel`), which also cancels the jobs of its inputs running now (JobService.cancel: each run
stopped, charged what it used) and waits for each input's request to write its job's end into the map's record; one
with an input whose job runs now, without `cancel`, never, until that job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from ..errors import Conflict, InvalidArgument, MapNotFound, XscError
from ..ids import one_starting_with, unique_bytes
from ..storage.core.capability import Capability
from .jobspec import MAX_SPEC_BYTES, mount_name, parse_job
from .store import ComputeStore

MAX_MAP = 10_000  # inputs one map runs over at most
MAX_MAPS = 100  # maps kept: past them the oldest ended one is forgotten
MAX_SOURCES = 1000  # --over arguments a map records as given
MAX_INPUT_BYTES = 2048  # an input: a capability, or s3://BUCKET/KEY (a key is 1,024 bytes at most)
# A map's request: its inputs and sources, each at most MAX_INPUT_BYTES, and its spec.
MAX_MAP_BODY = (MAX_MAP + MAX_SOURCES) * (MAX_INPUT_BYTES + 8) + MAX_SPEC_BYTES
ID_HEX = 32
_INDEX = re.compile(r"[0-9]{1,5}")  # an input's number in a request's path (fullmatch: $ would take a newline)
KEPT = ("job", "state", "replayed", "provider", "charged", "outputs", "error", "hint")  # of a job's answer


class MapInput:
    """One input of a map as its job runs (JobService.run's `tag`): its job named in the map's record once known,
    and the mark that job's record carries."""

    def __init__(self, maps: Maps, map_id: str, index: int) -> None:
        self.maps, self.map_id, self.index = maps, map_id, index
        self.mark = {"id": map_id, "input": index}

    def started(self, jid: str) -> None:
        self.maps.update(self.map_id, self.index, {"state": "running", "job": jid})


class Maps:
    def __init__(self, *, jobs: Any, store: ComputeStore) -> None:
        self.jobs = jobs  # compute/jobs.py: JobService (runs each input's job)
        self.store = store
        # inputs whose job a request of this node's life runs now: set once that request has written the job's end
        self._running: dict[tuple[str, int], asyncio.Event] = {}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new map of `body` ({"spec", "as", "over", "inputs"}), every field checked first; its head."""
        spec, mount, over, inputs = _checked(body)
        self.jobs.compute.registry.module(spec["module"])  # a module not deployed: refused now, not once per input
        # The head is written again as each input ends: what the map was asked (up to MiBs) is written once.
        head = {"id": unique_bytes(ID_HEX // 2).hex(), "module": spec["module"], "as": mount,
                "inputs": len(inputs), "done": 0, "failed": 0, "created": time.time()}
        kept = sorted(self.store.maps(), key=lambda m: m["created"])
        past, ended = len(kept) + 1 - MAX_MAPS, [m for m in kept if m["done"] + m["failed"] >= m["inputs"]]
        if past > len(ended):
            raise Conflict(f"this node keeps {MAX_MAPS} maps, and {len(kept) - len(ended)} of them have inputs still "
                           "to run: a new map would forget one whose work is in flight or waits to be resumed",
                           hint="list them with: xsc compute maps; end one by running what is left of it: "
                                "xsc compute map --resume MAP_ID, or give that up: xsc compute unmap MAP_ID --cancel")
        forget = [bytes.fromhex(m["id"]) for m in ended[:max(0, past)]]
        self.store.save_map(head, {n: {"input": item, "state": "pending"} for n, item in enumerate(inputs)},
                            {"spec": spec, "over": over}, forget)
        return head

    def list(self) -> list[dict[str, Any]]:
        """Every map, newest first: what it ran over and how far it got."""
        return sorted(self.store.maps(), key=lambda m: m["created"], reverse=True)

    def map(self, map_id: str) -> dict[str, Any]:
        """The map, what it was asked (its spec, its sources) and each of its inputs, in order."""
        head = self._head(map_id)
        key = bytes.fromhex(head["id"])
        return {**head, **(self.store.map_asked(key) or {}), "results": self.store.map_inputs(key)}

    async def run_input(self, map_id: str, number: str) -> dict[str, Any]:
        """Input `number` (0, 1, ...) of the map run (see the module's docstring): its record once its job has
        answered, or the job's problem (its input recorded as failed)."""
        head = self._head(map_id)
        index = int(number) if _INDEX.fullmatch(number) else -1
        if not 0 <= index < head["inputs"]:
            raise InvalidArgument(f"the map {head['id']} has inputs 0 to {head['inputs'] - 1}, not {number[:20]!r}")
        entry = self.store.map_input(bytes.fromhex(head["id"]), index)
        asked = self.store.map_asked(bytes.fromhex(head["id"]))
        if entry is None or asked is None:  # (forgotten as this request came)
            raise MapNotFound(f"no map {head['id']}", hint="list them with: xsc compute maps")
        if entry["state"] == "done":
            return {**entry, "replayed": True, "charged": 0}
        if (head["id"], index) in self._running:
            raise Conflict(f"input {index} of the map {head['id']} is running",
                           hint=f"follow it with: xsc compute job {entry['job']}" if entry.get("job") else None)
        self._running[(head["id"], index)] = asyncio.Event()
        try:
            answer = await self.jobs.run(_job(asked["spec"], head["as"], entry["input"]),
                                         tag=MapInput(self, head["id"], index))
        except XscError as err:
            self.update(head["id"], index, {"state": "failed", "job": err.details.get("id") or entry.get("job"),
                                            "error": err.message, **({"hint": err.hint} if err.hint else {})})
            raise
        finally:
            self._running.pop((head["id"], index)).set()
        outputs = [{k: o[k] for k in ("name", "size", "sha256", "capability") if k in o}
                   for o in answer.get("outputs", [])]
        said = {k: answer[k] for k in KEPT if k in answer} | {"job": answer["id"], "outputs": outputs}
        self.update(head["id"], index, said)
        return {**answer, **self.store.map_input(bytes.fromhex(head["id"]), index)}

    async def forget(self, map_id: str, cancel: bool = False) -> dict[str, Any]:
        """Forget the map's record (its jobs' records and outputs stay): at once if every input has ended; with
        `cancel`, the jobs of its inputs running now cancelled (each input's end written) and its inputs still to run
        given up; without, never while an input's job runs at this node.  From its last check on, on the loop with no
        await: an input's request begins before the check (and refuses it) or after the write (and finds no map)."""
        head = self._head(map_id)
        running = sorted(index for mid, index in self._running if mid == head["id"])
        while running and cancel:  # (an input whose request began meanwhile is cancelled in turn)
            await self._cancelled(head["id"], running)
            head = self._head(map_id)  # (its counts, as the inputs' requests wrote their ends)
            running = sorted(index for mid, index in self._running if mid == head["id"])
        if running:
            entry = self.store.map_input(bytes.fromhex(head["id"]), running[0]) or {}
            follow = f"follow it with: xsc compute job {entry['job']}; " if entry.get("job") else ""
            raise Conflict(f"{len(running)} of the map {head['id']}'s inputs run now (input {running[0]} first): their "
                           "ends are to be written in the map's record",
                           hint=f"{follow}forget the map once they end: xsc compute unmap {head['id']}; or cancel them "
                                f"too: xsc compute unmap {head['id']} --cancel")
        left = head["inputs"] - head["done"] - head["failed"]
        if left and not cancel:
            raise Conflict(f"{left} of the map {head['id']}'s {head['inputs']} inputs are still to run: forgetting it "
                           "gives up `--resume` for them",
                           hint=f"run them: xsc compute map --resume {head['id']}; or give them up: "
                                f"xsc compute unmap {head['id']} --cancel")
        self.store.forget_map(bytes.fromhex(head["id"]))
        return {"forgotten": head["id"], "inputs": head["inputs"], "done": head["done"], "failed": head["failed"],
                "given_up": left}

    async def _cancelled(self, map_id: str, running: list[int]) -> None:
        """The jobs of the map's inputs `running` cancelled, and each input's request ended (its job's end written in
        the map's record).  A job not known yet (its bytes still staged), or past its run (storing), ends by itself."""
        for index in running:
            entry = self.store.map_input(bytes.fromhex(map_id), index) or {}
            if entry.get("job"):
                with contextlib.suppress(XscError):  # (ended meanwhile, or storing what it ran)
                    await self.jobs.cancel(entry["job"])
        for index in running:
            if (ended := self._running.get((map_id, index))) is not None:
                await ended.wait()

    def update(self, map_id: str, index: int, said: dict[str, Any]) -> None:
        """Input `index`'s record as `said` (its state, job, outputs or error), and the head's counts, in one write.
        On the loop, never awaited in between: two inputs ending at once each count."""
        head = self._head(map_id)
        entry = self.store.map_input(bytes.fromhex(map_id), index)
        assert entry is not None
        was, now = entry["state"], said.get("state", entry["state"])
        entry = {"input": entry["input"], **({"job": entry["job"]} if entry.get("job") else {}),
                 **{k: v for k, v in said.items() if v is not None}}
        for state in ("done", "failed"):
            head[state] += (now == state) - (was == state)
        self.store.save_map(head, {index: entry})

    def _head(self, map_id: str) -> dict[str, Any]:
        """The map `map_id`, or the one map whose id starts with it (8 hex digits at least), as a job is found."""
        text = map_id.strip().lower()
        if 8 <= len(text) < ID_HEX and _hex(text):
            text = one_starting_with(text, (m["id"] for m in self.store.maps()), what="map",
                                     listing="xsc compute maps", missing=MapNotFound)
        head = self.store.map(bytes.fromhex(text)) if len(text) == ID_HEX and _hex(text) else None
        if head is None:
            raise MapNotFound(f"no map {map_id[:80]}", hint="list them with: xsc compute maps")
        return head


def _job(spec: dict[str, Any], mount: str, item: str) -> dict[str, Any]:
    """The job of one input: the map's spec, its input mounted at the map's mount, or as its stdin."""
    body = dict(spec)
    if mount == "-":
        body["stdin"] = item
    else:
        body["inputs"] = [*spec.get("inputs", []), f"{item}:{mount}"]
    return body


def _checked(body: dict[str, Any]) -> tuple[dict[str, Any], str, list[str], list[str]]:
    """A map's spec, mount, sources and inputs, each bounded and checked before anything is written."""
    unknown = sorted(set(body) - {"spec", "as", "over", "inputs"})
    if unknown:
        raise InvalidArgument(f"a map has no field {', '.join(unknown)[:200]}",
                              hint='send {"spec", "as", "over", "inputs"}')
    spec, mount, over, inputs = body.get("spec"), body.get("as", "/in/data"), body.get("over", []), body.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_MAP:
        many = isinstance(inputs, list) and len(inputs) > MAX_MAP
        raise InvalidArgument(f"a map runs over 1 to {MAX_MAP:,} inputs, not "
                              f"{len(inputs) if isinstance(inputs, list) else 'none'}",
                              hint="map a narrower prefix, or fewer inputs at once" if many else
                              'give "inputs" a list of capabilities or s3://BUCKET/KEY objects')
    if not isinstance(over, list) or len(over) > MAX_SOURCES:
        raise InvalidArgument(f"a map's sources (over) are a list of at most {MAX_SOURCES:,}")
    for text in (*inputs, *over):
        if not isinstance(text, str) or len(text.encode()) > MAX_INPUT_BYTES:
            raise InvalidArgument(f"an input is a capability or s3://BUCKET/KEY of at most {MAX_INPUT_BYTES:,} "
                                  f"bytes, not {str(text)[:80]!r}")
    if not isinstance(spec, dict) or spec.get("stdin") == "-":
        raise InvalidArgument("a map's spec is a job spec whose stdin is not the request's",
                              hint="give each job its input as stdin with --as -")
    if mount != "-":
        mount_name(mount)
    for item in inputs:
        if item.startswith("s3://"):
            if mount == "-":
                raise InvalidArgument(f"--as -: an object, {item[:80]}, cannot be a job's stdin",
                                      hint="mount each object as a file instead, e.g. --as /in/data")
        else:
            Capability.parse(item)
    parse_job(_job(spec, mount, inputs[0]))  # the spec as each input's job reads it
    return spec, mount, list(over), list(inputs)


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
