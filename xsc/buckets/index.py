"""The bucket index: the user's map (bucket, key) -> the XSC files holding an object, in the node's LevelDB.

An object record is JSON: `parts` (the ordered capabilities and sizes of the files whose concatenation
is the object: one for a PutObject, N for a completed multipart upload, each with its checksum where the object's is
COMPOSITE, made of theirs), `size`, `etag`,
`content_type`, `metadata` (x-amz-meta-*), `headers` (Cache-Control, Content-Disposition, ... as stored),
`modified` (unix seconds).  A record to be written may carry a `condition` (If-None-Match: *, If-Match: ETAG),
checked under the index's lock as it is written and never stored: a write whose condition no longer holds is
ConditionalConflict, its files garbage.  It may carry its `writer` too, the user it is written for, whose access to
the bucket is judged the same way (a grant revoked while its file was stored: Forbidden, its files garbage).  A
refused record's files (that, its bucket gone, its key over S3's bound, a part's upload ended meanwhile), those no
other record refers to, are marked in the refusal's own write and named in it (`garbage`), for the front to remove at once; a front that dies first leaves the marks to its
next reconciliation.  What the user paid for them is owed back in that write (`refused`; refunds.py pays it).  A bucket record is `created`, its `owner` (an
S3 user of the front) and the `grants` its owner gave other users ({user: "read" | "write"}); `checked` runs an
operation once the user the front acts for may do it (None: the node's owner, who may do anything).  Every change
is one synced write batch, so a crash leaves either the old state or the new, never a mix:

- an overwrite writes the new record and, in the same batch, marks the old record's files as garbage;
  the S3 front then removes those files from the store (their deals end) and clears the marks.  A crash
  in between leaves marks that the next front start clears (`garbage`, `forget_garbage`).
- a part is recorded when its file is complete; Complete turns the upload's parts into one object record
  and marks the parts it did not use as garbage; Abort marks them all.
- a file the front stored but could not record (the node died in between) is found by `reconcile`: the
  front names its files `s3:...` and asks which of them no record refers to, each judged by its o/h/ entry (below).
- each file a record refers to has an entry (o/h/) naming that record, written in the record's own batch; no two
  records refer to one file (each write stores a file of its own), save the objects a watch writes from the outputs
  of one job (datums whose objects hold the same bytes: compute/watches.py), which the write notes as sharing them
  (o/s/, as below); and an import leaves out a record whose file
  another record refers to (`restored`): deleting it would remove that record's file.  `index_holders` gives the
  records of a store written before the entries were kept theirs, once.  A store whose imports did not leave such
  records out may hold files two records share, the entry naming one: `index_shared` finds them once and notes
  every record that shared each (o/s/), so that a file is marked garbage only once none of them refers to it
  (`release`, on every path that lets a record's file go).
- an upload left unfinished for `upload_expiry` seconds is aborted by `expire_uploads` (a batch per
  EXPIRED_AT_ONCE uploads: their records go and their parts are marked garbage), which the front asks for as it
  reconciles.  The multipart uploads are uploads.py's (`Uploads`, a mixin of `S3Index`).

What one user may make the node keep is bounded: the buckets it owns (`max_buckets`, TooManyBuckets) and its
multipart uploads in progress (`max_uploads`, TooManyUploads).  Each user's buckets are counted from its own o/y/
entries once, as its bound is first judged; its uploads are counted in o/n/ entries written with them (uploads.py).
Both are kept up by the changes here, which are the only writes of bucket and upload records.

Synchronous (LevelDB); the node's routes run it in the CPU pool.  One lock serialises the
read-modify-write changes.  Nothing here speaks HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator


from .. import codec
from .. import keys
from ..db import Database
from ..errors import (BucketNotEmpty, BucketTaken, ConditionalConflict, Conflict, Forbidden, InvalidArgument,
                      InvalidBucketName, NoSuchBucket, NoSuchKey, NotFound, TooManyBuckets, TooManyUploads, XscError, quoted_id)
from ..units import counted
from .core import listing, names, records
from .entries import (apply, caps_of, charged_files, charges_of, given_once, holds, owe, release, settled, share,
                      shared_keys, stored_name, write_entries)
from .marks import FileMarks
from .uploads import MAX_UPLOADS, UPLOAD_EXPIRY, Uploads, by_age, by_key, index_ages, index_uploads, parts_of

LEVELS = {"read": 1, "write": 2, "owner": 3}  # what a user may do with a bucket: each level includes those below
INITIATOR = names.INITIATOR
log = logging.getLogger(__name__)
MAX_BUCKETS = 10_000  # buckets one user may own, as an AWS account (node.s3_max_buckets)


def _dump(value: Any) -> bytes:
    return codec.dumps(value)


class S3Index(Uploads):
    def __init__(self, db: Database, *, min_part_size: int = names.MIN_PART_SIZE, max_buckets: int = MAX_BUCKETS,
                 max_uploads: int = MAX_UPLOADS, upload_expiry: float = UPLOAD_EXPIRY, clock=time.time,
                 store: Any = None, marks: FileMarks | None = None) -> None:
        self.db = db
        self.store = store  # the node's ShareStore, to which charges are held (its file_record); None: none to hold to
        # The front's marks (its data dir's key): a file a charge or an import names is the front's only if the tag of
        # the name the store lists it under checks (None: no name is).
        self.marks = marks
        self.min_part_size = min_part_size
        self.max_buckets, self.max_uploads, self.upload_expiry = max_buckets, max_uploads, upload_expiry
        self.clock = clock
        self._lock = threading.RLock()  # (reentrant: `checked` holds it across a change that takes it)
        self._counted: tuple[Counter, Counter] | None = None  # each user's buckets and uploads (`_counts`)
        self.on_change: list[Callable[[str], None]] = []  # (bucket): an object was written or deleted there
        self.on_owed: list[Callable[[], None]] = []  # a write refused after its charge: a refund may be owed
        index_holders(self)  # once, over a store written before o/h/ was kept: before any write or import reads it
        index_shared(self)  # once, after it: the files records share (imported by a node that did not leave them out)
        index_uploads(self)  # once, over a store written before o/k/ was kept
        index_ages(self)  # once, over a store written before o/t/, o/n/ and o/d/ were kept
        index_bucket_users(self)  # once, over a store written before o/y/ was kept
        # o/s/ entries are written by index_shared, and by a write that makes a second record refer to a file.
        self._shared = any(True for _ in db.iterator(prefix=keys.OBJECT_SHARED, include_value=False))
        index_charges(self)  # the charges a crash left between their transfer and `charged`

    # --- buckets -----------------------------------------------------------------
    def buckets(self, user: str | None = None) -> list[dict]:
        """Every bucket (for a user: those it owns or was granted, read from its o/y/ entries), with its owner.  One
        whose record was made at 0 (only an import writes it: an export of a record that kept no time) is listed
        `created` None: when it was made is not known, and 1970 would be read as a date."""
        if user is None:
            found = _buckets(self.db)
        else:
            prefix, found = keys.object_buckets_of_user(user), []
            for entry in self.db.iterator(prefix=prefix, include_value=False):
                with contextlib.suppress(NoSuchBucket):  # (deleted as this is read)
                    found.append(self.bucket(entry[len(prefix):].decode()))
        return [{**b, "created": b.get("created") or None} for b in found]

    def bucket(self, name: str) -> dict:
        raw = self.db.get(keys.object_bucket(name))
        if raw is None:
            raise NoSuchBucket(f"no bucket named {quoted_id(name)}", bucket=name,
                               hint=f"make it: xsc s3 mb {_bucket_or(name)}; xsc s3 buckets lists them")
        return {"name": name, "owner": names.DEFAULT_USER, "grants": {}, **codec.loads(raw)}

    def allow(self, name: str, user: str | None, need: str) -> dict:
        """The bucket, if `user` may `need` it (read, write, owner); else AccessDenied (Forbidden)."""
        record = self.bucket(name)
        _judge(name, record, user, need)
        return record

    def checked(self, bucket: str, user: str | None, need: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), once `user` may `need` the bucket.  Anything but a read is judged and made under the
        index's lock (which fn takes again), so that a grant revoked meanwhile lands before the check or after fn."""
        with self._lock if need != "read" else contextlib.nullcontext():
            self.allow(bucket, user, need)
            return fn(*args, **kwargs)

    def checked_upload(self, upload_id: str, user: str | None, need: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), once `user` may `need` the bucket of the upload (or of the object it completed).
        `need` INITIATOR, what S3 lets list an upload's parts and abort it by default: the bucket's owner, or the user
        who began the upload while it may still read the bucket; not another user the bucket's owner let write.  Under
        the index's lock, as `checked`'s changes."""
        with self._lock:
            return self._checked_upload(upload_id, user, need, fn, *args, **kwargs)

    def _checked_upload(self, upload_id: str, user: str | None, need: str, fn, *args, **kwargs):
        raw = self.db.get(keys.object_upload(upload_id)) if upload_id.isalnum() else None
        done = self.db.get(keys.object_completed(upload_id)) if raw is None and upload_id.isalnum() else None
        if raw is None and done is None:
            return fn(*args, **kwargs)
        upload = codec.loads(raw or done)
        if need != INITIATOR:
            self.allow(upload["bucket"], user, need)
            return fn(*args, **kwargs)
        record = self.allow(upload["bucket"], user, "read")
        if user is not None and user != record["owner"] and raw is not None and user != self._initiator(upload):
            raise Forbidden(f"user {user!r} did not begin this upload: only the user who did and the bucket's owner "
                            f"{record['owner']!r} list its parts or abort it", bucket=upload["bucket"],
                            hint="ListMultipartUploads names who began each upload")
        return fn(*args, **kwargs)

    def create_bucket(self, name: str, user: str | None = None) -> dict:
        """Create a bucket owned by `user`: its record, `new` False where it was one's own already (S3 answers that 200
        in us-east-1, 409 BucketAlreadyOwnedByYou elsewhere: the front says which)."""
        names.check_bucket(name)
        owner = user or names.DEFAULT_USER
        with self._lock:
            if self.db.get(keys.object_bucket(name)) is not None:
                record = self.bucket(name)
                if record["owner"] != owner:
                    raise BucketTaken(f"the bucket name {name!r} is taken by another user", bucket=name)
                return {**record, "new": False}
            buckets, _ = self._counts()
            if buckets[owner] >= self.max_buckets:
                raise TooManyBuckets(f"user {owner!r} owns {buckets[owner]:,} buckets, the most one user may",
                                     hint="delete one first (DeleteBucket)", bucket=name)
            record = {"created": self.clock(), "owner": owner, "grants": {}}
            with self.db.write_batch(sync=True) as batch:
                apply(batch, {keys.object_bucket(name): _dump(record), keys.object_bucket_of_user(owner, name): b""})
            buckets[owner] += 1
        return {"name": name, **record, "new": True}

    def grant(self, name: str, user: str, level: str | None) -> dict:
        """Give `user` read or write on the bucket (None: take it away, and abort the uploads it began there, which it
        could no longer end: `aborted`, their parts' files marked `garbage`, in the same write); the bucket's record."""
        names.check_user(user)
        if level is not None and level not in ("read", "write"):
            raise InvalidArgument(f"a grant is read or write, not {level!r}")
        with self._lock:
            record = self.bucket(name)
            if user == record["owner"]:
                raise InvalidArgument(f"user {user!r} owns the bucket {name!r}")
            had = record["grants"].get(user)
            grants = {u: g for u, g in record["grants"].items() if u != user} | ({user: level} if level else {})
            # A new grant, or read made write, grows the grants; a revoke or write made read never does (and is
            # taken even by a bucket over the bounds, whose grants it brings back towards them).
            if level is not None and (had is None or (had, level) == ("read", "write")):
                names.check_grants(name, grants)
            stored = {k: v for k, v in record.items() if k != "name"} | {"grants": grants}
            dropped = [] if level else [u for u in self.uploads(name) if u.get("user") == user]
            written: dict[bytes, bytes | None] = {keys.object_bucket(name): _dump(stored),
                                                  keys.object_bucket_of_user(user, name): b"" if level else None}
            garbage = [cap for upload in dropped for cap in self._drop_upload(written, upload)]
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
            for upload in dropped:
                self._uploaded(upload)
        gone = {} if level else {"aborted": [u["id"] for u in dropped], "garbage": garbage}
        return {"name": name, **stored, "had": had, **gone}

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            record = self.bucket(name)
            for _ in self.db.iterator(prefix=keys.objects_of(name), include_value=False):
                raise BucketNotEmpty(f"the bucket {name!r} is not empty", hint="delete its objects first",
                                     bucket=name)
            for _ in self.db.iterator(prefix=keys.object_uploads_of(name), include_value=False):
                raise BucketNotEmpty(f"the bucket {name!r} has multipart uploads in progress",
                                     hint="complete or abort them first", bucket=name)
            owned = self._counts()[0]
            owned[record["owner"]]  # (counted, if it is not yet, from the entries as they are before this write)
            with self.db.write_batch(sync=True) as batch:
                apply(batch, dict.fromkeys([keys.object_bucket(name), *_users_entries(name, record)]))
            owned[record["owner"]] -= 1

    # --- objects -----------------------------------------------------------------
    def get(self, bucket: str, key: str) -> dict:
        raw = self.db.get(keys.object_key(bucket, key))
        if raw is None:
            self.bucket(bucket)
            raise NoSuchKey(f"no object {key!r} in bucket {bucket!r}", bucket=bucket, key=key)
        return codec.loads(raw)

    def put(self, bucket: str, key: str, record: dict) -> list[str]:
        """Make `record` the object at (bucket, key); returns the capabilities now garbage (the old object's).

        If the bucket is gone, the new record's own files are garbage instead and NoSuchBucket is raised."""
        outcome = self.put_all([(bucket, key, record)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def put_all(self, objects: list[tuple[str, str, dict]], cleaned: bool = False) -> list[list[str] | Exception]:
        """`put` each (bucket, key, record), in order, in one synced write (a group commit): for each, the
        capabilities now garbage or the error it raises.  A failed write raises for all; nothing is written.
        `cleaned`: every key was checked and every record made by `clean` already."""
        outcomes: list[list[str] | Exception] = []
        written: dict[bytes, bytes | None] = {}  # this group's writes (None: a delete), later ones see earlier ones
        with self._lock:
            for bucket, key, record in objects:
                outcomes.append(self._put_one(bucket, key, record, written, self.db.get, cleaned))
            with self.db.write_batch(sync=True) as batch:
                for name, value in written.items():
                    if value is None:
                        batch.delete(name)
                    else:
                        batch.put(name, value)
        for bucket in {bucket for (bucket, _, _), outcome in zip(objects, outcomes) if not isinstance(outcome, Exception)}:
            self._changed(bucket)
        if any(isinstance(outcome, Exception) for outcome in outcomes):
            self.on_refunds_owed()  # (a refusal's charges, if it had any, are owed back)
        return outcomes

    def riding(self, bucket: str, key: str, record: dict, cleaned: bool = False) -> Recording:
        """`put` of (bucket, key, record) as records another write carries (`Recording`); `cleaned` as for `put_all`."""
        return Recording(self, bucket, key, record, cleaned)

    def _put_one(self, bucket: str, key: str, record: dict, written: dict[bytes, bytes | None],
                 read: Callable[[bytes], bytes | None], cleaned: bool = False) -> list[str] | Exception:
        """`put`'s records of one object, added to `written` (read first, then through `read`): the capabilities
        now garbage, or the error `put` raises (the record's own files are garbage then).  `cleaned`: the key
        was checked and the record made by `clean` already (the write, under its locks, does neither again)."""
        if not cleaned:
            try:
                record = records.clean(record)
            except InvalidArgument as err:  # not a record: no file it names is taken for its own
                return err
            try:
                names.check_key(key)
            except InvalidArgument as err:  # (a watch's output under too long a key) never written: its files go
                err.details["garbage"] = self._refuse(written, read, [p["cap"] for p in record["parts"]])
                return err
        caps = [p["cap"] for p in record["parts"]]
        if (raw := read(keys.object_bucket(bucket))) is None:
            return NoSuchBucket(f"no bucket named {quoted_id(bucket)}", bucket=bucket,
                                garbage=self._refuse(written, read, caps))
        try:  # (its grant revoked while its file was stored: refused here, in the record's own write)
            bucket_record = {"owner": names.DEFAULT_USER, "grants": {}, **codec.loads(raw)}
            _judge(bucket, bucket_record, record.get("writer"), "write")
        except Forbidden as err:
            err.details["garbage"] = self._refuse(written, read, caps)
            return err
        name = keys.object_key(bucket, key)
        old = written[name] if name in written else read(name)
        condition = record.get("condition")
        if condition is not None and not records.holds(condition, codec.loads(old) if old else None):
            return ConditionalConflict(f"another write of {key!r} came first: the condition {condition} no longer "
                                       "holds (retry the request)", bucket=bucket, key=key,
                                       garbage=self._refuse(written, read, caps))
        garbage = [p["cap"] for p in codec.loads(old)["parts"]] if old else []
        written[name] = _dump({k: v for k, v in record.items() if k not in ("condition", "writer")})
        if record.get("writer") not in (None, names.DEFAULT_USER):  # a user's files: their charges stand
            settled(written, self.db, caps)
        written.update((keys.object_garbage(cap), None) for cap in caps)  # referred to: not garbage
        for cap in caps:
            share(self, written, read, cap, name)
        written.update((keys.object_holder(cap), name) for cap in caps)
        return [c for c in garbage if c not in caps and release(self, written, read, c, name)]

    def _refuse(self, written: dict[bytes, bytes | None], read: Callable[[bytes], bytes | None],
                caps: list[str]) -> list[str]:
        """A refused record's files that no other record refers to, marked garbage in `written` (the refusal's write)
        and what their user paid for them owed back: those marked.  A watch writes the outputs of one job as the
        objects of every datum it answered: the file of one refused may be another's."""
        free = [cap for cap in dict.fromkeys(caps) if release(self, written, read, cap, b"")]
        refused(written, self.db, free)
        return free

    def _changed(self, bucket: str) -> None:
        for callback in self.on_change:
            callback(bucket)

    def on_refunds_owed(self) -> None:
        """A refund may be owed (a write refused after its charge, an import's): the refunder pays it now."""
        for callback in self.on_owed:
            callback()

    def delete(self, bucket: str, key: str) -> list[str]:
        """Remove the object if there is one (S3 deletes are idempotent); returns the capabilities now garbage."""
        return self.delete_many(bucket, [key])

    def delete_many(self, bucket: str, keys_: Iterable[str]) -> list[str]:
        with self._lock:
            self.bucket(bucket)
            garbage: list[str] = []
            written: dict[bytes, bytes | None] = {}
            for key in keys_:
                name = keys.object_key(bucket, key)
                old = written[name] if name in written else self.db.get(name)
                if old is None:
                    continue
                written[name] = None
                garbage += [p["cap"] for p in codec.loads(old)["parts"]
                            if release(self, written, self.db.get, p["cap"], name)]
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
        self._changed(bucket)
        return garbage

    def objects(self, bucket: str, prefix: str = "") -> list[tuple[str, dict]]:
        """Every object under `prefix`, with its record's summary (size, etag, modified), in key order."""
        base = keys.objects_of(bucket)
        start = base + prefix.encode()
        with self.db.iterator(start=start, stop=base[:-1] + b"\x01") as it:
            found = []
            for k, v in it:
                if not k.startswith(start):
                    break
                found.append((k[len(base):].decode(), records.summary(codec.loads(v))))
        return found

    def list(self, bucket: str, *, prefix: str = "", delimiter: str = "", max_keys: int = listing.MAX_KEYS,
             start: bytes = b"") -> dict:
        """A page of the bucket's keys, and its `owner`: every object's, as S3's BucketOwnerEnforced has it."""
        owner = self.bucket(bucket)["owner"]
        base = keys.objects_of(bucket)

        def scan(position: bytes) -> Iterator[tuple[str, dict]]:
            # Values are decoded lazily: a rolled-up common prefix never parses the records under it.
            with self.db.iterator(start=base + position, stop=base[:-1] + b"\x01") as it:
                for k, v in it:
                    yield k[len(base):].decode(), v

        page = listing.list_page(scan, prefix=prefix, delimiter=delimiter, max_keys=max_keys, start=start)
        page["contents"] = [(k, records.summary(codec.loads(v))) for k, v in page["contents"]]
        return {**page, "owner": owner}


    def _counts(self) -> tuple[Counter, Counter]:
        """Under the lock: each user's buckets (each user's counted as it is first asked of: `_Owned`) and uploads in
        progress (read from their counts, o/n/, the first time)."""
        if self._counted is None:
            self._counted = (_Owned(self.db), self._upload_counts())
        return self._counted


    # --- garbage and reconciliation ----------------------------------------------
    def _mark_garbage(self, caps: Iterable[str]) -> None:
        """Under the lock: the files of a write whose record will never be written (refused, or an orphan) marked
        garbage, and what the user paid for them owed back, in one synced write."""
        written: dict[bytes, bytes | None] = {}
        owed = refused(written, self.db, caps)
        with self.db.write_batch(sync=True) as batch:
            apply(batch, written)
        if owed:
            self.on_refunds_owed()

    def garbage(self) -> list[str]:
        return _garbage(self.db)

    def forget_garbage(self, caps: Iterable[str]) -> None:
        """The files were removed from the store: drop their marks.  (A record that refers to a file again clears
        its mark as it is written, so no mark is of a file an object refers to: nothing here reads the records.)"""
        with self._lock:
            with self.db.write_batch(sync=True) as batch:
                for cap in caps:
                    batch.delete(keys.object_garbage(cap))

    def reconcile(self, stored: Iterable[str]) -> list[str]:
        """Of the capabilities of files the front stored (`stored`), those no record refers to: they are
        marked garbage (and returned) so the front removes them.  Each file is judged by the record its o/h/ entry
        names (or, for a file records share, those its o/s/ entry names), which must still refer to it: a
        reconciliation reads the records of the files it is asked of, not every record of the index.  And the charges
        of files the store no longer holds, which no record refers to (a file removed after its charge whose answer was
        lost, or by hand), are owed back: nothing else would ever judge them."""
        with self._lock:
            read: dict[bytes, set[str]] = {}  # the files of each record read: a multipart object's read once
            orphans = sorted(cap for cap in set(stored) if not self._referred(cap, read))
            self._mark_garbage(orphans)
            gone = [cap for cap in charged_files(self.db) if not self._referred(cap, read) and self._gone(cap)]
            written: dict[bytes, bytes | None] = {}
            if owe(written, self.db, gone):
                with self.db.write_batch(sync=True) as batch:
                    apply(batch, written)
                self.on_refunds_owed()
        return orphans

    def _referred(self, cap: str, read: dict[bytes, set[str]]) -> bool:
        """Under the lock: does a record refer to the file `cap`?  (`read`: the records read so far, by key.)"""
        def refers(key: bytes) -> bool:
            if key not in read:
                raw = self.db.get(key)
                read[key] = set() if raw is None else set(caps_of(key, codec.loads(raw)))
            return cap in read[key]

        holder = self.db.get(keys.object_holder(cap))
        if holder is not None and refers(holder):
            return True
        shared = self.db.get(keys.object_shared(cap)) if self._shared else None
        return shared is not None and any(refers(key) for key in shared_keys(shared))

    def chargeable(self, user: str, caps: list[str]) -> list[XscError | int | None]:
        """Whether `user`'s account may pay for each file (`UserAccounts.charge_many`, before its transfers): None, or
        the amount of the user's charge of it noted already (a charge retried, its answer lost on its way back: it is
        answered as that one, not paid twice), or why not: a file a record refers to (paid for before it was recorded,
        or never a user's to pay for: Conflict), one charged to another user (Conflict), one marked garbage or that
        the store does not hold under a name of the front's shape (NotFound: nothing would ever record it, or pay it
        back), one whose name has that shape but a tag the node's key did not make (Forbidden: stored by hand)."""
        with self._lock:
            read: dict[bytes, set[str]] = {}
            return [self._chargeable(user, cap, read) for cap in caps]

    def _chargeable(self, user: str, cap: str, read: dict[bytes, set[str]]) -> XscError | int | None:
        short = cap[:24] + "…"
        if self._referred(cap, read):
            return Conflict(f"the file {short} is an object's or a part's already: a file is paid for once, before "
                            "its record is written", capability=cap)
        name = None if self.store is None else stored_name(self.store, cap) or ""
        if self.db.get(keys.object_garbage(cap)) is not None or (name is not None and not FileMarks.shaped(name)):
            return NotFound(f"no file the S3 front stored has the capability {short} (never stored here, or removed): "
                            "a charge pays for a file the front has just stored", capability=cap)
        if name is not None and not self.fronts(name):
            return Forbidden(f"the file {short} is named as the S3 front names its files, but the tag that ends its "
                             "name was not made with this node's key (<data dir>/s3-files.key): a name given by hand "
                             "is not the front's, and no charge pays for its file", capability=cap,
                             hint="an `xsc s3 serve` with a data dir of its own needs the node's s3-files.key in it")
        rows = charges_of(self.db, cap).values()
        if any(row["user"] != user for row in rows):
            return Conflict(f"the file {short} was charged to another user already", capability=cap)
        return next((row["amount"] for row in rows), None)

    def fronts(self, name: str) -> bool:
        """Whether a stored file's name is one the S3 front gave: its tag made with the node's key (`marks`)."""
        return self.marks is not None and self.marks.ours(name)

    def _gone(self, cap: str) -> bool:
        """Under the lock: is the file marked garbage, or (a store given) not in the store?  A charge of it would never
        be recorded nor found an orphan: it is owed back (or refused, before its transfer)."""
        if self.db.get(keys.object_garbage(cap)) is not None:
            return True
        return self.store is not None and stored_name(self.store, cap) is None

    def charged(self, caps: Iterable[str]) -> int:
        """The files of charges just written (`UserAccounts.charge_many`, once their transfers are): a charge of a file
        whose record is written already stands, its rows dropped (no record's write is to come and drop them: a record
        written between the charge's check and its transfer, or before a crash stopped its judging), and one of a file
        refused already (marked garbage) or gone from the store (removed, its mark cleared, between the charge's check
        and its transfer) is owed back; a file neither recorded nor refused is left to its record's write or its
        refusal.  How many are owed."""
        with self._lock:
            read: dict[bytes, set[str]] = {}
            caps = set(caps)
            recorded = {cap for cap in caps if self._referred(cap, read)}
            written: dict[bytes, bytes | None] = {}
            settled(written, self.db, recorded)
            owed = owe(written, self.db, [cap for cap in caps - recorded if self._gone(cap)])
            if written:
                with self.db.write_batch(sync=True) as batch:
                    apply(batch, written)
        if owed:
            self.on_refunds_owed()
        return owed

    @contextlib.contextmanager
    def changing(self) -> Iterator[set[str]]:
        """Under the index's lock, for records written outside its methods (`backup.restore`): each user's counts are
        read again after, and the buckets the caller adds to the set it is given are told of (`on_change`)."""
        changed: set[str] = set()
        with self._lock:
            try:
                yield changed
            finally:
                self._counted = None
        for bucket in changed:
            self._changed(bucket)


def refused(written: dict[bytes, bytes | None], view, caps: Iterable[str]) -> int:
    """The files of a write whose record will never be written marked garbage in `written` (the refusal's batch), and
    what their user paid for them (its rows read from `view`) turned into refunds owed (entries.owe): how many."""
    caps = list(caps)
    written.update((keys.object_garbage(cap), b"") for cap in caps)
    return owe(written, view, caps)


class _Owned(Counter):
    """Each user's count of the buckets it owns, counted as it is first asked of from its own o/y/ entries (the buckets
    it owns or was granted), each bucket's record read for its owner: a user's bound reads that user's buckets, not
    every bucket of the index.  Kept up by the changes that create and delete buckets, under the index's lock."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    def __missing__(self, user: str) -> int:
        prefix, owned = keys.object_buckets_of_user(user), 0
        for entry in self.db.iterator(prefix=prefix, include_value=False):
            raw = self.db.get(keys.object_bucket(entry[len(prefix):].decode()))
            owned += raw is not None and codec.loads(raw).get("owner", names.DEFAULT_USER) == user
        self[user] = owned
        return owned


def index_charges(index: S3Index) -> int:
    """As the index opens, no write under way: each file a charge's row is left of judged by `charged` (a crash
    between a charge's transfer and its judging leaves the row of a file recorded, which nothing else drops), a row
    written before charges had ids of their own given one first.  The rows are those of writes a crash stopped: a
    few.  How many refunds are owed."""
    renamed: dict[bytes, bytes | None] = {}
    caps = set()
    for prefix in (keys.OBJECT_CHARGED, keys.OBJECT_REFUNDS):
        for key, value in index.db.iterator(prefix=prefix):
            cap, nul, charge = key[len(prefix):].partition(b"\x00")
            if not nul:  # (its own id: what no charge of the file's written since has)
                renamed.update({key: None, prefix + cap + b"\x00" + b"0" * 16: value})
            if prefix == keys.OBJECT_CHARGED:
                caps.add(cap.decode(errors="replace"))
    if renamed:
        with index.db.write_batch(sync=True) as batch:
            apply(batch, renamed)
    return index.charged(caps) if caps else 0


def _judge(name: str, record: dict, user: str | None, need: str) -> None:
    """AccessDenied (Forbidden) unless `user` may `need` the bucket `name` whose record is `record` (None: the node's
    owner, who may do anything)."""
    if user is not None and user != record["owner"] and LEVELS.get(record["grants"].get(user), 0) < LEVELS[need]:
        if need == "owner":  # no grant reaches it: a hint to ask for one would send the user the wrong way
            raise Forbidden(f"only the owner of the bucket {name!r} may delete it, not user {user!r}",
                            hint="a user deletes the buckets it created", bucket=name)
        raise Forbidden(f"user {user!r} may not {need} the bucket {name!r}",
                        hint=f"the node's operator grants it: xsc s3 grant {name} {user} {need}", bucket=name)


def funded_note(user: str) -> tuple[bytes, bytes]:
    """The record that notes the node's account funds `user`, so that `users` lists it whatever keys and grants it has:
    written by the funding's transfer, in its own synced write (`UserAccounts.fund`)."""
    names.check_user(user)
    return keys.object_funded(user), b""


def index_funded(index: S3Index, funded_in_ledger: Callable[[], list[str]]) -> int:
    """Give the users the node's account funded before a funding noted them (`UserAccounts.fund`) their records, once,
    from what the ledger shows it funded (`funded_in_ledger`): the records and the mark that this was done in one
    synced write.  How many were given one."""
    if index.db.get(keys.OBJECT_FUNDED_INDEXED) is not None:
        return 0
    found = [user for user in funded_in_ledger() if index.db.get(keys.object_funded(user)) is None]
    with index.db.write_batch(sync=True) as batch:
        for user in found:
            batch.put(keys.object_funded(user), b"")
        batch.put(keys.OBJECT_FUNDED_INDEXED, b"")
    if found:
        log.info("noted %s the node's account funded before it noted them, from the ledger",
                 counted(len(found), "S3 user"))
    return len(found)


def exported(index: S3Index) -> dict:
    """Everything in the index, as JSON: the backup of `xsc s3 export-index` (xsc/buckets/backup.py).  Read from one
    snapshot, so a write made meanwhile is in it whole or not at all: a Complete moves an upload's parts into its
    object in one batch, and an export that read the objects before it and the uploads after would hold neither."""
    with index.db.snapshot() as view:
        buckets = []
        for b in _buckets(view):
            base = keys.objects_of(b["name"])
            objects = {k[len(base):].decode(): codec.loads(v) for k, v in view.iterator(prefix=base)}
            buckets.append({**b, "objects": objects})
        uploads = [{"id": k[len(keys.OBJECT_UPLOADS):].decode(), **codec.loads(v),
                    "parts": parts_of(view, k[len(keys.OBJECT_UPLOADS):].decode())}
                   for k, v in view.iterator(prefix=keys.OBJECT_UPLOADS)]
        completed = {k[len(keys.OBJECT_COMPLETED):].decode(): codec.loads(v)
                     for k, v in view.iterator(prefix=keys.OBJECT_COMPLETED)}
        garbage, funded_users = _garbage(view), _funded(view)
        charged, owed = _charges(view, keys.OBJECT_CHARGED), _charges(view, keys.OBJECT_REFUNDS)
    return {"version": 1, "exported": index.clock(), "buckets": buckets, "uploads": uploads,
            "completed": completed, "garbage": garbage, "funded": funded_users, "charged": charged, "owed": owed}


# What the index holds, read from the database or from a snapshot of it (`exported`).
def _buckets(view) -> list[dict]:
    """Every bucket, with its owner and grants."""
    return [{"name": k[len(keys.OBJECT_BUCKETS):].decode(), "owner": names.DEFAULT_USER, "grants": {},
             **codec.loads(v)} for k, v in view.iterator(prefix=keys.OBJECT_BUCKETS)]


def _garbage(view) -> list[str]:
    found = view.iterator(prefix=keys.OBJECT_GARBAGE, include_value=False)
    return [k[len(keys.OBJECT_GARBAGE):].decode() for k in found]


def _charges(view, prefix: bytes) -> list[dict]:
    """The rows of charges (o/a/) or refunds owed (o/r/): each {cap, charge, user, amount}."""
    found = []
    for key, value in view.iterator(prefix=prefix):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            (cap, charge), row = keys.split_charge_row(prefix, key), codec.loads(value)
            found.append({"cap": cap, "charge": charge, "user": row["user"], "amount": row["amount"]})
    return found


def _funded(view) -> list[str]:
    return [k[len(keys.OBJECT_FUNDED):].decode() for k in view.iterator(prefix=keys.OBJECT_FUNDED, include_value=False)]


def restored(index: S3Index, data: dict, *, account: str | None = None,
             funded_here: Callable[[], Iterable[str]] = tuple, charged_here: Callable[[str, str], bool],
             stored_name: Callable[[str], str | None] | None = None) -> dict:
    """Write `data` (a piece of an export, its records checked: xsc/buckets/backup.py) in one synced write: each record
    the index holds none of; one it holds is kept as it is (`kept`).  A bucket another owner holds here: BucketTaken; a
    user given more buckets or uploads than its requests could make: TooManyBuckets, TooManyUploads; nothing written.
    An object or part is left out (`left_out`) if another record refers to its file, here or earlier in the import
    (`taken`: deleting either would remove the other's file), or `_refusal` refuses it (`refused`), and with it the
    completed upload naming it (`_refused_completed`).  Funded users: `_ours`; charges: `_charges_back`.  How many of
    each kind were written."""
    count, left_out = Counter(), []
    with index.changing() as changed, index.db.write_batch(transaction=True, sync=True) as batch:
        buckets_of, uploads_of = index._counts()  # read again once written (`changing`)
        written: set[bytes] = set()
        held: dict[bytes, bytes] = {}  # the o/h/ entries this piece wrote

        def put(kind: str, key: bytes, value: bytes, caps: Iterable[str] = (), what: dict | None = None,
                refused: str | None = None, entries_too: dict[bytes, bytes] | None = None) -> bool:
            if key in written or index.db.get(key) is not None:  # (a record named twice: the first is written)
                count["kept"] += 1
                return False
            entries = {keys.object_holder(cap): cap for cap in caps}
            reason = refused or _left_out_why(index, entries, held, key,
                                              lambda cap: _refusal(index, cap, stored_name, own))
            if reason:
                count["taken" if reason == "taken" else "refused"] += 1
                left_out.append({**(what or {}), "reason": reason})
                return False
            written.add(key)
            held.update(dict.fromkeys(entries, key))
            apply(batch, {key: value, **dict.fromkeys(entries, key), **(entries_too or {})})
            count[kind] += 1
            return True

        own = account is not None and data.get("funded_by") == account  # an export of this node's
        owners: dict[str, str] = {}  # what this piece gave each bucket: its second record is held to it
        for bucket in data["buckets"]:
            here, first = index.db.get(keys.object_bucket(bucket["name"])), bucket["name"] not in owners
            owner = owners.setdefault(bucket["name"], codec.loads(here).get("owner", names.DEFAULT_USER)
                                      if here is not None else bucket["owner"])
            if owner != bucket["owner"]:
                raise BucketTaken(f"the bucket {bucket['name']!r} is another user's, on this node or in the import",
                                  hint="import into a node that holds no bucket of that name", bucket=bucket["name"])
            if here is None and first:
                _within(buckets_of, owner, index.max_buckets, TooManyBuckets, "buckets", "node.s3_max_buckets")
            put("buckets", keys.object_bucket(bucket["name"]), codec.dumps({k: bucket[k] for k in (
                "created", "owner", "grants")}), entries_too=_users_entries(bucket["name"], bucket))
            for key, record in bucket["objects"].items():
                if put("objects", keys.object_key(bucket["name"], key), codec.dumps(record),
                       [part["cap"] for part in record["parts"]], {"bucket": bucket["name"], "key": key}):
                    changed.add(bucket["name"])
        for upload in data["uploads"]:
            if upload["bucket"] not in owners and index.db.get(keys.object_bucket(upload["bucket"])) is None:
                raise InvalidArgument(f"upload {upload['id']} is of the bucket {upload['bucket']!r}, which neither "
                                      "this node nor the export holds", hint="import the whole export")
            if index.db.get(keys.object_completed(upload["id"])) is not None:  # completed here since
                count["kept"] += 1
                continue
            upload_key = keys.object_upload(upload["id"])
            if upload_key not in written and index.db.get(upload_key) is None:
                _within(uploads_of, upload.get("user") or owners.get(upload["bucket"]) or index._initiator(upload),
                        index.max_uploads, TooManyUploads, "multipart uploads in progress", "node.s3_max_uploads")
            put("uploads", upload_key, codec.dumps({k: v for k, v in upload.items() if k not in ("id", "parts")}),
                entries_too={by_key(upload): b"", by_age(upload): b""})
            for part in upload["parts"]:
                put("parts", keys.object_part(upload["id"], part["number"]),
                    codec.dumps({k: v for k, v in part.items() if k != "number"}), [part["cap"]],
                    {"upload": upload["id"], "part": part["number"]})
        dropped = _refused_completed(data, left_out)
        for upload_id, record in data["completed"].items():
            if index.db.get(keys.object_upload(upload_id)) is None:
                put("completed", keys.object_completed(upload_id), codec.dumps(record), (), *dropped.get(upload_id, ()),
                    entries_too={keys.object_completed_by_age(record["modified"], upload_id): b""})
        # Each user's count, its uploads this piece gave it among them (the others' as they were), in the same write.
        apply(batch, {keys.object_upload_count(user): str(n).encode() for user, n in uploads_of.items() if n > 0})
        ours, count["foreign"] = _ours(data, account, funded_here)
        for kind, key, value, what, reason in _charges_back(index, data, ours, own and charged_here, held):
            put(kind, key, value, (), what, reason)
    return {**{kind: count[kind] for kind in ("buckets", "objects", "uploads", "parts", "completed", "funded",
                                              "charges", "kept", "taken", "refused", "foreign")}, "left_out": left_out}


def _charges_back(index: S3Index, data: dict, ours: list[str], charged_here: Callable[[str, str], bool] | bool,
                  held: dict[bytes, bytes]) -> Iterator[tuple[str, bytes, bytes, dict | None, str | None]]:
    """What `restored` puts (kind, key, value, what, why it is left out) of the funded users (`ours`) and of the rows
    of charges and refunds owed.  A row names accounts of the node whose export it is, and amounts its ledger moved:
    it comes back only into that node (`charged_here` False: another's export), and only if that node's ledger holds
    no charge or refund of the file for the user (`charged_here(user, cap)`: else the row was made here, or paid
    back here once already, and is gone because it was settled or refunded: bringing it back would pay it twice):
    a node given its key again on a fresh data dir.  A row this node holds is kept.  A charge whose file a record
    here refers to stands (`recorded`); any other comes back as a refund owed: no write of this node's is under way
    for it."""
    for user in ours:
        yield "funded", keys.object_funded(user), b"", None, None
    for kind, prefix in (("charged", keys.OBJECT_CHARGED), ("owed", keys.OBJECT_REFUNDS)):
        for row in data[kind]:
            cap, charge, user = row["cap"], row["charge"], row["user"]
            what = {"charge": charge, "cap": cap, "user": user}
            key, value = keys.object_refund(cap, charge), codec.dumps({"user": user, "amount": row["amount"]})
            if index.db.get(keys.object_charged(cap, charge)) is not None:
                key, why = keys.object_charged(cap, charge), None  # (kept)
            elif charged_here is False:
                why = "foreign"
            elif charged_here(user, cap):
                why = "settled"
            elif kind == "charged" and (keys.object_holder(cap) in held or index._referred(cap, {})):
                why = "recorded"
            else:
                why = None
            yield "charges", key, value, what, why


def _left_out_why(index: S3Index, entries: dict[bytes, str], held: dict[bytes, bytes], key: bytes,
                  refusal: Callable[[str], str | None]) -> str | None:
    """Why the record at `key`, naming the files of `entries` (their o/h/ entries), is left out, if it is: another
    record refers to one of them, here or earlier in the import (`held`: taken), or `refusal` refuses one."""
    if any(entry in held or holds(index, index.db.get(entry), cap, key) for entry, cap in entries.items()):
        return "taken"
    return next(filter(None, (refusal(cap) for cap in entries.values())), None)


def _refused_completed(data: dict, left_out: list[dict]) -> dict[str, tuple[dict, str]]:
    """The completed uploads of `data` naming (by bucket, key and ETag) an object its import refused (not one
    `taken`), each with how `left_out` names it and why: a retried Complete answered from one would name an object
    not there."""
    etags = {(b["name"], key): record["etag"] for b in data["buckets"] for key, record in b["objects"].items()}
    gone = {(item["bucket"], item["key"], etags[item["bucket"], item["key"]]): item["reason"] for item in left_out
            if item["reason"] != "taken" and (item.get("bucket"), item.get("key")) in etags}
    return {upload_id: ({"upload": upload_id, "bucket": r["bucket"], "key": r["key"]}, gone[named])
            for upload_id, r in data["completed"].items() if (named := (r["bucket"], r["key"], r["etag"])) in gone}


def _refusal(index: S3Index, cap: str, stored_name: Callable[[str], str | None] | None, own: bool) -> str | None:
    """Why an import may not bring back a record naming the file `cap`, if it may not: the file is marked garbage
    here (`removing`: the front may be removing it this moment, and a record brought back would name a file gone),
    the export is this node's (`own`) and its store no longer lists the file (`missing`, `stored_name` answering
    None: removed since the export, so a GET of the object would fail), or the store lists it under a name the front
    never gives (`not-s3`: one of the user's own files, which deleting the object would remove).  Another node's
    export (or this node's after it lost its data dir, and with it its id) names files this store never held, read
    from the nodes holding their shares.  `stored_name` None: no store to hold the files to."""
    if index.db.get(keys.object_garbage(cap)) is not None:
        return "removing"
    if stored_name is None:
        return None
    name = stored_name(cap)  # the file's record: one read, which tells both
    if name is None:
        return "missing" if own else None
    return None if index.fronts(name) else "not-s3"


def _ours(data: dict, account: str | None, funded_here: Callable[[], Iterable[str]]) -> tuple[list[str], int]:
    """Of the users an export's node funded, those this node funded: all of them if that node's account is this
    node's (`account`), else those this node's ledger shows it funded too (`funded_here`); and for an export written
    before exports named them (`funded_in_ledger`), every user the ledger shows this node funded.  With how many of
    the export's it did not fund (foreign)."""
    if not data.get("funded_in_ledger") and (account is not None and data.get("funded_by") == account
                                             or not data["funded"]):
        return data["funded"], 0
    here = list(funded_here())
    known, named = set(here), set(data["funded"])
    ours = [user for user in data["funded"] if user in known]
    return ours + ([user for user in here if user not in named] if data.get("funded_in_ledger") else []), \
        len(data["funded"]) - len(ours)


def _users_entries(name: str, record: dict) -> dict[bytes, bytes]:
    """The o/y/ entries of the bucket `name`: its owner's and each grantee's."""
    return {keys.object_bucket_of_user(user, name): b"" for user in (record["owner"], *record["grants"])}


def index_bucket_users(index: S3Index) -> int:
    """Give the buckets recorded before o/y/ was kept their owners' and grantees' entries, once (`given_once`).  How
    many were given."""

    def entries() -> Iterator[tuple[bytes, bytes]]:
        for bucket in _buckets(index.db):
            yield from _users_entries(bucket["name"], bucket).items()

    given = given_once(index, keys.OBJECT_BUCKETS_BY_USER_INDEXED, entries())
    if given:
        log.info("gave the S3 buckets their %d entries by user", given)
    return given


def index_holders(index: S3Index) -> int:
    """Give each file the records written before o/h/ was kept refer to its o/h/ entry, once (`given_once`).  How
    many were given one."""

    def entries() -> Iterator[tuple[bytes, bytes]]:
        for prefix in (keys.OBJECT_KEYS, keys.OBJECT_PARTS):
            for key, value in index.db.iterator(prefix=prefix):
                yield from ((keys.object_holder(cap), key) for cap in caps_of(key, codec.loads(value)))

    given = given_once(index, keys.OBJECT_HOLDERS_INDEXED, entries())
    if given:
        log.info("gave the %s the S3 index refers to their o/h/ entries", counted(given, "file"))
    return given


def index_shared(index: S3Index) -> int:
    """Find, once, the files two records or more refer to (written by an import that did not leave such records out;
    the file's o/h/ entry names one of them) and give each an o/s/ entry naming every one, so that `release` marks the
    file garbage only once none of them refers to it.  Every record is read, with its files' entries: an entry
    missing or naming a record that no longer refers to the file is given to this one.  The entries and the mark
    that this was done in one synced write.  How many shared files were found."""
    if index.db.get(keys.OBJECT_SHARED_INDEXED) is not None:
        return 0
    with index._lock:
        given: dict[bytes, bytes] = {keys.OBJECT_SHARED_INDEXED: b""}
        shared: dict[str, list[bytes]] = {}
        for prefix in (keys.OBJECT_KEYS, keys.OBJECT_PARTS):
            for key, value in index.db.iterator(prefix=prefix):
                for cap in caps_of(key, codec.loads(value)):
                    entry = keys.object_holder(cap)
                    named = given.get(entry) or index.db.get(entry)
                    if named == key:
                        continue
                    other = index.db.get(named) if named is not None else None
                    if other is None or cap not in caps_of(named, codec.loads(other)):
                        given[entry] = key
                    elif key not in (found := shared.setdefault(cap, [named])):
                        found.append(key)
        for cap, holders in shared.items():
            given[keys.object_shared(cap)] = codec.dumps([k.hex() for k in holders])
        write_entries(index.db, given, sync=True)
    if shared:
        log.warning("found %s two or more of the S3 index's records share: each is removed only once none of "
                    "them refers to it", counted(len(shared), "file"))
    return len(shared)


def _within(held: Counter, user: str, most: int, error: type[XscError], what: str, setting: str) -> None:
    """One more of `what` for `user` in an import, refused past `most` as the user's own request would be."""
    held[user] += 1
    if held[user] > most:
        raise error(f"the import would give user {user!r} more than {most:,} {what}, the most one user may",
                    hint=f"delete some of the user's first, or raise {setting}")


def funded(index: S3Index) -> list[str]:
    """The users the node's account funded (`UserAccounts.fund` notes each), by name."""
    return _funded(index.db)


def users(index: S3Index) -> list[str]:
    """The S3 users the index knows of: those that own a bucket, were granted one, began an upload in progress, or
    were funded.  Read from their entries, not from the buckets' and uploads' records: one o/y/ entry a user (a seek
    past the rest of its own), its o/n/ count, its o/f/ note."""
    found = set(funded(index)) | set(index._upload_counts())
    prefix, position = keys.OBJECT_BUCKETS_BY_USER, keys.OBJECT_BUCKETS_BY_USER
    while True:
        with index.db.iterator(start=position, stop=prefix[:-1] + b"0", include_value=False) as it:  # ("0": past "/")
            entry = next(it, None)
        if entry is None:
            return sorted(found)
        user = entry[len(prefix):].partition(b"\x00")[0]
        found.add(user.decode())
        position = prefix + user + b"\x01"


class Recording:
    """An object's record written by another's synced write as it is made (`share_store.Rider`: a small object's with
    its file's, in one batch): what `S3Index.put` writes, read under the index's lock, which the write holds until
    it is done.  `outcome()`, once written: what `put` returns or raises."""

    def __init__(self, index: S3Index, bucket: str, key: str, record: dict, cleaned: bool = False) -> None:
        self.index, self.bucket, self.key, self.record, self.cleaned = index, bucket, key, record, cleaned
        self.lock = index._lock
        self._outcome: list[str] | Exception | None = None

    def entries(self, read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        written: dict[bytes, bytes | None] = {}
        self._outcome = self.index._put_one(self.bucket, self.key, self.record, written, read, self.cleaned)
        return written

    def outcome(self) -> list[str]:
        """The capabilities now garbage (the replaced object's), or the error `put` raises, once the write is done."""
        if self._outcome is None:
            raise RuntimeError("the record was not written")
        if isinstance(self._outcome, Exception):
            raise self._outcome
        self.index._changed(self.bucket)
        return self._outcome


def _bucket_or(name: str) -> str:
    """`name` as a command may quote it back unquoted: a bucket name, else NAME, for the user to put one in."""
    try:
        return names.check_bucket(name)
    except InvalidBucketName:
        return "NAME"
