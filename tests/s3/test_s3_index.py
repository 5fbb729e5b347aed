"""The bucket index on a real LevelDB: overwrites, garbage, multipart rules, reconciliation, export, reopen."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import plyvel
import pytest

from xsc.errors import (BadRequest, BucketNotEmpty, BucketTaken, ConditionalConflict, EntityTooSmall, Forbidden,
                        InvalidArgument, InvalidBucketName, InvalidPart, InvalidPartOrder, NoSuchBucket, NoSuchKey,
                        NoSuchUpload, PreconditionFailed, TooManyBuckets, TooManyGrants, TooManyUploads)
from xsc import codec, keys
from xsc.buckets import backup
from xsc.buckets.core import names, records
from xsc.buckets.index import S3Index, funded, funded_note, index_holders, users
from xsc.buckets.marks import FileMarks
from xsc.buckets.uploads import COMPLETED_KEEP, upload_page
from xsc.s3.core import xml
from xsc.storage.core.capability import Capability
from xsc.node.appkeys import CONFIG, DB, NODE

from tests.support.nodes import close_node, serve


@pytest.fixture
def db(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    yield db
    db.close()


MARKS = FileMarks(b"k" * 32)  # the front's, whose names an import brings back the records of


@pytest.fixture
def index(db):
    index = S3Index(db, min_part_size=100, marks=MARKS)
    index.create_bucket("bkt")
    return index


def obj(*caps: str, size: int = 10) -> dict:
    return {"parts": [{"cap": c, "size": size} for c in caps], "etag": "e", "content_type": "text/plain"}


def test_overwrite_swaps_the_record_and_marks_the_old_files(index) -> None:
    assert index.put("bkt", "k", obj("cap-1")) == []
    assert index.put("bkt", "k", obj("cap-2")) == ["cap-1"]
    assert index.get("bkt", "k")["parts"][0]["cap"] == "cap-2"
    assert index.garbage() == ["cap-1"]
    index.forget_garbage(["cap-1", "cap-2"])  # a file still referenced is never forgotten as garbage
    assert index.garbage() == []
    assert index.delete("bkt", "k") == ["cap-2"] and index.garbage() == ["cap-2"]
    with pytest.raises(NoSuchKey):
        index.get("bkt", "k")
    with pytest.raises(NoSuchBucket):
        index.get("nope", "k")
    with pytest.raises(NoSuchBucket):
        index.put("nope", "k", obj("cap-3"))
    assert "cap-3" in index.garbage()  # the file stored for a bucket that is gone is garbage


def test_a_missing_bucket_of_a_long_name_is_said_in_a_line_the_name_cut(index) -> None:
    """A name past any bucket's length (a path of 3,000 characters) is quoted cut, not whole, by every refusal that
    finds no bucket of it; the error's own field keeps it (S3's BucketName)."""
    name = "b" * 3000
    for refused in (lambda: index.get(name, "k"), lambda: index.put(name, "k", obj("cap-1")),
                    lambda: index.create_upload(name, "k", {})):
        with pytest.raises(NoSuchBucket) as caught:
            refused()
        assert len(caught.value.message) < 200 and caught.value.details["bucket"] == name


def test_objects_put_in_one_group_are_written_as_if_one_after_another(index) -> None:
    index.put("bkt", "k", obj("cap-0"))
    outcomes = index.put_all([("bkt", "k", obj("cap-1")), ("nope", "k", obj("cap-2")), ("bkt", "k", obj("cap-3")),
                              ("bkt", "x\x00", obj("cap-4")), ("bkt", "other", obj("cap-5"))])
    assert outcomes[0] == ["cap-0"] and outcomes[2] == ["cap-1"] and outcomes[4] == []
    assert isinstance(outcomes[1], NoSuchBucket) and isinstance(outcomes[3], InvalidArgument)
    assert index.get("bkt", "k")["parts"][0]["cap"] == "cap-3" and index.get("bkt", "other")["size"] == 10
    # The replaced files and those of the records refused, for a missing bucket or a key no object can have, are
    # garbage: no record will refer to them.
    assert sorted(index.garbage()) == ["cap-0", "cap-1", "cap-2", "cap-4"]
    index.put("bkt", "again", obj("cap-1"))  # a record that refers to a file again clears its mark
    assert sorted(index.garbage()) == ["cap-0", "cap-2", "cap-4"]


def test_records_cleaned_by_their_writer_are_stored_as_the_index_would_clean_them(index) -> None:
    record = {**obj("cap-1"), "metadata": {"m": "v"}, "headers": {"Cache-Control": "no-cache"}, "modified": 5}
    index.put("bkt", "cleaned-here", record)
    outcomes = index.put_all([("bkt", "cleaned-before", records.clean(record)),
                              ("nope", "k", records.clean(obj("cap-2")))], cleaned=True)
    assert outcomes[0] == [] and isinstance(outcomes[1], NoSuchBucket)
    assert index.get("bkt", "cleaned-before") == index.get("bkt", "cleaned-here")
    assert index.garbage() == ["cap-2"]  # the file stored for a bucket that is gone is garbage here too


def test_a_conditional_write_whose_condition_no_longer_holds_keeps_nothing(index) -> None:
    """Two PutObjects with If-None-Match: * both found the key free before their bodies came; the second to be
    recorded is refused as it is written, in the same group too, and its file is garbage.  A Complete's condition is
    judged as it makes the object; one that does not hold leaves the upload as it was."""
    first = {**obj("cap-1"), "condition": {"if_none_match": "*"}}
    second = {**obj("cap-2"), "etag": "f", "condition": {"if_none_match": "*"}}
    outcomes = index.put_all([("bkt", "k", first), ("bkt", "k", second)])
    assert outcomes[0] == [] and isinstance(outcomes[1], ConditionalConflict)
    assert index.get("bkt", "k")["parts"][0]["cap"] == "cap-1" and "condition" not in index.get("bkt", "k")
    assert index.garbage() == ["cap-2"]
    with pytest.raises(ConditionalConflict):
        index.put("bkt", "k", {**obj("cap-3"), "condition": {"if_match": "not-e"}})
    assert index.put("bkt", "k", {**obj("cap-4"), "condition": {"if_match": "e"}}) == ["cap-1"]
    with pytest.raises(ConditionalConflict):
        index.put("bkt", "gone", {**obj("cap-5"), "condition": {"if_match": "e"}})
    with pytest.raises(InvalidArgument):
        index.put("bkt", "k", {**obj("cap-6"), "condition": {"if_none_match": "etag"}})
    assert sorted(index.garbage()) == ["cap-1", "cap-2", "cap-3", "cap-5"]  # cap-6: never recorded, an orphan
    upload = index.create_upload("bkt", "k")
    index.put_part(upload, 1, "part-1", 10, "a1")
    with pytest.raises(PreconditionFailed):
        index.complete(upload, [(1, "a1")], condition={"if_none_match": "*"})
    fresh = index.create_upload("bkt", "new")
    index.put_part(fresh, 1, "part-2", 10, "a2")
    with pytest.raises(NoSuchKey):
        index.complete(fresh, [(1, "a2")], condition={"if_match": "e"})
    assert [p["number"] for p in index.parts(upload)] == [1]  # the upload as it was
    record, garbage = index.complete(upload, [(1, "a1")], condition={"if_match": "e"})
    assert record["parts"][0]["cap"] == "part-1" and garbage == ["cap-4"]


def test_buckets(index) -> None:
    assert index.create_bucket("bkt")["owner"] == "xsc"  # one's own bucket again: itself, as in us-east-1
    with pytest.raises(InvalidBucketName):
        index.create_bucket("A")
    index.put("bkt", "k", obj("c"))
    with pytest.raises(BucketNotEmpty):
        index.delete_bucket("bkt")
    index.delete("bkt", "k")
    upload = index.create_upload("bkt", "m")
    with pytest.raises(BucketNotEmpty):
        index.delete_bucket("bkt")
    index.abort(upload)
    index.delete_bucket("bkt")
    assert index.buckets() == []


def test_multipart_rules(index) -> None:
    upload = index.create_upload("bkt", "big", "video/mp4", {"a": "b"})
    index.put_part(upload, 1, "p1", 50, "aa")
    index.put_part(upload, 2, "p2", 150, "bb")
    assert index.put_part(upload, 3, "p3-old", 10, "cc") == []
    assert index.put_part(upload, 3, "p3", 10, "dd") == ["p3-old"]
    with pytest.raises(EntityTooSmall):
        index.complete(upload, [(1, "aa"), (3, "dd")])
    with pytest.raises(InvalidPart):
        index.complete(upload, [(2, "bb"), (3, "cc")])
    with pytest.raises(InvalidPartOrder):
        index.complete(upload, [(3, "dd"), (2, "bb")])
    record, garbage = index.complete(upload, [(2, "bb"), (3, "dd")])
    assert [p["cap"] for p in record["parts"]] == ["p2", "p3"] and record["size"] == 160
    assert record["etag"].endswith("-2") and record["content_type"] == "video/mp4"
    assert garbage == ["p1"]
    with pytest.raises(NoSuchUpload):
        index.upload(upload)
    with pytest.raises(NoSuchUpload):
        index.put_part(upload, 4, "late", 1, "ee")
    assert "late" in index.garbage()


def test_a_part_number_that_is_a_bool_or_a_float_is_refused_and_nothing_is_recorded(index) -> None:
    """`check_part_number` judges the type itself: a caller that did not (the import checks it first) cannot record
    part `true` or `2.0`, which compare as 1 and 2 but would be written into the part's record and key as they are."""
    upload = index.create_upload("bkt", "big")
    for number in (True, 2.0, 1.5, 0, names.MAX_PARTS + 1):
        with pytest.raises(InvalidArgument, match="whole numbers from 1"):
            names.check_part_number(number)
        with pytest.raises(InvalidArgument):
            index.put_part(upload, number, "p", 150, "aa")
    assert index.parts(upload) == [] and "p" not in index.garbage()
    index.put_part(upload, 2, "p", 150, "aa")
    assert [p["number"] for p in index.parts(upload)] == [2]


