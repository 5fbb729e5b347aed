"""A pooled engine (engine.make_engine(pooled=True), a web runner's): it runs what the node's engine compiled, its
slots are reused call after call, and no call sees what an earlier one left in a slot's memory."""

from __future__ import annotations

import hashlib

import wasmtime

from xsc.compute import engine as eng
from xsc.compute import modules as mods
from xsc.compute import sandbox
from xsc.compute.limits import Limits
from xsc.compute.modules import ModuleInfo
from xsc.compute.values import Signature

# `leave` writes a word at each of its offsets (inside the bytes a slot keeps resident, and past them); `find` adds
# up what it reads at the same offsets: 0 in a fresh instance
MEMORY = """(module
  (memory (export "memory") 32)
  (func (export "leave") (result i32)
    (i32.store (i32.const 64) (i32.const 7))
    (i32.store (i32.const 200000) (i32.const 11))
    (i32.store (i32.const 2000000) (i32.const 13))
    (i32.const 0))
  (func (export "find") (result i32)
    (i32.add (i32.load (i32.const 64))
             (i32.add (i32.load (i32.const 200000)) (i32.load (i32.const 2000000))))))"""
RESULT = Signature((), ("i32",))
LIMITS = Limits(1_000_000, 64 << 20, 5.0)


def _prepared(engine: wasmtime.Engine, wat: str) -> sandbox.Prepared:
    """The module as a web runner loads it: an artifact the node's (unpooled) engine compiled."""
    wasm = wasmtime.wat2wasm(wat)
    artifact = mods.compile_module(eng.make_engine(parallel=False), wasm).serialize()
    exports, imports, start = mods.describe(wasm)
    info = ModuleInfo(mods.module_id(wasm), len(wasm), exports, imports, "-", start=start)
    return sandbox.Prepared(hashlib.sha256(wasm).digest(), wasmtime.Module.deserialize(engine, artifact), info,
                            None)


def test_a_pooled_engine_runs_the_node_engines_artifacts_call_after_call_with_nothing_left_between() -> None:
    engine = eng.make_engine(parallel=False, pooled=True)
    prepared = _prepared(engine, MEMORY)
    for _ in range(3 * eng.POOL_SLOTS):  # more calls than slots: each call's slot is given back
        left = sandbox.run(engine, prepared, "leave", RESULT, [], LIMITS)
        assert left.trap_kind is None and left.results == [0]
        found = sandbox.run(engine, prepared, "find", RESULT, [], LIMITS)
        assert found.trap_kind is None and found.results == [0], "a call saw what the one before left in memory"
        assert found.memory_pages == 32
