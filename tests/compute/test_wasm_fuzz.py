"""A short, bounded wasm fuzz against a real node process (the long run: make fuzz-wasm N=5000).

Generated and mutated modules, deployed and invoked with small limits: the node never crashes, every
failure is a problem of a known code (traps of a known kind), and no call escapes its fuel, memory or
deadline.  A failing case names its seed: python -m bench.wasm_fuzz --replay SEED."""

from __future__ import annotations

import pytest
import wasmtime

from bench import wasm_fuzz


@pytest.mark.parametrize("seed", range(40))
def test_generated_modules_are_valid(seed):
    wasm, meta = wasm_fuzz.generate(wasm_fuzz.case_seed(7, seed))
    wasmtime.Module.validate(wasmtime.Engine(), wasm)
    assert set(meta["exports"]) == {f"{p}{i}" for p in "fm" for i in range(len(meta["exports"]) // 2)}


def test_generation_and_mutation_replay_exactly_from_their_seed():
    fixtures = wasm_fuzz.fixture_modules()
    assert wasm_fuzz.generate(1234) == wasm_fuzz.generate(1234)
    assert wasm_fuzz.mutate(1234, fixtures) == wasm_fuzz.mutate(1234, fixtures)
    assert wasm_fuzz.generate(1234)[0] != wasm_fuzz.generate(1235)[0]


def test_sections_round_trip_and_v128_is_recognised():
    for name, wasm in wasm_fuzz.fixture_modules().items():
        assert wasm_fuzz.assemble(wasm_fuzz.sections(wasm)) == wasm, name
        assert not wasm_fuzz.declares_v128(wasm), name
    v128 = bytes(wasmtime.wat2wasm('(module (func (export "f") (param v128)))'))
    assert wasm_fuzz.declares_v128(v128)


@pytest.mark.slow
def test_a_short_fuzz_run_finds_no_crash_no_server_error_and_no_limit_escape(tmp_path):
    seed = 20261122  # fixed: the long runs (make fuzz-wasm) explore; this one replays the same 150 cases
    stats = wasm_fuzz.fuzz(150, seed, data_dir=tmp_path, progress=False)
    summary = wasm_fuzz.report(stats, seed)
    assert stats.modules == 150, summary
    assert stats.deployed > 50 and stats.calls > 50, summary  # the run reached the sandbox
    assert sum(stats.traps.values()) > 0 and stats.returned > 0, summary
    assert not stats.crashes, summary
    assert not stats.server_errors, summary
    assert not stats.unclear, summary
    # Fuel and memory are counted, not timed; deadlines are wall-clock, so only the bench run judges them.
    assert not [e for e in stats.limit_escapes if e[1].startswith(("fuel", "memory"))], summary
    assert not stats.generator_invalid, summary