def test_reconcile_finds_files_no_record_refers_to(index) -> None:
    index.put("bkt", "k", obj("a", "b"))
    upload = index.create_upload("bkt", "m")
    index.put_part(upload, 1, "c", 1, "x")
    assert index.reconcile(["a", "b", "c", "orphan"]) == ["orphan"]
    assert "orphan" in index.garbage()


def test_a_reconciliation_reads_the_records_of_the_files_it_is_asked_of_not_every_record(db) -> None:
    """2,000 objects, a multipart one and a part: a reconciliation asked of a few files reads the records their o/h/
    entries name (a multipart object's once), not the others, and still finds the orphans: a file no record refers
    to, one an overwrite let go, and one whose o/h/ entry names a record that does not refer to it."""
    index = S3Index(db)
    index.create_bucket("bkt")
    index.put_all([("bkt", f"obj-{n}", obj(f"cap-{n}")) for n in range(2_000)])
    index.put("bkt", "mp", obj("mp-1", "mp-2", "mp-3"))
    upload = index.create_upload("bkt", "m")
    index.put_part(upload, 1, "part-1", 100, "e")
    index.put("bkt", "obj-6", obj("cap-new"))
    db.put(keys.object_holder("stale"), keys.object_key("bkt", "obj-5"))
    counting = _CountingDb(db)
    reopened = S3Index(counting)
    counting.seen.clear()
    asked = ["cap-7", "cap-1999", "mp-1", "mp-2", "mp-3", "part-1", "cap-6", "cap-new", "stale", "orphan"]
    assert reopened.reconcile(asked) == ["cap-6", "orphan", "stale"]
    assert counting.seen[keys.OBJECT_KEYS] + counting.seen[keys.OBJECT_PARTS] <= 6, counting.seen
    assert {"cap-6", "orphan", "stale"} <= set(reopened.garbage())


def test_export_and_reopen(db, tmp_path) -> None:
    index = S3Index(db)
    index.create_bucket("bkt")
    index.put("bkt", "dir/k", obj("cap-x"))
    upload = index.create_upload("bkt", "m")
    index.db.put(*funded_note("ana"), sync=True)  # funded, with no bucket, grant or upload: only its record says
    # the node pays for it
    exported = backup.export(index)
    assert exported["buckets"][0]["objects"]["dir/k"]["parts"][0]["cap"] == "cap-x"
    assert exported["uploads"][0]["id"] == upload
    assert exported["funded"] == ["ana"] and "ana" in users(index)
    db.close()
    again = S3Index(plyvel.DB(str(tmp_path / "db")))
    assert again.get("bkt", "dir/k")["parts"][0]["cap"] == "cap-x"
    again.db.close()


def test_an_export_taken_while_an_upload_completes_holds_the_upload_or_its_object_never_neither(tmp_path) -> None:
    """An export reads the index from one snapshot: a Complete written while it reads (its object in, its upload and
    parts out, in one batch) is in it whole or not at all.  Read as it goes, the export read the bucket's objects
    before the Complete and the uploads after it, and held neither: an import of it lost the object."""
    db = _CompletingMidway(plyvel.DB(str(tmp_path / "db"), create_if_missing=True))
    index = S3Index(db, min_part_size=100)
    index.create_bucket("bkt")
    upload = index.create_upload("bkt", "big")
    index.put_part(upload, 1, "part-1", 10, "e1")
    db.midway = lambda: index.complete(upload, [(1, "e1")], "bkt", "big")
    exported = backup.export(index)
    assert db.midway is None and index.get("bkt", "big")["parts"][0]["cap"] == "part-1"  # completed as it read
    assert exported["buckets"][0]["objects"] == {} and exported["completed"] == {}
    assert [(u["id"], [p["cap"] for p in u["parts"]]) for u in exported["uploads"]] == [(upload, ["part-1"])]
    db.close()


class _CompletingMidway:
    """A database that runs `midway` once, as a reader first asks it (or a snapshot of it) for the uploads in
    progress: an export reads them after the buckets' objects."""

    def __init__(self, db) -> None:
        self._db, self.midway = db, None

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    def iterator(self, **kwargs):
        self._reading(kwargs)
        return self._db.iterator(**kwargs)

    def snapshot(self):
        return _Snapshot(self, self._db.snapshot())

    def _reading(self, kwargs: dict) -> None:
        if kwargs.get("prefix") == keys.OBJECT_UPLOADS and self.midway is not None:
            midway, self.midway = self.midway, None
            midway()


