"""The bucket index's multipart uploads: begun (`create_upload`, within its user's `max_uploads`), their parts
recorded (`put_part`), completed into an object (`complete`), aborted (`abort`), and expired (`expire_uploads`: those
begun more than `upload_expiry` seconds ago, read oldest first from their o/t/ entries).

Each upload record (o/u/) is written and dropped in one synced batch with its entries: its place among its bucket's
uploads in key order (o/k/, which ListMultipartUploads reads: `upload_page`), its place in the order uploads began
(o/t/), and its user's count of uploads in progress (o/n/, which a user's bound and `xsc s3 users` read); a completed
upload's answer (o/c/) with its place in the order uploads completed (o/d/).  A crash leaves a record and its entries
together or neither.  `index_uploads` and `index_ages` give a store written before these entries were kept theirs,
once.

A mixin of `S3Index` (index.py), which holds the database, the lock and the buckets these run against.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import Counter
from typing import Iterator

from .. import codec
from .. import keys
from ..errors import (EntityTooSmall, Forbidden, InvalidPart, InvalidPartOrder, NoSuchBucket, NoSuchKey, NoSuchUpload,
                      PreconditionFailed, TooManyUploads, quoted_id)
from ..units import counted
from .core import etag, listing, names, records
from .entries import apply, given_once, release, settled

log = logging.getLogger(__name__)
COMPLETED_KEEP = 7 * 24 * 3600  # seconds a completed upload answers a repeated CompleteMultipartUpload
MAX_UPLOADS = 1_000  # multipart uploads one user may have in progress (node.s3_max_uploads)
UPLOAD_EXPIRY = 7 * 24 * 3600  # seconds an unfinished upload is kept (node.s3_upload_expiry)
EXPIRED_AT_ONCE = 100  # uploads expired in one synced batch (the lock is let go between batches)


class Uploads:
    """The multipart uploads of `S3Index`, which gives them `db`, `_lock`, `clock`, `min_part_size`, `max_uploads`,
    `upload_expiry`, `bucket`, `allow`, `_counts`, `_mark_garbage` and `_changed`."""

    def create_upload(self, bucket: str, key: str, content_type: str = "", metadata: dict | None = None,
                      headers: dict | None = None, by: str | None = None, checksum: dict | None = None) -> str:
        """Begin an upload for the user `by` (None: the node's owner), within its `max_uploads`; `checksum`: the one
        its object is to get ({"algorithm", "type", "default"}), which its parts keep theirs in."""
        names.check_key(key)
        names.check_metadata(metadata or {})
        user = by or names.DEFAULT_USER
        record = {"bucket": bucket, "key": key, "created": self.clock(), "headers": records.headers(headers),
                  "content_type": content_type or "binary/octet-stream", "metadata": metadata or {}, "user": user}
        if checksum is not None:
            record["checksum"] = records.upload_checksum(checksum)
        with self._lock:
            self.bucket(bucket)
            _, uploads = self._counts()
            if uploads[user] >= self.max_uploads:
                raise TooManyUploads(f"user {user!r} has {uploads[user]:,} multipart uploads in progress, the most "
                                     "one user may", hint="complete or abort some (ListMultipartUploads lists them); "
                                     f"unfinished ones are aborted after {_duration(self.upload_expiry)}",
                                     bucket=bucket)
            upload_id = secrets.token_hex(16)
            entries = [keys.object_upload_by_key(bucket, key, record["created"], upload_id),
                       keys.object_upload_by_age(record["created"], upload_id)]
            written: dict[bytes, bytes | None] = {keys.object_upload(upload_id): codec.dumps(record),
                                                  **dict.fromkeys(entries, b"")}
            self._count(written, user, +1)
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
            uploads[user] += 1
        return upload_id

    def upload(self, upload_id: str) -> dict:
        raw = self.db.get(keys.object_upload(upload_id)) if upload_id.isalnum() else None
        if raw is None:
            raise NoSuchUpload("no multipart upload with that id: it was completed, aborted, or never begun",
                               upload_id=upload_id)
        return {"id": upload_id, **codec.loads(raw)}

    def parts(self, upload_id: str) -> list[dict]:
        return parts_of(self.db, upload_id)

    def put_part(self, upload_id: str, number: int, cap: str, size: int, part_etag: str,
                 checksums: dict | None = None, writer: str | None = None) -> list[str]:
        """Record an uploaded part (replacing one of that number) with its `checksums` ({algorithm: base64}, its
        upload's and one it was sent with); returns the capabilities now garbage.  A part of an upload that is gone
        (aborted meanwhile) is garbage itself: NoSuchUpload.  `writer`: the user it is written for (None: the node's
        owner), whose access to the upload's bucket is judged as the part is written: a grant revoked while its file
        was stored refuses it (Forbidden), the part garbage too."""
        names.check_part_number(number)
        extra = {"checksums": records.part_checksums(checksums)} if checksums else {}
        with self._lock:
            if (raw := self.db.get(keys.object_upload(upload_id))) is None:
                self._mark_garbage([cap])
                raise NoSuchUpload("no multipart upload with that id: it was completed or aborted",
                                   upload_id=upload_id, garbage=[cap])
            try:
                self.allow(codec.loads(raw)["bucket"], writer, "write")
            except Forbidden as err:
                self._mark_garbage([cap])
                err.details["garbage"] = [cap]
                raise
            name = keys.object_part(upload_id, number)
            old = self.db.get(name)
            written: dict[bytes, bytes | None] = {
                name: codec.dumps({"cap": cap, "size": size, "etag": part_etag, "modified": self.clock(), **extra}),
                keys.object_holder(cap): name}
            garbage = [c for c in ([codec.loads(old)["cap"]] if old else [])  # (not its own: its record retried)
                       if c != cap and release(self, written, self.db.get, c, name)]
            if writer not in (None, names.DEFAULT_USER):  # a user's part: its charge stands
                settled(written, self.db, [cap])
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
        return garbage

    def complete(self, upload_id: str, chosen: list[tuple[int, str]], bucket: str | None = None,
                 key: str | None = None, condition: dict | None = None,
                 checksum: dict | None = None) -> tuple[dict, list[str]]:
        """Make the upload's chosen parts, in order, the object; returns (its record, capabilities now garbage).
        An upload completed already answers what it answered then (an SDK retries a Complete it did not hear).
        `condition` (as a record's: If-None-Match: *, If-Match: ETAG) must hold of the object there, else
        PreconditionFailed (NoSuchKey for If-Match with no object) and the upload stays as it was.  `checksum`: the
        object's, as the front made it of the parts' ({"value", "parts": the part checksums it used, in order}): it is
        kept only if those are still the chosen parts' (InvalidPart if one was uploaded again meanwhile)."""
        condition = records.condition(condition) if condition is not None else None
        checksum = records.whole_checksum(checksum, len(chosen)) if checksum is not None else None
        with self._lock:
            done = self.db.get(keys.object_completed(upload_id)) if upload_id.isalnum() else None
            if done is not None and self.db.get(keys.object_upload(upload_id)) is None:
                record = codec.loads(done)
                if (bucket, key) not in ((None, None), (record["bucket"], record["key"])):
                    raise NoSuchUpload("that upload id is for another object", upload_id=upload_id)
                return record, []
            upload = self.upload(upload_id)
            if (bucket, key) not in ((None, None), (upload["bucket"], upload["key"])):
                raise NoSuchUpload("that upload id is for another object", upload_id=upload_id)
            have = {p["number"]: p for p in self.parts(upload_id)}
            numbers = [n for n, _ in chosen]
            if numbers != sorted(set(numbers)):
                raise InvalidPartOrder("the parts must be listed in ascending order of part number, each once")
            used = []
            for number, given_etag in chosen:
                part = have.get(number)
                if part is None or part["etag"] != given_etag:
                    raise InvalidPart(f"part {number} was not uploaded, or its ETag is not {given_etag!r}",
                                      hint="list the parts with ListParts", part=number)
                used.append(part)
            for part in used[:-1]:
                if part["size"] < self.min_part_size:
                    raise EntityTooSmall(f"part {part['number']} is {part['size']} bytes: every part but the last "
                                         f"must be at least {self.min_part_size} bytes", part=part["number"])
            bucket, key = upload["bucket"], upload["key"]
            if self.db.get(keys.object_bucket(bucket)) is None:
                raise NoSuchBucket(f"no bucket named {quoted_id(bucket)}", bucket=bucket)
            whole = records.checksum_headers(upload.get("checksum"), checksum, used)
            # A COMPOSITE checksum is made of the parts' own, which a read of one part is answered with.
            sums = checksum["parts"] if whole.get("x-amz-checksum-type") == "COMPOSITE" else [None] * len(used)
            record = {"parts": [{"cap": p["cap"], "size": p["size"], "etag": p["etag"],
                                 **({"checksum": c} if c else {})} for p, c in zip(used, sums)],
                      "size": sum(p["size"] for p in used), "etag": etag.multipart([p["etag"] for p in used]),
                      "content_type": upload["content_type"], "metadata": upload["metadata"],
                      "headers": {**upload.get("headers", {}), **whole}, "modified": self.clock()}
            old = self.db.get(keys.object_key(bucket, key))
            if condition is not None and not records.holds(condition, codec.loads(old) if old else None):
                if "if_match" in condition and old is None:
                    raise NoSuchKey(f"no object {key!r} in bucket {bucket!r} for If-Match", bucket=bucket, key=key)
                raise PreconditionFailed(f"the object at {key!r} does not meet the condition {condition}",
                                         bucket=bucket, key=key)
            name, kept = keys.object_key(bucket, key), {p["cap"] for p in used}
            written: dict[bytes, bytes | None] = {
                name: codec.dumps(record), keys.object_upload(upload_id): None, by_key(upload): None,
                by_age(upload): None, keys.object_completed_by_age(record["modified"], upload_id): b"",
                keys.object_completed(upload_id): codec.dumps({"bucket": bucket, "key": key, "etag": record["etag"],
                                                               "modified": record["modified"], "headers": whole}),
                **{keys.object_part(upload_id, n): None for n in have},
                # the object refers to them now, not their parts' records
                **{keys.object_holder(c): name for c in kept}}
            self._count(written, self._initiator(upload), -1)
            garbage = [p["cap"] for n, p in have.items() if n not in set(numbers)
                       and release(self, written, self.db.get, p["cap"], keys.object_part(upload_id, n))]
            garbage += [p["cap"] for p in (codec.loads(old)["parts"] if old else [])
                        if p["cap"] not in kept and release(self, written, self.db.get, p["cap"], name)]
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
                self._forget_completed(batch)
            self._uploaded(upload)
        self._changed(upload["bucket"])
        return record, garbage

    def _forget_completed(self, batch) -> None:
        """Drop the completed uploads older than COMPLETED_KEEP (a repeated Complete comes within seconds): read from
        their o/d/ entries, oldest first, so a Complete reads those it drops, not every upload completed in a week."""
        stop = keys.completed_before(self.clock() - COMPLETED_KEEP)
        with self.db.iterator(start=keys.OBJECT_COMPLETED_BY_AGE, stop=stop, include_value=False) as it:
            for entry in it:
                batch.delete(entry)
                batch.delete(keys.object_completed(keys.split_by_age(entry, keys.OBJECT_COMPLETED_BY_AGE)))

    def abort(self, upload_id: str) -> list[str]:
        with self._lock:
            upload = self.upload(upload_id)
            written: dict[bytes, bytes | None] = {}
            garbage = self._drop_upload(written, upload)
            with self.db.write_batch(sync=True) as batch:
                apply(batch, written)
            self._uploaded(upload)
        return garbage

    def expire_uploads(self) -> list[str]:
        """Abort every upload begun more than `upload_expiry` seconds ago (S3's lifecycle rule
        AbortIncompleteMultipartUpload, for every bucket): the capabilities of their parts, now garbage.  Each
        batch of EXPIRED_AT_ONCE uploads is one synced write: a crash leaves an upload whole or gone with its
        parts marked, never a part its upload lost.  The uploads are read from their o/t/ entries, oldest first, up to
        the horizon: an expiry reads the uploads it aborts, not every upload in progress."""
        stop = keys.uploads_begun_before(self.clock() - self.upload_expiry)
        with self.db.iterator(start=keys.OBJECT_UPLOADS_BY_AGE, stop=stop, include_value=False) as it:
            expired = [keys.split_by_age(entry, keys.OBJECT_UPLOADS_BY_AGE) for entry in it]
        garbage: list[str] = []
        for i in range(0, len(expired), EXPIRED_AT_ONCE):
            with self._lock:
                uploads = []
                for upload_id in expired[i:i + EXPIRED_AT_ONCE]:
                    with contextlib.suppress(NoSuchUpload):  # completed or aborted meanwhile
                        uploads.append(self.upload(upload_id))
                written: dict[bytes, bytes | None] = {}
                for upload in uploads:
                    garbage += self._drop_upload(written, upload)
                with self.db.write_batch(sync=True) as batch:
                    apply(batch, written)
                for upload in uploads:
                    self._uploaded(upload)
        return garbage

    def _drop_upload(self, written: dict[bytes, bytes | None], upload: dict) -> list[str]:
        """Into `written`: the upload and its parts' records gone, its parts' files marked garbage (returned), and its
        user's count one less."""
        written[keys.object_upload(upload["id"])] = written[by_key(upload)] = written[by_age(upload)] = None
        self._count(written, self._initiator(upload), -1)
        garbage = []
        for p in self.parts(upload["id"]):
            name = keys.object_part(upload["id"], p["number"])
            written[name] = None
            if release(self, written, self.db.get, p["cap"], name):
                garbage.append(p["cap"])
        return garbage

    def _uploaded(self, upload: dict) -> None:
        """Under the lock, once its record is gone: the upload no longer counts against its user."""
        self._counts()[1][self._initiator(upload)] -= 1

    def _count(self, written: dict[bytes, bytes | None], user: str, change: int) -> None:
        """Into `written` (read first), under the lock: `user`'s count of uploads in progress moved by `change`, in the
        batch that begins or ends them (none kept at 0).  The counts as the node knows them (`_counts`) move once the
        batch is written."""
        entry = keys.object_upload_count(user)
        now = int(written[entry] or 0) if entry in written else self._counts()[1][user]
        written[entry] = str(now + change).encode() if now + change > 0 else None

    def _upload_counts(self) -> Counter:
        """Each user's uploads in progress, as their o/n/ entries hold them."""
        return Counter({key[len(keys.OBJECT_UPLOAD_COUNTS):].decode(): int(value)
                        for key, value in self.db.iterator(prefix=keys.OBJECT_UPLOAD_COUNTS)})

    def _initiator(self, upload: dict) -> str:
        """The user an upload counts against: who began it, or (an upload recorded without one) its bucket's owner."""
        if upload.get("user"):
            return upload["user"]
        raw = self.db.get(keys.object_bucket(upload["bucket"]))
        return codec.loads(raw).get("owner", names.DEFAULT_USER) if raw else names.DEFAULT_USER

    def uploads(self, bucket: str, prefix: str = "") -> list[dict]:
        """Every upload in progress of the bucket under `prefix`, in key order, a key's in the order they began."""
        self.bucket(bucket)
        return [u for _, u in upload_page(self, bucket, prefix, max_uploads=2**63)["contents"]]


def index_uploads(index: Uploads) -> int:
    """Give the uploads recorded before o/k/ was kept their entries, once (`given_once`).  How many were given one."""

    def entries() -> Iterator[tuple[bytes, bytes]]:
        for key, value in index.db.iterator(prefix=keys.OBJECT_UPLOADS):
            yield by_key({"id": key[len(keys.OBJECT_UPLOADS):].decode(), **codec.loads(value)}), b""

    given = given_once(index, keys.OBJECT_UPLOADS_BY_KEY_INDEXED, entries())
    if given:
        log.info("gave the %s in progress their o/k/ entries", counted(given, "multipart upload"))
    return given


def index_ages(index: Uploads) -> int:
    """Give the uploads recorded before o/t/, o/n/ and o/d/ were kept their entries, once (`given_once`): each upload
    in progress its o/t/ entry, each user the count of those it began, each completed upload its o/d/ entry.  How many
    entries were given."""

    def entries() -> Iterator[tuple[bytes, bytes]]:
        counts: Counter = Counter()
        for key, value in index.db.iterator(prefix=keys.OBJECT_UPLOADS):
            upload = {"id": key[len(keys.OBJECT_UPLOADS):].decode(), **codec.loads(value)}
            counts[index._initiator(upload)] += 1
            yield by_age(upload), b""
        for key, value in index.db.iterator(prefix=keys.OBJECT_COMPLETED):
            yield keys.object_completed_by_age(codec.loads(value)["modified"],
                                               key[len(keys.OBJECT_COMPLETED):].decode()), b""
        yield from ((keys.object_upload_count(user), str(count).encode()) for user, count in counts.items())

    given = given_once(index, keys.OBJECT_AGES_INDEXED, entries())
    if given:
        log.info("gave the multipart uploads recorded before they were kept in the order they began, and their users' "
                 "counts, their %d entries", given)
    return given


def by_key(upload: dict) -> bytes:
    """The upload's o/k/ entry."""
    return keys.object_upload_by_key(upload["bucket"], upload["key"], upload["created"], upload["id"])


def by_age(upload: dict) -> bytes:
    """The upload's o/t/ entry."""
    return keys.object_upload_by_age(upload["created"], upload["id"])


def parts_of(view, upload_id: str) -> list[dict]:
    """The upload's parts, read from the database or a snapshot of it."""
    prefix = keys.object_parts_of(upload_id)
    return [{"number": int.from_bytes(k[-4:], "big"), **codec.loads(v)} for k, v in view.iterator(prefix=prefix)]


def upload_page(index: Uploads, bucket: str, prefix: str = "", delimiter: str = "",
                max_uploads: int = listing.MAX_KEYS, key_marker: str = "", id_marker: str = "") -> dict:
    """A page of the bucket's uploads in progress as ListMultipartUploads answers it (`listing.list_page`: `contents`
    [(key, upload)], the keys under `prefix` rolled up by `delimiter` into common prefixes, each counting as one
    against `max_uploads`), read in key order from the bucket's o/k/ range: from the upload after the markers on, and
    no further than the page holds.  A key's uploads come in the order they began, and a page goes on after the
    marker's own place among them; an id that is none of the key's uploads now (completed or aborted since) goes on
    with those of the key whose ids sort after it; a key marker without an id, after every upload of that key; a key
    marker that is a common prefix of the listing, past every key under it."""
    db, base = index.db, keys.object_uploads_of(bucket)
    resume, skip = base, None
    if listing.is_common_prefix(key_marker, prefix, delimiter):
        resume = base + listing.past_prefix(key_marker)
    elif key_marker and not id_marker:
        resume = base + key_marker.encode() + b"\x01"  # past the key's entries (key + 0x00 + ...)
    elif key_marker:
        raw = db.get(keys.object_upload(id_marker)) if id_marker.isalnum() else None
        marker = codec.loads(raw) if raw is not None else {}
        if (marker.get("bucket"), marker.get("key")) == (bucket, key_marker):
            resume = keys.object_upload_by_key(bucket, key_marker, marker["created"], id_marker) + b"\x00"
        else:
            resume, skip = base + key_marker.encode() + b"\x00", (key_marker, id_marker)

    def scan(position: bytes) -> Iterator[tuple[str, tuple[str, bytes]]]:
        with db.iterator(start=max(base + position, resume), stop=base[:-1] + b"\x01", include_value=False) as it:
            for entry in it:
                key, upload_id = keys.split_upload_by_key(entry, base)
                if skip is not None and key == skip[0] and upload_id <= skip[1]:
                    continue
                raw = db.get(keys.object_upload(upload_id))
                if raw is not None:  # (else completed or aborted as the page is read)
                    yield key, (upload_id, raw)

    page = listing.list_page(scan, prefix=prefix, delimiter=delimiter, max_keys=max_uploads)
    page["contents"] = [(key, {"id": upload_id, **codec.loads(raw)}) for key, (upload_id, raw) in page["contents"]]
    return page


def _duration(seconds: float) -> str:
    return counted(seconds / 86400, "day") if seconds >= 86400 else counted(float(seconds), "second")
