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

from tests.support.s3_refund_burst import COST, FUNDED, MARKS, HeldFiles, parts, record
from xsc import codec, keys
from xsc.buckets import backup
from xsc.buckets.accounts import UserAccounts
from xsc.buckets.entries import charged_row
from xsc.buckets.index import S3Index
from xsc.errors import Conflict, NotFound, TooManyBuckets
from xsc.ledger import decode_entry
from xsc.storage.core.capability import Capability

CAPS = [Capability(bytes([n]) * 32, bytes([n + 10]) * 32, 10).text for n in range(3)]


class Node:
    """The node's S3 accounting parts on a LevelDB at `path`, opened again by `restart` as a node's start opens them;
    `store`, the files its store holds (not given: no store to hold charges to)."""

    def __init__(self, path: str, store: HeldFiles | None = None) -> None:
        self.path, self.store = path, store
        self._open()

    def _open(self) -> None:
        self.db = plyvel.DB(self.path, create_if_missing=True)
        self.ledger, self.index, self.accounts, self.refunds = parts(self.db, self.store)

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


def test_a_charge_retried_is_answered_as_the_first_and_paid_back_once_if_its_file_is_refused(tmp_path) -> None:
    """A charge retried (its answer lost on the way back to the front) is answered as the first: one transfer, one
    row.  Refused, the file's record never written, it comes back once, however many passes the refunder makes; a
    file charged twice and then recorded is paid once."""
    async def run() -> None:
        node = await _node(tmp_path / "db")
        first = await node.accounts.charge("bob", CAPS[0], COST)
        again = await node.accounts.charge("bob", CAPS[0], COST)
        assert (first["charged"], again["charged"], again.get("again")) == (COST, COST, True)
        assert node.rows(keys.OBJECT_CHARGED) == {CAPS[0]: 1} and node.balance() == FUNDED - COST
        node.index.reconcile([CAPS[0]])  # its record never came: an orphan
        assert node.rows(keys.OBJECT_REFUNDS) == {CAPS[0]: 1}
        await node.refunds.refund_owed()
        await node.restart()
        assert node.balance() == FUNDED
        assert node.refunds_paid() == {Capability.parse(CAPS[0]).storage_index.hex(): 1}
        assert node.rows(keys.OBJECT_REFUNDS) == {} and node.rows(keys.OBJECT_CHARGED) == {}
        for _ in range(2):
            await node.accounts.charge("bob", CAPS[1], COST)
        node.index.put("bkt", "k", record(CAPS[1]))
        assert node.balance() == FUNDED - COST and node.rows(keys.OBJECT_CHARGED) == {}
        await node.close()
    asyncio.run(run())


def test_a_charge_retried_is_answered_with_the_entry_the_first_made_however_many_came_between(tmp_path) -> None:
    """A retried charge's answer has the shape of the first's, `entry` too (the id of the transfer the first charge
    made; `again` besides), so a front that retried reads what one that did not reads: retried at once, and after
    more of the user's entries than a page of its chain holds."""
    async def run() -> None:
        node = await _node(tmp_path / "db")
        first = await node.accounts.charge("bob", CAPS[0], COST)
        again = await node.accounts.charge("bob", CAPS[0], COST)
        assert again == {**first, "again": True}, (first, again)
        others = [Capability(os.urandom(32), os.urandom(32), 10).text for _ in range(70)]
        assert all("entry" in charged for charged in await node.accounts.charge_many("bob", [(c, COST) for c in others]))
        later = await node.accounts.charge("bob", CAPS[0], COST)
        assert (later["entry"], later["again"], later["charged"]) == (first["entry"], True, COST)
        assert node.ledger.store.entry(first["entry"]).authorization.job.startswith("s3:put:")
        await node.close()
    asyncio.run(run())


def test_a_charge_of_a_file_recorded_or_refused_already_is_refused_and_one_a_crash_left_stands(tmp_path) -> None:
    """A charge that comes once its file's record is written is refused (Conflict: the file was paid for before it
    was recorded), and one of a file refused already (marked garbage) too (NotFound): neither pays.  A charge whose
    check passed before the record and whose judging a crash stopped stands, its row dropped as the index opens."""
    async def run() -> None:
        node = await _node(tmp_path / "db")
        await node.accounts.charge("bob", CAPS[0], COST)
        node.index.put("bkt", "k", record(CAPS[0]))
        with pytest.raises(Conflict):
            await node.accounts.charge("bob", CAPS[0], COST)
        assert node.rows(keys.OBJECT_CHARGED) == {} and node.balance() == FUNDED - COST
        # Its check passed, then its file's record was written, then its transfer (its row in the same write): killed
        # before its judging.
        node.index.put("bkt", "k2", record(CAPS[2]))
        await node.ledger.settle(node.accounts.account("bob"), node.accounts.owner, COST, {"files": 1},
                                 "s3:put:" + Capability.parse(CAPS[2]).storage_index.hex(),
                                 puts=(charged_row("bob", CAPS[2], COST),))
        await node.restart()
        assert node.rows(keys.OBJECT_CHARGED) == {}
        node.index.reconcile([CAPS[1]])
        with pytest.raises(NotFound):
            await node.accounts.charge("bob", CAPS[1], COST)
        await node.refunds.refund_owed()
        assert node.balance() == FUNDED - 2 * COST and node.rows(keys.OBJECT_REFUNDS) == {}
        await node.close()
    asyncio.run(run())