class _Snapshot:
    def __init__(self, owner: _CompletingMidway, snapshot) -> None:
        self._owner, self._snapshot = owner, snapshot

    def __getattr__(self, name: str):
        return getattr(self._snapshot, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._snapshot.close()

    def iterator(self, **kwargs):
        self._owner._reading(kwargs)
        return self._snapshot.iterator(**kwargs)


def test_an_export_imported_into_another_index_answers_a_retried_complete_as_the_first(db, tmp_path) -> None:
    """Everything an export holds comes back in another index, sent in pieces (a bucket's objects and an upload's
    parts spread over several): a retried Complete is answered as the first index answers it, the funded users are
    listed, and an import run again keeps what is there."""
    index = S3Index(db, min_part_size=100)
    index.create_bucket("bkt", "ana")
    index.grant("bkt", "bob", "read")
    for n in range(5):
        index.put("bkt", f"k{n}", obj(f"cap-{n}"))
    done = index.create_upload("bkt", "big", by="ana", checksum={"algorithm": "sha256", "type": "COMPOSITE"})
    index.put_part(done, 1, "part-1", 100, "e1", {"sha256": "c1"})
    index.put_part(done, 2, "part-2", 10, "e2", {"sha256": "c2"})
    index.complete(done, [(1, "e1"), (2, "e2")], "bkt", "big", checksum={"value": "v-2", "parts": ["c1", "c2"]})
    going = index.create_upload("bkt", "more", by="bob")
    for n in (1, 2, 3):
        index.put_part(going, n, f"more-{n}", 100, f"m{n}")
    index.db.put(*funded_note("gus"), sync=True)
    exported = backup.export(index, funded_by="node-a")
    assert list(exported["completed"]) == [done]
    other = S3Index(plyvel.DB(str(tmp_path / "other"), create_if_missing=True), min_part_size=100)
    sent = list(backup.pieces(exported, size=300))
    assert len(sent) > 4
    written = [backup.restore(other, piece, account="node-a") for piece in sent]
    assert sum(w["objects"] for w in written) == 6 and sum(w["parts"] for w in written) == 3
    assert {k: v for k, v in backup.export(other, funded_by="node-a").items() if k != "exported"} == {
        k: v for k, v in exported.items() if k != "exported"}
    assert other.complete(done, [(1, "e1"), (2, "e2")], "bkt", "big") == index.complete(
        done, [(1, "e1"), (2, "e2")], "bkt", "big")
    assert {"ana", "bob", "gus"} <= set(users(other))
    with pytest.raises(TooManyUploads):  # the uploads imported count against their users
        S3Index(other.db, max_uploads=1).create_upload("bkt", "again", by="bob")
    again = backup.restore(other, exported, account="node-a")
    assert again["kept"] == 1 + 6 + 1 + 3 + 1 + 1 and again["left_out"] == []
    assert sum(v for k, v in again.items() if k not in ("kept", "left_out")) == 0
    other.db.close()


def test_an_import_refuses_what_is_not_an_export_and_a_bucket_another_user_owns(index) -> None:
    for wrong in ([], {"version": 2}, {"buckets": [{"name": "Not A Bucket", "created": 0}]},
                  {"buckets": [{"name": "b2", "created": 0, "objects": {"k": {"parts": []}}}]},
                  {"uploads": [{"id": "../x", "bucket": "bkt", "key": "k", "created": 0}]},
                  {"completed": {"u1": {"bucket": "bkt"}}}, {"funded": [7]},
                  {"uploads": [{"id": "u2", "bucket": "gone", "key": "k", "created": 0}]}):
        with pytest.raises(BadRequest):  # InvalidArgument, InvalidBucketName: 400
            backup.restore(index, wrong)
    for wrong in ([], {"bad": 1}, {"version": 2, "buckets": []}):  # a whole file, split as `import-index` does
        with pytest.raises(BadRequest):
            list(backup.pieces(wrong))
    index.create_bucket("hers", "ana")
    with pytest.raises(BucketTaken):
        backup.restore(index, {"buckets": [{"name": "hers", "created": 0, "owner": "bob", "objects": {
            "k": obj("cap-1")}}], "funded": ["bob"]})
    assert users(index) == ["ana", "xsc"] and index.objects("hers") == []  # nothing of it written


def test_an_import_refuses_true_where_a_number_is_asked_and_a_number_where_true_or_false_is(index) -> None:
    """JSON's true equals 1 to Python: a piece of `"version": true` is no export of version 1."""
    upload = {"id": "u1", "bucket": "bkt", "key": "k", "created": 0}
    part = {"number": 1, "cap": "c", "size": 1, "etag": "e", "modified": 0}
    for wrong in ({"version": True}, {"version": 1.0}, {backup.LEDGER_FUNDED: 1},
                  {"uploads": [{**upload, "parts": [{**part, "number": True}]}]},
                  {"uploads": [{**upload, "parts": [{**part, "number": 1.0}]}]}):
        with pytest.raises(InvalidArgument):
            backup.restore(index, codec.loads(codec.text(wrong)))
    assert index.uploads("bkt") == []
    assert backup.restore(index, {"version": 1, backup.LEDGER_FUNDED: False})["buckets"] == 0


def test_an_import_refuses_times_and_sizes_no_record_holds_and_nothing_of_the_piece_is_written(index) -> None:
    """A time JSON reads as infinite or not a number would be written as null, which no listing or GET can print;
    a negative size makes an object shorter than nothing."""
    obj_at = lambda **given: {"buckets": [{"name": "new-b", "created": 0, "objects": {"k": {**obj("c"), **given}}}]}
    part = {"number": 1, "cap": "c", "size": 1, "etag": "e", "modified": 0}
    upload = {"id": "u1", "bucket": "bkt", "key": "k", "created": 0}
    for wrong in ({"buckets": [{"name": "new-b", "created": 1e400}]},
                  {"buckets": [{"name": "new-b", "created": "nan"}]},
                  {"buckets": [{"name": "new-b", "created": -1e300}]}, obj_at(modified=float("inf")),
                  obj_at(modified="nan"), obj_at(parts=[{"cap": "c", "size": -5}]),
                  {"uploads": [{**upload, "created": 1e400}]},
                  {"uploads": [{**upload, "parts": [{**part, "modified": 1e999}]}]},
                  {"completed": {"u2": {"bucket": "bkt", "key": "k", "etag": "e", "modified": 1e400}}}):
        with pytest.raises(BadRequest):
            backup.restore(index, codec.loads(codec.text(wrong)))
    assert [b["name"] for b in index.buckets()] == ["bkt"] and index.uploads("bkt") == []
    assert backup.export(index)["completed"] == {}


def test_an_import_refuses_a_part_whose_size_is_not_its_files_and_nothing_of_the_piece_is_written(index) -> None:
    """A GET answers an object's record size as its Content-Length and sends its files: a record saying less than its
    file would leave the rest of the file's bytes on the connection, read as the next answer there."""
    cap = str(Capability(key=b"\x01" * 32, manifest_hash=b"\x02" * 32, size=1000))
    part = {"number": 1, "cap": cap, "size": 1000, "etag": "e", "modified": 0}
    upload = {"id": "u1", "bucket": "bkt", "key": "k", "created": 0}
    for size in (10, 1001):
        for wrong in ({"buckets": [{"name": "new-b", "created": 0, "objects": {"k": obj(cap, size=size)}}]},
                      {"uploads": [{**upload, "parts": [{**part, "size": size}]}]}):
            with pytest.raises(InvalidArgument, match="names a file of 1,000 bytes"):
                backup.restore(index, wrong)
    assert [b["name"] for b in index.buckets()] == ["bkt"] and index.uploads("bkt") == []
    written = backup.restore(index, {"buckets": [{"name": "new-b", "created": 0,
                                                  "objects": {"k": obj(cap, size=1000)}}]})
    assert written["objects"] == 1 and index.get("new-b", "k")["size"] == 1000


def test_an_import_naming_one_bucket_twice_with_two_owners_writes_none_of_it(index) -> None:
    """The second record of a bucket in one piece is checked against the first as against one the node holds."""
    twice = {"buckets": [{"name": "new-b", "created": 0, "owner": "ana", "objects": {"k": obj("cap-1")}},
                         {"name": "new-b", "created": 0, "owner": "mallory"}]}
    with pytest.raises(BucketTaken):
        backup.restore(index, twice)
    assert [b["name"] for b in index.buckets()] == ["bkt"]


def test_an_import_naming_a_file_marked_for_removal_here_leaves_it_out_and_the_file_stays_marked(index) -> None:
    """The front may be removing a marked file as the import runs: a record brought back for it could name a file
    gone.  Each object or part naming one is left out, named in the answer, and its file is removed as marked."""
    index.put("bkt", "k", obj("cap-1"))
    upload = index.create_upload("bkt", "big")
    index.put_part(upload, 1, "part-1", 100, "e1")
    exported = backup.export(index)
    index.abort(upload)  # its part marked garbage; the front has not removed it yet
    index.delete("bkt", "k")
    assert sorted(index.garbage()) == ["cap-1", "part-1"]
    written = backup.restore(index, exported)
    assert (written["objects"], written["uploads"], written["parts"], written["refused"]) == (0, 1, 0, 2), written
    assert written["left_out"] == [{"bucket": "bkt", "key": "k", "reason": "removing"},
                                   {"upload": upload, "part": 1, "reason": "removing"}]
    assert sorted(index.garbage()) == ["cap-1", "part-1"] and index.parts(upload) == []


def test_an_import_naming_a_file_of_this_nodes_own_the_front_did_not_store_leaves_it_out(index) -> None:
    """A file `xsc store put` stored is the user's: an object naming it would remove it as it is deleted.  A file the
    store lists under a name the front gives is imported; one under a name of the front's shape whose tag the front's
    key did not make (stored by hand) is not, nor one the store does not list, in this node's export (`missing`)."""
    listed = {"mine": "holiday.jpg", "unnamed": "", "fronts": MARKS.name("bkt/k"), "forged": "s3:bkt/k#not-a-tag",
              "made-up-tag": "s3:bkt/k#" + "0" * 16 + "f" * 32, "other-key": FileMarks(b"x" * 32).name("bkt/k")}
    written = backup.restore(index, {"funded_by": "this-node", "buckets": [{"name": "bkt", "created": 0, "objects": {
        key: obj(key) for key in (*listed, "elsewhere")}}]}, account="this-node", stored_name=listed.get)
    assert (written["objects"], written["refused"]) == (1, 6), written
    assert {i["key"]: i["reason"] for i in written["left_out"]} == {
        "mine": "not-s3", "unnamed": "not-s3", "forged": "not-s3", "made-up-tag": "not-s3", "other-key": "not-s3",
        "elsewhere": "missing"}
    assert [k for k, _ in index.objects("bkt")] == ["fronts"]
    left_out = ["mine", "unnamed", "forged", "made-up-tag", "other-key"]
    assert index.delete_many("bkt", left_out) == [] and index.garbage() == []


def test_an_import_naming_a_file_this_nodes_store_no_longer_holds_leaves_it_out(index) -> None:
    """A record of this node's export brought back for a file removed since (its marks cleared as the front removed
    it) would be listed with a body no GET can read: each object or part naming one is left out and named; one
    naming files all held comes back."""
    front = lambda cap: MARKS.name("bkt/k")
    upload = index.create_upload("bkt", "big")
    index.put_part(upload, 1, "part-1", 100, "e1")
    index.put_part(upload, 2, "part-2", 100, "e2")
    index.put("bkt", "gone", obj("cap-1", "cap-2"))
    index.put("bkt", "kept", obj("cap-3"))
    exported = backup.export(index, funded_by="this-node")
    index.abort(upload)
    index.delete_many("bkt", ["gone", "kept"])
    index.forget_garbage(index.garbage())  # the front removed them all
    held = {"part-2": front, "cap-1": front, "cap-3": front}  # what the store still lists (cap-2, part-1 gone)
    written = backup.restore(index, exported, account="this-node",
                             stored_name=lambda cap: held[cap](cap) if cap in held else None)
    assert (written["objects"], written["uploads"], written["parts"], written["refused"]) == (1, 1, 1, 2), written
    assert written["left_out"] == [{"bucket": "bkt", "key": "gone", "reason": "missing"},
                                   {"upload": upload, "part": 1, "reason": "missing"}]
    assert [k for k, _ in index.objects("bkt")] == ["kept"] and [p["number"] for p in index.parts(upload)] == [2]


@pytest.mark.parametrize("piece_size", [None, 300])
def test_an_import_leaving_out_an_object_leaves_out_the_completed_upload_naming_it(index, piece_size) -> None:
    """A retried Complete is answered from the completed upload's record: brought back without its object, it would
    answer the ETag of an object not there.  It is left out with its object, whole or sent in pieces; one whose object
    comes back, or is held here, comes back."""
    front = MARKS.name("bkt/k")
    done = {}
    for key in ("gone", "back", "here"):
        done[key] = index.create_upload("bkt", key)
        index.put_part(done[key], 1, f"part-{key}", 10, "e1")
        index.complete(done[key], [(1, "e1")], "bkt", key)
    exported = backup.export(index, funded_by="this-node")
    index.delete_many("bkt", ["gone", "back"])
    index.forget_garbage(index.garbage())  # the front removed their files
    for key in ("gone", "back", "here"):  # past COMPLETED_KEEP
        index.db.delete(keys.object_completed(done[key]))
    held = {"part-back": front, "part-here": front}.get  # part-gone's file is gone from the store
    sent = [exported] if piece_size is None else list(backup.pieces(exported, size=piece_size))
    answers = [backup.restore(index, piece, account="this-node", stored_name=held) for piece in sent]
    assert len(sent) == 1 or len(sent) > 2
    written = {k: sum(a[k] for a in answers) for k in ("objects", "completed", "refused")}
    assert written == {"objects": 1, "completed": 2, "refused": 2}, answers
    assert [i for a in answers for i in a["left_out"]] == [
        {"bucket": "bkt", "key": "gone", "reason": "missing"},
        {"upload": done["gone"], "bucket": "bkt", "key": "gone", "reason": "missing"}]
    with pytest.raises(NoSuchUpload):
        index.complete(done["gone"], [(1, "e1")], "bkt", "gone")
    for key in ("back", "here"):
        record, _ = index.complete(done[key], [(1, "e1")], "bkt", key)
        assert record["etag"] == index.get("bkt", key)["etag"]


def test_an_import_leaves_out_each_object_or_part_naming_a_file_another_record_refers_to(index) -> None:
    """A hostile export naming the files of another user's object and part (one in another spelling of its
    capability), and a file twice: deleting or aborting what it brought would remove those files.  Each such record
    is left out and counted; nothing of the others' is ever marked for removal."""
    cap = str(Capability(key=b"\x01" * 32, manifest_hash=b"\x02" * 32, size=10))
    fields = cap.split(":")
    respelled = ":".join(fields[:2] + [fields[2].upper()] + fields[3:])
    index.create_bucket("ana-b", "ana")
    index.put("ana-b", "diary", obj(cap))
    upload = index.create_upload("ana-b", "big", by="ana")
    index.put_part(upload, 1, "ana-part", 100, "e1")
    part = {"number": 1, "cap": "ana-part", "size": 100, "etag": "e1", "modified": 0}
    written = backup.restore(index, {
        "buckets": [{"name": "mal-b", "created": 0, "owner": "mallory", "objects": {
            "a": obj(respelled), "b": obj("ana-part"), "c": obj("mal-1"), "d": obj("mal-2", "mal-1")}}],
        "uploads": [{"id": "u1", "bucket": "mal-b", "key": "m", "created": 0, "user": "mallory",
                     "parts": [part, {**part, "number": 2, "cap": "mal-2"}, {**part, "number": 3, "cap": "mal-2"}]}]})
    assert index.delete_many("mal-b", ["a", "b", "c", "d"]) == ["mal-1"]
    assert index.abort("u1") == ["mal-2"]
    assert index.expire_uploads() == [] and not {cap, "ana-part"} & set(index.garbage())
    assert index.get("ana-b", "diary")["parts"][0]["cap"] == cap and index.parts(upload)[0]["cap"] == "ana-part"
    assert (written["objects"], written["parts"], written["taken"]) == (1, 1, 5), written


def test_an_upload_completed_since_its_export_comes_back_without_the_parts_its_object_holds(index) -> None:
    """Its completed record gone (kept about 7 days), an export from before the Complete brings the upload back:
    its parts are the object's files now, and aborting the upload must not remove them."""
    upload = index.create_upload("bkt", "big")
    index.put_part(upload, 1, "part-1", 100, "e1")
    index.put_part(upload, 2, "part-2", 10, "e2")
    exported = backup.export(index)
    index.complete(upload, [(1, "e1"), (2, "e2")])
    index.db.delete(keys.object_completed(upload))
    written = backup.restore(index, exported)
    assert index.abort(upload) == [] and index.garbage() == []
    assert (written["uploads"], written["parts"], written["taken"]) == (1, 0, 2), written
    assert [p["cap"] for p in index.get("bkt", "big")["parts"]] == ["part-1", "part-2"]


def test_a_store_written_before_files_had_their_holders_is_given_them_once(index) -> None:
    """The records of an older store name their files with no o/h/ entries: they are given theirs as the index is
    opened, once, and an import is held to them."""
    index.put("bkt", "k", obj("cap-1", "cap-2"))
    upload = index.create_upload("bkt", "big")
    index.put_part(upload, 1, "part-1", 100, "e1")
    for key in [keys.OBJECT_HOLDERS_INDEXED, *index.db.iterator(prefix=keys.OBJECT_HOLDERS, include_value=False)]:
        index.db.delete(key)
    assert index_holders(index) == 3 and index_holders(index) == 0
    taken = {"buckets": [{"name": "new-b", "created": 0, "objects": {"x": obj("cap-2"), "y": obj("part-1")}}]}
    assert backup.restore(index, taken)["taken"] == 2
    index.db.delete(keys.OBJECT_HOLDERS_INDEXED)
    index.db.delete(keys.object_holder("cap-1"))
    reopened = S3Index(index.db)
    assert index_holders(reopened) == 0
    assert backup.restore(reopened, {"buckets": [{"name": "new-b", "objects": {"z": obj("cap-1")}, "created": 0}]}) \
        ["taken"] == 1


def test_an_import_gives_no_user_more_buckets_or_uploads_than_its_own_requests_could(db, tmp_path) -> None:
    """What one user may make the node keep stays bounded whatever an export holds; a piece past it writes nothing."""
    source = S3Index(db, max_buckets=3)
    for name in ("ana-1", "ana-2", "ana-3"):
        source.create_bucket(name, "ana")
    for n in range(3):
        source.create_upload("ana-1", f"k{n}", by="bob")
    exported = backup.export(source)
    other = S3Index(plyvel.DB(str(tmp_path / "other"), create_if_missing=True), max_buckets=2, max_uploads=2)
    with pytest.raises(TooManyBuckets):
        backup.restore(other, exported)
    assert other.buckets() == []
    other.max_buckets = 3
    with pytest.raises(TooManyUploads):
        backup.restore(other, {**exported, "buckets": exported["buckets"] * 2})  # a bucket twice counts once
    assert other.buckets() == []
    exported["uploads"] = exported["uploads"][:2] * 2  # an upload twice counts once
    written = backup.restore(other, exported)
    assert (written["buckets"], written["uploads"], written["kept"]) == (3, 2, 2) and len(other.uploads("ana-1")) == 2
    with pytest.raises(TooManyUploads):
        other.create_upload("ana-1", "more", by="bob")
    other.db.close()


def test_an_import_refuses_a_record_larger_than_any_request_writes(index) -> None:
    """What an import adds is bounded as what the node's own requests add: no object of more than MAX_PARTS parts,
    no record past its size, whatever fits in a request."""
    big = "x" * (backup.MAX_OBJECT_RECORD + 1)
    upload = {"id": "u1", "bucket": "bkt", "key": "k", "created": 0}
    part = {"number": 1, "cap": "c", "size": 1, "etag": "e", "modified": 0}
    for wrong in ({"buckets": [{"name": "new-b", "created": 0, "objects": {"k": obj(*["c"] * 10_001)}}]},
                  {"buckets": [{"name": "new-b", "created": 0, "objects": {"k": {**obj("c"), "content_type": big}}}]},
                  {"uploads": [{**upload, "content_type": big[:70_000]}]},
                  {"uploads": [{**upload, "parts": [{**part, "cap": big[:70_000]}]}]},
                  {"completed": {"u2": {"bucket": "bkt", "key": "k", "etag": big[:70_000], "modified": 0}}}):
        with pytest.raises(BadRequest):
            backup.restore(index, wrong)
    assert [b["name"] for b in index.buckets()] == ["bkt"] and index.uploads("bkt") == []
    assert backup.export(index)["completed"] == {}
    assert backup.restore(index, {"buckets": [{"name": "new-b", "created": 0, "objects": {
        "k": obj(*[f"URI:CHK:{n:0>150}" for n in range(10_000)])}}]})["objects"] == 1


def test_users_see_and_change_their_own_buckets_and_what_they_were_granted(index) -> None:
    index.create_bucket("ana-b", "ana")
    index.create_bucket("bob-b", "bob")
    with pytest.raises(BucketTaken):
        index.create_bucket("ana-b", "bob")
    assert [b["name"] for b in index.buckets("ana")] == ["ana-b"]
    assert [b["name"] for b in index.buckets("bob")] == ["bob-b"]
    assert {b["name"] for b in index.buckets()} == {"bkt", "ana-b", "bob-b"}  # the node's owner sees all
    for need in ("read", "write", "owner"):
        with pytest.raises(Forbidden):
            index.allow("ana-b", "bob", need)
    for need in ("read", "write"):  # the grant that lets it, from whoever can give it: not the bucket's owner, a user
        with pytest.raises(Forbidden) as refused:
            index.allow("ana-b", "bob", need)
        assert refused.value.hint == f"the node's operator grants it: xsc s3 grant ana-b bob {need}"
    index.grant("ana-b", "bob", "read")
    assert [b["name"] for b in index.buckets("bob")] == ["ana-b", "bob-b"]
    index.allow("ana-b", "bob", "read")
    with pytest.raises(Forbidden):
        index.allow("ana-b", "bob", "write")
    index.grant("ana-b", "bob", "write")
    index.allow("ana-b", "bob", "write")
    with pytest.raises(Forbidden):
        index.allow("ana-b", "bob", "owner")  # a write grant does not let it delete the bucket
    index.grant("ana-b", "bob", None)
    with pytest.raises(Forbidden):
        index.allow("ana-b", "bob", "read")
    with pytest.raises(InvalidArgument):
        index.grant("ana-b", "bob", "admin")
    with pytest.raises(InvalidArgument):
        index.grant("ana-b", "ana", "read")


def test_a_buckets_grants_are_bounded_in_number_and_size_and_an_import_is_held_to_the_same(index) -> None:
    index.create_bucket("many", "ana")
    for n in range(names.MAX_GRANTS):
        index.grant("many", f"u{n}", "read")
    with pytest.raises(TooManyGrants) as refused:
        index.grant("many", "one-more", "read")
    assert xml.s3_code_of(refused.value) == ("InvalidArgument", 400)  # as an S3 client reads it
    assert "at most 256" in refused.value.message and refused.value.hint == "revoke one first: xsc s3 revoke many USER"
    index.grant("many", "u0", "write")  # a grant changed, and one revoked, add none
    index.grant("many", "u1", None)
    index.grant("many", "one-more", "read")
    assert len(index.bucket("many")["grants"]) == names.MAX_GRANTS
    index.create_bucket("long", "ana")  # long names reach the bytes' bound first
    with pytest.raises(TooManyGrants):
        for n in range(names.MAX_GRANTS):
            index.grant("long", f"{n:0>32}", "write")
    kept = index.bucket("long")["grants"]
    assert len(kept) < names.MAX_GRANTS and len(codec.canonical(kept)) <= names.MAX_GRANTS_BYTES
    index.create_bucket("full", "ana")  # read grants up to the bytes' bound, then made write one by one
    n = 0
    while len(codec.canonical({f"{i:0>32}": "read" for i in range(n + 1)})) <= names.MAX_GRANTS_BYTES:
        index.grant("full", f"{n:0>32}", "read")
        n += 1
    with pytest.raises(TooManyGrants):
        for i in range(n):
            index.grant("full", f"{i:0>32}", "write")  # a byte more each
    assert len(codec.canonical(index.bucket("full")["grants"])) <= names.MAX_GRANTS_BYTES
    grants = {f"{n:0>32}": "read" for n in range(names.MAX_GRANTS + 1)}
    with pytest.raises(TooManyGrants):
        backup.restore(index, {"buckets": [{"name": "new-b", "created": 0, "grants": grants}]})
    assert "new-b" not in [b["name"] for b in index.buckets()]


def test_a_completed_upload_completes_again_with_the_same_answer(index) -> None:
    upload = index.create_upload("bkt", "big", headers={"Cache-Control": "no-cache"})
    index.put_part(upload, 1, "c1", 100, "e1")
    record, _ = index.complete(upload, [(1, "e1")], "bkt", "big")
    assert record["headers"] == {"Cache-Control": "no-cache"}
    again, garbage = index.complete(upload, [(1, "e1")], "bkt", "big")
    assert (again["etag"], garbage) == (record["etag"], [])
    with pytest.raises(NoSuchUpload):
        index.complete(upload, [(1, "e1")], "bkt", "other")


def test_each_user_owns_at_most_max_buckets_counted_as_the_index_reopens(db, tmp_path) -> None:
    index = S3Index(db, max_buckets=2)
    index.create_bucket("ana-1", "ana")
    index.create_bucket("ana-2", "ana")
    index.create_bucket("ana-2", "ana")  # one's own again: not a new bucket
    with pytest.raises(TooManyBuckets) as refused:
        index.create_bucket("ana-3", "ana")
    assert "ana" in refused.value.message and "DeleteBucket" in (refused.value.hint or "")
    index.create_bucket("bob-1", "bob")  # another user's count is its own
    index.grant("bob-1", "ana", "write")  # a grant is no bucket of ana's
    db.close()
    again = S3Index(plyvel.DB(str(tmp_path / "db")), max_buckets=2)
    with pytest.raises(TooManyBuckets):
        again.create_bucket("ana-3", "ana")
    again.delete_bucket("ana-1")
    again.create_bucket("ana-3", "ana")
    assert {b["name"] for b in again.buckets("ana")} == {"ana-2", "ana-3", "bob-1"}
    again.db.close()


def test_each_user_has_at_most_max_uploads_in_progress_and_ending_one_makes_room(db) -> None:
    index = S3Index(db, min_part_size=1, max_uploads=2)
    index.create_bucket("shared", "ana")
    index.grant("shared", "bob", "write")
    first = index.create_upload("shared", "a", by="ana")
    second = index.create_upload("shared", "b", by="ana")
    with pytest.raises(TooManyUploads) as refused:
        index.create_upload("shared", "c", by="ana")
    assert "2 multipart uploads" in refused.value.message
    index.create_upload("shared", "c", by="bob")  # counted against who began it, not the bucket's owner
    index.abort(first)
    third = index.create_upload("shared", "c", by="ana")
    index.put_part(second, 1, "cap-b", 1, "e0")
    index.complete(second, [(1, "e0")])
    index.complete(second, [(1, "e0")])  # repeated: counted once
    index.create_upload("shared", "d", by="ana")
    with pytest.raises(TooManyUploads):
        index.create_upload("shared", "e", by="ana")
    index.abort(third)
    # An upload recorded without its user (by a node that kept no counts either) counts against its bucket's owner.
    db.put(keys.object_upload("0" * 32), codec.dumps({"bucket": "shared", "key": "old", "created": 0.0,
                                                      "headers": {}, "content_type": "", "metadata": {}}))
    db.delete(keys.OBJECT_AGES_INDEXED)
    again = S3Index(db, max_uploads=2)
    with pytest.raises(TooManyUploads):
        again.create_upload("shared", "f", by="ana")
    again.abort("0" * 32)
    again.create_upload("shared", "f", by="ana")


def test_uploads_left_unfinished_past_their_expiry_are_aborted_with_their_parts_marked(db) -> None:
    now = [1000.0]
    index = S3Index(db, max_uploads=2, upload_expiry=100, clock=lambda: now[0])
    index.create_bucket("bkt", "ana")
    old = index.create_upload("bkt", "old", by="ana")
    index.put_part(old, 1, "cap-1", 5, "e1")
    index.put_part(old, 2, "cap-2", 5, "e2")
    now[0] += 60
    young = index.create_upload("bkt", "young", by="ana")
    index.put_part(young, 1, "cap-3", 5, "e3")
    assert index.expire_uploads() == []  # none is past its expiry yet
    now[0] += 41
    assert sorted(index.expire_uploads()) == ["cap-1", "cap-2"]
    assert sorted(index.garbage()) == ["cap-1", "cap-2"]
    with pytest.raises(NoSuchUpload):
        index.upload(old)
    assert index.parts(old) == [] and [p["cap"] for p in index.parts(young)] == ["cap-3"]
    assert [u["id"] for u in index.uploads("bkt")] == [young]
    with pytest.raises(NoSuchUpload):  # a part stored as its upload expired is garbage itself
        index.put_part(old, 3, "cap-4", 5, "e4")
    assert "cap-4" in index.garbage()
    index.create_upload("bkt", "next", by="ana")  # the expired upload no longer counts
    assert index.reconcile(["cap-3"]) == []


class _CountingDb:
    """The index's LevelDB, counting the upload records (o/u/) read through it, by key or by a scan (`read`), and every
    key read by the first four bytes of its prefix (`seen`)."""

    def __init__(self, db) -> None:
        self.db, self.read, self.seen = db, 0, Counter()

    def __getattr__(self, name: str):
        return getattr(self.db, name)

    def get(self, key: bytes, *args, **kwargs):
        self.read += key.startswith(keys.OBJECT_UPLOADS)
        self.seen[key[:4]] += 1
        return self.db.get(key, *args, **kwargs)

    def iterator(self, **kwargs):
        counting = self

        class Scan:
            def __init__(self, inner) -> None:
                self.inner = inner

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self.inner.close()

            def __iter__(self):
                return self

            def __next__(self):
                item = next(self.inner)
                key = item if isinstance(item, bytes) else item[0]
                counting.read += key.startswith(keys.OBJECT_UPLOADS)
                counting.seen[key[:4]] += 1
                return item

        return Scan(self.db.iterator(**kwargs))


def test_a_page_of_uploads_reads_the_uploads_it_holds_not_every_upload_of_the_node(db) -> None:
    """ListMultipartUploads reads the bucket's uploads in key order from the markers on and stops once its page is full
    (and a common prefix's uploads are skipped by a seek): a page costs what it holds, however many uploads the node
    has in progress.  Paged through, every upload is listed once, a key's in the order they began; a marker whose
    upload was completed or aborted meanwhile goes on with the key's uploads whose ids sort after it."""
    counting = _CountingDb(db)
    index = S3Index(counting, min_part_size=100)
    index.create_bucket("bkt")
    index.create_bucket("busy")
    for n in range(200):
        index.create_upload("busy", f"k{n:03}")
    began = [(key, index.create_upload("bkt", key)) for key in ["c", "a", "b/1", "a", "b/2", "d", "a", "c", "e"]]
    expected = sorted(began, key=lambda item: item[0])  # stable: a key's uploads in the order they began

    def paged(delimiter: str = "", most: int = 2) -> tuple[list[tuple[str, str]], list[str]]:
        uploads, prefixes, key_marker, id_marker = [], [], "", ""
        while True:
            counting.read = 0
            page = upload_page(index, "bkt", delimiter=delimiter, max_uploads=most, key_marker=key_marker,
                               id_marker=id_marker)
            assert counting.read <= most + 2, counting.read  # the page, the one past it, the marker's record
            uploads += [(key, u["id"]) for key, u in page["contents"]]
            prefixes += page["prefixes"]
            if not page["truncated"]:
                return uploads, prefixes
            if page["prefixes"] and page["prefixes"][-1] == page["last"]:
                key_marker, id_marker = page["last"], ""
            else:
                key_marker, id_marker = page["contents"][-1][0], page["contents"][-1][1]["id"]

    assert paged() == (expected, [])
    assert paged("/", 1) == ([item for item in expected if "/" not in item[0]], ["b/"])
    counting.read = 0
    page = upload_page(index, "bkt", prefix="b/", max_uploads=1)
    assert [key for key, _ in page["contents"]] == ["b/1"] and page["truncated"] and counting.read <= 3
    # The marker's upload gone: the key's uploads whose ids sort after its id, then the keys after it.
    a_ids = [upload_id for key, upload_id in began if key == "a"]
    index.abort(a_ids[1])
    after = upload_page(index, "bkt", key_marker="a", id_marker=a_ids[1])["contents"]
    assert [u["id"] for key, u in after if key == "a"] == [i for i in a_ids if i > a_ids[1]]
    assert [key for key, _ in after if key != "a"] == ["b/1", "b/2", "c", "c", "d", "e"]
    assert [key for key, _ in upload_page(index, "bkt", key_marker="c")["contents"]] == ["d", "e"]
    index.put_part(began[-1][1], 1, "cap-e", 10, "e" * 32)
    index.complete(began[-1][1], [(1, "e" * 32)])  # ("e": completed, so no longer listed)
    assert [key for key, _ in upload_page(index, "bkt", key_marker="c")["contents"]] == ["d"]


def test_an_expiry_reads_the_uploads_it_aborts_and_a_users_count_reads_none(db) -> None:
    """2,000 uploads in progress, 10 of them past the expiry: the expiry reads those 10 (their records, and their
    places in the order uploads began), not the others.  Each user's count of uploads in progress (its bound, `xsc s3
    users`) is read from the counts written with them, not from the uploads, as the index opens again too; an import's
    uploads are counted in its own write."""
    now = [10_000.0]
    index = S3Index(db, max_uploads=5_000, upload_expiry=100, clock=lambda: now[0])
    index.create_bucket("bkt", "ana")
    old = [index.create_upload("bkt", f"old/{n}", by="ana") for n in range(10)]
    for upload_id in old[:3]:
        index.put_part(upload_id, 1, f"cap-{upload_id}", 5, "e")
    begun = {**index.upload(old[0]), "parts": []}
    many = [{**begun, "id": f"{n:032x}", "key": f"k/{n}", "created": now[0] + 50 + n / 1000,
             "user": ("bob", "cid")[n % 2]} for n in range(1_990)]
    backup.restore(index, {**backup.export(index), "uploads": many})  # (one write: 1,990 synced ones take seconds)
    now[0] += 101  # past the expiry of the first 10, 51 s short of the others'
    counting = _CountingDb(db)
    reopened = S3Index(counting, max_uploads=995, upload_expiry=100, clock=lambda: now[0])
    assert sorted(reopened.expire_uploads()) == sorted(f"cap-{upload_id}" for upload_id in old[:3])
    assert counting.read == 10 and counting.seen[keys.OBJECT_UPLOADS_BY_AGE] == 10, (counting.read, counting.seen)
    assert len(reopened.uploads("bkt")) == 1_990
    counting.read = 0
    assert users(reopened) == ["ana", "bob", "cid"]
    with pytest.raises(TooManyUploads):  # 995 each
        reopened.create_upload("bkt", "more", by="bob")
    reopened.create_upload("bkt", "more", by="ana")  # its 10 expired
    assert counting.read == 0


def _entries_agree(db) -> None:
    """Each upload in progress has its place in its bucket's key order and in the order uploads began, and is counted
    against its user; each completed upload has its place in the order they completed; each bucket is listed under its
    owner and each user it was granted to; no entry is left of one gone."""
    uploads = {k[len(keys.OBJECT_UPLOADS):].decode(): codec.loads(v)
               for k, v in db.iterator(prefix=keys.OBJECT_UPLOADS)}
    assert {k for k, _ in db.iterator(prefix=keys.OBJECT_UPLOADS_BY_AGE)} == {
        keys.object_upload_by_age(u["created"], upload_id) for upload_id, u in uploads.items()}
    assert {k for k, _ in db.iterator(prefix=keys.OBJECT_UPLOADS_BY_KEY)} == {
        keys.object_upload_by_key(u["bucket"], u["key"], u["created"], upload_id) for upload_id, u in uploads.items()}
    assert {k[len(keys.OBJECT_UPLOAD_COUNTS):].decode(): int(v) for k, v in db.iterator(
        prefix=keys.OBJECT_UPLOAD_COUNTS)} == dict(Counter(u["user"] for u in uploads.values()))
    completed = {k[len(keys.OBJECT_COMPLETED):].decode(): codec.loads(v) for k, v in db.iterator(
        prefix=keys.OBJECT_COMPLETED)}
    assert {k for k, _ in db.iterator(prefix=keys.OBJECT_COMPLETED_BY_AGE)} == {
        keys.object_completed_by_age(r["modified"], upload_id) for upload_id, r in completed.items()}
    assert {k[len(keys.OBJECT_PARTS):].split(b"\x00")[0].decode() for k, _ in db.iterator(prefix=keys.OBJECT_PARTS)} \
        <= set(uploads)
    buckets = {k[len(keys.OBJECT_BUCKETS):].decode(): codec.loads(v)
               for k, v in db.iterator(prefix=keys.OBJECT_BUCKETS)}
    assert {k for k, _ in db.iterator(prefix=keys.OBJECT_BUCKETS_BY_USER)} == {
        keys.object_bucket_of_user(user, name) for name, b in buckets.items() for user in (b["owner"], *b["grants"])}


def test_a_users_list_of_buckets_reads_its_own_buckets_not_every_users(db) -> None:
    """300 buckets of one user's, 3 of another's (2 its own, 1 granted): the other's ListBuckets reads those 3 records,
    and the list of users (`xsc s3 users`) none.  A grant, a revoke and a deleted bucket change its list in their own
    writes, and a store written before the buckets were kept by user is given them once as the index opens."""
    index = S3Index(db)
    many = [{"name": f"ana-{n:03}", "owner": "ana", "grants": {}, "created": 1.0, "objects": {}} for n in range(300)]
    backup.restore(index, {**backup.export(index), "buckets": many})  # (one write: 300 synced ones take seconds)
    index.create_bucket("bob-1", "bob")
    index.create_bucket("bob-2", "bob")
    index.grant("ana-007", "bob", "read")
    counting = _CountingDb(db)
    reopened = S3Index(counting)
    counting.seen.clear()
    assert [b["name"] for b in reopened.buckets("bob")] == ["ana-007", "bob-1", "bob-2"]
    assert counting.seen[keys.OBJECT_BUCKETS] == 3, counting.seen
    counting.seen.clear()
    assert users(reopened) == ["ana", "bob"]  # (`xsc s3 users`): one entry of each, no bucket's record
    assert counting.seen[keys.OBJECT_BUCKETS] == 0 and counting.seen[keys.OBJECT_BUCKETS_BY_USER] == 2, counting.seen
    reopened.grant("ana-007", "bob", None)
    reopened.delete_bucket("bob-2")
    assert [b["name"] for b in reopened.buckets("bob")] == ["bob-1"] and len(reopened.buckets("ana")) == 300
    reopened.grant("ana-001", "cid", "write")
    _entries_agree(db)
    for key, _ in db.iterator(prefix=keys.OBJECT_BUCKETS_BY_USER):
        db.delete(key)
    db.delete(keys.OBJECT_BUCKETS_BY_USER_INDEXED)
    again = S3Index(db)
    assert [b["name"] for b in again.buckets("bob")] == ["bob-1"] and [b["name"] for b in again.buckets("cid")] == [
        "ana-001"]
    _entries_agree(db)


@pytest.mark.slow
def test_kill_9_while_uploads_begin_and_end_leaves_each_with_its_entries_and_its_users_count(tmp_path) -> None:
    """Uploads begun, filled, completed, aborted, expired and taken back by a revoke, three users' at once, killed -9 at
    two moments: each upload record and its entries (key order, age, its user's count; a completed one's age) are
    there together or not at all, and the index opened again goes on from there."""
    path = tmp_path / "db"
    script = Path(__file__).parents[1] / "support" / "s3_index_burst.py"
    for seed, wait_for in enumerate((150, 400)):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(seed)], stdout=subprocess.PIPE, text=True)
        acknowledged = 0
        try:
            while acknowledged < wait_for and (line := proc.stdout.readline()):
                acknowledged = int(line)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert acknowledged >= wait_for, "the burst did not get going"
        db = plyvel.DB(str(path))
        try:
            _entries_agree(db)
            assert db.get(keys.OBJECT_AGES_INDEXED) is not None
        finally:
            db.close()


