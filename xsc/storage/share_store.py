"""The share store: blocks, share metadata and manifests in the node's LevelDB.

Where blocks are: those of a staged upload in a database of their own (`blocks`, on a node: datadir.open_blocks),
where no other record lands, so that a large put's tables span its own blocks only and compactions move them down
whole however many files the node holds; those that ride in a publishing batch (a small upload's) with the records
(`db`).  A block is read from `blocks` first, then `db` (a data dir of one database holds every block there).
A publication syncs `blocks` before its records are written, and a deletion deletes the records first, naming the
blocks in a staging record until they are gone (a full disk that refuses to delete them keeps them until it has room:
`KeptBlocks`).

Visibility and crash safety: blocks are written as they come, but a share only
exists once its metadata record is published, and publishing (metadata,
manifest, capacity counter, removal of the staging record) is one synced write
batch.  Every upload first writes a staging record naming what it will write; on
startup `recover()` deletes the blocks of every upload that never published, so a
`kill -9` at any moment leaves no half-stored share and no leaked capacity.  A small
upload (at most HELD_UPLOAD bytes, while all such uploads hold at most HELD_AT_MOST)
keeps its blocks in memory and writes them with its publish: one synced write in all,
and nothing on disk to recover if it never publishes.  Several uploads publish in one synced write
(`publish_all`: storage/publisher.py groups those that finish while one is written).

Capacity accounting counts block bytes.  `used` (persisted) is the block bytes of
published shares; `reserved` (in memory) is what uploads in progress have written
or may still write.  An upload whose size is known reserves all of it before writing anything.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol


from .. import codec
from .. import keys
from ..db import Database, Error as DatabaseError
from ..errors import DiskFull, NotFound, StorageFull, UploadNotFound
from ..ids import unique_bytes
from ..units import format_size
from .compactor import Compactor
from .core import leases
from .core.merkle import HASH_BYTES

log = logging.getLogger(__name__)

_META_HEADER = struct.Struct(">BBIQQ32s")  # version, share, segments, stored bytes, lease expiry, uploader
HELD_UPLOAD = 64 * 1024  # an upload this small (its known size) keeps its blocks in memory until it publishes
HELD_AT_MOST = 16 * 1024 * 1024  # what all held uploads together may keep in memory; past it, they are staged
# An upload that may write this much fills at least one of LevelDB's memtables (16 MiB) with blocks.
STREAMING_UPLOAD = 16 * 1024 * 1024


@dataclass(frozen=True)
class ShareMeta:
    share: int
    segment_count: int
    stored_bytes: int
    lease_expiry: int  # unix seconds
    uploader: bytes  # public key of the gateway that placed the share: only it may delete or renew
    block_hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return _META_HEADER.pack(1, self.share, self.segment_count, self.stored_bytes, self.lease_expiry,
                                 self.uploader) + b"".join(self.block_hashes)

    @classmethod
    def decode(cls, raw: bytes) -> "ShareMeta":
        _, share, count, stored, lease, uploader = _META_HEADER.unpack_from(raw)
        body = raw[_META_HEADER.size:]
        if len(body) != count * HASH_BYTES:
            raise ValueError("share metadata is truncated")
        hashes = tuple(body[i:i + HASH_BYTES] for i in range(0, len(body), HASH_BYTES))
        return cls(share, count, stored, lease, uploader, hashes)


class Upload:
    """An upload in progress: its staging record (or, `held`, its blocks in memory), its reservation, the shares
    it writes."""

    def __init__(self, store: "ShareStore", upload_id: bytes, storage_index: bytes, shares: tuple[int, ...],
                 reserved: int, held: bool = False, detached: bool = False, fresh: bool = False) -> None:
        self.store, self.id, self.storage_index, self.shares = store, upload_id, storage_index, shares
        self.reserved = reserved
        self.written = 0
        self.held: dict[bytes, bytes] | None = {} if held else None  # block key -> block, written by `publish`
        self.detached = detached  # `ShareStore.detached_upload`: its room is taken when it publishes
        self.fresh = fresh  # of a storage index its put minted (a new random key): it replaces no share

    def put_blocks(self, segment: int, blocks: dict[int, bytes]) -> None:
        """Stage one segment's blocks (invisible until `publish`); thread-safe."""
        size = sum(len(b) for b in blocks.values())
        if not self.detached:
            self.store._charge(self, size)
        if self.held is not None:
            for share, block in blocks.items():
                self.held[keys.block(self.storage_index, share, segment)] = block
            return
        # One LevelDB write per block, not one batch per segment: a batch is first copied into one string, grown as
        # it is filled (6 blocks of 256 KiB: past glibc's 1 MiB mmap threshold, so mapped, faulted in and handed back
        # for every segment).  Staged blocks need no atomicity: until `publish` none is visible, and `recover` or
        # `abort` deletes whatever part of a segment was written.
        for share, block in blocks.items():
            self.store.blocks.put(keys.block(self.storage_index, share, segment), block)
        self.store.unflushed = True


class Rider(Protocol):
    """Records of another owner's that a publication writes in its batch, made as the batch is (a small S3 object's
    record with its file: one synced write for both).  `entries(read)` reads through `read` (the batch so far, then
    the database) and answers what to write (None: a key it deletes); `lock` is its owner's, held from that reading
    until the batch is written."""

    lock: threading.Lock

    def entries(self, read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]: ...