def test_a_charge_whose_file_is_refused_and_removed_between_its_check_and_its_transfer_is_paid_back(tmp_path) -> None:
    """The race with a refused file's garbage mark: the charge's check finds the file stored, then its record is
    refused (here: found an orphan), the file removed and its mark cleared, all before the charge's transfer writes its
    row.  Nothing would ever judge that row again: the charge is paid back as it is judged, and leaves no row."""
    async def run() -> None:
        held = HeldFiles({CAPS[0]: MARKS.name("bkt/k")})
        node = Node(str(tmp_path / "db"), held)
        await node.setup()

        async def checked_then_refused(user: str, caps: list[str]) -> list:
            verdicts = await asyncio.to_thread(node.index.chargeable, user, caps)
            assert verdicts == [None]
            node.index.reconcile(caps)  # marked garbage, owing back the charges it finds (none yet) ...
            del held[CAPS[0]]  # ... removed by the front ...
            node.index.forget_garbage(caps)  # ... and its mark cleared
            return verdicts

        accounts = UserAccounts(node.ledger, node.accounts.owner, chargeable=checked_then_refused,
                                charged=lambda caps: asyncio.to_thread(node.index.charged, caps))
        assert (await accounts.charge("bob", CAPS[0], COST))["charged"] == COST
        await node.refunds.refund_owed()
        assert node.balance() == FUNDED and node.rows(keys.OBJECT_CHARGED) == {}
        assert node.refunds_paid() == {Capability.parse(CAPS[0]).storage_index.hex(): 1}
        await node.close()
    asyncio.run(run())


# One write's steps: (what, which file).  A file is recorded or refused once (its first outcome decides it); charges
# may come before it or after.  `crash` is a charge whose judging a kill -9 stopped, the node started again.
STEP = st.one_of(st.tuples(st.sampled_from(["charge", "record", "refuse", "crash"]), st.integers(0, len(CAPS) - 1)),
                 st.tuples(st.sampled_from(["refund", "restart"]), st.just(0)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=14))
def test_every_charge_stands_or_is_paid_back_once_whatever_the_order(steps) -> None:
    """Whatever the order of charges, records, refusals, refunds and restarts: a file is charged once (a charge
    retried is answered as the first; one of a file recorded or refused already is refused and pays nothing), the
    charge of a recorded file stands, that of a refused file is paid back exactly once, that of a file neither
    recorded nor refused stays a charge's row; no row is left of a recorded or refused file, and the user's balance
    says the same."""
    async def run(path: str) -> None:
        node = await _node(path)
        charged, outcome = set(), {}
        for what, n in steps:
            cap = CAPS[n]
            if what == "charge":
                try:
                    await node.accounts.charge("bob", cap, COST)
                    assert cap not in outcome
                except (Conflict, NotFound):
                    assert cap in outcome
                else:
                    charged.add(cap)
            elif what == "crash" and cap not in outcome and cap not in charged:  # (a charge its check lets through)
                charged.add(cap)
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
        refunded = {Capability.parse(c).storage_index.hex(): 1 for c in charged if outcome.get(c) == "refuse"}
        assert node.refunds_paid() == Counter(refunded)
        assert node.rows(keys.OBJECT_REFUNDS) == {}
        assert node.rows(keys.OBJECT_CHARGED) == {c: 1 for c in charged if c not in outcome}
        assert node.balance() == FUNDED - COST * sum(outcome.get(c) != "refuse" for c in charged)
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


class _CountingChains:
    """The database, counting the entries read from the ledger's chains."""

    def __init__(self, db) -> None:
        self.db, self.read = db, 0

    def iterator(self, *args, **kwargs):
        found = self.db.iterator(*args, **kwargs)
        return _Counted(found, self) if (kwargs.get("start") or b"").startswith(keys.LEDGER_ENTRIES) else found

    def __getattr__(self, name: str):
        return getattr(self.db, name)


