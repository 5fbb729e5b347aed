"""One hop per call: a call on the pool is parsed, run, recorded and written by one worker, which
writes the group commit itself when no group is being written, or joins the next group and is free at once (that
group's leader answers it); the loop never writes.  And the failure paths: a write that fails, a call that
traps, a call stopped by its deadline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.compute import deploy, invoke
from tests.support.waiting import eventually_async

from xsc import keys
from xsc.compute import provenance
from xsc.node.appkeys import NODE


def _on_the_pool(monkeypatch, compute) -> None:
    """Every call goes to the pool (concurrent small calls would run inline on the loop)."""
    monkeypatch.setattr(compute, "_try_inline", lambda *args, **kwargs: None)


class _Writes:
    """The journal's group writes, seen from the test: their sizes, the thread of each, and a gate that holds the
    first one until `release()` (a slow disk), or the test's end."""

    def __init__(self, request, monkeypatch, journal, *, hold_first: bool = False, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.threads: list[str] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.fail = fail
        if not hold_first:
            self.gate.set()
        request.addfinalizer(self.gate.set)  # a test that failed before its release leaves no worker held
        real = journal._write

        def write(items):
            self.sizes.append(len(items))
            self.threads.append(threading.current_thread().name)
            self.started.set()
            assert threading.current_thread() is not threading.main_thread(), "the loop never writes"
            self.gate.wait()
            if self.fail:
                raise OSError("the disk failed the write")
            return real(items)

        monkeypatch.setattr(journal, "_write", write)

    def release(self) -> None:
        self.gate.set()


# What a call owes stays on its tab while the test looks: a tab settles once it is ledger.tab_interval old (1 s by
# default), which a loaded machine lets pass between an answer and the test's look at the tab.
TAB_KEPT = {"ledger": {"tab_interval": 3600}}


async def _until(predicate, what: str) -> None:
    await eventually_async(predicate, what, poll=0.005)


async def test_calls_on_the_pool_write_their_own_records_and_join_the_group_being_written(node, monkeypatch,
                                                                                          request):
    compute = node.app[NODE].compute
    journal = compute.journal
    add = await deploy(node, "add")
    _on_the_pool(monkeypatch, compute)
    appended = []
    monkeypatch.setattr(journal, "append", lambda *args: appended.append(args))  # the loop's way: never used here
    writes = _Writes(request, monkeypatch, journal, hold_first=True)

    first = asyncio.create_task(invoke(node, add, "add", "1", "0"))
    await _until(writes.started.is_set, "the first call's worker to write its record")
    others = [asyncio.create_task(invoke(node, add, "add", str(i), "1")) for i in range(5)]
    await _until(lambda: journal.waiting == 5, "the other calls to join the next group")
    assert compute.running == 0  # their workers ran them and are free: the group's leader answers them
    assert (await node.get("/health")).status == 200  # a slow write holds no one but its own group's callers
    assert not first.done() and not any(t.done() for t in others)
    writes.release()
    answers = [await first] + [await t for t in others]

    assert [status for status, _ in answers] == [200] * 6, answers
    assert [body["results"][0]["value"] for _, body in answers] == [1, 1, 2, 3, 4, 5]
    assert writes.sizes == [1, 5] and appended == []
    assert writes.threads[0].startswith("xsc-wasm")  # the first call's own worker wrote it
    ids = [body["provenance"] for _, body in answers]
    records = [compute.provenance_records.get(i)["record"] for i in ids]
    assert records[0]["previous"] is None and {r["previous"] for r in records[1:]} <= set(ids)
    assert len({r["previous"] for r in records}) == 6  # one chain: each record follows another
    assert all(provenance.is_valid(compute.provenance_records.get(i)) for i in ids)


async def test_a_lone_call_is_one_hop_and_answered_only_once_durable(node, monkeypatch, request):
    compute = node.app[NODE].compute
    add = await deploy(node, "add")
    writes = _Writes(request, monkeypatch, compute.journal)
    hops = []
    real_submit = compute.pool.submit
    monkeypatch.setattr(compute.pool, "submit", lambda fn, *args: (hops.append(fn.__name__), real_submit(fn, *args)))
    status, body = await invoke(node, add, "add", "2", "3")
    assert status == 200 and body["results"][0]["value"] == 5
    assert hops == ["_invoke"] and writes.sizes == [1] and writes.threads[0].startswith("xsc-wasm")
    ref = bytes.fromhex(body["provenance"])
    assert node.app[NODE].compute.store.provenance(ref) is not None  # on disk before the answer
    assert node.app[NODE].ledger.store.db.get(keys.ledger_owed(ref)) is not None  # and what it owes, in the same write


@pytest.mark.parametrize("inline", [False, True], ids=["on-the-pool", "inline"])
async def test_a_failed_write_fails_each_call_of_its_group_and_releases_their_holds(node_factory, monkeypatch, inline,
                                                                                    request):
    node = await node_factory(**TAB_KEPT)
    compute, ledger, tabs = node.app[NODE].compute, node.app[NODE].ledger, node.app[NODE].tabs
    payer = node.app[NODE].paid.payer
    add = await deploy(node, "add")
    if not inline:
        _on_the_pool(monkeypatch, compute)
    writes = _Writes(request, monkeypatch, compute.journal, hold_first=True, fail=True)
    calls = [asyncio.create_task(invoke(node, add, "add", str(i), "1")) for i in range(4)]
    await _until(writes.started.is_set, "the first group's write")
    await _until(lambda: compute.journal.waiting == 3 or compute.admitted == 4 and inline,
                 "the other calls to wait for the next group")
    writes.release()
    answers = await asyncio.gather(*calls)
    assert [status for status, _ in answers] == [500] * 4, answers
    # The first one was alone: on the pool.  The others were tried on the loop; a try a busy machine kept from
    # running until its deadline goes to the pool as well (service._try_inline).
    assert compute.inline["inline"] + compute.inline["inline_retried"] == (3 if inline else 0)
    assert ledger.held(payer.public_key) == 0  # nothing held for calls that were not acknowledged
    assert tabs.open()["refs"] == 0  # and nothing owed
    assert compute.provenance_records.recent(10) == []

    writes.fail = False  # the disk is back: the node goes on
    status, body = await invoke(node, add, "add", "2", "2")
    assert status == 200 and body["results"][0]["value"] == 4
    record = compute.provenance_records.get(body["provenance"])["record"]
    assert record["previous"] is None  # no failed call in the chain
    assert tabs.open()["refs"] == 1


async def test_a_call_that_traps_on_the_pool_is_recorded_and_charged(node_factory):
    node = await node_factory(**TAB_KEPT)
    compute, tabs = node.app[NODE].compute, node.app[NODE].tabs
    traps = await deploy(node, "traps")
    status, body = await invoke(node, traps, "unreachable")
    assert status == 422 and body["kind"] == "unreachable", body
    record = compute.provenance_records.get(body["provenance"])["record"]
    assert record["outcome"] == "trap" and record["trap"]["kind"] == "unreachable"
    assert tabs.open()["refs"] == 1 and record["charge"] == body["charge"]


async def test_a_runaway_call_on_the_pool_is_stopped_by_its_deadline_and_recorded(node):
    compute = node.app[NODE].compute
    loop_module = await deploy(node, "loop")
    spin = asyncio.create_task(invoke(node, loop_module, "spin", timeout=0.5))
    await _until(lambda: compute.running == 1, "the call to spin on a worker")
    assert (await node.get("/health")).status == 200  # the loop answers while it spins
    status, body = await spin
    assert status == 422 and body["kind"] == "deadline", body
    record = compute.provenance_records.get(body["provenance"])["record"]
    assert record["trap"]["kind"] == "deadline" and record["wall_time_us"] >= 500_000
    assert compute.running == 0 and compute.admitted == 0



BULK = """(module (memory (export "memory") 16)
  (func (export "fill") (param i32) (memory.fill (i32.const 0) (i32.const 7) (local.get 0)))
  (func (export "fill_forever") (loop $again (memory.fill (i32.const 0) (i32.const 7) (i32.const 1048576))
                                            (br $again))))"""


async def test_a_call_tried_on_the_loop_is_bounded_by_its_fuel_even_with_bulk_instructions(node, monkeypatch):
    """A call tried on the loop keeps the GIL, so the epoch ticker (a Python thread) cannot stop it: its small
    fuel must bound its time.  wasmtime charges a bulk instruction a unit of fuel per byte (a memory.fill of
    1 MiB is a million units), so a loop of whole-memory fills is stopped by the try's fuel after ~100 KB, and
    the call then runs on the pool under its own limits, where its deadline stops it."""
    import wasmtime

    from xsc.compute import engine as eng
    from xsc.compute import sandbox
    from xsc.compute.service import INLINE_FUEL

    compute = node.app[NODE].compute
    response = await node.post("/v1/modules", data=wasmtime.wat2wasm(BULK))
    module = (await response.json())["id"]
    status, body = await invoke(node, module, "fill", 1 << 20)  # alone: on the pool
    assert status == 200 and body["fuel_consumed"] >= 1 << 20, body
    tries = []
    real_run = sandbox.run

    def run(*args, on_loop=False, **kwargs):
        outcome = real_run(*args, on_loop=on_loop, **kwargs)
        if on_loop:
            tries.append(outcome)
        return outcome

    monkeypatch.setattr(sandbox, "run", run)
    compute.admitted += 1  # as if another call were in flight: tried inline first
    try:
        status, body = await invoke(node, module, "fill_forever", timeout=0.3)
    finally:
        compute.admitted -= 1
    [tried] = tries
    # Its fuel stopped it, or a machine too busy to let it run kept it from running until its deadline (less than
    # half a tick of CPU: service._try_inline tells the two apart): never its deadline once it ran.
    assert (tried.trap_kind, tried.fuel_consumed) == ("out-of-fuel", INLINE_FUEL) or \
        (tried.trap_kind == "deadline" and tried.cpu_ns < eng.TICK * 1e9 / 2), tried
    assert status == 422 and body["kind"] in ("deadline", "out-of-fuel"), body  # on the pool: its own limits
    assert compute.inline["inline_retried"] == 1


def test_a_large_group_is_written_signed_and_a_small_one_signed_after(tmp_path):
    """A group of SIGN_IN_GROUP records or more is written already signed (one batch signature, no marks, no
    second write); a smaller one is written unsigned with its marks and signed later (or after a crash)."""
    import plyvel

    from xsc.compute.journal import SIGN_IN_GROUP, Journal, unsigned
    from xsc.identity import Identity

    identity = Identity.generate()
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    journal = Journal(db, identity)

    def records(n):
        return [{"version": provenance.VERSION, "id": provenance.new_id().hex(), "module": "ab" * 32,
                 "function": "f", "args": [], "outcome": "ok", "results": [], "node": identity.id} for _ in range(n)]

    large, small = records(SIGN_IN_GROUP), records(SIGN_IN_GROUP - 1)
    journal._write([(r, b"m" * 32, ()) for r in large])
    journal._write([(r, b"m" * 32, ()) for r in small])
    stored = {r["id"]: db.get(keys.provenance(bytes.fromhex(r["id"]))) for r in large + small}
    assert not any(unsigned(stored[r["id"]]) for r in large) and all(unsigned(stored[r["id"]]) for r in small)
    marks = [key[len(keys.UNSIGNED):].hex() for key, _ in db.iterator(prefix=keys.UNSIGNED)]
    assert sorted(marks) == sorted(r["id"] for r in small)
    signed = [provenance.decode(stored[r["id"]]) for r in large]
    assert all(provenance.is_valid(s) for s in signed) and {s["batch"]["count"] for s in signed} == {len(large)}
    assert [s["record"]["previous"] for s in signed] == [None] + [r["id"] for r in large[:-1]]
    assert provenance.decode(db.get(keys.provenance(bytes.fromhex(small[0]["id"]))))["record"]["previous"] == \
        large[-1]["id"]  # one chain across both
    assert journal.sign_pending() == len(small)
    assert list(db.iterator(prefix=keys.UNSIGNED)) == []
    db.close()
