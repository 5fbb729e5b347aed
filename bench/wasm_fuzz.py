"""Wasm fuzzing against a real node process: generated and mutated modules, deployed and invoked with small limits.

    python -m bench.wasm_fuzz --n 5000 [--seed S] [--json out.json]    (make fuzz-wasm N=5000)
    python -m bench.wasm_fuzz --replay CASE_SEED                        one case, verbosely
    python -m bench.wasm_fuzz --n 300 --stutter                          on a node that keeps being paused

Each case has its own seed (derived from the run's seed and the case number) and is one module:
- most are *generated*: a random valid module from a small typed generator over the instruction set
  (numeric ops of the four types, SIMD inside function bodies, conversions that trap, locals and globals, bounded and unbounded
  loops, loads and stores in and out of bounds, memory.grow past the limit, bulk memory, direct,
  recursive and indirect calls through a table, unreachable, start functions, data and element
  segments that may not fit);
- the others are *structured mutations* of a fixture in fixtures/wasm/: the binary is cut into its
  sections, then sections are dropped, duplicated, swapped, truncated, spliced from another fixture,
  or bytes and LEB128 numbers inside one section are changed (the section sizes stay consistent, so
  the mutation reaches the validator and the compiler rather than only the section reader).

Every module is deployed on the node (`POST /v1/modules`) and, when accepted, 1 to 3 of its exports are
invoked with random (sometimes wrong) arguments and small random limits.  The checks:
- the node never crashes (its process is watched; a crash is recorded with the case's seed and the node
  restarted) and never answers 5xx; every refusal is a problem body whose code is one XSC defines, and
  every trap's `kind` is one the sandbox names;
- limits hold: fuel_consumed <= fuel_limit; the CPU time of the thread that ran the call (`cpu_ms`) <= its
  timeout (+ two epoch ticks and an allowance): that is what a deadline bounds, the work a call can do.  Its
  wall-clock duration is reported too (the worst overshoot, and how many calls went past timeout + allowance
  by the wall clock while their CPU time kept within it: waits of a loaded machine for the CPU, not escapes);
  and memory: each generated function has a twin export that calls it and then
  returns `memory.size`, whose pages must fit in the call's memory limit.

A case that fails prints its seed; `--replay SEED` runs that case alone and shows every request and answer.

Known crash class excluded: a function type or global of type v128 makes wasmtime's C API abort the process
when the node describes the module's exports (fixed on branch `sec`).  The generator never makes v128;
mutated modules that declare a v128 function type or global are counted as `excluded_v128` and not sent.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from xsc.devnet import NodeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "wasm"

TYPES = ("i32", "i64", "f32", "f64")
PAGE = 65536

# The node's ceilings (a call asks for at most these) and what the fuzzer asks for per call.
CEILING = {"fuel": 100_000_000, "memory": 8 * 1024**2, "timeout": 0.5}
# Allowance on a deadline: the epoch ticker stops a call within two ticks (20 ms) of its timeout; a
# thread of a busy 2-core machine may also wait its turn for the CPU.
DEADLINE_SLACK = 0.25

TRAP_KINDS = frozenset({
    "out-of-fuel", "deadline", "stack-overflow", "unreachable", "divide-by-zero", "integer-overflow",
    "memory-out-of-bounds", "table-out-of-bounds", "indirect-call-to-null", "bad-signature",
    "bad-conversion-to-integer", "heap-misaligned", "memory-limit", "table-limit", "instantiation", "exit",
})


def known_codes() -> frozenset[str]:
    """Every problem code XSC defines (XscError subclasses), and aiohttp's own for malformed HTTP."""
    from xsc import errors

    codes, todo = set(), [errors.XscError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    codes.discard("internal-error")
    return frozenset(codes | {"request-entity-too-large", "bad-request", "method-not-allowed", "not-found"})


# --- the generator -----------------------------------------------------------------------------------
_INT_VALUES = {
    "i32": [0, 1, -1, 2, 7, 255, 65535, 65536, 2**31 - 1, -2**31, 0x7FFF_FFF0],
    "i64": [0, 1, -1, 2, 255, 2**32, 2**63 - 1, -2**63, 1 << 40],
}
_FLOAT_VALUES = ["0", "-0", "1", "-1.5", "0.5", "3.4e38", "1e300", "inf", "-inf", "nan", "nan:0x200000",
                 "0x1p-149", "2147483648", "-2147483649", "9.3e18"]


@dataclass
class Func:
    index: int
    params: tuple[str, ...]
    results: tuple[str, ...]
    locals: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"$f{self.index}"

    def all_locals(self) -> list[str]:
        return [*self.params, *self.locals]


class Generator:
    """A random valid module, as WAT text (wasmtime's wat2wasm turns it into a binary)."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        self.labels = 0
        self.pages = rng.choice([0, 1, 1, 1, 2, 4]) if rng.random() < 0.9 else rng.choice([64, 200, 2000])
        self.max_pages = None if rng.random() < 0.7 else self.pages + rng.choice([0, 1, 16, 1000])
        self.table_size = rng.choice([0, 1, 4, 8]) if rng.random() < 0.95 else rng.choice([100_000, 200_000])
        self.globals = [rng.choice(TYPES) for _ in range(rng.randint(0, 3))]
        self.funcs: list[Func] = []
        for i in range(rng.randint(1, 5)):
            params = tuple(rng.choice(TYPES) for _ in range(rng.choice([0, 0, 1, 2, 3])))
            results = tuple(rng.choice(TYPES) for _ in range(rng.choice([0, 1, 1, 1, 2])))
            self.funcs.append(Func(i, params, results))
        self.current: Func | None = None
        self.depth_budget = 0

    # values
    def const(self, t: str) -> str:
        r = self.r
        if t in ("i32", "i64"):
            bits = 32 if t == "i32" else 64
            v = r.choice(_INT_VALUES[t]) if r.random() < 0.6 else r.randint(-2**(bits - 1), 2**(bits - 1) - 1)
            return f"({t}.const {v})"
        values = _FLOAT_VALUES if t == "f64" else [v for v in _FLOAT_VALUES if v != "1e300"]
        return f"({t}.const {r.choice(values) if r.random() < 0.6 else repr(r.uniform(-1e6, 1e6))})"

    def addr(self, d: int) -> str:
        r = self.r
        x = r.random()
        if x < 0.5:  # inside the first page, usually in bounds
            return f"(i32.const {r.randrange(0, 65536 - 8)})"
        if x < 0.7:  # just past the end of memory: out of bounds
            return f"(i32.const {max(0, self.pages * PAGE - r.randint(0, 8))})"
        if x < 0.85:
            return f"(i32.and {self.expr('i32', d + 1)} (i32.const 0xfff8))"
        return self.expr("i32", d + 1)

    def expr(self, t: str, d: int = 0) -> str:
        r = self.r
        self.depth_budget -= 1
        if d > 4 or self.depth_budget <= 0 or r.random() < 0.25:
            return self.leaf(t)
        choice = r.random()
        f = self.current
        if choice < 0.30:
            return self.binop(t, d)
        if choice < 0.40:
            return self.unop(t, d)
        if choice < 0.50:
            return self.convert(t, d)
        if choice < 0.58:
            return self.load(t, d)
        if choice < 0.64 and t == "i32":
            return self.compare(d)
        if choice < 0.68 and t == "i32":
            if r.random() < 0.5:
                return "(memory.size)"
            delta = r.choice(["(i32.const 1)", "(i32.const 0)", f"(i32.const {r.choice([2, 16, 128, 4096, 65536])})",
                              self.expr("i32", d + 1)])
            return f"(memory.grow {delta})"
        if choice < 0.76:
            callees = [g for g in self.funcs if g.results == (t,) and (f is None or g.index < f.index)]
            if callees:
                g = r.choice(callees)
                return f"(call {g.name} {' '.join(self.expr(p, d + 1) for p in g.params)})"
        if choice < 0.80 and self.table_size and t in TYPES:
            sig = r.choice(self.funcs)
            if sig.results == (t,):
                return (f"(call_indirect (type $t{sig.index}) {' '.join(self.expr(p, d + 1) for p in sig.params)} "
                        f"{self.table_index(d)})")
        if choice < 0.83:  # SIMD inside a function (never in a signature or a global: see the module doc)
            return self.lane(t, d)
        if choice < 0.86:
            return f"(select {self.expr(t, d + 1)} {self.expr(t, d + 1)} {self.expr('i32', d + 1)})"
        if choice < 0.92:
            return (f"(if (result {t}) {self.expr('i32', d + 1)} (then {self.expr(t, d + 1)}) "
                    f"(else {self.expr(t, d + 1)}))")
        if choice < 0.96:
            label = self.label("b")
            return (f"(block {label} (result {t}) (br_if {label} {self.expr(t, d + 1)} {self.expr('i32', d + 1)}) "
                    f"(drop) {self.expr(t, d + 1)})")
        return self.leaf(t)

    _LANES = {"i32": ("i32x4", 4), "i64": ("i64x2", 2), "f32": ("f32x4", 4), "f64": ("f64x2", 2)}

    def lane(self, t: str, d: int) -> str:
        """A scalar of type t out of a v128 computation."""
        r = self.r
        shape, lanes = self._LANES[t]
        if t == "i32" and r.random() < 0.3:
            op = r.choice(["v128.any_true", "i32x4.all_true", "i8x16.bitmask", "i16x8.all_true"])
            return f"({op} {self.vexpr(d + 1)})"
        return f"({shape}.extract_lane {r.randrange(lanes)} {self.vexpr(d + 1)})"

    def vexpr(self, d: int) -> str:
        r = self.r
        self.depth_budget -= 1
        x = r.random()
        if d > 4 or self.depth_budget <= 0 or x < 0.25:
            if r.random() < 0.5:
                return f"(v128.const i32x4 {' '.join(str(r.choice(_INT_VALUES['i32'])) for _ in range(4))})"
            t = r.choice(TYPES)
            return f"({self._LANES[t][0]}.splat {self.leaf(t)})"
        if x < 0.45:
            t = r.choice(TYPES)
            return f"({self._LANES[t][0]}.splat {self.expr(t, d + 1)})"
        if x < 0.75:
            op = r.choice(["i32x4.add", "i32x4.sub", "i32x4.mul", "i64x2.add", "i64x2.mul", "f32x4.add", "f32x4.mul",
                           "f32x4.div", "f32x4.min", "f32x4.max", "f64x2.add", "f64x2.div", "v128.and", "v128.or",
                           "v128.xor", "i8x16.swizzle", "i16x8.add_sat_s", "i8x16.sub_sat_u", "i32x4.max_s",
                           "f32x4.pmin", "i16x8.q15mulr_sat_s", "i32x4.dot_i16x8_s"])
            return f"({op} {self.vexpr(d + 1)} {self.vexpr(d + 1)})"
        if x < 0.85:
            op = r.choice(["f32x4.sqrt", "f64x2.neg", "i32x4.abs", "v128.not", "f32x4.nearest",
                           "i32x4.trunc_sat_f32x4_s", "f32x4.convert_i32x4_u", "f64x2.promote_low_f32x4",
                           "i8x16.popcnt", "i64x2.neg"])
            return f"({op} {self.vexpr(d + 1)})"
        if x < 0.93:
            return f"(v128.load {self.addr(d)})"
        return f"(v128.bitselect {self.vexpr(d + 1)} {self.vexpr(d + 1)} {self.vexpr(d + 1)})"

    def table_index(self, d: int) -> str:
        r = self.r
        if r.random() < 0.7:
            return f"(i32.const {r.randrange(0, max(1, self.table_size) + 2)})"
        return self.expr("i32", d + 1)

    def leaf(self, t: str) -> str:
        r = self.r
        f = self.current
        options = ["const"]
        if f is not None and t in f.all_locals():
            options += ["local", "local"]
        if t in self.globals:
            options.append("global")
        pick = r.choice(options)
        if pick == "local":
            return f"(local.get {r.choice([i for i, lt in enumerate(f.all_locals()) if lt == t])})"
        if pick == "global":
            return f"(global.get $g{r.choice([i for i, gt in enumerate(self.globals) if gt == t])})"
        return self.const(t)

    def binop(self, t: str, d: int) -> str:
        r = self.r
        if t in ("i32", "i64"):
            op = r.choice(["add", "sub", "mul", "div_s", "div_u", "rem_s", "rem_u", "and", "or", "xor", "shl",
                           "shr_s", "shr_u", "rotl", "rotr"])
        else:
            op = r.choice(["add", "sub", "mul", "div", "min", "max", "copysign"])
        return f"({t}.{op} {self.expr(t, d + 1)} {self.expr(t, d + 1)})"

    def unop(self, t: str, d: int) -> str:
        r = self.r
        if t in ("i32", "i64"):
            if r.random() < 0.3:
                return f"({t}.extend8_s {self.expr(t, d + 1)})"
            op = r.choice(["clz", "ctz", "popcnt"])
        else:
            op = r.choice(["abs", "neg", "sqrt", "ceil", "floor", "trunc", "nearest"])
        return f"({t}.{op} {self.expr(t, d + 1)})"

    def compare(self, d: int) -> str:
        r = self.r
        t = r.choice(TYPES)
        if t in ("i32", "i64"):
            if r.random() < 0.2:
                return f"({t}.eqz {self.expr(t, d + 1)})"
            op = r.choice(["eq", "ne", "lt_s", "lt_u", "gt_s", "gt_u", "le_s", "le_u", "ge_s", "ge_u"])
        else:
            op = r.choice(["eq", "ne", "lt", "gt", "le", "ge"])
        return f"({t}.{op} {self.expr(t, d + 1)} {self.expr(t, d + 1)})"

    def convert(self, t: str, d: int) -> str:
        r = self.r
        if t == "i32":
            src = r.choice(["i64", "f32", "f64", "f32r"])
            if src == "i64":
                return f"(i32.wrap_i64 {self.expr('i64', d + 1)})"
            if src == "f32r":
                return f"(i32.reinterpret_f32 {self.expr('f32', d + 1)})"
            op = r.choice(["trunc", "trunc_sat"])
            return f"(i32.{op}_{src}_{r.choice('su')} {self.expr(src, d + 1)})"
        if t == "i64":
            src = r.choice(["i32", "f32", "f64", "f64r"])
            if src == "i32":
                return f"(i64.extend_i32_{r.choice('su')} {self.expr('i32', d + 1)})"
            if src == "f64r":
                return f"(i64.reinterpret_f64 {self.expr('f64', d + 1)})"
            op = r.choice(["trunc", "trunc_sat"])
            return f"(i64.{op}_{src}_{r.choice('su')} {self.expr(src, d + 1)})"
        if t == "f32":
            src = r.choice(["i32", "i64", "f64", "i32r"])
            if src == "f64":
                return f"(f32.demote_f64 {self.expr('f64', d + 1)})"
            if src == "i32r":
                return f"(f32.reinterpret_i32 {self.expr('i32', d + 1)})"
            return f"(f32.convert_{src}_{r.choice('su')} {self.expr(src, d + 1)})"
        src = r.choice(["i32", "i64", "f32", "i64r"])
        if src == "f32":
            return f"(f64.promote_f32 {self.expr('f32', d + 1)})"
        if src == "i64r":
            return f"(f64.reinterpret_i64 {self.expr('i64', d + 1)})"
        return f"(f64.convert_{src}_{r.choice('su')} {self.expr(src, d + 1)})"

    def load(self, t: str, d: int) -> str:
        r = self.r
        op = "load"
        if t in ("i32", "i64") and r.random() < 0.4:
            op = r.choice(["load8_s", "load8_u", "load16_s", "load16_u"] + (["load32_s", "load32_u"] if t == "i64"
                                                                           else []))
        offset = r.choice([0, 0, 4, 65535, 2**31]) if r.random() < 0.3 else 0
        return f"({t}.{op} offset={offset} {self.addr(d)})"

    def label(self, kind: str) -> str:
        self.labels += 1
        return f"${kind}{self.labels}"

    # statements
    def stmts(self, d: int, n: int | None = None) -> list[str]:
        count = self.r.randint(0, 4) if n is None else n
        return [self.stmt(d) for _ in range(count)]

    def new_local(self, t: str) -> int:
        f = self.current
        f.locals.append(t)
        return len(f.all_locals()) - 1

    def stmt(self, d: int) -> str:
        r = self.r
        f = self.current
        self.depth_budget -= 1
        if d > 3 or self.depth_budget <= 0:
            return f"(drop {self.leaf(r.choice(TYPES))})"
        x = r.random()
        if x < 0.18 and f.all_locals():
            i = r.randrange(len(f.all_locals()))
            return f"(local.set {i} {self.expr(f.all_locals()[i], d + 1)})"
        if x < 0.24 and self.globals:
            i = r.randrange(len(self.globals))
            return f"(global.set $g{i} {self.expr(self.globals[i], d + 1)})"
        if x < 0.36:
            t = r.choice(TYPES)
            op = "store"
            if t in ("i32", "i64") and r.random() < 0.4:
                op = r.choice(["store8", "store16"] + (["store32"] if t == "i64" else []))
            return f"({t}.{op} {self.addr(d)} {self.expr(t, d + 1)})"
        if x < 0.40:
            return f"(drop {self.expr(r.choice(TYPES), d + 1)})"
        if x < 0.44:
            return f"(v128.store {self.addr(d)} {self.vexpr(d + 1)})"
        if x < 0.52:
            return (f"(if {self.expr('i32', d + 1)} (then {' '.join(self.stmts(d + 1))}) "
                    f"(else {' '.join(self.stmts(d + 1))}))")
        if x < 0.62:  # a counted loop: a few rounds, or far more than any fuel limit allows
            c = self.new_local("i32")
            n = r.choice([1, 3, 10, 100, 1000]) if r.random() < 0.8 else r.choice([10**6, 2**31 - 1])
            block, loop = self.label("b"), self.label("l")
            body = " ".join(self.stmts(d + 1, r.randint(1, 3)))
            return (f"(local.set {c} (i32.const {n})) (block {block} (loop {loop} {body} "
                    f"(local.set {c} (i32.sub (local.get {c}) (i32.const 1))) (br_if {loop} (local.get {c}))))")
        if x < 0.66:  # a loop on an arbitrary condition: may never end (fuel or deadline stops it)
            loop = self.label("l")
            return f"(loop {loop} {' '.join(self.stmts(d + 1, r.randint(0, 2)))} (br_if {loop} {self.expr('i32', d + 1)}))"
        if x < 0.76:
            callees = [g for g in self.funcs if g.index < f.index] or [f]
            g = r.choice(callees) if r.random() < 0.85 else f  # sometimes itself: deep or endless recursion
            call = f"(call {g.name} {' '.join(self.expr(p, d + 1) for p in g.params)})"
            drops = " ".join("(drop)" for _ in g.results)
            if g is f:
                return f"(if {self.expr('i32', d + 1)} (then {call} {drops}))"
            return f"{call} {drops}"
        if x < 0.80 and self.table_size:
            sig = r.choice(self.funcs)
            drops = " ".join("(drop)" for _ in sig.results)
            return (f"(call_indirect (type $t{sig.index}) {' '.join(self.expr(p, d + 1) for p in sig.params)} "
                    f"{self.table_index(d)}) {drops}")
        if x < 0.86:
            op = r.choice(["fill", "copy"])
            third = self.expr("i32", d + 1) if op == "fill" else self.addr(d)
            size = r.choice(["(i32.const 16)", "(i32.const 65536)", "(i32.const 0)", self.expr("i32", d + 1)])
            return f"(memory.{op} {self.addr(d)} {third} {size})"
        if x < 0.88:
            return f"(if {self.expr('i32', d + 1)} (then (unreachable)))"
        if x < 0.92:
            return f"(if {self.expr('i32', d + 1)} (then (return {' '.join(self.expr(t, d + 1) for t in f.results)})))"
        return f"(drop {self.expr(r.choice(TYPES), d + 1)})"

    def func(self, f: Func) -> str:
        self.current = f
        self.depth_budget = self.r.choice([20, 60, 150])
        body = self.stmts(0, self.r.randint(0, 6))
        tail = [self.expr(t, 0) for t in f.results]
        params = " ".join(f"(param {p})" for p in f.params)
        results = " ".join(f"(result {t})" for t in f.results)
        local_decl = " ".join(f"(local {t})" for t in f.locals)
        self.current = None
        return (f"(func {f.name} (export \"f{f.index}\") (type $t{f.index}) {params} {results} {local_decl}\n"
                f"    {' '.join(body)}\n    {' '.join(tail)})")

    def twin(self, f: Func) -> str:
        """Calls f with its parameters, drops its results, returns memory.size: the memory the call left."""
        params = " ".join(f"(param {p})" for p in f.params)
        args = " ".join(f"(local.get {i})" for i in range(len(f.params)))
        drops = " ".join("(drop)" for _ in f.results)
        return f"(func (export \"m{f.index}\") {params} (result i32) (call {f.name} {args}) {drops} (memory.size))"

    def module(self) -> str:
        r = self.r
        parts = ["(module"]
        for f in self.funcs:
            parts.append(f"  (type $t{f.index} (func {' '.join(f'(param {p})' for p in f.params)} "
                         f"{' '.join(f'(result {t})' for t in f.results)}))")
        limits = f"{self.pages}" + (f" {self.max_pages}" if self.max_pages is not None else "")
        parts.append(f"  (memory (export \"memory\") {limits})")
        if self.table_size:
            parts.append(f"  (table $tab {self.table_size} funcref)")
        for i, t in enumerate(self.globals):
            parts.append(f"  (global $g{i} (mut {t}) {self.const(t)})")
        for f in self.funcs:
            parts.append("  " + self.func(f))
        for f in self.funcs:
            parts.append("  " + self.twin(f))
        if self.table_size:
            offset = r.randint(0, min(2, self.table_size - 1)) if r.random() < 0.95 else self.table_size
            room = max(1, min(6, self.table_size - offset)) + (r.random() < 0.05)  # sometimes one too many
            entries = [r.choice(self.funcs).name for _ in range(r.randint(1, room))]
            parts.append(f"  (elem (i32.const {offset}) func {' '.join(entries)})")
        if r.random() < 0.3:
            offset = r.randint(0, 64) if r.random() < 0.85 else self.pages * PAGE
            data = "".join(f"\\{b:02x}" for b in r.randbytes(r.randint(1, 32)))
            parts.append(f"  (data (i32.const {offset}) \"{data}\")")
        starters = [f for f in self.funcs if not f.params and not f.results]
        if starters and r.random() < 0.2:
            parts.append(f"  (start {r.choice(starters).name})")
        parts.append(")")
        return "\n".join(parts)


def generate(seed: int) -> tuple[bytes, dict]:
    """A generated module and what the harness needs to call it: export name -> (params, results)."""
    from wasmtime import wat2wasm

    gen = Generator(random.Random(seed))
    wat = gen.module()
    exports = {}
    for f in gen.funcs:
        exports[f"f{f.index}"] = (f.params, f.results)
        exports[f"m{f.index}"] = (f.params, ("i32",))
    return bytes(wat2wasm(wat)), {"exports": exports, "wat": wat}


# --- structured mutation -------------------------------------------------------------------------------
def _leb_u32(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("bad LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(wasm: bytes) -> list[tuple[int, bytes]]:
    """The (id, payload) sections of a module (raises ValueError when it does not split cleanly)."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("no wasm header")
    out, pos = [], 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, pos = _leb_u32(wasm, pos + 1)
        if pos + size > len(wasm):
            raise ValueError("section past the end")
        out.append((sid, wasm[pos:pos + size]))
        pos += size
    return out


def assemble(parts: list[tuple[int, bytes]]) -> bytes:
    return b"\0asm\x01\0\0\0" + b"".join(bytes([sid]) + _leb(len(p)) + p for sid, p in parts)


def _mutate_payload(r: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    if not data:
        return bytes(r.randbytes(r.randint(1, 4)))
    for _ in range(r.choice([1, 1, 2, 4, 8])):
        how = r.random()
        i = r.randrange(len(data))
        if how < 0.35:
            data[i] ^= 1 << r.randrange(8)
        elif how < 0.55:
            data[i] = r.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x7B, 0x70, 0x6F, 0x40, 0x60, 0x0B, 0xFC, 0xFD])
        elif how < 0.7:  # a LEB128 number made huge, or small
            data[i:i + 1] = r.choice([_leb(2**32 - 1), _leb(65536), _leb(0), _leb(r.randrange(2**20))])
        elif how < 0.8:
            del data[i:i + r.randint(1, 4)]
        elif how < 0.9:
            data[i:i] = r.randbytes(r.randint(1, 4))
        else:
            j = r.randrange(len(data))
            data[i], data[j] = data[j], data[i]
        if not data:
            break
    return bytes(data)