@dataclass
class Publication:
    """What `ShareStore.publish` makes visible of one upload."""

    upload: Upload
    metas: list[ShareMeta]
    manifest: bytes | None = None
    file_record: dict | None = None
    also: dict[bytes, bytes | None] | None = None  # records written with it (None: a key it deletes)
    rider: Rider | None = None

    def added(self, replaced: list[ShareMeta]) -> int:
        """Bytes it adds to `used`, once the shares it replaces are freed."""
        return sum(m.stored_bytes for m in self.metas) - sum(m.stored_bytes for m in replaced)

    def entries(self) -> dict[bytes, bytes | None]:
        """Its records (None: a key it deletes)."""
        si = self.upload.storage_index
        out: dict[bytes, bytes | None] = {}
        for meta in self.metas:
            out[keys.share(si, meta.share)] = meta.encode()
            out[keys.damage(si, meta.share)] = None
        if self.manifest is not None:
            out[keys.manifest(si)] = self.manifest
        if self.file_record is not None:
            out[keys.file(si)] = codec.dumps(self.file_record)
        out.update({**(self.upload.held or {}), **(self.also or {})})
        if not self.upload.detached:
            out[keys.upload(self.upload.id)] = None  # its staging record
        return out


class BlockReader:
    """Blocks of one file read through one LevelDB iterator, made at the first `get` and held until `release` (or
    the end of a `with` block); a `get` after that makes another.  `get` is `ShareStore.get_block` with one copy of
    each block fewer: LevelDB's get copies a block out of its table (mapped, so that is a read of the page cache)
    into a string of its own, which plyvel copies again into bytes, where its iterator points into the table and
    plyvel's copy is the only one.  Blocks sort by segment, then share (keys.py): the next share of the segment just
    read is the iterator's next entry, any other block is sought.  Making an iterator, with its first seek, costs
    about what a segment's extra copies do, so a reader pays where it is held across segments.

    The iterator holds LevelDB's view of the moment it was made, and a reopen of the database (db.py) waits until it
    is released: its holder releases it before it waits for anything.

    A block `db` lacks is looked for in `elsewhere` (ShareStore: the records' database), and once an iterator has
    passed the file's last block here without finding one, every later block only there."""

    def __init__(self, db: Database, si: bytes, elsewhere: Database | None = None) -> None:
        self._db, self._si, self._elsewhere = db, si, elsewhere
        self._it: Any = None  # closes itself once it has passed the file's last block
        self._next: bytes | None = None  # the key the iterator is at: the next share's after each block read
        self._found_here = False
        self._none_here = False

    def get(self, share: int, segment: int) -> bytes | None:
        """The block, or None where there is none."""
        key = keys.block(self._si, share, segment)
        if self._none_here:
            return self._look_elsewhere(key)
        if self._it is None:
            self._it = self._db.iterator(prefix=keys.blocks_of(self._si), fill_cache=False)
            self._next = None
        if key != self._next:
            self._it.seek(key)
        try:
            found, block = next(self._it)
        except StopIteration:  # past the file's last block
            self._it = None
            self._none_here = not self._found_here and self._elsewhere is not None
            return self._look_elsewhere(key)
        if found != key:  # missing: `found` is a later block, and the iterator is past it
            self._next = None
            return self._look_elsewhere(key)
        self._next = keys.block(self._si, share + 1, segment) if share < 255 else None
        self._found_here = True
        return block

    def _look_elsewhere(self, key: bytes) -> bytes | None:
        return self._elsewhere.get(key, fill_cache=False) if self._elsewhere is not None else None

    def release(self) -> None:
        if self._it is not None:
            self._it.close()
            self._it = None

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ShareStore:
    def __init__(self, db: Database, capacity: int, blocks: Database | None = None,
                 compactor: Compactor | None = None) -> None:
        self.db = db
        self.compactor = compactor  # told of the blocks removed from `blocks`, to compact them away
        self.blocks = blocks if blocks is not None else db  # the blocks of staged uploads (see the module's doc)
        self._apart = blocks is not None  # blocks in a database of their own
        self._homes = (self.blocks, db) if self._apart else (db,)  # where a block may be, looked at in order
        self.unflushed = False  # whether staged blocks were written since `blocks` last flushed its memtable here
        self.capacity = capacity
        self._lock = threading.Lock()
        self._uploads: dict[bytes, Upload] = {}
        self.used, self.shares_held = _count_held(db)
        self.file_writes = 0  # counts writes of file records: a reading of them is current while it is unchanged
        _keep_count(db, self.used, self.shares_held)
        self.room = StoreRoom(self)
        self.kept = KeptBlocks(self)  # staged blocks a full disk would not let go of yet

    # --- accounting ----------------------------------------------------------------
    @property
    def reserved(self) -> int:
        """Space held by uploads in progress: what they wrote plus what they may still write.  A reading without
        the lock (the event loop asks on every put and ask, and the lock is held across synced writes): begin_upload
        and _charge decide under it."""
        return sum(u.reserved for u in list(self._uploads.values()))  # list(): one step under the GIL

    def _reserved(self) -> int:
        return sum(u.reserved for u in self._uploads.values())

    def _held_bytes(self) -> int:
        return sum(u.reserved for u in self._uploads.values() if u.held is not None)

    @property
    def free(self) -> int:
        return max(self.capacity - self.used - self.reserved, 0)

    def _refuse(self, needed: int) -> StorageFull:
        free = max(self.capacity - self.used - self._reserved(), 0)  # callers may hold the lock
        return StorageFull(
            f"not enough storage: this needs {format_size(needed)} of block space, "
            f"{format_size(free)} is free of {format_size(self.capacity)}",
            hint="free space with `xsc store rm`, or raise it: xsc config set storage.capacity SIZE, then restart",
            needed=needed, free=free, capacity=self.capacity,
        )

    def check_fits(self, needed: int) -> None:
        """Raise StorageFull unless `needed` more bytes fit now, in the capacity and on the disk (DiskFull): a hint,
        begin_upload decides."""
        if needed > self.free:
            raise self._refuse(needed)
        self.check_disk(needed)

    def check_disk(self, needed: int) -> None:
        """Raise DiskFull unless `needed` more bytes fit on the data dir's disk now (`StoreRoom.on_disk`)."""
        if (room := self.room.on_disk()) is not None and needed > room:
            raise no_room_on_disk(needed, room)

    def _charge(self, upload: Upload, size: int) -> None:
        """Count bytes an upload writes; an upload of unknown size grows its reservation as it goes."""
        with self._lock:
            over = upload.written + size - upload.reserved
            if over > 0:
                if self.used + self._reserved() + over > self.capacity:
                    raise self._refuse(upload.written + size)
                upload.reserved += over
            upload.written += size

    # --- uploads -------------------------------------------------------------------
    def begin_upload(self, storage_index: bytes, shares: tuple[int, ...], expected_bytes: int | None) -> Upload:
        """Reserve space (all of it when the size is known) and write the staging record, synced."""
        upload_id = unique_bytes(16)
        with self._lock:
            if expected_bytes is not None and self.used + self._reserved() + expected_bytes > self.capacity:
                raise self._refuse(expected_bytes)
            # A size said up front that the disk cannot hold is refused now, before a byte of it is read, not as the
            # disk fills up: a stream of unknown size meets the full disk as it writes (DiskFull from files.py).
            if expected_bytes is not None and (room := self.room.on_disk()) is not None and expected_bytes > room:
                raise no_room_on_disk(expected_bytes, room)
            held = expected_bytes is not None and expected_bytes <= HELD_UPLOAD and \
                self._held_bytes() + expected_bytes <= HELD_AT_MOST
            upload = Upload(self, upload_id, storage_index, shares, expected_bytes or 0, held)
            self._uploads[upload_id] = upload
        if held:
            return upload
        if isinstance(self.blocks, Database):  # the disk reserve made in time for the staged uploads under way
            self.blocks.expect(sum(u.reserved - u.written for u in list(self._uploads.values()) if u.held is None))
        self.db.put(keys.upload(upload_id), _staging_record(storage_index, shares), sync=True)
        if self.unflushed and self._apart and (expected_bytes or STREAMING_UPLOAD) >= STREAMING_UPLOAD:
            # The blocks written before this large upload's go into a table of their own: one holding both would
            # span every file stored between the two, and be merged with their tables.
            self.unflushed = False
            self.blocks.compact_range(start=_NO_KEY, stop=_NO_KEY)  # an empty range: only the memtable's flush
        return upload

    def detached_upload(self, storage_index: bytes, shares: tuple[int, ...], size: int, fresh: bool = False) -> Upload:
        """An upload of at most HELD_UPLOAD bytes (`size`) written whole within one request (a file of one segment,
        a whole share): its blocks stay in memory, and its room is taken only as it publishes (`publish_all`
        refuses it then if it does not fit).  Nothing is reserved, staged or locked before: it may be made on the
        event loop, and its memory is the request's own.  `fresh`: the put minted the storage index, so its publish
        looks up no share to replace."""
        assert size <= HELD_UPLOAD
        return Upload(self, unique_bytes(16), storage_index, shares, size, held=True, detached=True, fresh=fresh)

    def publish(self, upload: Upload, metas: list[ShareMeta], manifest: bytes | None = None,
                file_record: dict | None = None, also: dict[bytes, bytes] | None = None) -> None:
        """Make the upload's shares visible, all at once, durably (with `also`, records that must appear
        with them: the terms a holder keeps a share under)."""
        error = self.publish_all([Publication(upload, metas, manifest, file_record, also)])[0]
        if error is not None:
            raise error

    def publish_all(self, publications: list["Publication"]) -> list[Exception | None]:
        """`publish` each of several uploads, in one synced write batch (a group commit): each one's error, None for
        those published.  An upload no longer in progress (aborted meanwhile) is not published; a failed write
        publishes none of them.  A publication whose rider fails to make its records is not published."""
        with self._lock, ExitStack() as riding:
            for lock in {id(p.rider.lock): p.rider.lock for p in publications if p.rider is not None}.values():
                riding.enter_context(lock)
            errors: list[Exception | None] = []
            written: dict[bytes, bytes | None] = {}  # key -> value (None: deleted), in the order of the batch
            used, held, files = self.used, 0, 0

            def read(key: bytes) -> bytes | None:
                return written[key] if key in written else self.db.get(key)

            for p in publications:
                if p.upload.detached:
                    if used + self._reserved() + p.upload.reserved > self.capacity:
                        errors.append(self._refuse(p.upload.reserved))
                        continue
                elif p.upload.id not in self._uploads:
                    errors.append(UploadNotFound("the upload was aborted before it was published"))
                    continue
                try:
                    rides = p.rider.entries(read) if p.rider is not None else {}
                except Exception as err:  # noqa: BLE001 - its publication fails alone (its caller raises it)
                    errors.append(err)
                    continue
                errors.append(None)
                replaced = self._replaced(p, written)
                used += p.added(replaced)
                held += len(p.metas) - len(replaced)
                files += p.file_record is not None
                written.update(p.entries())
                written.update(rides)
            written[keys.STORAGE_USED] = used.to_bytes(8, "big")
            if self._apart and any(p.upload.held is None for p in publications):
                self.blocks.sync()  # staged blocks durable before the records that make them visible
            with self.db.write_batch(sync=True) as batch:  # raises before it writes anything: nothing published
                for key, value in written.items():
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
            self.used = used
            self.file_writes += files
            self.shares_held += held
            for p, error in zip(publications, errors):
                if error is None and not p.upload.detached:
                    del self._uploads[p.upload.id]
            return errors

    def _replaced(self, p: "Publication", written: dict[bytes, bytes | None]) -> list[ShareMeta]:
        """The metadata of the shares `p` replaces (earlier in its group, or on disk)."""
        if p.upload.fresh:
            return []
        out = []
        for m in p.metas:
            key = keys.share(p.upload.storage_index, m.share)
            raw = written[key] if key in written else self.db.get(key)
            if raw:
                out.append(ShareMeta.decode(raw))
        return out

    def abort(self, upload: Upload) -> None:
        """Forget an upload that will not publish: delete what it staged (no more: see `restaged`), release its room."""
        if upload.held is None:
            shares = upload.shares if upload.written else ()
            with self.kept.if_refused({keys.upload(upload.id): (upload.storage_index, shares)}), \
                    self._removing(upload.storage_index, upload.written):
                delete_staged(self, upload.storage_index, shares, keys.upload(upload.id))
        with self._lock:
            self._uploads.pop(upload.id, None)

    def recover(self) -> int:
        """Remove what uploads interrupted by a crash staged; returns how many there were."""
        stale = [(k, codec.loads(v)) for prefix in (keys.UPLOADS, keys.UPLOADS_ABOVE_BLOCKS)
                 for k, v in self.db.iterator(prefix=prefix)]
        for key, record in stale:  # what it staged: not counted; on a full disk, kept to delete once there is room
            si = bytes.fromhex(record["storage_index"])
            with self.kept.if_refused({key: (si, record["shares"])}), self._removing(si, None):
                delete_staged(self, si, record["shares"], key)
        return len(stale)

    def _removing(self, si: bytes, size: int | None) -> AbstractContextManager:
        return self.compactor.removing(keys.blocks_of(si), size) if self.compactor is not None else nullcontext()

    # --- reading -------------------------------------------------------------------
    def manifest(self, si: bytes) -> bytes | None:
        return self.db.get(keys.manifest(si))

    def share_meta(self, si: bytes, share: int) -> ShareMeta | None:
        raw = self.db.get(keys.share(si, share))
        return ShareMeta.decode(raw) if raw else None

    def held_shares(self) -> list[tuple[bytes, int]]:
        """(storage index, share) of every published share, in key order."""
        with self.db.iterator(prefix=keys.SHARES, include_value=False) as it:
            return [keys.split_share(key) for key in it]

    def share_metas(self, si: bytes) -> list[ShareMeta]:
        """Every published share of a storage index this node holds."""
        return [ShareMeta.decode(raw) for _, raw in self.db.iterator(prefix=keys.shares_of(si))]

    def get_block(self, si: bytes, share: int, segment: int) -> bytes | None:
        # Blocks are read once per get: caching them would only evict the index and metadata.
        key = keys.block(si, share, segment)
        for db in self._homes:
            block = db.get(key, fill_cache=False)
            if block is not None:
                return block
        return None

    def block_reader(self, si: bytes) -> BlockReader:
        """Several blocks of one file, read through one LevelDB iterator (`BlockReader`: release it when done)."""
        return BlockReader(self.blocks, si, self.db if self._apart else None)

    def file_record(self, si: bytes) -> dict | None:
        raw = self.db.get(keys.file(si))
        return codec.loads(raw) if raw else None

    def set_placement(self, si: bytes, placement: list[str], batch: Any = None,
                      left_behind: dict[int, str] | None = None, lease_expiry: int = 0) -> None:
        """Record where a file's shares are now (after a repair moved some); in `batch`, if given (its writer's).  The
        copies noted to delete (`note_strays`) it holds are noted no more, and those `left_behind` (share -> the node
        it moved off, leased until `lease_expiry`) are noted, unless their share's is already."""
        record = self.file_record(si)
        if record is not None:
            record["placement"] = placement
            self.file_writes += 1
        raw = self.db.get(keys.strays(si))
        note = codec.loads(raw) if raw else {"shares": {}, "lease_expiry": 0}
        left = {s: node for s, node in note["shares"].items()
                if not (int(s) < len(placement) and placement[int(s)] == node)}
        for share, node in (left_behind or {}).items():
            left.setdefault(str(share), node)
        with self.db.write_batch(sync=True) if batch is None else nullcontext(batch) as writing:
            if record is not None:
                writing.put(keys.file(si), codec.dumps(record))
            if left:
                lease = max(note["lease_expiry"], lease_expiry if left_behind else 0)
                writing.put(keys.strays(si), codec.dumps({**note, "shares": left, "lease_expiry": lease}))
            elif raw:
                writing.delete(keys.strays(si))

    # --- copies on other nodes to delete -------------------------------------------------
    def note_strays(self, si: bytes, shares: dict[int, str], lease_expiry: int, sync: bool = True) -> None:
        """Copies of these shares on these nodes (share -> node), leased until `lease_expiry`, are to be deleted
        there unless a placement holds them: those a repair or a put is about to commit (a crash before the placement
        or the file is written leaves them under no deal), those a removal could not delete.  Added to any noted
        before; durably (`sync`: against a machine's crash too)."""
        with self._lock:
            raw = self.db.get(keys.strays(si))
            note = codec.loads(raw) if raw else {"shares": {}, "lease_expiry": 0}
            note["shares"].update({str(s): node for s, node in shares.items()})
            note["lease_expiry"] = max(note["lease_expiry"], lease_expiry)
            self.db.put(keys.strays(si), codec.dumps(note), sync=sync)

    @staticmethod
    def strays_placed(si: bytes, left: dict[int, str] | None = None, lease_expiry: int = 0
                      ) -> dict[bytes, bytes | None]:
        """What a publication writes (its `also`) to drop the copies of `si` noted to delete: they are placed, but
        those `left` (share -> node: a put's shares whose holders failed them at the commit, which may hold them)."""
        if left:
            return {keys.strays(si): codec.dumps({"shares": {str(s): node for s, node in left.items()},
                                                  "lease_expiry": lease_expiry})}
        return {keys.strays(si): None}

    @staticmethod
    def damage_entries(si: bytes, reasons: dict[int, str]) -> dict[bytes, bytes]:
        """What a publication writes (its `also`) to mark these shares of `si` damaged here (`mark_damaged`)."""
        return {keys.damage(si, share): reason.encode() for share, reason in reasons.items()}

    def strays(self) -> list[tuple[bytes, dict[int, str], int]]:
        """The copies noted (`note_strays`): (storage index, {share: node}, their lease)."""
        out = []
        for key, raw in self.db.iterator(prefix=keys.STRAYS):
            note = codec.loads(raw)
            out.append((key[len(keys.STRAYS):], {int(s): node for s, node in note["shares"].items()},
                        note["lease_expiry"]))
        return out

    def placement_of(self, si: bytes) -> list[str] | None:
        """Where the record of a file this node lists says its shares are (None: no such file, or being removed)."""
        raw = self.db.get(keys.file(si))
        return codec.loads(raw).get("placement") if raw else None

    def strays_settled(self, si: bytes) -> None:
        """Every copy noted of `si` is placed or released."""
        self.db.delete(keys.strays(si), sync=True)

    def files(self) -> Iterator[dict]:
        for _, raw in self.db.iterator(prefix=keys.FILES):
            yield codec.loads(raw)

    # --- damage --------------------------------------------------------------------
    def mark_damaged(self, si: bytes, share: int, reason: str, node: str | None = None) -> None:
        """`node`: the node the share was found damaged on, when it is another's: the mark holds for the share there
        only (a repair that moved it, or, for a file another node placed, its uploader's, leaves it behind)."""
        self.db.put(keys.damage(si, share), reason.encode() if node is None
                    else codec.dumps({"node": node, "reason": reason}))

    def clear_damage(self, si: bytes, share: int) -> None:
        self.db.delete(keys.damage(si, share), sync=True)

    def put_repaired_blocks(self, si: bytes, segment: int, blocks: dict[int, bytes]) -> None:
        """Overwrite blocks of published shares with rebuilt ones (already checked against their hashes): in
        `blocks`, which is read first."""
        with self.blocks.write_batch(sync=True) as batch:
            for share, block in blocks.items():
                batch.put(keys.block(si, share, segment), block)

    def damaged_files(self) -> list[bytes]:
        """The storage indexes of the files this node placed with a share marked damaged."""
        with self.db.iterator(prefix=keys.DAMAGE, include_value=False) as marks:
            marked = {keys.damaged_storage_index(key) for key in marks}
        return sorted(si for si in marked if self.db.get(keys.file(si)) is not None)

    def damaged(self, si: bytes) -> dict[int, str]:
        return {share: reason for share, (reason, _) in self.damage_marks(si).items()}

    def damage_marks(self, si: bytes) -> dict[int, tuple[str, str | None]]:
        """share -> (why it is known damaged, the node it was found damaged on: None for here or not said)."""
        prefix = keys.damage_of(si)
        return {k[len(prefix)]: _damage_mark(v) for k, v in self.db.iterator(prefix=prefix)}

    # --- leases --------------------------------------------------------------------
    def renew(self, si: bytes, lease_expiry: int, shares: tuple[int, ...] | None = None,
              remote_leases: dict[int, int] | None = None) -> dict[int, tuple[int, int]]:
        """Extend the leases of the shares of `si` held here (all, or those in `shares`) to `lease_expiry`,
        never shortening one; with `remote_leases` (share -> lease its holder reported) the file record's
        leases follow too.  One synced batch.  Returns {share: (previous lease, new lease)} of the shares
        held here."""
        with self._lock:
            metas = [m for m in self.share_metas(si) if shares is None or m.share in shares]
            done = {m.share: (m.lease_expiry, leases.renewed(m.lease_expiry, lease_expiry)) for m in metas}
            with self.db.write_batch(sync=True) as batch:
                for meta in metas:
                    if done[meta.share][1] != meta.lease_expiry:
                        batch.put(keys.share(si, meta.share),
                                  replace(meta, lease_expiry=done[meta.share][1]).encode())
                record = self.file_record(si)
                if record is not None and remote_leases is not None:
                    count = len(record.get("placement") or ()) or len(done) + len(remote_leases)
                    known = {s: new for s, (_, new) in done.items() if s < count}
                    record["leases"] = leases.file_leases(record.get("leases"), {**remote_leases, **known}, count)
                    record["lease_expiry"] = min(record["leases"])
                    batch.put(keys.file(si), codec.dumps(record))
            self.file_writes += 1
            return done

    def expired_shares(self, before: int) -> list[tuple[bytes, int]]:
        """(storage index, share) of every share held here whose lease ended before `before`, in key order."""
        found = []
        with self.db.iterator(prefix=keys.SHARES) as it:
            for key, raw in it:
                if _META_HEADER.unpack_from(raw)[4] < before:  # the header alone: no need for the hashes
                    found.append(keys.split_share(key))
        return found

    def collect_share(self, si: bytes, share: int, before: int) -> ShareMeta | None:
        """Delete a share whose lease ended before `before` (checked again here: a renewal may have come
        since it was listed) with its blocks, damage mark, and the manifest if nothing needs it any more;
        one synced batch that also sets the used counter.  Returns the share deleted, if it was."""
        with self._lock:
            meta = self.share_meta(si, share)
            if meta is None or meta.lease_expiry >= before:
                return None
            with self._deleting(si, [meta]) as batch:
                batch.delete(keys.damage(si, share))
                if self.db.get(keys.file(si)) is None and not any(
                        s != share for s in self._shares_here(si)):
                    batch.delete(keys.manifest(si))
                batch.put(keys.STORAGE_USED, (self.used - meta.stored_bytes).to_bytes(8, "big"))
            self.used -= meta.stored_bytes
            self.shares_held -= 1
            return meta

    def expired_files(self, before: int) -> list[bytes]:
        """Storage indexes of the files this node uploaded whose every share's lease ended before `before`."""
        return [bytes.fromhex(r["storage_index"]) for r in self.files() if leases.file_expired(r, before)]

    def collect_file(self, si: bytes, before: int) -> dict | None:
        """Forget a file this node uploaded once every share's lease ended before `before`: its record,
        manifest, damage marks and any share of it still here (only if that share's lease ended too).
        One synced batch.  Returns the record forgotten, if it was."""
        with self._lock:
            record = self.file_record(si)
            metas = self.share_metas(si)
            if record is None or not leases.file_expired(record, before) \
                    or any(m.lease_expiry >= before for m in metas):
                return None
            freed = sum(m.stored_bytes for m in metas)
            with self._deleting(si, metas) as batch:
                for key in self.db.iterator(prefix=keys.damage_of(si), include_value=False):
                    batch.delete(key)
                batch.delete(keys.manifest(si))
                batch.delete(keys.file(si))
                batch.put(keys.STORAGE_USED, (self.used - freed).to_bytes(8, "big"))
            self.used -= freed
            self.shares_held -= len(metas)
            self.file_writes += 1
            return record

    def _shares_here(self, si: bytes) -> list[int]:
        with self.db.iterator(prefix=keys.shares_of(si), include_value=False) as it:
            return [keys.split_share(key)[1] for key in it]

    def _deleting(self, si: bytes, metas: list[ShareMeta]) -> AbstractContextManager[Any]:
        return deleting(self, {si: metas})

    # --- deleting ------------------------------------------------------------------
    def delete_share(self, si: bytes, share: int) -> bool:
        """Remove one share (blocks and metadata) and give its space back."""
        return self._delete([si], (share,), forget_file=False) > 0

    def forget_manifest_if_unused(self, si: bytes) -> bool:
        """Drop the manifest of a storage index once no share of it nor any file record needs it."""
        with self._lock, self.db.iterator(prefix=keys.shares_of(si), include_value=False) as shares:
            if next(shares, None) is not None or self.db.get(keys.file(si)) is not None \
                    or self.db.get(keys.manifest(si)) is None:
                return False
            self.db.delete(keys.manifest(si), sync=True)
            return True

    def begin_removal(self, si: bytes, at: int) -> dict:
        """Take a file out of the listing, durably, keeping its record (and `at`, when it was removed) under
        `removing` until delete_file: a removal cut short by a crash is finished after the restart
        (`removals`), so no file is ever listed with its shares half deleted.  Returns the record."""
        if not self.begin_removals([si], at, {}):
            raise NotFound("this node holds no file with that capability")
        return codec.loads(self.db.get(keys.removing(si)))

    def begin_removals(self, storage_indexes: list[bytes], at: int, also: dict[bytes, bytes | None]) -> bool:
        """`begin_removal` of those listed, in one synced write with `also`; whether any was listed."""
        with self._lock:
            entries: dict[bytes, bytes | None] = {}  # (None: a key deleted)
            for si in storage_indexes:
                entries.update(removal_entries(lambda k: entries[k] if k in entries else self.db.get(k), si, at))
            with self.db.write_batch(sync=True) as batch:
                for key, value in {**entries, **also}.items():
                    batch.delete(key) if value is None else batch.put(key, value)
            self.file_writes += 1
            return bool(entries)

    def known_file(self, si: bytes) -> bool:
        """Whether this node has a record of the file `si` it placed: listed, or its removal not finished."""
        return self.db.get(keys.file(si)) is not None or self.db.get(keys.removing(si)) is not None

    def removals(self) -> list[dict]:
        """The records of files whose removal began and has not finished (begin_removal)."""
        return [codec.loads(raw) for _, raw in self.db.iterator(prefix=keys.REMOVALS)]

    def delete_file(self, si: bytes) -> None:
        """Delete a file's shares held here, its manifest, and its record (listed, or being removed)."""
        if self.manifest(si) is None and self.file_record(si) is None and self.db.get(keys.removing(si)) is None:
            raise NotFound("this node holds no file with that capability")
        self.delete_files([si])

    def delete_files(self, sis: list[bytes]) -> None:
        """`delete_file` of each of `sis` (one it holds nothing of: nothing), in one synced write of the records and,
        after it, one of the blocks (`deleting`): a removal of many files writes per batch, not per file."""
        self._delete(sis, None, forget_file=True)

    def _delete(self, sis: list[bytes], shares: tuple[int, ...] | None, *, forget_file: bool) -> int:
        self.kept.free()  # a delete may find the room a full disk lacked before
        with self._lock:  # (`shares` None: every share of each held here)
            metas = {si: [m for s in (self._shares_here(si) if shares is None else shares)
                          if (m := self.share_meta(si, s))] for si in sis}
            freed, count = sum(m.stored_bytes for ms in metas.values() for m in ms), sum(map(len, metas.values()))
            with deleting(self, metas) as batch:
                for si in sis if forget_file else ():
                    for key in (keys.manifest(si), keys.file(si), keys.removing(si),
                                *self.db.iterator(prefix=keys.damage_of(si), include_value=False)):
                        batch.delete(key)
                batch.put(keys.STORAGE_USED, (self.used - freed).to_bytes(8, "big"))
            self.used -= freed
            self.shares_held -= count
            self.file_writes += forget_file
            return count


