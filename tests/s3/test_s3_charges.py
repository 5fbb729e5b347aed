"""What an S3 user's account paid for its files, against a real LevelDB with the node's own index, accounts, ledger
and refunder: each charge a row of its own until its file's record is written (it stands) or refused (it is paid back,
once), whatever the order of charges, records, refusals, refunds and restarts; the rows in the index's export and back;
and a user's count of buckets read from its own."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter

import plyvel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.s3_refund_burst import COST, FUNDED, parts, record
from xsc import codec, keys
from xsc.buckets import backup
from xsc.buckets.entries import charged_row
from xsc.buckets.index import S3Index
from xsc.errors import TooManyBuckets
from xsc.ledger import decode_entry
from xsc.storage.core.capability import Capability

CAPS = [Capability(bytes([n]) * 32, bytes([n + 10]) * 32, 10).text for n in range(3)]


class Node:
    """The node's S3 accounting parts on a LevelDB at `path`, opened again by `restart` as a node's start opens them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        self.db = plyvel.DB(self.path, create_if_missing=True)
        self.ledger, self.index, self.accounts, self.refunds = parts(self.db)

    async def setup(self) -> None:
        self.index.create_bucket("bkt", "ana")
        self.index.grant("bkt", "bob", "write")
        await self.accounts.fund("bob", FUNDED)

    async def restart(self) -> None:
        await self.ledger.close()
        self.db.close()
        self._open()
        await self.refunds.refund_owed()  # the refunder's first pass, as the node starts

    def balance(self) -> int:
        return self.ledger.account_view(self.accounts.account("bob").public_key)["balance"]

    def refunds_paid(self) -> Counter:
        """Each file's refunds paid, by its storage index."""
        paid = Counter()
        for _, _, data in self.ledger.store.entries():
            entry = decode_entry(data)
            if entry.kind == "receipt" and entry.authorization.job.startswith("s3:refund:"):
                paid[entry.authorization.job.split(":")[2]] += 1
        return paid

    def rows(self, prefix: bytes) -> Counter:
        """The rows under `prefix` (o/a/, o/r/), counted by file."""
        return Counter(k[len(prefix):].partition(b"\x00")[0].decode() for k, _ in self.db.iterator(prefix=prefix))

    async def close(self) -> None:
        await self.ledger.close()
        self.db.close()


async def _node(path) -> Node:
    node = Node(str(path))
    await node.setup()
    return node


def test_two_charges_of_one_file_refused_are_each_paid_back_once(tmp_path) -> None:
    """A charge retried (its answer lost on the way back to the front) is a second transfer for one file: refused, the
    file's record never written, both come back, each once, however many passes the refunder makes."""
    async def run() -> None:
        node = await _node(tmp_path / "db")
        await node.accounts.charge("bob", CAPS[0], COST)
        await node.accounts.charge("bob", CAPS[0], COST)
        assert node.rows(keys.OBJECT_CHARGED) == {CAPS[0]: 2}
        node.index.reconcile([CAPS[0]])  # its record never came: an orphan
        assert node.rows(keys.OBJECT_REFUNDS) == {CAPS[0]: 2}
        await node.refunds.refund_owed()
        await node.restart()
        assert node.balance() == FUNDED
        assert node.refunds_paid() == {Capability.parse(CAPS[0]).storage_index.hex(): 2}
        assert node.rows(keys.OBJECT_REFUNDS) == {} and node.rows(keys.OBJECT_CHARGED) == {}
        await node.close()
    asyncio.run(run())


def test_a_charge_of_a_file_recorded_already_stands_and_leaves_no_row(tmp_path) -> None:
    """A charge that comes once its file's record is written (a charge retried after the record, a client's charge of
    a file it recorded) stands, its row dropped as it is written; one whose judging a crash stopped is dropped as the
    index opens again.  A charge of a file refused already is paid back."""
    async def run() -> None:
        node = await _node(tmp_path / "db")
        await node.accounts.charge("bob", CAPS[0], COST)
        node.index.put("bkt", "k", record(CAPS[0]))
        await node.accounts.charge("bob", CAPS[0], COST)
        assert node.rows(keys.OBJECT_CHARGED) == {}
        # Killed between the charge's transfer (its row in the same write) and its judging.
        await node.ledger.settle(node.accounts.account("bob"), node.accounts.owner, COST, {"files": 1},
                                 "s3:put:" + Capability.parse(CAPS[0]).storage_index.hex(),
                                 puts=(charged_row("bob", CAPS[0], COST),))
        await node.restart()
        assert node.rows(keys.OBJECT_CHARGED) == {}
        node.index.reconcile([CAPS[1]])
        await node.accounts.charge("bob", CAPS[1], COST)
        await node.refunds.refund_owed()
        assert node.balance() == FUNDED - 3 * COST and node.rows(keys.OBJECT_REFUNDS) == {}
        await node.close()
    asyncio.run(run())


