"""Run by test_s3_index's kill -9 test: begin, fill, complete, abort, expire and revoke multipart uploads of three users
against a real LevelDB until killed, printing the count of changes acknowledged after each (flushed)."""

from __future__ import annotations

import random
import sys

import plyvel

from xsc.buckets.index import S3Index
from xsc.errors import XscError


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    now = [1000.0]
    index = S3Index(plyvel.DB(path, create_if_missing=True), min_part_size=1, max_uploads=50, upload_expiry=30,
                    clock=lambda: now[0])
    for bucket, owner in (("ana", "ana"), ("bob", "bob")):
        if bucket not in {b["name"] for b in index.buckets()}:
            index.create_bucket(bucket, owner)
    done = 0
    while True:
        now[0] += rng.uniform(0, 2)
        in_progress = index.uploads("ana") + index.uploads("bob")
        upload = rng.choice(in_progress) if in_progress else None
        choice = rng.random()
        try:
            if upload is None or choice < 0.35:
                user = rng.choice(["ana", "bob", "cid"])
                index.create_upload(rng.choice(["ana", "bob"]), f"k{rng.randrange(20)}", by=user)
            elif choice < 0.6:
                index.put_part(upload["id"], rng.randrange(1, 4), f"cap-{done}", 10, f"{done:032x}")
            elif choice < 0.75:
                parts = index.parts(upload["id"])
                index.complete(upload["id"], [(p["number"], p["etag"]) for p in parts])
            elif choice < 0.85:
                index.abort(upload["id"])
            elif choice < 0.95:
                index.expire_uploads()
            else:
                index.grant("ana", rng.choice(["bob", "cid"]), rng.choice(["write", None]))
        except XscError:
            pass  # (a user past its uploads, an upload ended meanwhile: refused, nothing written)
        done += 1
        print(done, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
