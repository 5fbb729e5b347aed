"""bench/bench_market_network.py: each node's CPU per remote call, split into a part per batch request and a part
per call, is recovered exactly from two runs at different batch sizes (and not guessed from one)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.bench_market_network import split_cpu

cost = st.floats(0, 5000, allow_nan=False)


@given(a_batch=cost, a_call=cost, b_batch=cost, b_call=cost, n_lo=st.floats(1, 4), n_hi=st.floats(5, 64))
def test_two_batch_sizes_give_back_the_per_batch_and_per_call_costs(a_batch, a_call, b_batch, b_call, n_lo,
                                                                     n_hi) -> None:
    def run(n: float) -> tuple[float, float, float]:
        return a_batch / n + a_call, b_batch / n + b_call, n

    split = split_cpu(run(n_lo), run(n_hi))
    assert split["A"] == (pytest.approx(a_batch, abs=1e-6), pytest.approx(a_call, abs=1e-6))
    assert split["B"] == (pytest.approx(b_batch, abs=1e-6), pytest.approx(b_call, abs=1e-6))


def test_batches_of_the_same_size_are_not_split() -> None:
    assert split_cpu((300.0, 500.0, 7.6), (290.0, 480.0, 8.0)) == {}
