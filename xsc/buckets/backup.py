"""The bucket index's backup: `export`, everything in it as JSON (`xsc s3 export-index`), and `restore`, an export, or a
piece of one (`pieces`), written back into an index (`xsc s3 import-index`).

An export holds every bucket with its owner, grants and objects, the uploads in progress with their parts, the
completed uploads a retried CompleteMultipartUpload is answered from (`completed`, kept COMPLETED_KEEP), the users the
node's account funded (`funded`) and that account (`funded_by`), and the files marked for removal (`garbage`, for the
record: no object refers to them, so they are not restored).  `restore` writes each record the index holds none of,
and keeps the ones it holds as they are: an import run again, or over a node that went on meanwhile, undoes nothing.
No two records share a file: an object or part whose file another record refers to (here, or earlier in the import)
is left out, so that deleting one never removes the other's file; so is one whose file is marked for removal here
(the front may be removing it), is not in this node's store (removed, or never stored here: a GET of it would fail),
or is one of this node's own files the front did not store; and so is the completed upload naming an object so left
out (a retried Complete would answer the ETag of an object not there), which `pieces` sends in its object's piece.
The funded users are this node's only if the export is (its `funded_by` this node's account) or this node's ledger
shows it funded them; an export written before exports named them brings back those the ledger shows it funded.
The rows of charges not settled yet and of refunds owed (`charged`, `owed`) come back only into the node whose export
it is, only those its account signed (`export_here`), while its ledger holds no charge or refund of the file for the
user (`index._charges_back`).
An export is capabilities: whoever holds it can read every object.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .. import codec
from ..errors import InvalidArgument, InvalidCapability
from ..units import counted
from ..storage.core.capability import Capability
from .core import names, records
from .entries import stored_name
from .index import S3Index, exported, restored

if TYPE_CHECKING:  # the CLI splits exports with this module, without the ledger the accounts bring
    from .accounts import UserAccounts

log = logging.getLogger(__name__)

VERSION = 1  # an export's
# An object's record as the node's own requests make it at most: MAX_PARTS parts, each a capability, size, ETag and
# checksum (~300 bytes), with its headers and metadata.  Any other record is at most names.MAX_RECORD.
MAX_OBJECT_RECORD = 4 * 1024 * 1024
# A piece is parsed and written whole (one synced write), and small records take ~35 times their JSON's bytes as they
# are (~180 MB for a piece of 5 MiB of empty objects): the CLI sends pieces of PIECE_BYTES, a record larger than that
# alone, and a request carries at most the largest record and a bucket's (an `import-index` that sent pieces of
# 4 MiB sent none larger either).
PIECE_BYTES = 1024 * 1024
MAX_PIECE = MAX_OBJECT_RECORD + 1024 * 1024
CHARGE_ID = re.compile(r"[0-9a-f]{16}")  # a charge's own id (entries.charged_row)
MAX_CAPABILITY = 512  # characters of a capability a charge names (as `UserAccounts.move` takes it)
LEDGER_FUNDED = "funded_in_ledger"  # a piece's: note the users this node's ledger shows it funded (`pieces`)
LAST = "last"  # a piece's: the last of its export (`pieces`), after which the users' chains read for it are let go
PIECE_HINT = "import an export with xsc s3 import-index FILE: it sends it in pieces the node takes"


def export(index: S3Index, funded_by: str | None = None) -> dict:
    """The index's records as JSON (in the index's module, which spells their keys), with the account of the node
    that funded its `funded` users (`funded_by`, the node's client account), which an import tells its own by."""
    return {**exported(index), **({"funded_by": funded_by} if funded_by is not None else {})}


def export_here(index: S3Index, accounts: UserAccounts) -> dict:
    """`export` of this node's index: funded by its client account, and each row of its charges and refunds owed
    signed by that account (`UserAccounts.row_signature`), which an import into this node asks of a row before it
    pays it back (`restore_here`)."""
    whole = export(index, accounts.owner.id)
    for kind in ("charged", "owed"):
        whole[kind] = [{**row, "signature": accounts.row_signature(row)} for row in whole[kind]]
    return whole


def pieces(whole: dict, size: int = PIECE_BYTES) -> Iterator[dict]:
    """`whole` (an export) in pieces of about `size` bytes of JSON, each an export of its own for `restore`: a
    bucket's objects and an upload's parts may be spread over several, each with its bucket's or upload's record;
    the last says so (LAST).  A record that would make a piece larger than a request may carry (MAX_PIECE):
    InvalidArgument naming it."""
    piece: dict = {}
    held = 0
    head = {"version": VERSION, **({"funded_by": whole["funded_by"]} if "funded_by" in whole else {})}
    for kind, unit, glued in _units(whole):
        grown = len(codec.dumps(unit))
        if grown > MAX_PIECE - 1024:  # (room for the piece's head)
            _bad(f"{_named(kind, unit)} is {grown:,} bytes of JSON, more than the {MAX_PIECE - 1024:,} one import "
                 "request carries with it")
        if held and held + grown > size and not (glued and held + grown <= MAX_PIECE - 1024):
            yield {**head, **piece}
            piece, held = {}, 0
        _add(piece, kind, unit)
        held += grown
    # An export written before exports named the users the node funded: the ledger tells which this node funded.
    yield {**head, **piece, **({LEDGER_FUNDED: True} if "funded" not in whole else {}), LAST: True}


def checked_pieces(whole: Any, size: int = PIECE_BYTES) -> list[dict]:
    """`pieces` of `whole`, each checked as `restore` checks it, before the first is sent: a file holding a record
    that is not an export's (a hand-edited or truncated one) is refused whole, rather than once the pieces before
    that record's are imported.  InvalidArgument naming the record."""
    found = list(pieces(whole, size))
    for piece in found:
        _checked(piece)
    return found


def _units(whole: Any) -> Iterator[tuple[str, Any, bool]]:
    """The export's records one by one: a bucket with one of its objects (or none), an upload with one of its parts
    (or none), a completed upload, a funded user; each with whether it goes in the piece of the one before it.  A
    completed upload goes with the object it names (bucket, key and ETag): the import leaves it out if it leaves that
    object out, which it can tell only in one piece.  What is not an export's is passed on for `restore` to refuse."""
    if not isinstance(whole, dict) or whole.get("version") != VERSION:  # a whole export says its version
        raise InvalidArgument(f"an export is a JSON object of version {VERSION} (what `xsc s3 export-index` wrote)")
    completed = whole.get("completed") or {}
    if not isinstance(completed, dict):
        yield "completed", completed, False
        completed = {}
    completed = dict(completed)  # (the caller's export stays whole)
    naming: dict[tuple, list[str]] = {}
    for upload_id, record in completed.items():
        named = tuple(record.get(k) for k in ("bucket", "key", "etag")) if isinstance(record, dict) else ()
        if named and all(isinstance(n, str) for n in named):
            naming.setdefault(named, []).append(upload_id)
    for kind, field in (("buckets", "objects"), ("uploads", "parts")):
        for record in _list(whole, kind):
            held = record.get(field) if isinstance(record, dict) else None
            if not held or not isinstance(held, (dict, list)):
                yield kind, record, False
                continue
            head = {k: v for k, v in record.items() if k != field}
            for item in (held.items() if isinstance(held, dict) else held):
                yield kind, {**head, field: dict([item]) if isinstance(held, dict) else [item]}, False
                named = (head.get("name"), item[0], item[1].get("etag")) \
                    if isinstance(held, dict) and isinstance(item[1], dict) else ()
                for upload_id in naming.pop(named, []) if all(isinstance(n, str) for n in named) else ():
                    yield "completed", {upload_id: completed.pop(upload_id)}, True
    for upload_id, record in completed.items():
        yield "completed", {upload_id: record}, False
    for user in _list(whole, "funded"):
        yield "funded", user, False
    for kind in ("charged", "owed"):
        for row in _list(whole, kind):
            yield kind, row, False


def _named(kind: str, unit: Any) -> str:
    """The record `unit` of an export, as an error names it."""
    unit = unit if isinstance(unit, dict) else {}
    if kind == "buckets":
        held = list(unit["objects"]) if isinstance(unit.get("objects"), dict) else []
        return f"bucket {unit.get('name')!r}" + (f" with its object {held[0]!r}"[:300] if held else "")
    if kind == "uploads":
        return f"upload {unit.get('id')!r}"[:100]
    return f"a {kind} record"


def _add(piece: dict, kind: str, unit: Any) -> None:
    """`unit` into `piece`: a bucket's objects, or an upload's parts, joined to its record there if it is there."""
    if kind == "completed":
        if isinstance(unit, dict) and isinstance(piece.get("completed", {}), dict):
            piece.setdefault("completed", {}).update(unit)
        else:
            piece["completed"] = unit
        return
    found = piece.setdefault(kind, [])
    field, name = {"buckets": ("objects", "name"), "uploads": ("parts", "id")}.get(kind, (None, None))
    last = found[-1] if found else None
    if (field and isinstance(last, dict) and isinstance(unit, dict) and unit.get(field)
            and isinstance(last.get(field), type(unit.get(field))) and last.get(name) == unit.get(name)):
        if isinstance(unit[field], dict):
            last[field].update(unit[field])
        else:
            last[field].extend(unit[field])
        return
    found.append(unit)


def _list(whole: dict, name: str) -> list:
    found = whole.get(name) or []
    if not isinstance(found, list):
        raise InvalidArgument(f"an export's {name!r} is a list")
    return found


def restore(index: S3Index, piece: Any, *, account: str | None = None,
            funded_here: Callable[[], Iterable[str]] = tuple,
            charged_here: Callable[[str, str], bool] = lambda user, cap: True,
            stored_name: Callable[[str], str | None] | None = None,
            signed: Callable[[dict], bool] | None = None) -> dict:
    """Write `piece` (an export, or a piece of one) into the index in one synced write (`index.restored`): each record
    the index holds none of; each one it holds is kept as it is (`kept`); an object or part that names a file another
    record refers to is left out (`taken`: deleting it would remove that record's file), as is one naming a file
    marked for removal here, a file this node's store no longer lists in an export of its own, or one of its files the
    front did not store, and the completed upload naming an object so left out
    (`refused`; `stored_name`: the name the store lists a capability's file under, None for no file; not given: no
    store to hold the files to), each named in `left_out`.  Its funded users are noted only if
    this node (its client account: `account`) funded them (`funded_here`: those its ledger shows it funded).  A
    bucket held by another owner here: BucketTaken, and nothing is written; a piece that is not an export's:
    InvalidArgument (or the 400 of the name that is not one).  The rows of charges and refunds owed come back only into
    the node whose export it is, and only while its ledger holds no charge or refund of the file for the user
    (`charged_here`; not given: it holds every one), each a refund owed unless a record here refers to its file
    (`index._charges_back`); of an export that says it is this node's, only those this node signed (`signed`: not
    given, every one), the others left out (`unsigned`: their amounts would be paid from this node's account).
    How many of each kind were written."""
    data = _checked(piece)
    unsigned = _unsigned(data, account, signed)
    written = restored(index, data, account=account, funded_here=funded_here, charged_here=charged_here,
                       stored_name=stored_name)
    written["refused"] += len(unsigned)
    written["left_out"] += unsigned
    if written["charges"]:
        index.on_refunds_owed()
    if written["left_out"]:
        log.warning("an S3 index import left out %s: %s", counted(len(written["left_out"]), "record"),
                    dict(Counter(item["reason"] for item in written["left_out"])))
    return written


def _unsigned(data: dict, account: str | None, signed: Callable[[dict], bool] | None) -> list[dict]:
    """The rows of charges and refunds owed of an export that says it is this node's (its `funded_by` is `account`)
    that this node's account did not sign, taken out of `data`, each named as left out."""
    if signed is None or account is None or data["funded_by"] != account:
        return []
    left_out = []
    for kind in ("charged", "owed"):
        ok = [signed(row) for row in data[kind]]
        left_out += [{"charge": row["charge"], "cap": row["cap"], "user": row["user"], "reason": "unsigned"}
                     for row, good in zip(data[kind], ok) if not good]
        data[kind] = [row for row, good in zip(data[kind], ok) if good]
    return left_out


def restore_here(index: S3Index, piece: Any, accounts: UserAccounts, store: Any) -> dict:
    """`restore` into this node's index: its client account (`accounts.owner`), which funded its users and signed
    the rows of charges its exports hold, the users its ledger shows it funded, and the names its store
    (`ShareStore`) lists its files under.  The charges of an export come in its last pieces, one after another: the
    users' chains read for them are kept from one to the next (each entry read once an import,
    `UserAccounts.charged_here`), and let go after a piece with none, or its last: the piece that says so (LAST), or
    a whole export sent as one request (`exported`, which no piece carries), after which no piece of it is to come."""
    try:
        return restore(index, piece, account=accounts.owner.id, funded_here=accounts.funded_in_ledger,
                       charged_here=accounts.charged_here(), stored_name=lambda cap: stored_name(store, cap),
                       signed=accounts.row_signed)
    finally:
        if not isinstance(piece, dict) or piece.get(LAST) is True or "exported" in piece or not (
                piece.get("charged") or piece.get("owed")):
            accounts.forget_chains()


def _checked(piece: Any) -> dict:
    """The piece's records as the index writes them; InvalidArgument (saying which) if one is not."""
    version = piece.get("version", VERSION) if isinstance(piece, dict) else None
    if type(version) is not int or version != VERSION:  # type(): JSON's true is no version, though True == 1
        raise InvalidArgument(f"an export is a JSON object of version {VERSION} (what `xsc s3 export-index` wrote)")
    try:
        buckets = [_bucket(b) for b in _list(piece, "buckets")]
        uploads = [_upload(u) for u in _list(piece, "uploads")]
        completed = piece.get("completed") or {}
        if not isinstance(completed, dict):
            raise InvalidArgument("'completed' is a map of upload ids to what their Complete answered")
        done = {_upload_id(i): _completed(r) for i, r in completed.items()}
        users = [names.check_user(u) if isinstance(u, str) else _bad("a funded user is a name")
                 for u in _list(piece, "funded")]
        funded_by = piece.get("funded_by")
        if funded_by is not None and (not isinstance(funded_by, str) or len(funded_by) > 256):
            _bad("an export's funded_by is the account of the node that funded its users")
        if type(piece.get(LEDGER_FUNDED, False)) is not bool:
            _bad(f"a piece's {LEDGER_FUNDED} is true or false")
        charges = {kind: [_charge(row) for row in _list(piece, kind)] for kind in ("charged", "owed")}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidArgument(f"the export holds a record that is not one: {err!r}"[:300],
                              hint="import a file `xsc s3 export-index` wrote") from None
    # A whole export with no funded users' section (`exported` says it is whole) is one written before it had one.
    from_ledger = piece.get(LEDGER_FUNDED) is True or ("exported" in piece and "funded" not in piece)
    return {"buckets": buckets, "uploads": uploads, "completed": done, "funded": users, "funded_by": funded_by,
            "funded_in_ledger": from_ledger, **charges}


def _bad(message: str):
    raise InvalidArgument(message, hint="import a file `xsc s3 export-index` wrote")


def _charge(row: dict) -> dict:
    """A charge's row, or a refund's owed: {cap, charge (16 hex digits), user, amount (micro-credits, at least 1)}."""
    cap, charge, amount = row["cap"], row["charge"], row["amount"]
    if (not isinstance(cap, str) or not 0 < len(cap) <= MAX_CAPABILITY or "\x00" in cap or not isinstance(charge, str)
            or not CHARGE_ID.fullmatch(charge) or type(amount) is not int or not 0 < amount <= names.MAX_AMOUNT):
        _bad("a charge is {cap, charge: 16 hex digits, user, amount: micro-credits}")
    try:  # (its refund's job names the file's storage index)
        Capability.parse(cap)
    except InvalidCapability:
        _bad(f"a charge names a capability, not {cap!r}"[:200])
    signature = row.get("signature")
    if signature is not None and (not isinstance(signature, str) or len(signature) > 128):
        _bad("a charge's signature is 128 hex digits (its node's account's: `xsc s3 export-index` writes it)")
    return {"cap": cap, "charge": charge, "user": names.check_user(row["user"]), "amount": amount,
            **({"signature": signature} if signature is not None else {})}


def _bucket(b: dict) -> dict:
    names.check_bucket(b["name"])
    owner = b.get("owner") or names.DEFAULT_USER
    grants = b.get("grants") or {}
    names.check_user(owner)
    if not isinstance(grants, dict) or any(g not in ("read", "write")
                                           for u, g in grants.items() if names.check_user(u)):
        _bad(f"bucket {b['name']!r}: its grants are {{USER: \"read\" | \"write\"}}")
    names.check_grants(b["name"], grants)
    objects = b.get("objects") or {}
    if not isinstance(objects, dict):
        _bad(f"bucket {b['name']!r}: its objects are a map of keys to records")
    return {"name": b["name"], "created": names.check_time(b["created"], "a bucket's created"), "owner": owner,
            "grants": grants, "objects": {names.check_key(k): _object(r) for k, r in objects.items()}}


def _object(record: dict) -> dict:
    if isinstance(record.get("parts"), list) and len(record["parts"]) > names.MAX_PARTS:
        _bad(f"an object has at most {names.MAX_PARTS:,} parts, not {len(record['parts']):,}")
    clean = records.clean(record)
    clean.pop("condition", None)
    clean.pop("writer", None)
    for given, part in zip(record["parts"], clean["parts"]):
        part["cap"] = _cap(part["cap"], part["size"])
        if "checksum" in given:  # a COMPOSITE object's part keeps its own
            part["checksum"] = records.checksum_value(given["checksum"])
    return _bounded(clean, MAX_OBJECT_RECORD, "an object's record")


def _bounded(record: dict, most: int, what: str) -> dict:
    """`record`, unless it is larger than any the node's own requests write: what an import adds stays as bounded
    as what they add."""
    size = len(codec.dumps(record))
    if size > most:
        _bad(f"{what} is {size:,} bytes, more than the {most:,} any request writes")
    return record


def _upload_id(upload_id: Any) -> str:
    if not isinstance(upload_id, str) or not upload_id.isalnum() or not upload_id.isascii() or len(upload_id) > 64:
        _bad(f"an upload id is letters and digits, not {upload_id!r}"[:200])
    return upload_id


def _upload(u: dict) -> dict:
    names.check_bucket(u["bucket"])
    names.check_key(u["key"])
    metadata = u.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        _bad("an upload's metadata is a map of strings")
    names.check_metadata(metadata)
    record = {"bucket": u["bucket"], "key": u["key"],
              "created": names.check_time(u["created"], "an upload's created"),
              "headers": records.headers(u.get("headers")),
              "content_type": str(u.get("content_type") or "binary/octet-stream"), "metadata": metadata}
    if u.get("user") is not None:
        record["user"] = names.check_user(u["user"])
    if u.get("checksum") is not None:
        record["checksum"] = records.upload_checksum(u["checksum"])
    return {"id": _upload_id(u["id"]), **_bounded(record, names.MAX_RECORD, "an upload's record"),
            "parts": [_part(p) for p in u.get("parts") or []]}


def _part(p: dict) -> dict:
    if type(p["number"]) is not int:
        _bad(f"a part's number is a whole number from 1 to {names.MAX_PARTS:,}")
    names.check_part_number(p["number"])
    if not isinstance(p["cap"], str) or type(p["size"]) is not int or p["size"] < 0 or not isinstance(p["etag"], str):
        _bad("an uploaded part is {number, cap, size, etag, modified}")
    extra = {"checksums": records.part_checksums(p["checksums"])} if p.get("checksums") else {}
    return _bounded({"number": p["number"], "cap": _cap(p["cap"], p["size"]), "size": p["size"], "etag": p["etag"],
                     "modified": names.check_time(p["modified"], "a part's modified"), **extra},
                    names.MAX_RECORD, "a part's record")


def _cap(cap: str, size: int) -> str:
    """A capability as the store names its file (as `xsc store put` printed it), however the export spelled it (the
    case of its base32, spaces around it): one file, one text, which the index tells the records that share a file
    by.  A text that is no capability names no file the front could remove, and is kept as it is.  The part's `size`
    is its file's, as every record the front writes says: a GET answers the record's size as its Content-Length and
    sends the file, so a smaller one would leave the rest of the file on the connection as the next answer."""
    try:
        parsed = Capability.parse(cap)
    except InvalidCapability:
        return cap
    if parsed.size != size:
        _bad(f"a part of {size:,} bytes names a file of {parsed.size:,} bytes ({parsed.text})")
    return parsed.text


def _completed(r: dict) -> dict:
    names.check_bucket(r["bucket"])
    names.check_key(r["key"])
    if not isinstance(r["etag"], str):
        _bad("a completed upload's etag is text")
    return _bounded({"bucket": r["bucket"], "key": r["key"], "etag": r["etag"],
                     "modified": names.check_time(r["modified"], "a completed upload's modified"),
                     "headers": records.headers(r.get("headers"))}, names.MAX_RECORD, "a completed upload's record")
