"""StorageDeals alone, with fakes through its constructor: a period is never paid twice, even across a crash
between the payment and the note that it was paid (found by the crash trials, bench/trials.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import plyvel
import pytest

from xsc import codec, keys
from xsc.errors import PeerUnreachable
from xsc.identity import public_id
from xsc.storage.deals import VERDICT_WAIT, StorageDeals
from xsc.storage.share_store import ShareStore

SI = bytes(range(32))
HOLDER = "b" * 52


class Ledger:
    """The payer's side as StorageDeals sees it: pay, and what was paid for which job."""

    def __init__(self) -> None:
        self.paid: dict[str, int] = {}
        self.pending: set[str] = set()
        self.fail_with: Exception | None = None

    async def pay(self, node: str, amount: int, usage: dict, job: str) -> str:
        if self.fail_with is not None:
            self.pending.add(job)
            raise self.fail_with
        assert job not in self.paid, f"{job} paid twice"
        self.paid[job] = amount
        return "entry"

    def paid_for(self, job: str):
        if job in self.pending:
            return "pending", 1
        return ("paid", self.paid[job]) if job in self.paid else None


@pytest.fixture
def deals(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    pool = ThreadPoolExecutor(2)
    ledger = Ledger()
    made = []

    def make() -> StorageDeals:
        service = StorageDeals(db=db, me="a" * 52, store=ShareStore(db, 10**9), pool=pool, pay=ledger.pay,
                               paid_for=ledger.paid_for, audits_on=False, payment_interval=3600)
        made.append(service)
        return service

    yield make, ledger
    pool.shutdown()
    db.close()


async def test_a_payment_interrupted_after_it_was_made_is_not_made_again(deals) -> None:
    make, ledger = deals
    first = make()
    first.record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, 0, 7200)

    async def crash(node, amount, usage, job):  # the payment lands, the node dies before noting it
        ledger.paid[job] = amount
        raise SystemExit("killed")

    first.pay = crash
    with pytest.raises(SystemExit):
        await first.pay_due(3600)
    restarted = make()
    summary = await restarted.pay_due(3600)
    assert summary["payments"] == 5  # the five shares not paid before the crash; share 0 is not paid again
    deals_now = restarted.of_file(SI)
    assert all(d.paid_until == 3600 and d.paying is None and d.paid > 0 for d in deals_now)
    assert len(ledger.paid) == 6


async def test_a_payment_left_pending_waits_for_its_retry(deals) -> None:
    make, ledger = deals
    service = make()
    service.record(SI, [HOLDER], 1024**3, {0: 1000}, 0, 7200)
    ledger.fail_with = PeerUnreachable("down")
    assert (await service.pay_due(3600))["failed"] == 1
    ledger.fail_with = None
    assert (await service.pay_due(3600))["waiting"] == 1  # its authorization is still pending: not paid anew
    ledger.pending.clear()  # the retry abandoned it (expired unpaid): now it is paid again, once
    assert (await service.pay_due(3600))["payments"] == 1
    assert len(ledger.paid) == 1


async def test_a_payment_run_writes_twice_off_the_loop_however_many_deals_it_pays(deals, monkeypatch) -> None:
    make, ledger = deals
    service = make()
    service.record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, 0, 7200)
    other = bytes(reversed(range(32)))
    service.record(other, [HOLDER] * 6, 1024**2, {s: 500 for s in range(6)}, 0, 7200)
    saves: list[tuple[bool, list[tuple[int, object]]]] = []
    real = service._save
    loop_thread = threading.current_thread()

    def save(batch):
        saves.append((threading.current_thread() is loop_thread, [(d.share, d.paying) for d in batch]))
        real(batch)

    monkeypatch.setattr(service, "_save", save)
    summary = await service.pay_due(3600)
    assert summary["payments"] == 12 and len(ledger.paid) == 12
    assert [on_loop for on_loop, _ in saves] == [False, False]  # a synced write never holds up the loop
    noted, done = (batch for _, batch in saves)
    assert len(noted) == 12 and all(paying is not None for _, paying in noted)  # noted before any is sent
    assert len(done) == 12 and all(paying is None for _, paying in done)
    assert all(d.paid_until == 3600 and d.paying is None for d in make().of_file(SI) + make().of_file(other))