def fixture_modules() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.wasm"))}


def mutate(seed: int, fixtures: dict[str, bytes]) -> tuple[bytes, dict]:
    r = random.Random(seed)
    name = r.choice(sorted(fixtures))
    wasm = fixtures[name]
    parts = sections(wasm)
    ops = []
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        how = r.random()
        i = r.randrange(len(parts)) if parts else 0
        if how < 0.55 and parts:
            parts[i] = (parts[i][0], _mutate_payload(r, parts[i][1]))
            ops.append(f"bytes of section {parts[i][0]}")
        elif how < 0.63 and parts:
            del parts[i]
            ops.append("drop a section")
        elif how < 0.71 and parts:
            parts.insert(r.randrange(len(parts) + 1), parts[i])
            ops.append("duplicate a section")
        elif how < 0.79 and len(parts) > 1:
            j = r.randrange(len(parts))
            parts[i], parts[j] = parts[j], parts[i]
            ops.append("swap sections")
        elif how < 0.87:
            other = sections(fixtures[r.choice(sorted(fixtures))])
            if other:
                k = r.randrange(len(other))
                if parts:
                    parts[i] = other[k]
                else:
                    parts.append(other[k])
                ops.append(f"splice section {other[k][0]}")
        elif how < 0.93:
            parts.insert(r.randrange(len(parts) + 1), (0, _leb(4) + b"fuzz" + r.randbytes(r.randint(0, 16))))
            ops.append("custom section")
        else:
            parts.append((r.randrange(0, 14), r.randbytes(r.randint(0, 8))))
            ops.append("random section")
    out = assemble(parts)
    if r.random() < 0.05:
        out = out[:r.randrange(8, len(out) + 1)]
        ops.append("truncate")
    return out, {"fixture": name, "mutations": ops}


