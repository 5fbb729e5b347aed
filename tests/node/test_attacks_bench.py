"""bench/bench_attacks.py with two short attacks on a real 2-node devnet: the bench runs, the node answers the
attacks with refusals, /health is sampled from its own process throughout, and the operator's put, get, invoke and
`ledger verify` work after each (its timings are the bench's to print, never asserted here)."""

from __future__ import annotations

import pytest

from bench import bench_attacks


@pytest.mark.slow
def test_the_attacks_bench_attacks_and_checks_the_operator_after_each(tmp_path):
    result = bench_attacks.run(tmp_path, ["forever-lease", "v128-module"], seconds=0.5, log=lambda line: None)
    text = bench_attacks.report(result)
    phases = result["phases"]
    assert list(phases) == ["quiet", "v128-module", "forever-lease", "quiet-end"], text  # in the table's order
    assert all(p["samples"] > 0 and p["health_not_200"] == 0 for p in phases.values()), text
    for name in ("forever-lease", "v128-module"):
        assert phases[name]["alive"] and phases[name]["put_get"] and phases[name]["invoke"], text
        assert phases[name]["ledger_verify"], text
    assert set(phases["forever-lease"]["answers"]) == {"400 invalid-argument"}, text
    assert "422 unsupported-signature" in phases["v128-module"]["answers"], text
    assert "403 forbidden" in phases["v128-module"]["answers"], text