async def test_the_promised_credit_is_read_once_then_kept_up_by_every_write_of_a_deal(deals, monkeypatch) -> None:
    make, _ = deals
    service = make()
    now = int(time.time())
    service.record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, now, now + 7200)
    first = service.outstanding()
    assert first == service.outstanding(now) > 0
    reads = []
    real = service.all
    monkeypatch.setattr(service, "all", lambda: reads.append(1) or real())

    def recounted() -> int:  # what a reading of every deal finds now
        return sum(d.cost(d.end - d.paid_until) for d in real() if not d.ended and d.end > d.paid_until)

    other = bytes(reversed(range(32)))
    added = service.record(other, [HOLDER] * 6, 1024**2, {s: 500 for s in range(6)}, now, now + 3600)
    # Every put asks it: the deals are not read again, and the new ones' promise is counted at once.
    assert service.outstanding() == first + sum(d.cost(d.end - d.start) for d in added) == recounted()
    assert reads == []
    await service.pay_due(now + 1800)  # paid for half an hour: that much less is promised
    reads.clear()  # the payment run read every deal (it pays them), not `outstanding`
    assert service.outstanding() == recounted() < first + sum(d.cost(d.end - d.start) for d in added)
    service.extended(SI, now + 9000, {0, 1})
    assert service.outstanding() == recounted()
    service.moved(SI, {2: ("c" * 52, 2000)}, now + 1900)
    assert service.outstanding() == recounted()
    service.removed(other, now + 2000)
    assert service.outstanding() == recounted() > 0
    assert reads == [] and service.recent_outstanding() == recounted()
    # Held but not yet paid is promised too: from each deal's last payment on, not from now on.
    assert service.outstanding() >= service.outstanding(now + 3000)


async def test_a_share_moved_during_a_payment_run_keeps_its_new_deal(deals) -> None:
    """A repair moves share 0 while the run pays: the run's copy of the old deal must not put the old holder back."""
    make, ledger = deals
    service = make()
    service.record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, 0, 7200)
    new_holder = "c" * 52

    async def pay_and_move(node, amount, usage, job):
        if job.endswith(":0:0:3600"):  # share 0's payment is on its way when the repair moves that share
            service.moved(SI, {0: (new_holder, None)}, 1800)
        return await ledger.pay(node, amount, usage, job)

    service.pay = pay_and_move
    assert (await service.pay_due(3600))["payments"] == 6
    share0 = next(d for d in make().of_file(SI) if d.share == 0)
    assert share0.node == new_holder and not share0.ended and share0.start == 1800 and share0.paid == 0
    ended = make().ended_deals(SI)
    assert [(d.node, d.share, d.ended) for d in ended] == [(HOLDER, 0, True)]
    assert all(d.paid_until == 3600 and d.node == HOLDER for d in make().of_file(SI) if d.share != 0)
    # The next run pays the new holder from the move on, and no period twice.
    assert (await service.pay_due(5400))["payments"] == 6
    assert next(d for d in make().of_file(SI) if d.share == 0).paid_until == 5400


