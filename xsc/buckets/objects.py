"""A small object stored and recorded in one request of the S3 front (`ObjectWriter.put`).

A PutObject of a large body goes through three requests of the front's: the bucket's write check (before a byte is
stored), the file's put (`/v1/store/files`, streamed), the object's record.  For a body of at most SMALL_OBJECT
bytes, which the front holds whole anyway, those three are one: the node checks the bucket, stores the file (the
same put, priced, placed and paid as any), has the S3 user's account pay for it, and records the object.  An object
of the node's own (the default user's: nothing to pay) is recorded in the synced write that publishes its file
(`S3Index.riding`); a user's is recorded once its account has paid, in a write of its own.  A file stored but never
recorded (a refusal after the put, a crash) carries the front's mark in its name and is removed as the front's
reconciliation finds it, as on the three-request path.  SMALL_OBJECT and MAX_RECORD are in core/names.py, which
the front reads too.

Under load the front sends small objects together (`POST /v1/s3/objects`, `parse_group` and `put_group`): the
objects of one request are each stored, paid and recorded as if each had come alone, at once, and answered one by
one (a refused object fails alone); their files share one market quote (`StorageService.put_many`), their files'
writes and their records' writes share group commits, and a user's charges for them are settled together
(`UserAccounts.charge_many`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Protocol

from .. import codec
from ..errors import DuplicateJsonKey, InsufficientCredit, InvalidArgument, NodeCreditExhausted, XscError
from ..storage.core.capability import Capability
from ..storage.files import Whole
from ..tasks import GroupCommit
from .accounts import UserAccounts
from .core import names, records
from .core.names import MAX_RECORD, SMALL_OBJECT
from .index import Recording, S3Index

log = logging.getLogger(__name__)

MAX_GROUP_OBJECTS = 64  # objects in one request of the front's
MAX_GROUP_BYTES = 1024 * 1024  # bytes of its body (the user API's bound on a body it reads whole)
_FIELDS = {"bucket", "key", "user", "name", "record", "size"}


@dataclass(frozen=True)
class SmallPut:
    """One object of a group: where it goes, for whom, its record and its bytes."""

    bucket: str
    key: str
    user: str | None
    name: str | None
    record: dict
    data: bytes


def group_body(puts: list[SmallPut]) -> bytes:
    """A group's body: a framed head listing each object but its bytes, then their bytes one after another."""
    head = {"objects": [{"bucket": p.bucket, "key": p.key, "user": p.user, "name": p.name, "record": p.record,
                         "size": len(p.data)} for p in puts]}
    return codec.framed(head, b"".join(p.data for p in puts))


def parse_group(body: bytes) -> list[SmallPut]:
    """The objects of a `group_body`, each checked; InvalidArgument, before anything is stored, if one is not."""
    try:
        head, data = codec.unframed(body, MAX_GROUP_BYTES)
    except codec.DuplicateKey as err:
        raise DuplicateJsonKey.within("the group's head", err.key) from None
    except ValueError as err:
        raise InvalidArgument(f"not a group of small objects: {err}") from None
    objects = head.get("objects")
    if set(head) != {"objects"} or not isinstance(objects, list) or not 1 <= len(objects) <= MAX_GROUP_OBJECTS:
        raise InvalidArgument(f'a group is {{"objects": [...]}}, 1 to {MAX_GROUP_OBJECTS} of them',
                              limit=MAX_GROUP_OBJECTS)
    puts, offset = [], 0
    for n, item in enumerate(objects):
        if not isinstance(item, dict) or set(item) != _FIELDS:
            raise InvalidArgument(f"object {n} of the group is not {{{', '.join(sorted(_FIELDS))}}}")
        size, record = item["size"], item["record"]
        if type(size) is not int or not 0 <= size <= SMALL_OBJECT or offset + size > len(data):
            raise InvalidArgument(f"object {n} of the group has no size from 0 to {SMALL_OBJECT:,} within its bytes")
        if not isinstance(item["bucket"], str) or not isinstance(item["key"], str) or not isinstance(record, dict) \
                or any(item[f] is not None and not isinstance(item[f], str) for f in ("user", "name")):
            raise InvalidArgument(f"object {n} of the group: bucket and key are strings, user and name strings or "
                                  "null, record an object")
        if len(codec.dumps(record)) > MAX_RECORD:
            raise InvalidArgument(f"object {n} of the group has a record over {MAX_RECORD:,} bytes")
        names.check_key(item["key"])
        puts.append(SmallPut(item["bucket"], item["key"], item["user"], item["name"], record,
                             data[offset:offset + size]))
        offset += size
    if offset != len(data):
        raise InvalidArgument(f"the group's objects hold {offset:,} bytes, but {len(data):,} came")
    return puts