def test_uploads_recorded_before_their_ages_and_counts_were_kept_are_given_them_once(db) -> None:
    """A store whose uploads have no place in the order they began and whose users no count (recorded before they were
    kept), nor its completed uploads a place in the order they completed, is given them as the index opens, once: its
    users are listed and bounded, its old uploads expire, its old completed uploads are forgotten."""
    now = [1000.0]
    index = S3Index(db, min_part_size=1, upload_expiry=100, clock=lambda: now[0])
    index.create_bucket("bkt", "ana")
    old = index.create_upload("bkt", "a", by="bob")
    index.put_part(old, 1, "cap-1", 5, "e1")
    done = index.create_upload("bkt", "b", by="ana")
    index.put_part(done, 1, "cap-2", 5, "e2")
    record, _ = index.complete(done, [(1, "e2")])
    now[0] += 50
    index.create_upload("bkt", "c", by="bob")
    for prefix in (keys.OBJECT_UPLOADS_BY_AGE, keys.OBJECT_UPLOAD_COUNTS, keys.OBJECT_COMPLETED_BY_AGE):
        for key, _ in db.iterator(prefix=prefix):
            db.delete(key)
    db.delete(keys.OBJECT_AGES_INDEXED)
    reopened = S3Index(db, min_part_size=1, max_uploads=2, upload_expiry=100, clock=lambda: now[0])
    _entries_agree(db)
    assert users(reopened) == ["ana", "bob"]
    with pytest.raises(TooManyUploads):
        reopened.create_upload("bkt", "d", by="bob")
    now[0] += 51
    assert reopened.expire_uploads() == ["cap-1"]
    reopened.create_upload("bkt", "d", by="bob")
    assert reopened.complete(done, [(1, "e2")])[0]["etag"] == record["etag"]  # a retried Complete, as the first
    now[0] += COMPLETED_KEEP
    other = reopened.create_upload("bkt", "e", by="ana")
    reopened.put_part(other, 1, "cap-3", 5, "e3")
    reopened.complete(other, [(1, "e3")])  # forgets the completed uploads older than COMPLETED_KEEP
    with pytest.raises(NoSuchUpload):
        reopened.complete(done, [(1, "e2")])
    _entries_agree(db)