class _Counted:
    def __init__(self, found, counting: _CountingChains) -> None:
        self.found, self.counting = found, counting

    def __enter__(self) -> "_Counted":
        self.found.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.found.__exit__(*exc)

    def __iter__(self) -> "_Counted":
        return self

    def __next__(self):
        value = next(self.found)
        self.counting.read += 1
        return value


def test_an_imports_charges_read_each_users_chain_once_however_many_pieces_they_take(tmp_path) -> None:
    """An export's charges of two users, more than one piece carries: imported piece by piece as the node takes them
    (`restore_here`, a request each), each entry of each user's chain is read once for the whole import, not once a
    piece; a charge made between two pieces is read then, and holds its file's row back."""
    async def run() -> None:
        db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
        counting = _CountingChains(db)
        ledger, index, accounts, _ = parts(counting)
        for user in ("bob", "cleo"):
            await accounts.fund(user, FUNDED)
        for cap in CAPS[:2]:
            await accounts.charge("bob", cap, COST)  # bob's chain: its funding and two charges; cleo's: its funding
        rows = [{"cap": Capability(os.urandom(32), os.urandom(32), 10).text, "charge": os.urandom(8).hex(),
                 "user": user, "amount": COST} for _ in range(500) for user in ("bob", "cleo")]
        charged = [*rows, {**rows[0], "cap": CAPS[2], "charge": "0" * 16}]
        export = {"version": backup.VERSION, "funded_by": accounts.owner.id, "funded": [],
                  "charged": [{**row, "signature": accounts.row_signature(row)} for row in charged]}
        pieces = [codec.loads(codec.dumps(piece)) for piece in backup.pieces(export, 64 * 1024)]
        assert len(pieces) >= 3 and all({row["user"] for row in p["charged"]} == {"bob", "cleo"} for p in pieces[:-1])
        read = brought = 0
        for n, piece in enumerate(pieces):
            if n == 1:
                await accounts.charge("bob", CAPS[2], COST)  # (so the export's row of it is not brought back)
            counting.read = 0
            brought += backup.restore_here(index, piece, accounts, HeldFiles())["charges"]
            read += counting.read
        assert (read, brought) == (3 + 1 + 1, len(rows))
        await ledger.close()
        db.close()
    asyncio.run(run())


def test_a_whole_export_sent_as_one_request_lets_the_chains_it_read_go(tmp_path) -> None:
    """A whole export (`exported` in it, what `export-index` wrote) sent as one request, with charges and no `last`, is
    its own last piece: the users' chains read for its charges are let go once it is imported, not kept for a later
    import's pieces.  So the next import reads each of those chains again, whole (one kept would be read only from the
    entry it was left at: none)."""
    async def run() -> None:
        db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
        counting = _CountingChains(db)
        ledger, index, accounts, _ = parts(counting)
        index.create_bucket("bkt", "ana")
        index.grant("bkt", "bob", "write")
        await accounts.fund("bob", FUNDED)
        await accounts.charge("bob", CAPS[0], COST)  # bob's chain: its funding and the charge
        whole = codec.loads(codec.dumps(backup.export_here(index, accounts)))
        assert "exported" in whole and backup.LAST not in whole and len(whole["charged"]) == 1
        index.put("bkt", "k", record(CAPS[0]))  # (its row gone: the import asks bob's chain whether it was paid)
        read = []
        for _ in range(2):
            counting.read = 0
            written = backup.restore_here(index, whole, accounts, None)
            read.append(counting.read)
            assert [row["reason"] for row in written["left_out"]] == ["settled"], written
        assert read == [2, 2]
        await ledger.close()
        db.close()
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


def test_the_accounts_of_users_asked_of_are_kept_up_to_a_bound_the_least_recently_asked_of_let_go_first() -> None:
    """A request may name any user: the derived accounts kept in memory are bounded, and one let go is derived again
    the same (a signature of the node's client key), not lost."""
    from xsc.buckets import accounts as accounts_module
    from xsc.identity import Identity

    owner = Identity.generate()
    derived: list[bytes] = []
    sign = owner.sign
    owner.sign = lambda message: derived.append(message) or sign(message)
    accounts = UserAccounts(None, owner)
    kept = accounts_module.ACCOUNTS_KEPT
    first = [accounts.account(f"u{n}").id for n in range(kept)]
    assert accounts.account("u0").id == first[0] and len(derived) == kept  # kept, and now the last asked of
    accounts.account("new")  # one more: u1, the least recently asked of, is let go
    assert accounts.account("u0").id == first[0] and len(derived) == kept + 1
    assert accounts.account("u1").id == first[1] and len(derived) == kept + 2  # derived again, the same