def test_a_moved_deal_and_what_goes_with_it_are_written_together_or_not_at_all(deals) -> None:
    """A repair's new placement is written in the batch that moves its deals: a failure leaves both as they were."""
    make, _ = deals
    service = make()
    service.record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, 0, 7200)
    new_holder = "c" * 52

    def fails(batch) -> None:
        batch.put(b"placement", b"new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        service.moved(SI, {0: (new_holder, None), 1: (HOLDER, None)}, 1800, also=fails)
    assert all(d.node == HOLDER and not d.ended for d in make().of_file(SI)) and not make().ended_deals(SI)
    assert service.db.get(b"placement") is None
    service.moved(SI, {0: (new_holder, 2000), 1: (HOLDER, None)}, 1800,
                  also=lambda batch: batch.put(b"placement", b"new"))
    moved = {d.share: d for d in make().of_file(SI)}
    assert moved[0].node == new_holder and moved[0].price == 2000 and moved[1].node == HOLDER  # share 1 did not move
    assert [d.node for d in make().ended_deals(SI)] == [HOLDER] and service.db.get(b"placement") == b"new"


async def test_a_node_started_on_stored_deals_knows_what_they_promise_before_a_put_asks(deals) -> None:
    """Read while puts write deals, the total could never be kept: each put's quote would read every deal."""
    make, _ = deals
    now = int(time.time())
    make().record(SI, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, now, now + 7200)
    restarted = make()
    assert restarted.recent_outstanding() is None
    restarted.start()
    assert restarted.recent_outstanding() == restarted.outstanding(now) > 0


async def test_the_deals_of_a_removed_file_are_forgotten_once_settled_and_those_of_a_listed_one_kept(deals) -> None:
    """A removed file's deals are paid up to the removal, then dropped: kept, every payment run would read them for
    good.  Those of a file still listed stay (its history of moved shares too)."""
    make, ledger = deals
    service = make()
    kept = bytes(reversed(range(32)))
    service.store.db.put(keys.file(kept), codec.dumps({"storage_index": kept.hex()}))
    for si in (SI, kept):
        service.record(si, [HOLDER] * 6, 1024**3, {s: 1000 for s in range(6)}, 0, 7200)
        service.moved(si, {0: ("c" * 52, None)}, 600)
    service.removed(SI, 1800)
    summary = await service.pay_due(3600)
    assert make().of_file(SI) == [] and make().ended_deals(SI) == []
    assert summary["payments"] == 12 and summary["forgotten"] == 1
    assert len(make().of_file(kept)) == 6 and len(make().ended_deals(kept)) == 1
    assert service.outstanding() == service.outstanding(3600) > 0
    # The listed file's deals run to their lease end: settled then, yet kept while the file is listed.
    assert (await service.pay_due(7200))["forgotten"] == 0 and len(make().of_file(kept)) == 6


async def test_the_audit_marks_of_holders_no_deal_names_any_more_are_forgotten(deals) -> None:
    """The holders are whoever the market matched: once the files placed on one are removed and their deals settled,
    nothing of it is kept; a holder a running deal names keeps its marks."""
    make, ledger = deals
    service = make()
    service.audits_on = True
    staying = public_id(b"\xff" * 32)
    service.record(SI, [staying], 1024**3, {0: 1000}, 0, 7200)
    service.note_audit(staying, True, at=10)
    for n in range(50):  # fake holders cycled through, each with a file of this node's, then removed
        si, holder = n.to_bytes(32, "big"), public_id(n.to_bytes(32, "big"))
        service.record(si, [holder], 1024**3, {0: 1000}, 0, 7200)
        service.note_audit(holder, True, at=10)
        service.removed(si, 1800)
    assert len(service.audits) == 51
    summary = await service.pay_due(3600)
    assert summary["forgotten"] == 50
    assert set(service.audits) == {staying} and set(make().audits) == {staying}  # on disk too


async def test_the_audit_marks_of_a_holder_no_deal_names_go_with_its_last_deal(deals) -> None:
    """Only a deal's verdict reads a holder's audit marks: once no deal names the holder they go (kept, they would
    grow with every node this node ever placed a share on); a holder that still holds a share keeps its own."""
    make, _ = deals
    service = make()
    other = public_id(bytes(range(1, 33)))
    kept = bytes(reversed(range(32)))
    service.store.db.put(keys.file(kept), codec.dumps({"storage_index": kept.hex()}))
    service.record(SI, [HOLDER], 1024**3, {0: 1000}, 0, 7200)
    service.record(kept, [other], 1024**3, {0: 1000}, 0, 7200)
    service.note_audit(HOLDER, True, at=10)
    service.note_audit(other, False, at=20)
    service.removed(SI, 1800)
    assert (await service.pay_due(3600))["forgotten"] == 1
    assert service.audits == make().audits == {other: {"failed": 20}}


async def test_the_last_period_of_a_removed_file_is_decided_when_its_holder_is_audited_no_more(deals) -> None:
    """A holder is paid for a period once an audit of it passed since; a removed file's shares are audited no more,
    and a holder with no other share of this node's would wait for good, its deal never settled and its promise
    held against every put.  After VERDICT_WAIT its last verdict decides."""
    make, ledger = deals
    service = make()
    service.audits_on = True
    service.record(SI, [HOLDER], 1024**3, {0: 1000}, 0, 7200)
    service.note_audit(HOLDER, True, at=10)
    assert (await service.pay_due(3600))["payments"] == 1
    service.removed(SI, 5400)
    assert (await service.pay_due(6000))["waiting"] == 1  # an audit of the holder may still come
    await service.pay_due(5400 + VERDICT_WAIT)
    assert make().of_file(SI) == [] and service.outstanding() == 0  # paid to the removal, then forgotten
    assert sorted(ledger.paid) == [f"store:{SI.hex()}:0:0:3600", f"store:{SI.hex()}:0:3600:5400"]


async def test_a_holder_whose_last_audit_failed_forfeits_the_last_period_of_a_removed_file(deals) -> None:
    make, ledger = deals
    service = make()
    service.audits_on = True
    service.record(SI, [HOLDER], 1024**3, {0: 1000}, 0, 7200)
    service.note_audit(HOLDER, True, at=10)
    await service.pay_due(3600)
    service.note_audit(HOLDER, False, at=3000)  # failed before the last payment: the next period is not decided by it
    service.removed(SI, 5400)
    assert (await service.pay_due(6000))["waiting"] == 1
    assert (await service.pay_due(5400 + VERDICT_WAIT))["forfeited"] == 1
    assert make().of_file(SI) == [] and len(ledger.paid) == 1
