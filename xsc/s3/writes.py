"""How the front writes: a request's body read and checked on its way (payload.py), stored as one XSC file, paid
for by the user's account and recorded, each write counted through the WriteGate that reconciliation waits on; and
the files no object refers to any more removed from the store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from ..buckets.core import names
from ..errors import InsufficientCredit, InvalidCapability, NodeCreditExhausted, S3Error, XscError
from ..storage.core.capability import Capability
from ..tasks import Workers, to_its_end
from ..units import counted
from . import payload
from .calls import Call, declared_size
from .core import checksums, xml
from .link import NodeLink
from ..buckets.marks import FileMarks

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteGate:
    """Writes (puts, parts, copies) run side by side, each from before its file is stored to after its record is
    written.  Reconciliation lists the store's files, then waits only for the writes under way at that moment
    (`drained`): a file among those listed whose write has ended has its record written, or never will; a write
    that begins meanwhile stores a file the list does not hold.  So no file stored but not yet recorded is ever
    taken for an orphan, and no write is held back while reconciliation runs.

    A write's last step, its record's (`Write.finish`), runs to its end whatever becomes of the request: once it is
    asked of the node, the node writes the record even if the handler is cancelled (the server stopping) or fails,
    so the write counts as under way until the record is written or refused, not until its handler ends."""

    def __init__(self) -> None:
        self._era = 0  # writes that begin now belong to this era; `drained` starts the next one
        self._under_way: dict[int, int] = {}  # era -> its writes (and their last steps) under way; none: dropped
        self._waiting: list[tuple[int, asyncio.Future]] = []  # `drained` callers: the era each waits for

    @property
    def under_way(self) -> int:
        """Writes whose record is neither written nor abandoned yet (status, tests)."""
        return sum(self._under_way.values())

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Write]:
        write = Write(self, self._era)
        self._begin(write.era)
        try:
            yield write
        finally:
            self._end(write.era)

    def _begin(self, era: int) -> None:
        self._under_way[era] = self._under_way.get(era, 0) + 1

    def _end(self, era: int) -> None:
        left = self._under_way[era] - 1
        if left:
            self._under_way[era] = left
            return
        del self._under_way[era]
        oldest = min(self._under_way, default=self._era)
        for waited, future in [w for w in self._waiting if w[0] < oldest]:
            self._waiting.remove((waited, future))
            if not future.done():
                future.set_result(None)

    async def drained(self) -> None:
        """Until every write under way as this is called has ended (writes that begin meanwhile are not waited for)."""
        era = self._era
        self._era += 1
        if not any(e <= era for e in self._under_way):
            return
        waiter = (era, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            await waiter[1]
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)


class Write:
    """One write under way through a WriteGate."""

    def __init__(self, gate: WriteGate, era: int) -> None:
        self.gate, self.era = gate, era

    def last_step(self) -> Callable[[], None]:
        """This write's last step (what writes its record) begun: the write counts as under way until the callable
        handed back is called, once, when that step has ended."""
        self.gate._begin(self.era)
        return lambda: self.gate._end(self.era)

    async def finish(self, step: Awaitable[T]) -> T:
        """`step` (what writes the record: the file's payment and record) awaited, and run to its end even if this
        caller is cancelled meanwhile; counted as this write under way until then."""
        return await to_its_end(step, self.last_step())


class Writes:
    """The front's writes over its node: bodies read, files stored, paid and recorded, garbage collected."""

    def __init__(self, node: NodeLink, marks: FileMarks, gate: WriteGate, digests: Workers,
                 idle_timeout: float) -> None:
        self.node = node
        self.marks = marks  # the names of the files written: only those are ever reconciled away
        self.gate = gate
        self.digests = digests  # a large body's digests, beside the loop (payload.py)
        self.idle_timeout = idle_timeout  # seconds a body may send nothing before its request fails

    async def small_body(self, call: Call, checksum: checksums.Checksum | None = None) -> bytes:
        parts = []
        size = 0
        async for chunk in self.body(call, checksum=checksum):
            size += len(chunk)
            if size > xml.MAX_BODY:
                raise S3Error("the request body is too large", s3_code="MaxMessageLengthExceeded", status=400)
            parts.append(chunk)
        return b"".join(parts)

    def body(self, call: Call, *, md5: "hashlib._Hash | None" = None, checksum: checksums.Checksum | None = None,
             taken: checksums.Checksum | None = None) -> AsyncIterator[bytes]:
        """The request body as it arrives, checked before its last piece goes on (payload.py)."""
        request = call.request
        return payload.body(request.content, call.auth, request.headers, declared_size(call), self.idle_timeout,
                            self.digests, md5=md5, checksum=checksum, taken=taken)

    async def store(self, call: Call, write: Write, chunks: AsyncIterator[bytes], size: int | None, name: str,
                    recorded: Callable[[str], Awaitable[T]]) -> T:
        """Store a stream as one XSC file, then have the user's own account pay for it and `recorded(capability)`
        write its record: a step that runs to its end once the file is stored (`Write.finish`)."""
        try:
            put = await self.node.put_file(chunks, size, self.marks.name(name))
        except InsufficientCredit as err:  # the node's account pays for a put's deals: not the user's
            raise NodeCreditExhausted.of(err) from err

        async def paid_and_recorded() -> T:
            # A record refused (its grant taken back, its condition lost, its bucket or upload gone while the body was
            # on its way) names its file, marked garbage, and owes back what the user paid: the caller removes it.
            return await recorded(await _paid_by(self.node, call.user, put))

        return await write.finish(paid_and_recorded())

    async def collect(self, garbage: list[str]) -> None:
        """Remove files no object refers to any more from the store (their deals end), then drop their marks.  A mark
        that is no capability (a record written through the user API names whatever part it is given) names no file:
        nothing can ever be removed for it, so its mark is dropped with the others, said once in a warning, rather
        than kept and tried again at every reconciliation."""
        files, nameless = [], []
        for mark in garbage:
            (nameless if _names_no_file(mark) else files).append(mark)
        done: list[str] = []
        if files:
            try:
                done = await self.node.delete_files(files)
            except XscError as err:
                log.warning("could not remove %s from the store yet: %s", counted(len(files), "file"), err)
        if done or nameless:
            await self.node.forget_garbage([*done, *nameless])
        if nameless:
            log.warning("dropped %s that named no file (not a capability: nothing to remove)",
                        counted(len(nameless), "garbage mark"))

    async def collect_refused(self, err: XscError) -> None:
        """The files of a write refused as its record was to be written (a conditional write that lost its race, a
        grant revoked or a bucket deleted meanwhile), which the refusal names (`garbage`) and marked garbage in its own
        synced write (owing back what the user paid for them): removed now, not at the next reconciliation."""
        garbage = err.details.get("garbage")
        if isinstance(garbage, list) and all(isinstance(cap, str) for cap in garbage):
            await self.collect(garbage)

    async def collect_all(self) -> int:
        garbage = await self.node.garbage()
        await self.collect(garbage)
        return len(garbage)


def _names_no_file(mark: str) -> bool:
    try:
        Capability.parse(mark)
    except InvalidCapability:
        return True
    return False


async def _paid_by(node: NodeLink, user: str, put: dict) -> str:
    """The capability of a file just stored, once the user's account paid the node's for it (the default user's
    puts are the node's own); a file it cannot pay for is removed again, and the put refused with its answer."""
    if user == names.DEFAULT_USER:
        return put["capability"]
    try:
        await node.charge(user, put["capability"], put["cost"])
    except XscError:
        with contextlib.suppress(XscError):  # else reconciliation removes it: no record refers to it
            await node.delete_file(put["capability"])
        raise
    return put["capability"]
