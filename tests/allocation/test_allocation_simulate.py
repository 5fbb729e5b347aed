"""The simulator: random networks converge; the CLI around it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation.core.simulate import SimConfig, Simulation, simulate

from tests.support.nodes import run_xsc


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(1, 3), st.integers(0, 2**32))
def test_random_networks_with_damping_converge_without_over_allocation(n, m, seed):
    result = simulate(n, m, seed)
    assert result.converged and result.quiescent
    # Bounded: a few dozen computations per participant at these sizes (worst seen 53 for n = 8).
    assert result.rounds <= 25 * n
    # Once settled every provider has answered the others' final states, so no need slot gets
    # more than its quantity and no capacity slot gives more than it has.
    assert result.over_allocation == 0
    assert result.capacity_over_quantity == 0
    assert result.allocated + result.unmet_need == result.total_need  # every unit accounted for
    assert result.allocated <= result.total_capacity


def test_simulation_is_deterministic_and_exercises_stale_updates_and_damping():
    # Events mode: views differ between providers (latencies), so a transient over-allocation
    # can still happen; the next receipt sheds it.
    a = simulate(12, 3, 4)
    b = simulate(12, 3, 4)
    assert a.summary() == b.summary() and a.timeline == b.timeline
    assert a.converged and a.over_allocation == 0
    assert a.stale_ignored > 0  # messages overtaken in flight were recognised by their stamps
    sim = Simulation(SimConfig(12, 3, 4))
    sim.run()
    # Over-allocated recipients damped themselves (and published the new factor).
    assert any(p.commitment.damping_factor < 1 for p in sim.people.values())
    # Transient over-allocation happened before damping and re-computation settled it.
    assert max(o for _, _, o in a.timeline) > 0


def test_cli_simulate_json_and_text():
    r = run_xsc("allocation", "simulate", "--participants", "6", "--slots", "2", "--seed", "3", "--mode", "events",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "events" and out["converged"] is True and out["over_allocation"] == 0
    assert {"rounds_to_convergence", "unmet_need", "fairness", "recipients"} <= out.keys()
    r = run_xsc("allocation", "simulate", "-n", "6", "-m", "2", "-s", "3", "--mode", "events")
    assert r.returncode == 0, r.stderr
    assert b"rounds to convergence:" in r.stdout and b"over allocation:" in r.stdout


def test_cli_simulate_rounds_json_and_text():
    r = run_xsc("allocation", "simulate", "-n", "12", "-m", "3", "-s", "2", "--traffic", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "rounds" and out["converged"] is True and out["quiet"] is True
    assert out["max_over_allocation_in_any_round"] == 0 and out["bytes_per_node_per_round"] > 0
    assert len(out["timeline"]) == out["rounds_run"]
    assert {"round", "delta", "delta_mean", "over_allocation", "converged_fraction"} <= out["timeline"][0].keys()
    r = run_xsc("allocation", "simulate", "-n", "12", "-m", "3", "-s", "2")
    assert r.returncode == 0, r.stderr
    assert b"rounds to convergence:" in r.stdout and b"peak rss mib:" in r.stdout
    r = run_xsc("allocation", "simulate", "-n", "600", "--mode", "events")
    assert r.returncode != 0 and b"--participants must be between 2 and 500 in events mode" in r.stderr
    r = run_xsc("allocation", "simulate", "-n", "6", "--fairness")
    assert r.returncode != 0 and b"--fairness is measured in events mode only" in r.stderr


def test_cli_simulate_bad_input():
    r = run_xsc("allocation", "simulate", "--participants", "1")
    assert r.returncode != 0 and b"--participants" in r.stderr
    r = run_xsc("allocation", "simulate", "--slots", "zero")
    assert r.returncode != 0 and b"--slots" in r.stderr


@pytest.mark.parametrize("mode", ["rounds", "events"])
def test_cli_simulate_plot(tmp_path, mode):
    pytest.importorskip("matplotlib")
    target = tmp_path / "convergence.png"
    r = run_xsc("allocation", "simulate", "-n", "4", "-m", "2", "--mode", mode, "--plot", str(target))
    assert r.returncode == 0, r.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_simulate_plot_without_matplotlib(tmp_path):
    # A package named matplotlib that cannot be imported, first on the path: as if it were missing.
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    target = tmp_path / "convergence.png"
    r = run_xsc("allocation", "simulate", "-n", "4", "-m", "2", "--plot", str(target),
                env={"PYTHONPATH": str(fake.parent)})
    assert r.returncode == 1
    assert r.stderr.decode().strip() == (
        "xsc: error: --plot needs matplotlib, which is not installed (pip install 'xsc[plot]', or leave out --plot)")
    assert not target.exists()