def test_uploads_recorded_before_their_key_order_was_kept_are_listed_once_it_is(db) -> None:
    """A store whose uploads have no o/k/ entry (recorded before they were kept) is given them as the index opens, once,
    so ListMultipartUploads and DeleteBucket see every upload in progress."""
    index = S3Index(db, min_part_size=100)
    index.create_bucket("bkt")
    ids = [index.create_upload("bkt", key) for key in ("b", "a")]
    for key in [k for k, _ in db.iterator(prefix=keys.OBJECT_UPLOADS_BY_KEY)] + [keys.OBJECT_UPLOADS_BY_KEY_INDEXED]:
        db.delete(key)
    reopened = S3Index(db, min_part_size=100)
    assert [u["id"] for u in reopened.uploads("bkt")] == ids[::-1]
    with pytest.raises(BucketNotEmpty):
        reopened.delete_bucket("bkt")
    for upload_id in ids:
        reopened.abort(upload_id)
    assert list(db.iterator(prefix=keys.OBJECT_UPLOADS_BY_KEY)) == []
    reopened.delete_bucket("bkt")


def test_revoking_a_grant_aborts_the_uploads_its_user_began_in_the_bucket(db) -> None:
    """A user whose grant is taken back could neither complete nor abort what it began: its uploads there are aborted
    in the revoke's write (their parts marked for the front to remove) and no longer count against it."""
    index = S3Index(db, min_part_size=1, max_uploads=2)
    index.create_bucket("shared", "ana")
    index.create_bucket("bobs", "bob")
    index.grant("shared", "bob", "write")
    began = index.create_upload("shared", "a", by="bob")
    index.put_part(began, 1, "cap-1", 1, "e1")
    own = index.create_upload("bobs", "b", by="bob")  # in a bucket of its own: kept
    owners = index.create_upload("shared", "c", by="ana")  # the owner's: kept
    with pytest.raises(TooManyUploads):
        index.create_upload("bobs", "x", by="bob")
    index.grant("shared", "bob", "read")  # still a reader: it may abort what it began, so it is kept
    assert index.upload(began)["user"] == "bob"
    revoked = index.grant("shared", "bob", None)
    with pytest.raises(NoSuchUpload):
        index.upload(began)
    assert index.parts(began) == [] and "cap-1" in index.garbage()
    assert [u["id"] for u in index.uploads("shared")] == [owners] and index.upload(own)["user"] == "bob"
    index.create_upload("bobs", "x", by="bob")  # the aborted upload no longer counts against it
    assert (revoked["aborted"], revoked["garbage"], revoked["grants"]) == ([began], ["cap-1"], {})
    assert index.grant("shared", "bob", None)["aborted"] == []