# One write's steps: (what, which file).  A file is recorded or refused once (its first outcome decides it); charges
# may come before it or after.  `crash` is a charge whose judging a kill -9 stopped, the node started again.
STEP = st.one_of(st.tuples(st.sampled_from(["charge", "record", "refuse", "crash"]), st.integers(0, len(CAPS) - 1)),
                 st.tuples(st.sampled_from(["refund", "restart"]), st.just(0)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=14))
def test_every_charge_stands_or_is_paid_back_once_whatever_the_order(steps) -> None:
    """Whatever the order of charges, records, refusals, refunds and restarts: each charge of a recorded file stands,
    each of a refused file is paid back exactly once, each of a file neither recorded nor refused stays a charge's row;
    no row is left of a recorded or refused file, and the user's balance says the same."""
    async def run(path: str) -> None:
        node = await _node(path)
        charges, outcome = Counter(), {}
        for what, n in steps:
            cap = CAPS[n]
            if what in ("charge", "crash"):
                charges[cap] += 1
            if what == "charge":
                await node.accounts.charge("bob", cap, COST)
            elif what == "crash":
                await node.ledger.settle(node.accounts.account("bob"), node.accounts.owner, COST, {"files": 1},
                                         "s3:put:" + Capability.parse(cap).storage_index.hex(),
                                         puts=(charged_row("bob", cap, COST),))
                await node.restart()
            elif what == "record" and cap not in outcome:
                outcome[cap] = "record"
                node.index.put("bkt", f"k{n}", record(cap))
            elif what == "refuse" and cap not in outcome:
                outcome[cap] = "refuse"
                node.index.reconcile([cap])
            elif what == "refund":
                await node.refunds.refund_owed()
            elif what == "restart":
                await node.restart()
        await node.restart()
        refunded = {Capability.parse(c).storage_index.hex(): n for c, n in charges.items() if outcome.get(c) == "refuse"}
        pending = {c: n for c, n in charges.items() if c not in outcome}
        assert node.refunds_paid() == Counter(refunded)
        assert node.rows(keys.OBJECT_REFUNDS) == {}
        assert node.rows(keys.OBJECT_CHARGED) == pending
        standing = sum(n for c, n in charges.items() if outcome.get(c) != "refuse")
        assert node.balance() == FUNDED - COST * standing
        await node.close()

    with tempfile.TemporaryDirectory() as path:
        asyncio.run(run(os.path.join(path, "db")))


def test_charges_and_refunds_owed_are_exported_and_come_back_into_the_node_whose_they_are(tmp_path) -> None:
    """An export holds each charge's row and each refund owed.  Imported into the node whose export it is, on a fresh
    data dir (its ledger holds no charge or refund of those files), each comes back a refund owed (no write is under
    way for it there), and is paid; one whose file a record there refers to stands.  Imported again, there or into
    the node that exported it, nothing comes back: a row gone was settled or refunded, and bringing it back would pay
    it twice.  Another node's export brings none back."""
    async def run() -> None:
        node = await _node(tmp_path / "a")
        for cap in CAPS:
            await node.accounts.charge("bob", cap, COST)
        node.index.put("bkt", "k", record(CAPS[0]))  # its charge stands
        node.index.reconcile([CAPS[1]])  # a refund owed, CAPS[2] a charge whose record has not come yet
        account = node.accounts.owner.id
        exported = codec.loads(codec.dumps(backup.export(node.index, funded_by=account)))
        assert [(row["cap"], row["user"], row["amount"]) for row in exported["charged"]] == [(CAPS[2], "bob", COST)]
        assert [(row["cap"], row["user"], row["amount"]) for row in exported["owed"]] == [(CAPS[1], "bob", COST)]
        exported["charged"].append({**exported["charged"][0], "cap": CAPS[0]})  # (as if its record came after)

        def imported(index: S3Index, export: dict, **kwargs) -> Counter:
            done = Counter()
            for piece in backup.pieces(export):
                done.update({k: v for k, v in backup.restore(index, piece, **kwargs).items() if k != "left_out"})
            return done

        fresh = await _node(tmp_path / "b")
        assert imported(fresh.index, exported, account=account, charged_here=fresh.accounts.charged_here())[
            "charges"] == 2
        assert fresh.rows(keys.OBJECT_REFUNDS) == {CAPS[1]: 1, CAPS[2]: 1}
        assert {(row["cap"], row["charge"]) for row in backup.export(fresh.index)["owed"]} == {
            (row["cap"], row["charge"]) for row in exported["owed"] + exported["charged"][:1]}
        await fresh.refunds.refund_owed()
        assert fresh.balance() == FUNDED + 2 * COST and fresh.rows(keys.OBJECT_REFUNDS) == {}
        assert imported(fresh.index, exported, account=account, charged_here=fresh.accounts.charged_here())[
            "charges"] == 0
        assert fresh.balance() == FUNDED + 2 * COST and fresh.rows(keys.OBJECT_REFUNDS) == {}
        assert imported(fresh.index, exported, account="another node's")["charges"] == 0
        await fresh.close()

        await node.refunds.refund_owed()  # CAPS[1]'s refund paid here
        again = imported(node.index, exported, account=account, charged_here=node.accounts.charged_here())
        assert (again["charges"], again["kept"] >= 1) == (0, True)  # CAPS[2]'s row is here still
        await node.refunds.refund_owed()
        assert node.balance() == FUNDED - 2 * COST and node.rows(keys.OBJECT_CHARGED) == {CAPS[2]: 1}
        await node.close()
    asyncio.run(run())


