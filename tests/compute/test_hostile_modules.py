"""Hostile modules against a real node process: v128 signatures and globals (wasmtime's C API aborts the
process when asked to describe them), GC types, exceptions, and the peer module push by a stranger's key.

The node must describe or refuse each one with a clear error and keep serving its operator."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.compute.engine import make_engine
from xsc.compute.modules import compile_module, describe_exports, describe_imports, has_start_function
from xsc.compute.shape import read_shape
from xsc.errors import InvalidModule
from xsc.identity import Identity, sign_request

from tests.support.attacks import (ADD, EXCEPTIONS, EXTERNREF, GC_ARRAY, V128_GLOBAL, V128_IMPORT, V128_PARAM,
                                   V128_RESULT)
from tests.support.peers import api, http, node_id

PEER_MODULES = "/v1/peer/modules"


def _deploy(node, wat: str, query: str = "") -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/wasm"}
    return http(node.url, "POST", "/v1/modules" + query, wasmtime.wat2wasm(wat), headers)


def _push(node, receiver: str, wat: str, query: str = "") -> tuple[int, dict]:
    """The peer module push, signed by a key nobody has seen before."""
    body, target = wasmtime.wat2wasm(wat), PEER_MODULES + query
    headers = sign_request(Identity.generate(), "PUT", target, body, receiver=receiver)
    return http(node.url, "PUT", target, body, {**headers, "Content-Type": "application/wasm"})


def _still_serving(node) -> None:
    assert node.proc.poll() is None, f"the node died: {node.log.read_text()[-2000:]}"
    status, health = http(node.url, "GET", "/health")
    assert status == 200 and health["status"] in ("pass", "warn"), health
    status, info = _deploy(node, ADD)
    assert status in (200, 201), info
    status, result = api(node, "POST", "/v1/compute/invoke", {"module": info["id"], "function": "add", "args": [2, 3]})
    assert status == 200 and result["results"][0]["value"] == 5, result


@pytest.mark.slow
def test_v128_and_gc_modules_neither_crash_nor_escape_the_node(node_process) -> None:
    node = node_process("target")
    receiver = node_id(node)

    # A function taking v128: described (not callable), its numeric neighbour still runs.
    status, info = _deploy(node, V128_PARAM)
    assert status == 201, info
    exports = {e["name"]: e for e in info["exports"]}
    assert exports["f"]["params"] == ["v128"] and exports["f"]["signature"] == "f(v128) -> ()"
    status, problem = api(node, "POST", "/v1/compute/invoke", {"module": info["id"], "function": "f", "args": [1]})
    assert status == 422 and problem["code"] == "unsupported-signature", problem
    assert "v128" in problem["detail"]
    status, result = api(node, "POST", "/v1/compute/invoke", {"module": info["id"], "function": "add", "args": [1, 2]})
    assert status == 200 and result["results"][0]["value"] == 3, result

    # A v128 global and a v128 result.
    status, info = _deploy(node, V128_GLOBAL)
    assert status == 201 and info["exports"] == [{"name": "g", "kind": "global", "detail": "v128"}], info
    status, info = _deploy(node, V128_RESULT)
    assert status == 201 and info["exports"][0]["results"] == ["v128"], info
    # An import with a v128 parameter (WASI will not link it: a clear refusal, not an abort).
    status, problem = _deploy(node, V128_IMPORT, "?wasi=true")
    assert status == 422 and problem["code"] == "imports-not-allowed", problem
    # A stranger's push of any of them, with no call that needs it, is refused before it is read.
    for wat in (V128_PARAM, V128_GLOBAL, V128_RESULT, GC_ARRAY):
        status, problem = _push(node, receiver, wat)
        assert status == 403 and "did not ask" in problem["detail"], problem
    _still_serving(node)

    # GC arrays (a heap outside the per-call memory limit), externref and exceptions: not enabled here.
    for wat in (GC_ARRAY, EXTERNREF, EXCEPTIONS):
        status, problem = _deploy(node, wat)
        assert status == 422 and problem["code"] == "invalid-module", (wat, problem)
        assert problem["detail"].startswith("not a valid WebAssembly module:")
    _still_serving(node)

    # And after a restart, the described modules load from the store without asking wasmtime's types.
    node.stop()
    node.start()
    status, listing = api(node, "GET", "/v1/modules")
    assert status == 200 and any(e.get("params") == ["v128"] for m in listing["modules"] for e in m["exports"])
    _still_serving(node)


# --- the section reader against wasmtime's own description, where wasmtime can describe ----------
NUMERIC = st.sampled_from(["i32", "i64", "f32", "f64"])


def _wasmtime_exports(module: wasmtime.Module) -> list[tuple]:
    out = []
    for exp in module.exports:
        ty = exp.type
        if isinstance(ty, wasmtime.FuncType):
            out.append((exp.name, "func", tuple(map(str, ty.params)), tuple(map(str, ty.results))))
        elif isinstance(ty, wasmtime.GlobalType):
            out.append((exp.name, "global", str(ty.content), ty.mutable))
        elif isinstance(ty, wasmtime.MemoryType):
            out.append((exp.name, "memory", ty.limits.min, ty.limits.max))
    return out


def _shape_exports(wasm: bytes) -> list[tuple]:
    out = []
    for item in read_shape(wasm).exports:
        if item.func_type is not None:
            out.append((item.name, "func", item.func_type.params, item.func_type.results))
        elif item.global_type is not None:
            out.append((item.name, "global", *item.global_type))
        elif item.memory is not None:
            out.append((item.name, "memory", *item.memory))
    return out


_CONST = {"i32": "i32.const 1", "i64": "i64.const 1", "f32": "f32.const 1", "f64": "f64.const 1"}


@settings(max_examples=60, deadline=None)
@given(funcs=st.lists(st.tuples(st.lists(NUMERIC, max_size=5), st.lists(NUMERIC, max_size=3)), max_size=4),
       imported=st.lists(st.lists(NUMERIC, max_size=3), max_size=2),
       globals_=st.lists(st.tuples(NUMERIC, st.booleans()), max_size=3),
       memory=st.one_of(st.none(), st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(5, 9)))),
       start=st.booleans())
def test_the_section_reader_agrees_with_wasmtime(funcs, imported, globals_, memory, start) -> None:
    parts = [f'(import "env" "i{i}" (func (param {" ".join(p)})))' for i, p in enumerate(imported)]
    for i, (params, results) in enumerate(funcs):
        body = " ".join(_CONST[r] for r in results)
        parts.append(f'(func (export "f{i}") (param {" ".join(params)}) (result {" ".join(results)}) {body})')
    for i, (vtype, mutable) in enumerate(globals_):
        gtype = f"(mut {vtype})" if mutable else vtype
        parts.append(f'(global (export "g{i}") {gtype} ({_CONST[vtype]}))')
    if memory is not None:
        low, high = memory
        parts.append(f'(memory (export "m") {low}{"" if high is None else f" {high}"})')
    if start:
        parts.append("(func $s) (start $s)")
    wasm = wasmtime.wat2wasm(f"(module {' '.join(parts)})")
    module = compile_module(make_engine(), wasm)
    assert _shape_exports(wasm) == _wasmtime_exports(module)
    assert describe_imports(wasm) == [f"env.i{i} (func)" for i in range(len(imported))]
    assert has_start_function(wasm) == start
    assert all(e.callable for e in describe_exports(wasm) if e.kind == "func")


@pytest.mark.parametrize("wasm", [
    b"\0asm\1\0\0\0\1\5\1\x60\1\x7b",  # a type section that runs past its end
    b"\0asm\1\0\0\0\1\xff\xff\xff\xff\x0f",  # a section size past the module
    b"\0asm\1\0\0\0\1\4\1\x5f\0\0",  # a GC struct type
    b"\0asm\1\0\0\0\7\5\1\1f\0\7",  # an export of a function the module does not have
    b"\0asm\2\0\0\0",  # another version
])
def test_the_section_reader_refuses_what_it_cannot_read(wasm: bytes) -> None:
    with pytest.raises(InvalidModule):
        read_shape(wasm)



@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_damage_to_a_module_is_an_invalid_module_or_a_description(data) -> None:
    """The reader never crashes on bytes it was not meant to see: each error is an InvalidModule."""
    wasm = bytearray(wasmtime.wat2wasm(
        '(module (import "a" "b" (func (param i64))) (type (func (param v128) (result f32)))'
        ' (global (export "g") (mut f64) (f64.const 1)) (table (export "t") 2 funcref) (memory (export "m") 1 3)'
        ' (func (export "f") (param v128) (result f32) f32.const 0) (func $s) (start $s))'))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(wasm) - 1))
        wasm[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(wasm)))
    try:
        read_shape(bytes(wasm[:cut]))
    except InvalidModule:
        pass