def test_a_revoke_lands_before_a_writes_access_check_or_after_its_write_never_between(db, monkeypatch) -> None:
    """A user's write is judged and made under the index's lock: a revoke that comes as the write has passed its
    check waits for the write, and then aborts the upload it began, rather than landing in between and leaving the
    user an upload in the other's bucket it can neither use nor end (counted against it, holding the bucket)."""
    index = S3Index(db)
    index.create_bucket("shared", "ana")
    index.grant("shared", "bob", "write")
    passed, go, outcome = threading.Event(), threading.Event(), []
    allow = index.allow

    def paused(bucket: str, user: str | None, need: str) -> dict:
        record = allow(bucket, user, need)
        passed.set()
        go.wait()
        return record

    monkeypatch.setattr(index, "allow", paused)
    writer = threading.Thread(target=lambda: outcome.append(
        index.checked("shared", "bob", "write", index.create_upload, "shared", "k", by="bob")))
    writer.start()
    passed.wait()
    held = not index._lock.acquire(blocking=False)  # by the writer, as it checks: the revoke waits for its write
    if not held:
        index._lock.release()
    revoker = threading.Thread(target=index.grant, args=("shared", "bob", None))
    revoker.start()
    if not held:
        revoker.join()  # (the revoke done between the check and the write)
    go.set()
    writer.join()
    revoker.join()
    assert [u["user"] for u in index.uploads("shared")] == [], outcome


