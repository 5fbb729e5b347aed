"""The short version of the crash trials (bench/trials.py; `make trials N=1000` for the long one): a 6-node
devnet, a random workload, kill -9 of one or two random nodes at a random moment, restart, every invariant.

Its few trials start from a random seed whose trials' faults between them kill the gateway and other nodes only,
one node and two at once, timed from a trial's start and from its first job."""

from __future__ import annotations

import random

import pytest

from bench import trials

TRIALS = 5
NODES = 6


def _kinds(plan: trials.Faults) -> set[str]:
    """The kinds of crash point a trial's faults reach."""
    return {"the gateway" if 0 in plan.victims else "others only", "two" if len(plan.victims) == 2 else "one",
            "after a job" if plan.after_a_job else "from the start"}


KINDS = {"the gateway", "others only", "two", "one", "after a job", "from the start"}


def _first_seed() -> int:
    """A random first seed whose TRIALS trials (seeds seed, seed + 1, ...) reach every kind of crash point."""
    while True:
        seed = random.randrange(2**32)
        if set().union(*(_kinds(trials.fault_plan(random.Random(seed + n), NODES)) for n in range(TRIALS))) == KINDS:
            return seed


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_crash_trials_find_no_violation(tmp_path) -> None:
    lines: list[str] = []
    results = trials.run(TRIALS, nodes=NODES, seed=_first_seed(), root=tmp_path, out=lines.append)
    assert len(results) == TRIALS
    assert sum(r.faults for r in results) >= TRIALS and sum(r.acked for r in results) > 0
    assert [v for r in results for v in r.violations] == [], "\n".join(lines)