@contextmanager
def deleting(store: ShareStore, metas: dict[bytes, list[ShareMeta]]) -> Iterator[Any]:
    """A synced batch of the records that deletes the shares of `metas` (per storage index; and what its caller adds
    to it); their blocks in `blocks` are deleted once it is written, in one synced batch, named meanwhile by a staging
    record per storage index (so that `recover` deletes them after a crash between the two)."""
    records = {si: keys.upload(unique_bytes(16)) for si, ms in metas.items() if ms} if store._apart else {}
    with store.db.write_batch(sync=True) as batch:
        for si, ms in metas.items():
            for meta in ms:
                for segment in range(meta.segment_count):
                    batch.delete(keys.block(si, meta.share, segment))  # a block that rode in its publication
                batch.delete(keys.share(si, meta.share))
            if si in records:
                batch.put(records[si], _staging_record(si, [m.share for m in ms]))
        yield batch
    if records:  # the shares are gone (their bytes no longer used), their blocks once deleted
        with store.kept.if_refused({record: (si, [m.share for m in metas[si]]) for si, record in records.items()}):
            with ExitStack() as removing:
                for si in records:
                    removing.enter_context(store._removing(si, sum(m.stored_bytes for m in metas[si])))
                with store.blocks.write_batch(sync=True) as blocks:
                    for si in records:
                        for meta in metas[si]:
                            for segment in range(meta.segment_count):
                                blocks.delete(keys.block(si, meta.share, segment))
            with store.db.write_batch() as done:
                for record in records.values():
                    done.delete(record)