class Files(Protocol):
    """What the writer needs of the node's storage (xsc/storage/files.py: StorageService)."""

    async def put_many(self, files: list[Whole], seconds: int, bid: int,
                       **wanted: Any) -> list[dict[str, Any] | BaseException]: ...

    async def remove(self, cap: Capability) -> dict: ...


class _Riding:
    """An object of the node's own, recorded in the synced write that publishes its file (`S3Index.riding`)."""

    def __init__(self, index: S3Index, bucket: str, key: str, stored: Callable[[str], dict]) -> None:
        self.index, self.bucket, self.key, self.stored = index, bucket, key, stored
        self.recording: Recording | None = None

    def __call__(self, cap: str) -> Recording:
        self.recording = self.index.riding(self.bucket, self.key, self.stored(cap), cleaned=True)
        return self.recording


class ObjectWriter:
    def __init__(self, *, files: Files, index: S3Index, accounts: UserAccounts, pool: Executor | None) -> None:
        self.files, self.index, self.accounts, self.pool = files, index, accounts, pool
        # The records of objects stored meanwhile are written together: one synced write for a group of them.
        self.records: GroupCommit[tuple[str, str, dict]] = GroupCommit(partial(index.put_all, cleaned=True), pool)

    async def put(self, bucket: str, key: str, user: str | None, record: dict, data: bytes, name: str | None,
                  seconds: int, bid: int, **wanted: Any) -> dict[str, Any]:
        """Store `data` as the object (bucket, key) for `user`, with `record`'s type, metadata, headers, ETag and
        time: its capability and the capabilities now garbage (the replaced object's)."""
        (answer,) = await self._put_all([SmallPut(bucket, key, user, name, record, data)], seconds, bid,
                                        self._allow, wanted)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def put_group(self, puts: list[SmallPut], seconds: int, bid: int,
                        **wanted: Any) -> list[dict[str, Any] | XscError]:
        """`put` each object, all at once, each as if it had come alone: its answer or the error that refused it,
        in order.  The objects came in one request: each bucket's record is read once for all of them, and their
        files are stored under one market quote (`StorageService.put_many`)."""
        checked: dict[tuple[str, str | None], XscError | None] = {}

        def allow(bucket: str, user: str | None) -> None:
            if (bucket, user) not in checked:
                try:
                    self._allow(bucket, user)
                    checked[bucket, user] = None
                except XscError as err:
                    checked[bucket, user] = err
            refused = checked[bucket, user]
            if refused is not None:
                raise copy.copy(refused)  # each object's own error (its own traceback)

        answers = await self._put_all(puts, seconds, bid, allow, wanted)
        return [a if not isinstance(a, BaseException) or isinstance(a, XscError) else _failed(a) for a in answers]

    def _allow(self, bucket: str, user: str | None) -> None:
        self.index.allow(bucket, user, "write")  # one read of the bucket's record: cheaper here than a pool hop

    async def _put_all(self, puts: list[SmallPut], seconds: int, bid: int, allow: Callable[[str, str | None], None],
                       wanted: dict[str, Any]) -> list[dict[str, Any] | BaseException]:
        """Each object checked (refused alone), the files of those that pass stored together, then each one paid
        for and recorded: its answer, or the exception that failed it."""
        answers: list[dict[str, Any] | BaseException] = [InvalidArgument("not stored")] * len(puts)
        going: list[tuple[int, SmallPut, Callable[[str], dict], _Riding | None]] = []
        for n, p in enumerate(puts):
            try:
                clean = self._checked(p, allow)
            except XscError as err:
                answers[n] = err
                continue

            def stored(cap: str, clean: dict = clean, size: int = len(p.data)) -> dict:
                return {**clean, "parts": [{"cap": cap, "size": size}]}

            # The node's own: nothing to pay once it is stored, so the record is written with the file's.
            own = p.user is None or p.user == names.DEFAULT_USER
            going.append((n, p, stored, _Riding(self.index, p.bucket, p.key, stored) if own else None))
        if not going:
            return answers
        results = await self.files.put_many([Whole(p.data, p.name, riding) for _, p, _, riding in going], seconds,
                                            bid, **wanted)

        paying: dict[str, list[int]] = {}  # user -> the objects (of `going`) its account pays for
        for i, ((n, p, _, riding), put) in enumerate(zip(going, results)):
            if isinstance(put, InsufficientCredit):  # the node's account pays for a put's deals: not the user's
                answers[n] = NodeCreditExhausted.of(put)
            elif isinstance(put, BaseException):
                answers[n] = put
            elif riding is not None:
                try:
                    assert riding.recording is not None  # a put that returns has published its file, and its record
                    answers[n] = {"capability": put["capability"], "garbage": riding.recording.outcome()}
                except Exception as err:  # noqa: BLE001 - this object's own outcome
                    answers[n] = err
            else:
                paying.setdefault(p.user, []).append(i)
        await asyncio.gather(*(self._paid_and_recorded([going[i] for i in objects], [results[i] for i in objects],
                                                       answers) for objects in paying.values()))
        return answers

    async def _paid_and_recorded(self, going: list[tuple[int, SmallPut, Callable[[str], dict], Any]],
                                 puts: list[dict[str, Any]], answers: list[dict[str, Any] | BaseException]) -> None:
        """One user's objects, their files stored: its account pays for each (`UserAccounts.charge_many`, each
        refused alone) before it is recorded; a file not paid for is removed."""
        charges = await self.accounts.charge_many(going[0][1].user, [(put["capability"], put["cost"]) for put in puts],
                                                  fresh=True)

        async def one(n: int, p: SmallPut, stored: Callable[[str], dict], cap: str,
                      charged: dict | BaseException) -> None:
            try:
                if isinstance(charged, BaseException):
                    with contextlib.suppress(XscError):  # else the front's reconciliation removes it: no record names it
                        await self.files.removals.remove(Capability.parse(cap))
                    raise charged
                # Its access judged again as it is recorded: a grant revoked while its file was stored refuses it.
                record = {**stored(cap), "writer": p.user}
                answers[n] = {"capability": cap, "garbage": await self.records.add((p.bucket, p.key, record))}
            except Exception as err:  # noqa: BLE001 - this object's own outcome
                answers[n] = err

        await asyncio.gather(*(one(n, p, stored, put["capability"], charged)
                               for (n, p, stored, _), put, charged in zip(going, puts, charges)))

    @staticmethod
    def _checked(p: SmallPut, allow: Callable[[str, str | None], None]) -> dict:
        """The object's record as it will be stored, refused before anything is: cleaned once, here, not again as it
        is written."""
        if len(p.data) > SMALL_OBJECT:
            raise InvalidArgument(f"an object stored in one request is at most {SMALL_OBJECT:,} bytes, not "
                                  f"{len(p.data):,}", hint="stream a larger one through /v1/store/files")
        names.check_key(p.key)
        clean = records.clean({**p.record, "parts": [{"cap": "", "size": len(p.data)}]})
        allow(p.bucket, p.user)
        return clean


def _failed(err: BaseException) -> XscError:
    """A fault of this node's (its database, ...): this object fails, the others stand."""
    log.error("a small object of a group failed", exc_info=err)
    return XscError("the object was not stored: the node failed; see its log")


__all__ = ["Files", "MAX_GROUP_BYTES", "MAX_GROUP_OBJECTS", "ObjectWriter", "SmallPut", "group_body", "parse_group"]