def test_an_import_brings_back_only_the_rows_of_charges_this_nodes_account_signed(tmp_path) -> None:
    """A row of charges comes back as a refund the node's account pays, so an export of this node's carries each row
    signed by that account: into the node on a fresh data dir, a signed row comes back and is paid; a row that an
    export someone gave the node's owner says is this node's, but that its account did not sign (one for another
    user, one whose amount was raised), is left out (`unsigned`), and nothing of it is paid."""
    async def run() -> None:
        node = await _node(tmp_path / "a")
        await node.accounts.charge("bob", CAPS[0], COST)
        node.index.reconcile([CAPS[0]])  # a refund owed
        exported = codec.loads(codec.dumps(backup.export_here(node.index, node.accounts)))
        await node.close()
        (owed,) = exported["owed"]
        exported["owed"] += [{**owed, "cap": CAPS[1], "user": "mallory", "amount": FUNDED},
                             {**owed, "cap": CAPS[2], "amount": 10 * COST}]
        fresh = await _node(tmp_path / "b")  # (the same client key: the node on a fresh data dir)
        written = backup.restore_here(fresh.index, exported, fresh.accounts, store=None)
        assert (written["charges"], written["refused"]) == (1, 2), written
        assert [(row["cap"], row["user"], row["reason"]) for row in written["left_out"]] == [
            (CAPS[1], "mallory", "unsigned"), (CAPS[2], "bob", "unsigned")]
        await fresh.refunds.refund_owed()
        assert fresh.balance() == FUNDED + COST and fresh.rows(keys.OBJECT_REFUNDS) == {}
        assert fresh.ledger.account_view(fresh.accounts.account("mallory").public_key)["balance"] == 0
        await fresh.close()
    asyncio.run(run())


class _CountingDb:
    """The database, counting the bucket records read."""

    def __init__(self, db) -> None:
        self.db, self.read = db, 0

    def get(self, key: bytes):
        self.read += key.startswith(keys.OBJECT_BUCKETS)
        return self.db.get(key)

    def iterator(self, *args, **kwargs):
        if kwargs.get("prefix", b"").startswith(keys.OBJECT_BUCKETS) and kwargs.get("include_value", True):
            self.read += 1_000_000  # every bucket's record
        return self.db.iterator(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_users_bucket_count_reads_its_own_buckets_not_every_buckets(tmp_path) -> None:
    """500 buckets of ana's: bob's bound, judged as the index opens again, reads bob's bucket and the one ana granted
    it, not ana's 500; ana's reads hers, and counts them."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    index = S3Index(db, max_buckets=501)
    for n in range(500):
        index.create_bucket(f"ana-{n:03}", "ana")
    index.create_bucket("bob-0", "bob")
    index.grant("ana-000", "bob", "read")
    counting = _CountingDb(db)
    reopened = S3Index(counting, max_buckets=501)
    counting.read = 0
    reopened.create_bucket("bob-1", "bob")
    assert counting.read <= 4, counting.read
    reopened.create_bucket("ana-500", "ana")
    with pytest.raises(TooManyBuckets):
        reopened.create_bucket("ana-501", "ana")
    reopened.delete_bucket("bob-1")
    reopened.create_bucket("bob-2", "bob")
    assert S3Index(db, max_buckets=501)._counts()[0]["bob"] == 2
    db.close()