_NO_KEY = b"\xff\xff"  # above every key: a compaction of it alone has nothing to compact


def reclaim(store: ShareStore, storage_indexes: list[bytes]) -> bool:
    """On a nearly full disk, compact the blocks of these storage indexes away now, in both databases (LevelDB frees
    the space of deleted keys only when it compacts them).  True if it did."""
    low = getattr(store.db, "low_on_space", None)  # xsc.db.Database; a bare Database in some tests
    if low is None or not storage_indexes or not low():
        return False
    for db in store._homes:  # flushed first: see compactor.py
        db.compact_range(start=_NO_KEY, stop=_NO_KEY)
    for si in sorted(set(storage_indexes)):
        prefix = keys.blocks_of(si)
        for db in store._homes:
            db.compact_range(start=prefix, stop=prefix + b"\xff" * 8)
    return True


def delete_staged(store: ShareStore, si: bytes, shares: tuple[int, ...] | list[int], record_key: bytes) -> None:
    """Delete the blocks of `si`'s `shares` the staging record `record_key` names, then the record."""
    # Never delete a published share's blocks.  The blocks go before the record naming them (the records'
    # database last): after a crash between, `recover` deletes them again.
    staged = {s for s in shares if store.db.get(keys.share(si, s)) is None}
    for db in store._homes:
        with db.write_batch(sync=True) as batch:
            if staged:
                for key in db.iterator(prefix=keys.blocks_of(si), include_value=False, fill_cache=False):
                    if keys.block_share(key) in staged:
                        batch.delete(key)
            if db is store.db:
                batch.delete(record_key)