async def test_users_funded_before_they_were_noted_are_listed_from_the_ledgers_fundings(make_config) -> None:
    """A store whose node funded a user before it noted each user it funds (o/f/): the node, started on it, notes
    them once from the ledger's fundings, so they are listed whatever else names them."""
    config = make_config("old")
    node = await serve(config)
    try:
        await node.app[NODE].s3_accounts.fund("ana", 2_000_000)
        node.app[DB].delete(keys.object_funded("ana"))  # the transfer alone, as funding wrote it then
        node.app[DB].delete(keys.OBJECT_FUNDED_INDEXED)  # nor the mark that the records were derived
        assert (await (await node.get("/v1/s3/accounts")).json())["users"] == []
    finally:
        await close_node(node)
    for _ in range(2):  # noted once, and kept
        node = await serve(config)
        try:
            listed = (await (await node.get("/v1/s3/accounts")).json())["users"]
            assert [(u["user"], u["balance"]) for u in listed] == [("ana", 2_000_000)]
        finally:
            await close_node(node)


def share(index: S3Index, cap: str, *holders: bytes) -> None:
    """What an import that let records share a file leaves: records that share `cap`, its o/h/ entry naming the
    first, and no search for shared files made yet."""
    for holder in holders:
        record = obj(cap) if holder.startswith(keys.OBJECT_KEYS) else {"cap": cap, "size": 10, "etag": "e",
                                                                           "modified": 0}
        index.db.put(holder, codec.dumps(record))
    index.db.put(keys.object_holder(cap), holders[0])
    index.db.delete(keys.OBJECT_SHARED_INDEXED)


def test_a_file_records_share_is_garbage_only_once_none_of_them_refers_to_it(index) -> None:
    """Whichever of them goes first, in one DeleteObjects or one by one, an upload's part among them: the file stays
    while one of them is left, and is marked once the last goes."""
    upload = index.create_upload("bkt", "big")
    share(index, "shared-1", keys.object_key("bkt", "a"), keys.object_key("bkt", "b"))
    share(index, "shared-2", keys.object_key("bkt", "c"), keys.object_key("bkt", "d"))
    share(index, "shared-3", keys.object_key("bkt", "e"), keys.object_part(upload, 1))
    reopened = S3Index(index.db)
    assert reopened.delete("bkt", "a") == [] and reopened.get("bkt", "b")["parts"][0]["cap"] == "shared-1"
    assert reopened.garbage() == []
    assert reopened.put("bkt", "b", obj("new")) == ["shared-1"]
    assert reopened.delete_many("bkt", ["c", "d", "c"]) == ["shared-2"]
    assert reopened.abort(upload) == [] and reopened.get("bkt", "e")["parts"][0]["cap"] == "shared-3"
    assert reopened.delete("bkt", "e") == ["shared-3"]
    assert sorted(reopened.garbage()) == ["shared-1", "shared-2", "shared-3"]
    assert list(reopened.db.iterator(prefix=keys.OBJECT_SHARED)) == []


async def test_an_import_notes_as_funded_here_only_the_users_this_node_funded(make_config) -> None:
    """Another node's export names the users its own account funded: imported here, they are not this node's (its
    ledger shows no funding of theirs), and are counted, not listed.  This node's own export, or one that does not
    say whose it is but names a user this node's ledger shows it funded, brings them back."""
    first, second = await serve(make_config("first")), await serve(make_config("second"))
    try:
        for node in (first, second):
            await node.app[NODE].s3_accounts.fund("ana", 1_000_000)
            node.app[NODE].s3_index.db.put(*funded_note("ana"), sync=True)
        first.app[NODE].s3_index.db.put(*funded_note("bob"), sync=True)  # funded by the first node only
        foreign = await (await first.get("/v1/s3/export")).json()
        own = await (await second.get("/v1/s3/export")).json()
        assert foreign["funded"] == ["ana", "bob"] and foreign["funded_by"] != own["funded_by"]

        async def imported(export: dict) -> dict:
            answer = await second.post("/v1/s3/import", json=export)
            assert answer.status == 200, await answer.text()
            return await answer.json()

        async def listed() -> list[str]:
            return [u["user"] for u in (await (await second.get("/v1/s3/accounts")).json())["users"]]

        for funded in ("ana", "bob"):
            second.app[DB].delete(keys.object_funded(funded))
        assert (await imported(foreign))["foreign"] == 1 and await listed() == ["ana"]  # ana: its ledger shows it
        second.app[DB].delete(keys.object_funded("ana"))
        unsigned = {k: v for k, v in foreign.items() if k != "funded_by"}
        assert ((await imported(unsigned))["funded"], await listed()) == (1, ["ana"])
        assert ((await imported({**own, "funded": ["bob"]}))["funded"], await listed()) == (1, ["ana", "bob"])
    finally:
        await close_node(first)
        await close_node(second)


