"""The provenance journal's groups under load: the next group waits for as many records as the group before it had
(the callers just answered send their next calls meanwhile), at most GATHER; a lone record, or one that comes while
nothing is written, is never held; records nobody waits for (a web function's) start a group once LAZY wait, or
LAZY_AFTER after the first, or once someone waits; and closing the journal writes what waits."""

from __future__ import annotations

import asyncio
import threading

import plyvel
import pytest

from xsc import keys
from xsc.compute import journal as journal_module
from xsc.compute import provenance
from xsc.compute.journal import Journal
from xsc.identity import Identity


class _GatedWrites:
    """Each group write waits for a permit (a slow disk the test paces); `sizes` are the groups written."""

    def __init__(self, monkeypatch, journal: Journal) -> None:
        self.sizes: list[int] = []
        self._entered = threading.Semaphore(0)
        self._permits = threading.Semaphore(0)
        real = journal._write

        def write(items):
            self.sizes.append(len(items))
            self._entered.release()
            assert self._permits.acquire(timeout=10), "the test never let this write through"
            return real(items)

        monkeypatch.setattr(journal, "_write", write)

    async def started(self) -> None:
        """Until the next group write has started (and waits for its permit)."""
        assert await asyncio.to_thread(self._entered.acquire, True, 10), "no group write started"

    def release(self) -> None:
        self._permits.release()


@pytest.fixture
async def journal(tmp_path):
    identity = Identity.generate()
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    journal = Journal(db, identity)
    journal.test_identity = identity
    yield journal
    await journal.close()
    db.close()


async def _handed_work_done(journal: Journal) -> None:
    """Once the journal's thread has run all it was handed so far: a group whose write was to start has started by
    then (a journal decides that on the loop, as records come or its timers fire), so the test may check none did."""
    await journal._writer.run(lambda: None)


def _append(journal: Journal, awaited: bool = True) -> tuple[str, asyncio.Future]:
    record = _records(journal, 1)[0]
    return record["id"], journal.append(record, b"m" * 32, awaited=awaited)


async def test_the_next_group_waits_for_as_many_records_as_the_last_had(journal, monkeypatch):
    monkeypatch.setattr(journal_module, "GATHER", 60.0)  # the wait ends when they come, not by the clock
    writes = _GatedWrites(monkeypatch, journal)
    _, first = _append(journal)  # nothing is written: it goes at once, alone
    await writes.started()
    second = [_append(journal)[1] for _ in range(3)]  # they come while it is written
    writes.release()
    await first
    await writes.started()  # three wait, more than the one just answered: they go at once
    assert writes.sizes == [1, 3]

    _, fifth = _append(journal)  # one comes while the three are written
    writes.release()
    await asyncio.gather(*second)
    await _handed_work_done(journal)
    assert writes.sizes == [1, 3] and not fifth.done()  # one waits for three (for GATHER at most)
    more = [_append(journal)[1] for _ in range(2)]  # the answered callers' next calls: now three wait
    await writes.started()
    assert writes.sizes == [1, 3, 3]
    writes.release()
    await asyncio.gather(fifth, *more)
    assert journal.groups == 3


async def _one_then_two_then_one(journal, writes) -> tuple[str, asyncio.Future]:
    """A record alone, two during its write, then one during theirs (no other follows): that one waits for two."""
    _, first = _append(journal)
    await writes.started()
    others = [_append(journal)[1] for _ in range(2)]
    writes.release()
    await first
    await writes.started()
    record_id, last = _append(journal)
    writes.release()
    await asyncio.gather(*others)
    return record_id, last


async def test_a_record_that_waits_for_a_group_that_does_not_fill_goes_alone(journal, monkeypatch):
    writes = _GatedWrites(monkeypatch, journal)
    _, last = await _one_then_two_then_one(journal, writes)
    await writes.started()  # written once GATHER has passed, alone
    writes.release()
    await last
    assert writes.sizes == [1, 2, 1]


async def test_closing_the_journal_writes_the_records_that_wait_for_more(journal, monkeypatch):
    monkeypatch.setattr(journal_module, "GATHER", 60.0)
    writes = _GatedWrites(monkeypatch, journal)
    record_id, last = await _one_then_two_then_one(journal, writes)
    writes.release()  # its permit, ahead: the close does not wait for the gathering to end
    await asyncio.wait_for(journal.close(), 10)
    assert last.done() and writes.sizes == [1, 2, 1]
    stored = journal._db.get(keys.provenance(bytes.fromhex(record_id)))
    assert stored is not None and provenance.is_valid(provenance.decode(stored))  # durable, and signed on close


