"""The short version of the crash trials (bench/trials.py; `make trials N=1000` for the long one): a 6-node
devnet, a random workload, kill -9 of one or two random nodes at a random moment, restart, every invariant."""

from __future__ import annotations

import random

import pytest

from bench import trials

TRIALS = 10


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_crash_trials_find_no_violation(tmp_path) -> None:
    lines: list[str] = []
    results = trials.run(TRIALS, nodes=6, seed=random.randrange(2**32), root=tmp_path, out=lines.append)
    assert len(results) == TRIALS
    assert sum(r.faults for r in results) >= TRIALS and sum(r.acked for r in results) > 0
    assert [v for r in results for v in r.violations] == [], "\n".join(lines)
