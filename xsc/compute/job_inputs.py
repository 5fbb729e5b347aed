"""A job's bytes staged: its stdin and its inputs (stored files, or an S3 object's parts) streamed to its work
directory, hashed as they come, within its bytes_in, and priced before a byte of them is fetched."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from ..errors import IntegrityError, InvalidArgument, InvalidCapability, NotEnoughShares, NotFound, OverCap, XscError
from ..storage.core.capability import Capability
from ..tasks import in_pool
from .job_answers import node_failure
from .jobspec import JobSpec
from .lineage import verify_hash as _verify_hash
from .wasi_io import io_fuel

ReadFn = Callable[[int], Awaitable[bytes]]
CHUNK = 1 << 20


@dataclass
class Staged:
    """A job's bytes on disk: stdin's path and hash, each input's hash and the verify-hash of its capability."""

    work: Path
    stdin: Path | None = None
    stdin_sha256: str | None = None
    # stdin as the job's record names it, as it names an input (path "stdin"; a stored one's verify hash: lineage)
    stdin_item: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    bytes_in: int = 0


class JobInputs:
    """A job's stdin and inputs streamed to its work directory, hashed as they come, within its bytes_in."""

    def __init__(self, storage: Any, objects: Callable[[str, str], list[str]] | None) -> None:
        self.storage, self.objects = storage, objects

    async def stage(self, spec: JobSpec, stdin: ReadFn | None, work: Path, fuel: int) -> Staged:
        """The job's bytes staged; an error of the node's own (its disk's, while nothing of the job is recorded or
        charged yet) answered as its problem, not as the node's 500."""
        opened: list = []  # the stored files read, closed however staging ends: no range asked stays in flight
        try:
            return await self._staged(spec, stdin, work, opened, fuel)
        except XscError:
            raise
        except Exception as err:
            raise node_failure(err) from err
        finally:
            await asyncio.gather(*(plaintext.aclose() for plaintext in opened))

    async def _staged(self, spec: JobSpec, stdin: ReadFn | None, work: Path, opened: list, fuel: int) -> Staged:
        staged = Staged(work)
        room = spec.bytes_in
        # What the job reads is priced (4 fuel a byte) before a byte of it is fetched: the sizes of the stored
        # files it names are in their capabilities.
        parts = [[Capability.parse(text) for text in await self._parts(item, f"input /in/{item.name}")]
                 for item in spec.inputs]
        named = [] if spec.stdin in (None, "-") else [Capability.parse(spec.stdin)]
        affordable(sum(cap.size for cap in [*named, *(cap for caps in parts for cap in caps)]), fuel)
        if spec.stdin is not None:
            staged.stdin = work / "stdin"
            source = stdin if spec.stdin == "-" else await self._opened(spec.stdin, "stdin", opened)
            size, staged.stdin_sha256 = await self._copy(source, staged.stdin, room, "stdin")
            staged.stdin_item = {"path": "stdin", "sha256": staged.stdin_sha256, "size": size,
                                 **({"verify_hash": _verify_hash(named[0])} if named else {})}
            room -= size
            staged.bytes_in += size
        (work / "in").mkdir()
        for item, caps in zip(spec.inputs, parts):
            what = f"input /in/{item.name}"
            if sum(cap.size for cap in caps) > room:
                raise OverCap(f"{what} is {sum(cap.size for cap in caps):,} bytes, over what is left of the job's "
                              f"bytes_in ({room:,})", hint="ask for more with --bytes-in")
            read = await self._chained(caps, what, opened)
            size, digest = await self._copy(read, work / "in" / item.name, room, what)
            room -= size
            staged.bytes_in += size
            staged.inputs.append({"path": item.path, "sha256": digest, "size": size,
                                  "verify_hash": ",".join(_verify_hash(cap) for cap in caps),
                                  **({"s3": "s3://" + "/".join(item.s3)} if item.s3 else {})})
        os.chmod(work / "in", 0o555)
        return staged

    async def _parts(self, item, what: str) -> list[str]:
        """The capabilities an input reads, in order: its own, or its S3 object's parts."""
        if item.s3 is None:
            return [item.cap]
        if self.objects is None:
            raise InvalidArgument(f"{what}: this node has no S3 bucket index", hint="give the object's capability")
        try:
            return await in_pool(None, self.objects, *item.s3)
        except NotFound as err:
            raise NotFound(f"{what} cannot be read: {err.message}", hint=err.hint) from None

    async def _chained(self, caps: list[Capability], what: str, opened: list) -> ReadFn:
        """The plaintext of several stored files, one after the other, as one read function."""
        readers = [await self._opened(str(cap), what, opened) for cap in caps[:1]]
        rest = list(caps[1:])

        async def read(n: int) -> bytes:
            while readers:
                chunk = await readers[0](n)
                if chunk:
                    return chunk
                readers.pop(0)
                if rest:  # the next part is opened once the one before it is read to its end
                    readers.append(await self._opened(str(rest.pop(0)), what, opened))
            return b""

        return read

    async def _opened(self, cap_text: str, what: str, opened: list) -> ReadFn:
        """A stored file's plaintext as a read function (whole chunks, b"" at its end), added to `opened`."""
        chunks = await open_stored(self.storage, Capability.parse(cap_text), what)
        opened.append(chunks)
        iterator = chunks.__aiter__()

        async def read(n: int) -> bytes:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return b""

        return read

    async def _copy(self, read: ReadFn, path: Path, room: int, what: str) -> tuple[int, str]:
        """Stream `read` to `path` (never more than `room` bytes), hashing it; its size and SHA-256."""
        digest = hashlib.sha256()
        size = 0
        with open(path, "wb") as out:
            while chunk := await read(CHUNK):
                size += len(chunk)
                if size > room:
                    raise OverCap(f"{what} is more than the {room:,} bytes left of the job's bytes_in",
                                  hint="ask for more with --bytes-in")
                digest.update(chunk)
                await in_pool(None, out.write, chunk)
        return size, digest.hexdigest()


async def open_stored(storage: Any, cap: Capability, what: str) -> AsyncIterator[bytes]:
    """A stored file's chunks; which of a job's inputs or a function's mounts cannot be read is named (`what`)."""
    try:
        return (await storage.open(cap))[1]
    except NotFound as err:  # (said as not found, whichever kind)
        raise NotFound(f"{what} cannot be read: {err.message}", hint=err.hint) from None
    except (InvalidCapability, IntegrityError, NotEnoughShares) as err:
        raise type(err)(f"{what} cannot be read: {err.message}", hint=err.hint, **err.details) from None


def affordable(nbytes: int, fuel: int) -> int:
    """The fuel reading `nbytes` of input costs, if the job's fuel limit covers it; else InvalidArgument."""
    prepaid = io_fuel(nbytes)
    if prepaid >= fuel:
        raise InvalidArgument(f"reading its {nbytes:,} bytes of input costs {prepaid:,} fuel, more than its fuel "
                              f"limit ({fuel:,})", hint="ask for more with --fuel")
    return prepaid


__all__ = ["JobInputs", "ReadFn", "Staged", "affordable", "open_stored"]
