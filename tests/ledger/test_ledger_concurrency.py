"""Concurrent settlements never fork or lose an update; kill -9 mid-burst leaves a verifiable ledger."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import plyvel
import pytest

from tests.support.ledger import open_store
from xsc.errors import InsufficientCredit
from xsc.identity import Identity
from xsc.ledger import LedgerService, decode_entry


@pytest.fixture
async def service(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    service = LedgerService(db, 1_000_000, threads=2)
    yield service
    await service.close()
    db.close()


async def test_many_tasks_on_one_account_never_fork_or_lose(service):
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    jobs = []
    for i in range(400):
        payer, payee = [(a, b), (b, a), (c, a), (a, c)][i % 4]
        jobs.append(service.settle(payer, payee, 1 + i % 13, {"fuel": i}, f"job-{i}"))
    random.Random(4).shuffle(jobs)
    ids = await asyncio.gather(*jobs)
    assert len(set(ids)) == 400
    store = service.store
    expected = {a.public_key: 0, b.public_key: 0, c.public_key: 0}
    for i in range(400):
        payer, payee = [(a, b), (b, a), (c, a), (a, c)][i % 4]
        expected[payer.public_key] -= 1 + i % 13
        expected[payee.public_key] += 1 + i % 13
    for key, balance in expected.items():
        state = store.state(key)
        assert state.balance == balance
        chain = [decode_entry(d) for d in store.chain(key)]
        assert [e.seq for e in chain] == list(range(1, len(chain) + 1)) == list(range(1, state.seq + 1))
        assert sum(e.delta for e in chain) == balance
    assert store.state(a.public_key).seq == 400  # a is in every transfer
    report = await service.verify()
    assert report["ok"], report["violations"]
    assert report["entries"] == 800 and report["balance_sum"] == 0 and report["open_transfers"] == 0


async def test_concurrent_settlements_against_the_credit_limit_lose_nothing(service):
    payer, payee = Identity.generate(), Identity.generate()
    # limit 1,000,000 micro: exactly 100 of these fit, whatever the interleaving
    results = await asyncio.gather(*(service.settle(payer, payee, 10_000, {"fuel": 1}, "j") for _ in range(130)),
                                   return_exceptions=True)
    ok = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, InsufficientCredit)]
    assert len(ok) == 100 and len(refused) == 30
    assert service.store.state(payer.public_key).balance == -1_000_000
    with pytest.raises(InsufficientCredit, match="short by 0.000001"):
        await service.ensure_credit(payer, 1)
    await service.ensure_credit(payee, 2_000_000)
    assert (await service.verify())["ok"]


@pytest.mark.slow
def test_kill_9_during_a_burst_leaves_a_verifiable_ledger(tmp_path):
    path = tmp_path / "db"
    script = Path(__file__).parents[1] / "support" / "ledger_burst.py"
    stored_before = 0
    for attempt, wait_for in enumerate((256, 1024)):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        acknowledged = 0
        deadline = time.monotonic() + 60
        try:
            while acknowledged < wait_for and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                acknowledged = int(line)
            time.sleep(random.Random(attempt).uniform(0.0, 0.05))  # land the kill mid-burst
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert acknowledged >= wait_for, "the burst did not get going"
        db, store = open_store(path, credit_limit=10**15)
        try:
            report = store.verify()
            assert report["ok"], report["violations"]
            assert report["open_transfers"] == 0 and report["balance_sum"] == 0  # no half-written transfer
            # every settlement acknowledged before the kill is there
            payments = sum(1 for _, _, data in store.entries() if decode_entry(data).kind == "payment")
            assert payments >= stored_before + acknowledged
            stored_before = payments
        finally:
            db.close()
