"""The bucket index's entries kept beside its records: which record refers to each file (o/h/) and which records share
one (o/s/), by which a file is marked garbage only once no record refers to it; and entries given once to a store
written before they were kept (`given_once`).  Used by the index's writes (index.py, uploads.py), under its lock:
`index` is the S3Index they write (its `db`, `_lock`, and whether any file is shared, `_shared`).  And what an S3
user's account paid for a file until its record is written or refused, then a refund owed (`charged_row`, `owe`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from .. import codec
from .. import keys
from ..db import Database
from ..errors import InvalidCapability
from ..storage.core.capability import Capability

HOLDERS_AT_ONCE = 10_000  # entries given in one batch as a store written before they were kept is read
MAX_OWED_AT_ONCE = 256  # refunds one pass of the refunder settles (the rest wait for its next)


def release(index: Any, written: dict[bytes, bytes | None], read: Callable[[bytes], bytes | None], cap: str,
            holder: bytes) -> bool:
    """The record at `holder` (gone, or rewritten, in `written`) no longer refers to the file `cap`: into
    `written`, the file marked garbage and its o/h/ entry dropped, unless another record still refers to it (one its
    o/s/ entry names, `index_shared`: the o/h/ entry then names that one).  Whether it is garbage."""
    def get(key: bytes) -> bytes | None:
        return written[key] if key in written else read(key)

    def refers(key: bytes) -> bool:
        raw = get(key)
        return key != holder and raw is not None and cap in caps_of(key, codec.loads(raw))

    entry = keys.object_holder(cap)
    named = get(entry)
    if named is not None and refers(named):
        return False
    if index._shared and (raw := get(keys.object_shared(cap))) is not None:
        other = next((key for key in shared_keys(raw) if refers(key)), None)
        if other is not None:
            written[entry] = other
            return False
        written[keys.object_shared(cap)] = None
    written[entry] = None
    written[keys.object_garbage(cap)] = b""
    return True


def apply(batch, written: dict[bytes, bytes | None]) -> None:
    for name, value in written.items():
        if value is None:
            batch.delete(name)
        else:
            batch.put(name, value)


def holds(index: Any, holder: bytes | None, cap: str, other_than: bytes) -> bool:
    """Does the record `holder` names (an o/h/ entry's value), other than `other_than`, refer to the file `cap`?"""
    if holder is None or holder == other_than:
        return False
    raw = index.db.get(holder)
    return raw is not None and cap in caps_of(holder, codec.loads(raw))


def caps_of(key: bytes, record: dict) -> list[str]:
    """The files an object's or a part's record (`key`: where it is) refers to."""
    return [p["cap"] for p in record["parts"]] if key.startswith(keys.OBJECT_KEYS) else [record["cap"]]


def share(index: Any, written: dict[bytes, bytes | None], read: Callable[[bytes], bytes | None], cap: str,
          holder: bytes) -> None:
    """The record at `holder` is about to refer to the file `cap`: if another record still refers to it (a watch
    writes the outputs of one job as the objects of every datum that job answered), both are noted as sharing it
    (o/s/), so that `release` marks it garbage only once neither does."""
    def get(key: bytes) -> bytes | None:
        return written[key] if key in written else read(key)

    named = get(keys.object_holder(cap))
    if named is None or named == holder or (raw := get(named)) is None or cap not in caps_of(named, codec.loads(raw)):
        return
    shared = get(keys.object_shared(cap))
    holders = shared_keys(shared) if shared is not None else []
    holders += [k for k in (named, holder) if k not in holders]
    written[keys.object_shared(cap)] = codec.dumps([k.hex() for k in holders])
    index._shared = True


def shared_keys(raw: bytes) -> list[bytes]:
    """The record keys an o/s/ entry names."""
    return [bytes.fromhex(k) for k in codec.loads(raw)]


def given_once(index: Any, mark: bytes, entries: Iterator[tuple[bytes, bytes]]) -> int:
    """`entries` written once, under the index's lock: in batches of HOLDERS_AT_ONCE, with `mark` (that this was
    done) in the last, synced (a crash before it: done again, to the same entries).  How many were written."""
    with index._lock:
        if index.db.get(mark) is not None:
            return 0
        batch: dict[bytes, bytes] = {}
        given = 0
        for key, value in entries:
            batch[key] = value
            if len(batch) >= HOLDERS_AT_ONCE:
                given += write_entries(index.db, batch)
        batch[mark] = b""
        return given + write_entries(index.db, batch, sync=True) - 1


def write_entries(db: Database, entries: dict[bytes, bytes], sync: bool = False) -> int:
    """`entries` written in one batch, and cleared; how many there were.  (Unsynced: the last batch's sync makes the
    log up to it durable.)"""
    with db.write_batch(sync=sync) as batch:
        for key, value in entries.items():
            batch.put(key, value)
    written = len(entries)
    entries.clear()
    return written


# --- what a user paid for a file, until its record is written or refused (refunds.py) -----------------
def charged_row(user: str, capability: str, amount: int) -> tuple[bytes, bytes]:
    """The row a charge writes in its own batch: what `user`'s account paid for the file `capability`, under an id of
    the charge's own (by which its refund owed, and an export's row brought back, are told apart from any other)."""
    return keys.object_charged(capability, os.urandom(8).hex()), codec.dumps({"user": user, "amount": amount})


def charges_of(view, cap: str) -> dict[bytes, dict]:
    """The file's charges' rows (o/a/), by key: each {user, amount}; one that is not a charge's (written by hand) is
    left out."""
    found = {}
    for key, value in view.iterator(prefix=keys.object_charged(cap)):
        try:
            row = codec.loads(value)
            if isinstance(row.get("user"), str) and type(row.get("amount")) is int:
                found[key] = row
        except (ValueError, AttributeError):
            continue
    return found


def charged_files(view) -> list[str]:
    """The files some charge's row (o/a/) is of, in order: those of writes under way, and any a crash left."""
    found: set[str] = set()
    for key in view.iterator(prefix=keys.OBJECT_CHARGED, include_value=False):
        try:
            found.add(keys.split_charge_row(keys.OBJECT_CHARGED, key)[0])
        except (ValueError, UnicodeDecodeError):  # not a charge's row (written by hand)
            continue
    return sorted(found)


def stored_name(store: Any, cap: str) -> str | None:
    """The name the store (`ShareStore`) lists the file `cap` under ("" for one put without a name); None: it lists
    no such file.  One read of the store's record of it."""
    try:
        parsed = Capability.parse(cap)
    except InvalidCapability:
        return None
    record = store.file_record(parsed.storage_index)
    if record is None or record["capability"] != parsed.text:
        return None
    return record.get("name") or ""


def settled(written: dict[bytes, bytes | None], view, caps: Iterable[str]) -> None:
    """The files' records are written (`written`: the record's batch): each charge of theirs stands, its row dropped
    (`view`: the database the rows are read from, before `written`)."""
    for cap in caps:
        written.update(dict.fromkeys(_rows(written, view, keys.object_charged(cap))))


def owe(written: dict[bytes, bytes | None], view, caps: Iterable[str]) -> int:
    """The files' records are refused (or never came): each charge of theirs becomes a refund owed of the same charge
    id, in the same batch (`written`; the rows read from `view`, then as `written` leaves them).  How many are owed."""
    owed = 0
    for cap in caps:
        for key, row in _rows(written, view, keys.object_charged(cap)).items():
            written[key] = None
            written[keys.object_refund(*keys.split_charge_row(keys.OBJECT_CHARGED, key))] = row
            owed += 1
    return owed


def _rows(written: dict[bytes, bytes | None], view, prefix: bytes) -> dict[bytes, bytes]:
    """The rows under `prefix` as `written` leaves them: the database's (`view`), less those it deletes, with those
    it puts."""
    found = dict(view.iterator(prefix=prefix))
    for key, value in written.items():
        if key.startswith(prefix):
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
    return found


def owed(view, limit: int = MAX_OWED_AT_ONCE) -> list[tuple[bytes, str, str, int]]:
    """The refunds owed, at most `limit`: (the row's key, the file's capability, the user, the amount).  A row that is
    not one (written by hand) is left out."""
    found = []
    with view.iterator(prefix=keys.OBJECT_REFUNDS) as it:
        for key, value in it:
            if len(found) >= limit:
                break
            try:
                row, (cap, _) = codec.loads(value), keys.split_charge_row(keys.OBJECT_REFUNDS, key)
                user, amount = row["user"], row["amount"]
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(user, str) and type(amount) is int and amount > 0:
                found.append((key, cap, user, amount))
    return found
