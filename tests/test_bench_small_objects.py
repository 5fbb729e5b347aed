"""bench/bench_small_objects.py: what each process spent per object over a phase, and the line that prints it."""

from __future__ import annotations

import os

from bench.bench_small_objects import Spent, spent_line


def test_each_process_is_counted_per_object_and_the_client_is_this_process() -> None:
    spent = Spent(node=os.getpid())
    sum(i * i for i in range(200_000))  # some CPU of this process's own: counted as the node's and the client's
    per = spent.per(4)
    assert set(per) == {"node", "client"}
    assert all(len(figures) == 3 and min(figures) >= 0 for figures in per.values())


def test_the_printed_line_names_each_process_and_sums_their_cpu() -> None:
    line = spent_line("put", {"node": (0.5, 0.01, 0.7), "client": (0.2, 0.04, 0.25)})
    assert line == "  put: node 0.50/0.01 (0.70), client 0.20/0.04 (0.25); all 0.95 ms"
