"""Run by test_s3_refunds' kill -9 test: an S3 user's writes charged, then recorded, refused (a conditional write that
lost its race) or left unrecorded and found an orphan, and the refunds owed paid, against a real LevelDB with the
node's own index, accounts and ledger, until killed.  As it opens it makes the refunder's first pass, as a node's start
does.  Prints each write's number once its refund (if any) is paid (flushed); with `hold`, prints `held` once the
first refusal is written and waits there, before its refund, for the kill."""

from __future__ import annotations

import asyncio
import os
import sys

import plyvel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xsc.buckets.accounts import UserAccounts
from xsc.buckets.index import S3Index
from xsc.buckets.marks import FileMarks
from xsc.buckets.refunds import Refunds
from xsc.errors import ConditionalConflict
from xsc.identity import Identity
from xsc.ledger import LedgerService
from xsc.storage.core.capability import Capability

COST = 7  # micro-credits each write is charged
FUNDED = 10**9
MARKS = FileMarks(b"k" * 32)  # the front's: the names of the files it stores, which a charge is held to


class HeldFiles(dict):
    """The files a node's store holds, as the index reads them (`ShareStore.file_record`): capability -> name."""

    def file_record(self, si: bytes) -> dict | None:
        cap = next((cap for cap in self if Capability.parse(cap).storage_index == si), None)
        return None if cap is None else {"capability": cap, "name": self[cap]}


def parts(db, store: HeldFiles | None = None) -> tuple[LedgerService, S3Index, UserAccounts, Refunds]:
    """The node's S3 accounting parts on `db`, holding charges to `store` (not given: no store to hold them to)."""
    owner, node = (Identity(Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)) for n in (1, 2))
    ledger = LedgerService(db, 10**12, node=node, client=owner)
    index = S3Index(db, store=store, marks=MARKS)
    accounts = UserAccounts(ledger, owner, charged=lambda caps: asyncio.to_thread(index.charged, caps),
                            chargeable=lambda user, caps: asyncio.to_thread(index.chargeable, user, caps))
    return ledger, index, accounts, Refunds(accounts=accounts, index=index)


def record(cap: str, condition: dict | None = None) -> dict:
    return {"parts": [{"cap": cap, "size": 10}], "etag": "e", "writer": "bob",
            **({"condition": condition} if condition else {})}


async def main(path: str, hold: bool) -> None:
    db = plyvel.DB(path, create_if_missing=True)
    ledger, index, accounts, refunds = parts(db)
    if not index.buckets():
        index.create_bucket("bkt", "ana")
        index.grant("bkt", "bob", "write")
        await accounts.fund("bob", FUNDED)
        index.put("bkt", "taken", record(Capability(os.urandom(32), os.urandom(32), 10).text))
    await refunds.refund_owed()  # the rows a crash left
    n = 0
    while True:
        cap = Capability(os.urandom(32), os.urandom(32), 10).text
        await accounts.charge("bob", cap, COST)
        if n % 3 == 0:
            try:
                index.put("bkt", "taken", record(cap, {"if_none_match": "*"}))
                raise AssertionError("the conditional write won")
            except ConditionalConflict:
                pass
            if hold:
                print("held", flush=True)
                await asyncio.Event().wait()
        elif n % 3 == 1:
            index.put("bkt", f"k{os.getpid()}-{n}", record(cap))
        else:
            index.reconcile([cap])  # its record never came: an orphan
        await refunds.refund_owed()
        n += 1
        print(n, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:] == ["hold"]))
