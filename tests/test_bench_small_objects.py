"""bench/bench_small_objects.py: what each process spent per object over a phase, and the line that prints it."""

from __future__ import annotations

import os

from bench.bench_small_objects import Spent, devnet_line, spent_line


def test_each_process_is_counted_per_object_and_the_client_is_this_process() -> None:
    spent = Spent(node=os.getpid())
    sum(i * i for i in range(200_000))  # some CPU of this process's own: counted as the node's and the client's
    per = spent.per(4)
    assert set(per) == {"node", "client"}
    assert all(len(figures) == 3 and min(figures) >= 0 for figures in per.values())


def test_the_printed_line_names_each_process_and_sums_their_cpu() -> None:
    line = spent_line("put", {"node": (0.5, 0.01, 0.7), "client": (0.2, 0.04, 0.25)})
    assert line == "  put: node 0.50/0.01 (0.70), client 0.20/0.04 (0.25); all 0.95 ms"


def test_the_devnet_line_names_the_gateway_and_each_other_node_and_sums_them() -> None:
    line = devnet_line(120.0, [4.0, 1.5, 1.5, 1.6, 1.5, 1.4])
    assert "120/s" in line and "CPU per put 11.5 ms" in line and "the gateway 4.0, the others 1.5 1.5 1.6 1.5 1.4" in line