def _count_held(db: Database) -> tuple[int, int]:
    """(bytes used, shares) of the published shares, counted from their records: the share records are what a share
    is, so the count of used bytes kept beside them is made again from them as the store opens.  One pass over the
    share records (as counting the shares took anyway), each one's header read: the records of N shares of S segments
    hold N x (54 + 32 S) bytes (a block's hash per segment: with 1 MiB segments, 1/8,192 of the blocks they
    describe)."""
    used = held = 0
    with db.iterator(prefix=keys.SHARES, include_key=False) as it:
        for raw in it:
            used += _META_HEADER.unpack_from(raw)[3]
            held += 1
    return used, held


def _keep_count(db: Database, used: int, shares: int) -> None:
    """Keep the count of used bytes the records say (`_count_held`) where one kept before says otherwise (a count
    left higher than its shares, a data dir's count of a node that counted wrong), and say so."""
    raw = db.get(keys.STORAGE_USED)
    kept = int.from_bytes(raw, "big") if raw else 0
    if kept == used:
        return
    log.warning("the data dir's count of used bytes said %s, its %d shares hold %s: counted again from them",
                f"{kept:,}", shares, f"{used:,}")
    try:  # not synced: every start counts it again, and every later publication or deletion writes it whole
        db.put(keys.STORAGE_USED, used.to_bytes(8, "big"))
    except (DatabaseError, OSError) as err:  # a full disk: written with the next publication or deletion
        log.warning("could not write the count of used bytes again now (%s)", err)


