"""The S3 front's node in its own process (`node.s3_listen`): each call goes straight to the node's services, as the
node's /v1/s3 and /v1/store routes would make it, without a request between them.  The bucket index's reads and
writes run in the node's CPU pool, each once the index has checked the user's access, as the routes run them."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable

from ..buckets.accounts import UserAccounts
from ..buckets.core import listing
from ..buckets.index import INITIATOR, S3Index
from ..buckets.uploads import upload_page
from ..buckets.objects import ObjectWriter, SmallPut
from ..errors import InvalidCapability, NotFound, XscError
from ..storage import Capability
from ..storage.core.capability import REMOVED_AT_ONCE
from ..storage.files import StorageService
from ..storage.gateway_get import Plaintext
from ..tasks import in_pool
from ..units import counted
from .link import RECONCILE_AT_ONCE

log = logging.getLogger(__name__)


class LocalNode:
    relays = False  # no socket between the front and the node to relay from (no open_body)

    def __init__(self, *, index: S3Index, objects: ObjectWriter, accounts: UserAccounts, storage: StorageService,
                 pool: Executor, seconds: int, bid: int) -> None:
        """`seconds`, `bid`: every put's lease and bid, the node's defaults (as a put that names neither)."""
        self.index, self.objects, self.accounts, self.storage = index, objects, accounts, storage
        self.pool, self.seconds, self.bid = pool, seconds, bid

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def _pool(self, fn, *args, **kwargs):
        return await in_pool(self.pool, lambda: fn(*args, **kwargs))

    async def _as(self, bucket: str, user: str, need: str, fn, *args, **kwargs):
        return await self._pool(self.index.checked, bucket, user, need, fn, *args, **kwargs)

    async def _upload_as(self, upload_id: str, user: str, need: str, fn, *args):
        return await self._pool(self.index.checked_upload, upload_id, user, need, fn, *args)

    # --- buckets and objects ------------------------------------------------------------------
    async def buckets(self, user: str) -> list[dict]:
        return await self._pool(self.index.buckets, user)

    async def create_bucket(self, bucket: str, user: str) -> bool:
        return (await self._pool(self.index.create_bucket, bucket, user))["new"]

    async def bucket(self, bucket: str, user: str, need: str = "read") -> dict:
        return await self._as(bucket, user, need, self.index.bucket, bucket)

    async def delete_bucket(self, bucket: str, user: str) -> None:
        await self._as(bucket, user, "owner", self.index.delete_bucket, bucket)

    async def list_objects(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_keys: int,
                           start: bytes) -> dict:
        return await self._as(bucket, user, "read", self.index.list, bucket, prefix=prefix, delimiter=delimiter,
                              max_keys=min(max_keys, listing.MAX_KEYS), start=start)

    async def object(self, bucket: str, key: str, user: str) -> dict:
        return await self._as(bucket, user, "read", self.index.get, bucket, key)

    async def record(self, bucket: str, key: str, user: str, record: dict) -> list[str]:
        # The user's access judged in the record's own write, as the route's: a refusal marks the file and owes its charge.
        return await self._pool(self.index.put, bucket, key, {**record, "writer": user})

    async def delete_object(self, bucket: str, key: str, user: str) -> list[str]:
        return await self._as(bucket, user, "write", self.index.delete, bucket, key)

    async def delete_objects(self, bucket: str, keys: list[str], user: str) -> list[str]:
        return await self._as(bucket, user, "write", self.index.delete_many, bucket, keys)

    # --- small objects -------------------------------------------------------------------------
    async def put_small(self, put: SmallPut) -> dict:
        return await self.objects.put(put.bucket, put.key, put.user, put.record, put.data, put.name, self.seconds,
                                      self.bid)

    async def put_small_group(self, puts: list[SmallPut]) -> list[dict | XscError]:
        return await self.objects.put_group(puts, self.seconds, self.bid)

    # --- multipart uploads ------------------------------------------------------------------------
    async def create_upload(self, bucket: str, key: str, user: str, content_type: str, metadata: dict,
                            headers: dict, checksum: dict | None = None) -> str:
        return await self._as(bucket, user, "write", self.index.create_upload, bucket, key, content_type, metadata,
                              headers, by=user, checksum=checksum)

    async def upload(self, upload_id: str, user: str, need: str = "write") -> dict:
        record = await self._upload_as(upload_id, user, need, self.index.upload, upload_id)
        return {**record, "parts": await self._pool(self.index.parts, upload_id)}

    async def uploads(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_uploads: int,
                      key_marker: str, id_marker: str) -> dict:
        return await self._as(bucket, user, "read", upload_page, self.index, bucket, prefix, delimiter,
                              min(max_uploads, listing.MAX_KEYS), key_marker, id_marker)

    async def put_part(self, upload_id: str, number: int, user: str, cap: str, size: int, etag: str,
                       checksums: dict | None = None) -> list[str]:
        return await self._pool(self.index.put_part, upload_id, number, cap, size, etag, checksums, writer=user)

    async def complete(self, upload_id: str, user: str, parts: list[tuple[int, str]], bucket: str,
                       key: str, condition: dict | None = None, checksum: dict | None = None) -> tuple[dict, list[str]]:
        return await self._upload_as(upload_id, user, "write", self.index.complete, upload_id, parts, bucket, key,
                                     condition, checksum)

    async def abort(self, upload_id: str, user: str) -> list[str]:
        return await self._upload_as(upload_id, user, INITIATOR, self.index.abort, upload_id)

    # --- files -------------------------------------------------------------------------------------
    async def check_room(self, size: int) -> None:
        self.storage.check_room(size)

    async def put_file(self, chunks: AsyncIterator[bytes], size: int | None, name: str) -> dict:
        return await self.storage.put(_reader(chunks), size, name, self.seconds, self.bid)

    async def open_file(self, cap: str, first: int | None = None, last: int | None = None) -> Plaintext:
        """The store's own plaintext: a large get of shares held here is passed on by its threads, as the user API's."""
        _, plaintext = await self.storage.open(Capability.parse(cap), None if first is None else (first, last))
        return plaintext

    async def delete_file(self, cap: str) -> None:
        with contextlib.suppress(NotFound):
            await self.storage.removals.remove(Capability.parse(cap))

    async def delete_files(self, caps: list[str]) -> list[str]:
        # Removed together, their synced writes per batch, not per file (Removals.remove_all), REMOVED_AT_ONCE a
        # batch, as the user API takes them a request: a reconciliation's thousands are neither taken out of the
        # listing in one write nor hold every one's repair lock at once.  A file the node took out of the listing and
        # could not finish removing is its to finish (it said why in its log): its mark is done with.  One that is no
        # capability names no file and holds none of the others back.
        parsed = {}
        for cap in caps:
            with contextlib.suppress(InvalidCapability):
                parsed[cap] = Capability.parse(cap)
        marks, done = list(parsed), []
        for i in range(0, len(marks), REMOVED_AT_ONCE):
            batch = marks[i:i + REMOVED_AT_ONCE]
            try:
                await self.storage.removals.remove_all([parsed[mark] for mark in batch])
            except XscError as err:
                log.warning("could not remove %s from the store yet: %s", counted(len(batch), "file"), err)
                continue
            done += batch
        return done

    async def files(self) -> list[dict]:
        return await self.storage.files()

    async def charge(self, user: str, cap: str, amount: int) -> None:
        await self.accounts.charge(user, cap, amount)

    # --- housekeeping --------------------------------------------------------------------------------
    async def garbage(self) -> list[str]:
        return await self._pool(self.index.garbage)

    async def forget_garbage(self, caps: list[str]) -> None:
        await self._pool(self.index.forget_garbage, caps)

    async def reconcile(self, caps: list[str]) -> list[str]:
        orphans: list[str] = []
        for i in range(0, len(caps), RECONCILE_AT_ONCE):
            orphans += await self._pool(self.index.reconcile, caps[i:i + RECONCILE_AT_ONCE])
        return orphans

    async def expire_uploads(self) -> list[str]:
        return await self._pool(self.index.expire_uploads)


def _reader(chunks: AsyncIterator[bytes]) -> Callable[[int], Any]:
    """A put's `read(n)` over a stream of chunks: at most n bytes a call, b"" at its end.  A chunk no longer than
    asked for is handed on as it is; a longer one is cut where the call ended, as views of it (no copy), and let go
    of once all of it was read."""
    held, at, ended = memoryview(b""), 0, False

    async def read(n: int) -> bytes | memoryview:
        nonlocal held, at, ended
        while at >= len(held) and not ended:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                ended = True
                break
            if n >= len(chunk):
                return chunk
            held, at = memoryview(chunk), 0
        piece, at = held[at:at + n], at + n
        if at >= len(held):
            held, at = memoryview(b""), 0
        return piece

    return read


__all__ = ["LocalNode"]
