"""A small object stored and recorded in one request of the S3 front (`ObjectWriter.put`).

A PutObject of a large body goes through three requests of the front's: the bucket's write check (before a byte is
stored), the file's put (`/v1/store/files`, streamed), the object's record.  For a body of at most SMALL_OBJECT
bytes, which the front holds whole anyway, those three are one: the node checks the bucket, stores the file (the
same put, priced, placed and paid as any), has the S3 user's account pay for it, and records the object.  A file
stored but never recorded (a refusal after the put, a crash) carries the front's mark in its name and is removed
as the front's reconciliation finds it, as on the three-request path.  SMALL_OBJECT and MAX_RECORD are in
core/names.py, which the front reads too.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable, Protocol

from ..errors import InvalidArgument, XscError
from ..storage.core.capability import Capability
from ..tasks import GroupCommit
from .accounts import UserAccounts
from .core import names
from .core.names import SMALL_OBJECT
from .index import S3Index


class Files(Protocol):
    """What the writer needs of the node's storage (xsc/storage/files.py: StorageService)."""

    async def put(self, read: Callable[[int], Awaitable[bytes]], size: int | None, name: str | None, seconds: int,
                  bid: int, **wanted: Any) -> dict[str, Any]: ...

    async def remove(self, cap: Capability) -> dict: ...


class ObjectWriter:
    def __init__(self, *, files: Files, index: S3Index, accounts: UserAccounts, pool: Executor | None) -> None:
        self.files, self.index, self.accounts, self.pool = files, index, accounts, pool
        # The records of objects stored meanwhile are written together: one synced write for a group of them.
        self.records: GroupCommit[tuple[str, str, dict]] = GroupCommit(index.put_all, pool)

    async def put(self, bucket: str, key: str, user: str | None, record: dict, data: bytes, name: str | None,
                  seconds: int, bid: int, **wanted: Any) -> dict[str, Any]:
        """Store `data` as the object (bucket, key) for `user`, with `record`'s type, metadata, headers, ETag and
        time: its capability and the capabilities now garbage (the replaced object's)."""
        if len(data) > SMALL_OBJECT:
            raise InvalidArgument(f"an object stored in one request is at most {SMALL_OBJECT:,} bytes, not "
                                  f"{len(data):,}", hint="stream a larger one through /v1/store/files")
        S3Index.clean({**record, "parts": [{"cap": "", "size": len(data)}]})  # refused before anything is stored
        self.index.allow(bucket, user, "write")  # one read of the bucket's record: cheaper here than a pool hop
        put = await self.files.put(_reader(data), len(data), name, seconds, bid, **wanted)
        cap = put["capability"]
        if user is not None and user != names.DEFAULT_USER:
            try:
                await self.accounts.charge(user, cap, put["cost"])
            except XscError:
                with contextlib.suppress(XscError):  # else the front's reconciliation removes it: no record names it
                    await self.files.remove(Capability.parse(cap))
                raise
        garbage = await self.records.add((bucket, key, {**record, "parts": [{"cap": cap, "size": len(data)}]}))
        return {"capability": cap, "garbage": garbage}


def _reader(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    view, offset = memoryview(data), 0

    async def read(n: int) -> bytes:
        nonlocal offset
        chunk = bytes(view[offset:offset + n])
        offset += len(chunk)
        return chunk

    return read


__all__ = ["Files", "ObjectWriter"]