async def test_an_export_written_before_exports_named_funded_users_brings_back_those_the_ledger_shows(
        make_config) -> None:
    """An export with no `funded` section cannot name the users its node funded: imported, split as `import-index`
    splits it or whole, it notes those this node's ledger shows it funded (a funding of job s3:fund:USER from its
    account).  A piece of a later export, which names them where it has any, notes none from the ledger."""
    node = await serve(make_config())
    try:
        await node.app[NODE].s3_accounts.fund("ana", 1_000_000)
        old = {"version": 1, "exported": 0, "buckets": [{"name": f"old-{n}", "created": 0, "owner": "ana"}
                                                        for n in range(3)]}

        async def imported(piece: dict) -> dict:
            node.app[DB].delete(keys.object_funded("ana"))  # (an index that lost its note of ana)
            answer = await node.post("/v1/s3/import", json=piece)
            assert answer.status == 200, await answer.text()
            return await answer.json()

        assert ((await imported(old))["funded"], funded(node.app[NODE].s3_index)) == (1, ["ana"])
        sent = list(backup.pieces(old, size=10))
        assert [(await imported(piece))["funded"] for piece in sent] == [0, 0, 1]  # (its last piece says so)
        assert funded(node.app[NODE].s3_index) == ["ana"]
        assert ((await imported({"version": 1, "buckets": []}))["funded"], funded(node.app[NODE].s3_index)) == (0, [])
    finally:
        await close_node(node)


async def test_an_import_of_this_nodes_export_leaves_out_an_object_whose_file_its_store_removed_since(
        make_config) -> None:
    """Through the node's route, an export of this node's (`funded_by` its account): a file removed from the store
    since the export, and a capability no file of the store has, are each left out as `missing`; the object whose
    file the store lists comes back and reads.  Another node's export names files this store never held: brought
    back, to be read from the nodes that hold their shares."""
    node = await serve(make_config())
    try:
        front = FileMarks.load(node.app[CONFIG].data_dir).name("bkt/k")  # a name the front gives

        async def put(body: bytes) -> str:
            response = await node.post("/v1/store/files", params={"name": front}, data=body)
            assert response.status == 201, await response.text()
            return (await response.json())["capability"]

        kept, removed = await put(b"kept" * 100), await put(b"removed" * 100)
        assert (await node.delete(f"/v1/store/files/{removed}")).status == 200
        never = str(Capability(key=b"\x01" * 32, manifest_hash=b"\x02" * 32, size=10))
        records = {key: obj(cap, size=Capability.parse(cap).size)
                   for key, cap in (("kept", kept), ("removed", removed), ("never", never))}
        export = {"version": 1, "funded_by": node.app[NODE].s3_accounts.owner.id,
                  "buckets": [{"name": "bkt", "created": 0, "owner": "xsc", "objects": records}]}
        answer = await node.post("/v1/s3/import", json=export)
        written = await answer.json()
        assert answer.status == 200 and (written["objects"], written["refused"]) == (1, 2), written
        assert {i["key"]: i["reason"] for i in written["left_out"]} == {"removed": "missing", "never": "missing"}
        assert [k for k, _ in node.app[NODE].s3_index.objects("bkt")] == ["kept"]
        assert await (await node.get(f"/v1/store/files/{kept}")).read() == b"kept" * 100
        foreign = {"version": 1, "funded_by": "another-nodes-account",
                   "buckets": [{"name": "other", "created": 0, "owner": "xsc", "objects": {"never": records["never"]}}]}
        written = await (await node.post("/v1/s3/import", json=foreign)).json()
        assert (written["objects"], written["refused"], written["left_out"]) == (1, 0, []), written
    finally:
        await close_node(node)


async def test_an_import_piece_larger_than_a_request_carries_is_refused_and_writes_nothing(make_config) -> None:
    """A piece is parsed and written whole, so its size bounds the memory it takes (small records: ~35 times their
    JSON): one of 6 MiB is a 413 problem and nothing of it is written; one as large as an `import-index` that sent
    pieces of 4 MiB sent, the largest object record with it, is taken.  The CLI refuses, naming it, a record no
    piece could carry."""
    node = await serve(make_config())
    try:
        index = node.app[NODE].s3_index
        padding = ["u" + str(n).zfill(30) for n in range(6 * 1024 * 1024 // 34)]
        over = {"version": 1, "buckets": [{"name": "too-big", "created": 0, "owner": "xsc"}], "funded": padding}
        answer = await node.post("/v1/s3/import", json=over)
        problem = await answer.json()
        assert answer.status == 413 and problem["code"] == "payload-too-large", problem
        assert "xsc s3 import-index FILE" in problem["hint"] and f"{backup.MAX_PIECE:,}" in problem["detail"]
        assert [b["name"] for b in index.buckets()] == [] and users(index) == []
        largest = obj(*[f"URI:CHK:{n:0>380}" for n in range(10_000)])
        old = {"version": 1, "buckets": [{"name": "large", "created": 0, "owner": "xsc", "objects": {"k": largest}}],
               "funded": padding[:len(padding) // 8]}
        assert 4 * 1024 * 1024 < len(codec.dumps(old)) < backup.MAX_PIECE
        answer = await node.post("/v1/s3/import", json=old)
        written = await answer.json()
        assert answer.status == 200 and (written["buckets"], written["objects"]) == (1, 1), written
    finally:
        await close_node(node)
    with pytest.raises(InvalidArgument, match="bucket 'b' with its object 'k' is .* bytes of JSON"):
        list(backup.pieces({"version": 1, "buckets": [{"name": "b", "created": 0, "objects": {
            "k": {**largest, "content_type": "x" * backup.MAX_PIECE}}}]}))


@pytest.mark.slow
def test_deleting_one_of_two_objects_sharing_a_file_leaves_the_other_readable(tmp_path) -> None:
    """A store written by an import that let two objects name one file, its o/h/ entry naming one of them: deleting
    that one through the front leaves the file the other names; deleting the other then removes it."""
    pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")
    from tests.support.s3 import Gateway, store_files
    from tests.support.waiting import eventually
    from xsc.node.datadir import open_db

    gateway = Gateway(tmp_path, in_node=True).start()
    try:
        s3 = gateway.client()
        s3.create_bucket(Bucket="old")
        s3.put_object(Bucket="old", Key="a", Body=b"one file, two names")
        gateway.node.stop()
        db = open_db(gateway.node.data_dir)
        try:
            record = db.get(keys.object_key("old", "a"))
            cap = codec.loads(record)["parts"][0]["cap"]
            with db.write_batch(sync=True) as batch:
                batch.put(keys.object_key("old", "b"), record)
                batch.put(keys.object_holder(cap), keys.object_key("old", "a"))
                batch.delete(keys.OBJECT_SHARED_INDEXED)
        finally:
            db.close()
        gateway.node.start()
        eventually(lambda: _answers(s3), "the node's own S3 listener")
        s3.delete_object(Bucket="old", Key="a")
        assert s3.get_object(Bucket="old", Key="b")["Body"].read() == b"one file, two names"
        assert cap in {f["capability"] for f in store_files(gateway.node)}
        s3.delete_object(Bucket="old", Key="b")
        eventually(lambda: cap not in {f["capability"] for f in store_files(gateway.node)}, "the file's removal")
    finally:
        gateway.stop()


@pytest.mark.slow
def test_a_get_of_an_object_whose_record_says_less_than_its_file_sends_no_more_than_it_says(tmp_path) -> None:
    """A record an import wrote before it held a part's size to its file's, saying 10 bytes of a file of 300,000: a
    GET sends the 10 its Content-Length says, not the whole file, whose rest the client would read as the next answer
    on the connection (here a response the file's writer chose)."""
    pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install -e '.[test]'")
    import http.client

    from tests.support.s3 import Gateway, sign_headers
    from tests.support.waiting import eventually
    from xsc.node.datadir import open_db

    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    gateway = Gateway(tmp_path, in_node=True).start()
    try:
        s3 = gateway.client()
        s3.create_bucket(Bucket="old")
        s3.put_object(Bucket="old", Key="a", Body=b"0123456789" + smuggled + b"x" * 300_000)
        gateway.node.stop()
        db = open_db(gateway.node.data_dir)
        try:
            record = codec.loads(db.get(keys.object_key("old", "a")))
            record["parts"][0]["size"] = record["size"] = 10
            db.put(keys.object_key("old", "a"), codec.dumps(record), sync=True)
        finally:
            db.close()
        gateway.node.start()
        eventually(lambda: _answers(s3), "the node's own S3 listener")
        conn = http.client.HTTPConnection("127.0.0.1", gateway.front.port, timeout=60)
        for _ in range(2):  # one connection: the second answer is the second GET's
            conn.putrequest("GET", "/old/a", skip_host=True, skip_accept_encoding=True)
            for name, value in sign_headers("GET", gateway.front.url + "/old/a", gateway.key, {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b"0123456789")
        conn.close()
    finally:
        gateway.stop()


def _answers(s3) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket="old")
    except (BotoCoreError, ClientError):
        return False
    return True