def no_room_on_disk(needed: int, room: int) -> DiskFull:
    """The refusal of `needed` bytes of blocks where the data dir's disk can take `room` more (`StoreRoom.on_disk`)."""
    return DiskFull(
        f"not enough room on the data dir's disk: this needs {format_size(needed)} of block space, the disk can "
        f"take {format_size(room)} more, beside the reserve it keeps for deletes",
        hint="free space on that disk, or put it through another node", needed=needed, disk_room=room)


class StoreRoom:
    """What a share store can still take as its data dir's disk bounds it: the store's own accounting
    (`ShareStore.free`) counts in its capacity alone, which may be more than the disk holds."""

    def __init__(self, store: ShareStore) -> None:
        self.store = store

    def on_disk(self) -> int | None:
        """Block bytes the data dir's disk can still take: its room (`Database.room`: free, less the reserve kept for
        deletes) less what the uploads in progress reserved and have not written to it yet; None where it cannot be
        read (a store on a bare LevelDB, a disk statvfs cannot read)."""
        store = self.store
        room = store.blocks.room() if isinstance(store.blocks, Database) else None
        if room is None:
            return None
        coming = sum(u.reserved - (u.written if u.held is None else 0) for u in list(store._uploads.values()))
        return max(room - coming, 0)

    def holdable(self) -> int:
        """Block bytes the store can hold in all, what it holds and has reserved included: storage.capacity, bounded
        by what it holds plus the room its disk has left (`on_disk`), that room rounded down to a thousandth of the
        capacity or of the room, the smaller (1 MiB at least), so that what a node offers is not made again at every
        write to its disk."""
        store, room = self.store, self.on_disk()
        if room is None:
            return store.capacity
        step = max(min(store.capacity, room) // 1000, 1 << 20)  # or of a disk far smaller than the capacity
        return min(store.capacity, store.used + store.reserved + room // step * step)

    def usage(self) -> tuple[int, int]:
        """(block bytes in use: held and reserved, `holdable`): what the market offers is the difference."""
        holdable = self.holdable()
        return min(self.store.used + self.store.reserved, holdable), holdable

    def offerable(self) -> int:
        """Block bytes the store can take more of now: its `free`, bounded by the room its disk has left."""
        used, holdable = self.usage()
        return holdable - used


class KeptBlocks:
    """Staged blocks whose deletion a full disk refused (an aborted upload's, a deleted share's), named by their staging
    record: the records already say what the node holds and uses, so the delete or abort goes on, and the blocks are
    deleted once the disk has room (at the next delete or `storage.gc_interval`; `recover` at a start does it too)."""

    def __init__(self, store: ShareStore) -> None:
        self.store = store
        self._kept: dict[bytes, tuple[bytes, list[int]]] = {}  # staging record key -> (storage index, shares)

    @contextmanager
    def if_refused(self, staged: dict[bytes, tuple[bytes, Any]]) -> Iterator[None]:
        """Keep the blocks `staged` names (staging record key: its storage index and shares) to delete later if their
        deletion in the block fails in the database."""
        try:
            yield
        except DatabaseError as err:
            for record_key, (si, shares) in staged.items():
                if record_key not in self._kept:
                    log.warning("the staged blocks of %s stay on disk until it has room (%s): deleted then", si.hex(),
                                err)
                self._kept[record_key] = (si, list(shares))

    def free(self) -> int:
        """Delete the blocks kept, while the disk has room; how many uploads' or deletions' were.  Blocking."""
        freed = 0
        for key, (si, shares) in list(self._kept.items()):
            try:
                with self.store._removing(si, None):
                    delete_staged(self.store, si, shares, key)
            except DatabaseError:
                break  # the disk is still full: the next call tries again
            self._kept.pop(key, None)
            freed += 1
        if freed:
            log.info("deleted the staged blocks a full disk had kept (%d uploads or deletions)", freed)
        return freed


def removal_entries(read: Callable[[bytes], bytes | None], si: bytes, at: int) -> dict[bytes, bytes | None]:
    """What takes the listed file `si` out of the listing as `ShareStore.begin_removal` does (None: a key deleted),
    read through `read`; nothing if it is not listed.  A publication's rider writes them in its batch, under the
    store's lock."""
    raw = read(keys.file(si))
    if raw is None:
        return {}
    return {keys.file(si): None, keys.removing(si): codec.dumps({**codec.loads(raw), "removed_at": at})}


@contextmanager
def placing(store: ShareStore, si: bytes, capability: str | None) -> Iterator[None]:
    """Hold `store`'s records while a repair writes where a file's shares are now (and their deals), once it is known
    the file is still to be kept: this node's own file (`capability`) listed under it, and no file of `si` being
    removed here (another node's file too).  A removal begins under the same lock (`begin_removals`, a publication's
    rider), so none begins between the look and the write: a repair's placement never outlives its file's removal.
    NotFound if the file is gone or going."""
    with store._lock:
        record = store.file_record(si)
        if store.db.get(keys.removing(si)) is not None or capability is not None and (
                record is None or record.get("capability") != capability):
            raise NotFound("the file was removed while it was being repaired: nothing the repair rebuilt was kept",
                           hint="`xsc store ls` lists the files this node uploaded")
        yield


def writing(store: ShareStore, si: bytes, share: int) -> bool:
    """Whether an upload in progress here stages blocks under the keys of share `share` of `si` (this node's own put or
    repair writing its shares here, or a holder's upload of it)."""
    with store._lock:
        return any(u.storage_index == si and share in u.shares for u in store._uploads.values())


def restaged(store: ShareStore, upload: Upload, si: bytes) -> Upload:
    """What `upload` staged under a storage index of its own (holder.py: a share's upload begun beside another
    one) staged again under `si`'s keys, by an upload that takes over its reservation; `upload` is aborted."""
    with store._lock:
        reserved, upload.reserved = upload.reserved, 0
    try:
        moved = store.begin_upload(si, upload.shares, reserved)
    except BaseException:
        with store._lock:
            upload.reserved = reserved
        raise
    try:
        with nullcontext(upload.held.items()) if upload.held is not None else \
                store.blocks.iterator(prefix=keys.blocks_of(upload.storage_index), fill_cache=False) as staged:
            for key, block in staged:
                moved.put_blocks(keys.block_segment(key), {keys.block_share(key): block})
    except BaseException:
        store.abort(moved)
        raise
    store.abort(upload)
    return moved


def _damage_mark(raw: bytes) -> tuple[str, str | None]:
    if raw.startswith(b"{"):
        mark = codec.loads(raw)
        return str(mark["reason"]), mark["node"]
    return raw.decode(), None


def _staging_record(si: bytes, shares: tuple[int, ...] | list[int]) -> bytes:
    """What a staging record says: the storage index and shares whose blocks `recover` deletes unless published."""
    return codec.dumps({"storage_index": si.hex(), "shares": list(shares), "started": int(time.time())})