async def test_records_nobody_waits_for_are_written_together(journal, monkeypatch):
    monkeypatch.setattr(journal_module, "LAZY_AFTER", 60.0)  # groups start when records come, not by the clock
    monkeypatch.setattr(journal_module, "GATHER", 60.0)
    writes = _GatedWrites(monkeypatch, journal)
    lazy = [_append(journal, awaited=False)[1] for _ in range(journal_module.LAZY - 1)]
    await _handed_work_done(journal)
    assert writes.sizes == [] and not any(f.done() for f in lazy)
    lazy.append(_append(journal, awaited=False)[1])  # the LAZY-th: they go together
    await writes.started()
    during = [_append(journal, awaited=False)[1] for _ in range(2)]  # they come while those are written
    writes.release()
    await asyncio.gather(*lazy)
    await _handed_work_done(journal)
    assert writes.sizes == [journal_module.LAZY] and not any(f.done() for f in during)  # they wait for more
    _, awaited = _append(journal)  # someone waits: the group starts at once
    await writes.started()
    writes.release()
    await asyncio.gather(awaited, *during)
    assert writes.sizes == [journal_module.LAZY, 3]
    # Alone and nobody waits for it: it waits for more, until the journal is asked to write what it has.
    _, alone = _append(journal, awaited=False)
    await _handed_work_done(journal)
    assert not alone.done()
    flushed = asyncio.ensure_future(journal.flush())
    await writes.started()
    writes.release()
    await flushed
    assert alone.done() and writes.sizes == [journal_module.LAZY, 3, 1]


async def test_a_record_nobody_waits_for_is_written_within_lazy_after(journal, monkeypatch):
    writes = _GatedWrites(monkeypatch, journal)
    _, alone = _append(journal, awaited=False)
    await writes.started()  # once LAZY_AFTER has passed
    writes.release()
    await alone
    assert writes.sizes == [1]


async def test_the_chain_heads_kept_in_memory_are_bounded_and_each_chain_goes_on_from_its_head(journal, monkeypatch):
    """The modules run here are whoever a gateway pushes: past MODULES_KEPT the heads kept are read from disk again,
    and a module's next record still links to its newest."""
    monkeypatch.setattr(journal_module, "MODULES_KEPT", 8)
    first = _records(journal, 1)[0]
    await journal.append(first, b"\0" * 32)
    for n in range(1, 100):
        await journal.append(_records(journal, 1)[0], n.to_bytes(32, "big"))
        assert journal.modules_kept <= 8
    again = _records(journal, 1)[0]
    await journal.append(again, b"\0" * 32)
    assert again["previous"] == first["id"]


def _records(journal: Journal, count: int) -> list[dict]:
    return [{"version": provenance.VERSION, "id": provenance.new_id().hex(), "module": "ab" * 32, "function": "f",
             "args": [], "outcome": "ok", "results": [], "node": journal.test_identity.id} for _ in range(count)]


async def _one_group_behind_a_lone_record(journal, writes, records) -> str:
    """`records` appended while a lone record is written (so they go as one group next), all answered; the lone
    record's id."""
    lone, first = _append(journal)
    await writes.started()
    answers = [journal.append(record, b"m" * 32) for record in records]
    writes.release()
    await first
    await writes.started()
    writes.release()
    await asyncio.gather(*answers)
    assert writes.sizes == [1, len(records)]
    return lone


def _stored(journal: Journal, record_id: str) -> bytes:
    return journal._db.get(keys.provenance(bytes.fromhex(record_id)))


async def test_a_large_group_is_signed_in_its_own_write_and_a_lone_record_after_its_answer(journal, monkeypatch):
    """A group of SIGN_IN_GROUP records or more (a peer's batch of calls) is answered signed, in one write; a lone
    record is answered unsigned, with its mark (signed within SIGN_DELAY, or when it is read)."""
    monkeypatch.setattr(journal_module, "SIGN_DELAY", 60.0)  # nothing is signed later within the test
    writes = _GatedWrites(monkeypatch, journal)
    records = _records(journal, journal_module.SIGN_IN_GROUP)
    lone = await _one_group_behind_a_lone_record(journal, writes, records)
    assert journal_module.unsigned(_stored(journal, lone))
    stored = [_stored(journal, r["id"]) for r in records]
    assert not any(journal_module.unsigned(s) for s in stored)
    assert all(provenance.is_valid(provenance.decode(s)) for s in stored)
    assert [key for key, _ in journal._db.iterator(prefix=keys.UNSIGNED)] == [keys.unsigned(bytes.fromhex(lone))]