_V128 = 0x7B


def declares_v128(wasm: bytes) -> bool:
    """Whether a function type, global or imported global is of type v128 (the excluded crash class)."""
    try:
        parts = sections(wasm)
    except ValueError:
        return False  # the node's own section reader refuses it before describing anything
    for sid, payload in parts:
        try:
            if sid == 1 and _types_use_v128(payload):
                return True
            if sid in (2, 6) and _V128 in payload:
                return True  # a conservative look: any 0x7b byte in the imports or globals
        except (ValueError, IndexError):
            if _V128 in payload:
                return True
    return False


def _types_use_v128(payload: bytes) -> bool:
    count, pos = _leb_u32(payload, 0)
    for _ in range(count):
        if payload[pos] != 0x60:
            return _V128 in payload[pos:]  # a form this reader does not know (rec groups): be conservative
        pos += 1
        for _ in range(2):
            n, pos = _leb_u32(payload, pos)
            if _V128 in payload[pos:pos + n]:
                return True
            pos += n
    return False


# --- the node ----------------------------------------------------------------------------------------


class Node:
    """A real `xsc node start` process with small compute ceilings; restarted after a crash."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.conn: http.client.HTTPConnection | None = None
        self.log = data_dir.parent / "node.log"

    def start(self) -> None:
        self.port = free_port()
        env = {"XSC_COMPUTE_FUEL": str(CEILING["fuel"]), "XSC_COMPUTE_MEMORY": str(CEILING["memory"]),
               "XSC_COMPUTE_TIMEOUT": str(CEILING["timeout"]), "XSC_COMPUTE_THREADS": "2",
               "XSC_AUDIT_BLOCKS_PER_ROUND": "0", "XSC_AUDIT_SCRUB_RATE": "0"}
        # One way to start a node (xsc/devnet.py): the installed `xsc` script, waited for until it listens.
        self.proc = NodeProcess(self.data_dir, self.port, env=env, log=self.log).start(timeout=60).proc
        self.token = (self.data_dir / "api-token").read_text().strip()
        self.conn = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json",
                timeout: float = 60.0) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": content_type}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"_raw": raw[:200].decode("latin-1")}
        return response.status, {"_content_type": response.getheader("Content-Type", ""), **data} \
            if isinstance(data, dict) else {"_value": data}

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the harness -------------------------------------------------------------------------------------
@dataclass
class Stats:
    modules: int = 0
    generated: int = 0
    mutated: int = 0
    deployed: int = 0
    refused: Counter = field(default_factory=Counter)  # deploy refusals by problem code
    calls: int = 0
    returned: int = 0
    traps: Counter = field(default_factory=Counter)  # by kind
    call_refusals: Counter = field(default_factory=Counter)  # by problem code
    crashes: list = field(default_factory=list)  # [(seed, detail)]
    server_errors: list = field(default_factory=list)
    unclear: list = field(default_factory=list)  # answers that are not a problem of a known code / kind
    limit_escapes: list = field(default_factory=list)
    generator_invalid: list = field(default_factory=list)  # generated modules the node refused (a generator bug)
    excluded_v128: int = 0
    max_deadline_overshoot: float = 0.0  # seconds past the timeout, the worst call that hit its deadline (wall)
    max_cpu_overshoot: float = 0.0  # seconds of CPU past the timeout, the worst call that hit its deadline
    late_by_wall: list = field(default_factory=list)  # past timeout + allowance by the wall clock, not by CPU
    memory_checked: int = 0
    seconds: float = 0.0

    def failures(self) -> int:
        return len(self.crashes) + len(self.server_errors) + len(self.unclear) + len(self.limit_escapes) + \
            len(self.generator_invalid)

    def to_json(self) -> dict:
        out = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        out["failures"] = self.failures()
        return out


def case_seed(run_seed: int, n: int) -> int:
    return (run_seed * 1_000_003 + n) & 0xFFFF_FFFF


def _arg(r: random.Random, t: str):
    if t in ("i32", "i64"):
        bits = 32 if t == "i32" else 64
        v = r.choice([0, 1, -1, 2**(bits - 1) - 1, -2**(bits - 1), r.randint(-1000, 1000)])
        return v if r.random() < 0.6 else str(v)
    v = r.choice(["nan", "inf", "-inf", "-0", "1.5", "0x1p-3", 3.25, -1e30, 0.0])
    return v


def _limits(r: random.Random) -> dict:
    out = {}
    if r.random() < 0.9:
        out["fuel"] = int(10 ** r.uniform(3, math.log10(CEILING["fuel"])))
    if r.random() < 0.9:
        out["memory"] = r.choice([PAGE, 2 * PAGE, 4 * PAGE, 16 * PAGE, 1024**2, CEILING["memory"]])
    if r.random() < 0.9:
        out["timeout"] = r.choice([0.005, 0.01, 0.02, 0.05, 0.1, CEILING["timeout"]])
    return out


class Fuzzer:
    def __init__(self, node: Node, stats: Stats, *, verbose: bool = False, exclude_v128: bool = True) -> None:
        self.node, self.stats, self.verbose, self.exclude_v128 = node, stats, verbose, exclude_v128
        self.codes = known_codes()
        self.fixtures = fixture_modules()

    def say(self, *args) -> None:
        if self.verbose:
            print(*args, flush=True)

    def run_case(self, seed: int) -> None:
        s = self.stats
        r = random.Random(seed ^ 0x5EED)
        s.modules += 1
        generated = r.random() < 0.7
        if generated:
            s.generated += 1
            wasm, meta = generate(seed)
        else:
            s.mutated += 1
            wasm, meta = mutate(seed, self.fixtures)
            if self.exclude_v128 and declares_v128(wasm):
                s.excluded_v128 += 1
                self.say(f"case {seed}: excluded (declares v128)")
                return
            meta["exports"] = None
        self.say(f"case {seed}: {'generated' if generated else 'mutated ' + meta['fixture']}, {len(wasm)} bytes")
        if self.verbose and generated:
            print(meta["wat"])
        status, body = self.call(seed, "POST", "/v1/modules", wasm, "application/wasm")
        if status is None:
            return
        self.say(f"  deploy -> {status} {body.get('code', '')} {body.get('detail', '')[:200]}")
        if status >= 400:
            self.check_problem(seed, "deploy", status, body)
            s.refused[body.get("code", "?")] += 1
            if generated:
                s.generator_invalid.append((seed, body.get("detail", "")[:300]))
            return
        s.deployed += 1
        exports = meta["exports"] or {e["name"]: (tuple(e.get("params", ())), tuple(e.get("results", ())))
                                      for e in body.get("exports", []) if e.get("kind") == "func"}
        names = sorted(exports) or ["missing"]
        for _ in range(r.randint(1, 3)):
            name = r.choice(names)
            params, results = exports.get(name, ((), ()))
            args = [_arg(r, t) for t in params]
            if r.random() < 0.05:  # the wrong number of arguments, or one that is not a number
                args = args[:-1] if args and r.random() < 0.5 else [*args, r.choice(["x", 1.5, [], None])]
            limits = _limits(r)
            request = {"module": body["id"], "function": name if r.random() > 0.02 else "no_such_export",
                       "args": args, **limits}
            if not self.invoke(seed, request, name.startswith("m") and generated):
                return

    def call(self, seed: int, method: str, path: str, data: bytes, content_type: str):
        try:
            return self.node.request(method, path, data, content_type)
        except (OSError, http.client.HTTPException) as exc:
            time.sleep(0.2)
            if not self.node.alive():
                code = self.node.proc.returncode
                detail = f"node exited with {code} during {method} {path}: {self.node.log.read_text()[-600:]}"
                self.stats.crashes.append((seed, detail))
                print(f"CRASH in case {seed} (replay: python -m bench.wasm_fuzz --replay {seed}): exit {code}",
                      flush=True)
                self.node.start()
            else:
                self.stats.server_errors.append((seed, f"{method} {path}: no answer ({exc!r})"))
                print(f"NO ANSWER in case {seed}: {exc!r}", flush=True)
            return None, {}

    def invoke(self, seed: int, request: dict, memory_twin: bool) -> bool:
        s = self.stats
        s.calls += 1
        started = time.monotonic()
        status, body = self.call(seed, "POST", "/v1/compute/invoke", json.dumps(request).encode(), "application/json")
        elapsed = time.monotonic() - started
        if status is None:
            return False
        self.say(f"  invoke {request['function']}({request['args']}) limits "
                 f"{ {k: request[k] for k in ('fuel', 'memory', 'timeout') if k in request} } -> {status} "
                 f"{body.get('code', '')} {body.get('kind', '')} {str(body.get('detail', body.get('results')))[:160]}")
        fuel_limit = request.get("fuel", CEILING["fuel"])
        memory_limit = request.get("memory", CEILING["memory"])
        timeout = request.get("timeout", CEILING["timeout"])
        if status == 200:
            s.returned += 1
            if memory_twin and body.get("results"):
                pages = int(body["results"][-1]["value"]) & 0xFFFF_FFFF
                s.memory_checked += 1
                if pages * PAGE > memory_limit:
                    s.limit_escapes.append((seed, f"memory: {pages} pages after the call, limit {memory_limit} bytes"))
        else:
            self.check_problem(seed, "invoke", status, body)
            code = body.get("code", "?")
            if code == "trap":
                s.traps[body.get("kind", "?")] += 1
                if body.get("kind") not in TRAP_KINDS:
                    s.unclear.append((seed, f"trap of unknown kind {body.get('kind')!r}"))
            else:
                s.call_refusals[code] += 1
        if "fuel_consumed" in body:
            if body["fuel_consumed"] > fuel_limit or body.get("fuel_limit", fuel_limit) != fuel_limit:
                s.limit_escapes.append((seed, f"fuel: consumed {body['fuel_consumed']} of limit {fuel_limit}"))
            duration = body.get("duration_ms", 0) / 1000
            cpu = body.get("cpu_ms", body.get("duration_ms", 0)) / 1000
            if body.get("kind") == "deadline":
                s.max_deadline_overshoot = max(s.max_deadline_overshoot, duration - timeout)
                s.max_cpu_overshoot = max(s.max_cpu_overshoot, cpu - timeout)
                if duration < timeout:  # the deadline is a floor too: a call is never cut short
                    s.limit_escapes.append((seed, f"deadline cut short: stopped after {duration:.3f} s of its "
                                                  f"{timeout} s"))
            if cpu > timeout + DEADLINE_SLACK:
                s.limit_escapes.append((seed, f"deadline: ran {cpu:.3f} s of CPU ({duration:.3f} s wall), "
                                              f"timeout {timeout} s"))
            elif duration > timeout + DEADLINE_SLACK:
                s.late_by_wall.append((seed, f"ran {duration:.3f} s wall, {cpu:.3f} s CPU, timeout {timeout} s"))
        if elapsed > timeout + 30:
            s.limit_escapes.append((seed, f"the answer took {elapsed:.1f} s (timeout {timeout} s)"))
        return True

    def check_problem(self, seed: int, what: str, status: int, body: dict) -> None:
        if status >= 500:
            self.stats.server_errors.append((seed, f"{what}: {status} {body.get('code')} {body.get('detail')}"))
            print(f"SERVER ERROR in case {seed}: {what} {status} {body.get('code')} {body.get('detail')}", flush=True)
            return
        clear = body.get("_content_type", "").startswith("application/problem+json") and \
            body.get("code") in self.codes and isinstance(body.get("detail"), str) and body["detail"]
        if not clear:
            self.stats.unclear.append((seed, f"{what}: {status} {json.dumps(body)[:300]}"))
            print(f"UNCLEAR ERROR in case {seed}: {what} {status} {json.dumps(body)[:300]}", flush=True)


class Stutter:
    """Plays a loaded machine: pauses the node's process (SIGSTOP) for 20-300 ms every 50-300 ms, so its
    threads, the epoch ticker among them, wait for the CPU as they do at a load of 50 on 2 cores."""

    def __init__(self, node: Node, seed: int) -> None:
        import threading

        self.node, self.random, self.stop = node, random.Random(seed), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.pauses = 0

    def _run(self) -> None:
        while not self.stop.wait(self.random.uniform(0.05, 0.3)):
            proc = self.node.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(self.random.uniform(0.02, 0.3))
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            self.pauses += 1

    def __enter__(self) -> Stutter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def fuzz(n: int, seed: int, *, verbose_seed: int | None = None, data_dir: Path | None = None,
         progress: bool = True, exclude_v128: bool = True, stutter: bool = False) -> Stats:
    """Run n cases (or, with verbose_seed, that one case) against a fresh node; returns the figures.
    With `stutter` the node is paused again and again while it runs (see Stutter)."""
    import contextlib

    stats = Stats()
    work = Path(tempfile.mkdtemp(prefix="xsc-wasm-fuzz-")) if data_dir is None else data_dir
    node = Node(work / "node")
    node.start()
    pauses = Stutter(node, seed) if stutter else contextlib.nullcontext()
    fuzzer = Fuzzer(node, stats, verbose=verbose_seed is not None, exclude_v128=exclude_v128)
    started = time.monotonic()
    try:
        with pauses:
            seeds = [verbose_seed] if verbose_seed is not None else [case_seed(seed, i) for i in range(n)]
            for i, s in enumerate(seeds):
                fuzzer.run_case(s)
                if progress and verbose_seed is None and (i + 1) % 250 == 0:
                    print(f"  {i + 1}/{n} modules, {stats.calls} calls, {stats.failures()} failures, "
                          f"{time.monotonic() - started:.0f} s", flush=True)
        if not node.alive():
            stats.crashes.append((None, "the node was not running at the end"))
    finally:
        stats.seconds = round(time.monotonic() - started, 1)
        node.stop()
        if data_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return stats


def report(stats: Stats, seed: int) -> str:
    lines = [
        f"wasm fuzz, run seed {seed}: {stats.modules} modules ({stats.generated} generated, {stats.mutated} mutated; "
        f"{stats.excluded_v128} mutated ones excluded as the known v128 class) in {stats.seconds} s",
        f"  deployed {stats.deployed}; refused at deploy: {dict(stats.refused.most_common())}",
        f"  calls {stats.calls}: returned {stats.returned}, trapped {sum(stats.traps.values())}, "
        f"refused {sum(stats.call_refusals.values())}",
        f"  traps by kind: {dict(stats.traps.most_common())}",
        f"  call refusals by code: {dict(stats.call_refusals.most_common())}",
        f"  memory checked after {stats.memory_checked} calls; worst deadline overshoot: CPU "
        f"{stats.max_cpu_overshoot * 1000:.0f} ms (allowed {DEADLINE_SLACK * 1000:.0f} ms), wall "
        f"{stats.max_deadline_overshoot * 1000:.0f} ms; late by the wall clock only (waits for the CPU): "
        f"{len(stats.late_by_wall)}",
        f"  crashes: {len(stats.crashes)}   server errors: {len(stats.server_errors)}   unclear errors: "
        f"{len(stats.unclear)}   limit escapes: {len(stats.limit_escapes)}   generated modules refused: "
        f"{len(stats.generator_invalid)}",
    ]
    for label, items in (("crash", stats.crashes), ("server error", stats.server_errors),
                         ("unclear", stats.unclear), ("limit escape", stats.limit_escapes),
                         ("generator invalid", stats.generator_invalid), ("late by wall clock", stats.late_by_wall)):
        for s, detail in items[:10]:
            lines.append(f"  {label} in case {s} (python -m bench.wasm_fuzz --replay {s}): {detail[:300]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("N", "500")), help="modules to try")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: random, printed)")
    parser.add_argument("--replay", type=int, default=None, help="run one case by its seed, verbosely")
    parser.add_argument("--include-v128", action="store_true",
                        help="send mutated modules that declare v128 too (the known crash class; fixed on branch sec)")
    parser.add_argument("--stutter", action="store_true",
                        help="pause the node again and again (SIGSTOP) while it runs, as a loaded machine would")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"wasm fuzz: run seed {seed} (replay the run with --seed {seed})", flush=True)
    stats = fuzz(args.n, seed, verbose_seed=args.replay, exclude_v128=not args.include_v128, stutter=args.stutter)
    print(report(stats, seed))
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, **stats.to_json()}, indent=2, default=str))
    return 1 if stats.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
