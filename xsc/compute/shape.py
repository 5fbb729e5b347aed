"""What a module imports and exports, read from its bytes: the type, import, function, table, memory,
global and export sections, and whether it has a start section.

Pure, no wasmtime.  wasmtime's C API aborts the whole process (not an exception: SIGABRT) when asked
for the type of a function or global that uses `v128` ("support for v128 is not implemented"), and a
module is anybody's bytes: a 32-byte module would kill the node.  So the node never asks wasmtime to
describe a module; it reads the sections itself, after wasmtime has validated the module under the
engine's features (see engine.SETTINGS), and describes every value type (v128 included) as text.

Anything this reader does not understand is an `InvalidModule`, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidModule

WASM_MAGIC = b"\0asm"
WASM_VERSION = b"\1\0\0\0"


def looks_like_text(data: bytes) -> bool:
    """Whether bytes that are no binary module begin as WebAssembly text does: `(module` or a `;;` comment, after
    blanks (the CLI compiles such a file; a node refuses it, naming the CLI)."""
    return not data.startswith(WASM_MAGIC) and data.lstrip()[:1] in (b"(", b";")


_TYPE, _IMPORT, _FUNCTION, _TABLE, _MEMORY, _GLOBAL, _EXPORT, _START = 1, 2, 3, 4, 5, 6, 7, 8
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
_VALUE_TYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
                0x70: "funcref", 0x6F: "externref", 0x69: "exnref"}
_REF_TYPES = {0x70: "funcref", 0x6F: "externref", 0x69: "exnref"}
# Constant-expression opcodes (global initializers) and the size of their immediates.
_END = 0x0B
_LEB_IMMEDIATE = {0x41, 0x42, 0x23, 0xD2}  # i32.const, i64.const, global.get, ref.func
_FIXED_IMMEDIATE = {0x43: 4, 0x44: 8}  # f32.const, f64.const
_NO_IMMEDIATE = {0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E}  # extended-const add/sub/mul
_REF_NULL = 0xD0
_SIMD_PREFIX, _V128_CONST = 0xFD, 12
MAX_ITEMS = 1_000_000  # per section: more than any valid module this node would accept has


@dataclass(frozen=True)
class FuncType:
    params: tuple[str, ...]
    results: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    """One import or export: its kind ("func", "table", "memory", "global", "tag") and what it is."""

    name: str
    kind: str
    module: str = ""  # imports only
    func_type: FuncType | None = None  # functions
    memory: tuple[int, int | None] | None = None  # (minimum, maximum) in pages
    table: tuple[str, int] | None = None  # (element type, minimum)
    global_type: tuple[str, bool] | None = None  # (value type, mutable)


@dataclass(frozen=True)
class Shape:
    imports: tuple[Item, ...]
    exports: tuple[Item, ...]
    start: bool
    memories: int = 0  # memories the module has (imported or defined)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _truncated()
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _truncated()
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uleb(self, bits: int = 32) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift >= bits:
                raise InvalidModule("a LEB128 number in the module is too long", hint="rebuild the module")

    def count(self) -> int:
        n = self.uleb()
        if n > MAX_ITEMS or n > self.end - self.pos:  # every item takes at least one byte
            raise InvalidModule(f"a section of the module claims {n} items", hint="rebuild the module")
        return n

    def name(self) -> str:
        raw = self.take(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidModule("a name in the module is not UTF-8", hint="rebuild the module") from None

    def value_type(self) -> str:
        code = self.byte()
        found = _VALUE_TYPES.get(code)
        if found is None:
            raise _unsupported(f"value type 0x{code:02x}")
        return found

    def ref_type(self) -> str:
        code = self.byte()
        found = _REF_TYPES.get(code)
        if found is None:
            raise _unsupported(f"reference type 0x{code:02x}")
        return found

    def limits(self, *, memory: bool) -> tuple[int, int | None]:
        flags = self.byte()
        if flags & ~0x0F or (not memory and flags & 0x0A):
            raise _unsupported(f"limits flags 0x{flags:02x}")
        bits = 64 if flags & 0x04 else 32
        minimum = self.uleb(bits)
        maximum = self.uleb(bits) if flags & 0x01 else None
        if flags & 0x08:  # custom page size (a proposal the engine does not enable)
            raise _unsupported("a custom page size")
        return minimum, maximum

    def table_type(self) -> tuple[str, int]:
        element = self.ref_type()
        minimum, _ = self.limits(memory=False)
        return element, minimum

    def global_type(self) -> tuple[str, bool]:
        vtype = self.value_type()
        mutable = self.byte()
        if mutable not in (0, 1):
            raise _unsupported(f"global mutability 0x{mutable:02x}")
        return vtype, bool(mutable)

    def skip_const_expr(self) -> None:
        while True:
            op = self.byte()
            if op == _END:
                return
            if op in _LEB_IMMEDIATE:
                self.uleb(64)
            elif op in _FIXED_IMMEDIATE:
                self.take(_FIXED_IMMEDIATE[op])
            elif op == _REF_NULL:
                self.ref_type()
            elif op == _SIMD_PREFIX and self.uleb() == _V128_CONST:
                self.take(16)
            elif op not in _NO_IMMEDIATE:
                raise _unsupported(f"instruction 0x{op:02x} in a constant expression")


def defined_functions(wasm: bytes) -> int:
    """How many functions a module defines (its function section's count), read from the section headers alone:
    what compiling it costs grows with it, so a peer's module is bounded by it before anything is compiled."""
    if not wasm.startswith(WASM_MAGIC) or wasm[4:8] != WASM_VERSION:
        raise InvalidModule("not a WebAssembly 1.0 module (magic bytes or version)", hint="deploy a binary .wasm file")
    top = _Reader(wasm, 8)
    while top.pos < top.end:
        section, size = top.byte(), top.uleb()
        if top.pos + size > top.end:
            raise _truncated()
        if section == _FUNCTION:
            return _Reader(wasm, top.pos, top.pos + size).uleb()
        top.pos += size
    return 0


def read_shape(wasm: bytes) -> Shape:
    """The imports, exports and start section of a module wasmtime has validated."""
    if not wasm.startswith(WASM_MAGIC) or wasm[4:8] != WASM_VERSION:
        raise InvalidModule("not a WebAssembly 1.0 module (magic bytes or version)", hint="deploy a binary .wasm file")
    types: list[FuncType] = []
    funcs: list[FuncType] = []  # the function index space: imported first, then defined
    tables: list[tuple[str, int]] = []
    memories: list[tuple[int, int | None]] = []
    globals_: list[tuple[str, bool]] = []
    imports: list[Item] = []
    exports: list[Item] = []
    start = False
    top = _Reader(wasm, 8)
    while top.pos < top.end:
        section = top.byte()
        size = top.uleb()
        body = _Reader(wasm, top.pos, top.pos + size)
        if body.end > top.end:
            raise _truncated()
        top.pos = body.end
        if section == _TYPE:
            for _ in range(body.count()):
                form = body.byte()
                if form != 0x60:
                    raise _unsupported(f"type form 0x{form:02x} (only function types are enabled)")
                params = tuple(body.value_type() for _ in range(body.count()))
                results = tuple(body.value_type() for _ in range(body.count()))
                types.append(FuncType(params, results))
        elif section == _IMPORT:
            for _ in range(body.count()):
                module, name, kind = body.name(), body.name(), body.byte()
                if kind == 0:
                    ft = _type_at(types, body.uleb())
                    funcs.append(ft)
                    imports.append(Item(name, "func", module, func_type=ft))
                elif kind == 1:
                    tables.append(body.table_type())
                    imports.append(Item(name, "table", module, table=tables[-1]))
                elif kind == 2:
                    memories.append(body.limits(memory=True))
                    imports.append(Item(name, "memory", module, memory=memories[-1]))
                elif kind == 3:
                    globals_.append(body.global_type())
                    imports.append(Item(name, "global", module, global_type=globals_[-1]))
                else:
                    raise _unsupported(f"import kind 0x{kind:02x}")
        elif section == _FUNCTION:
            for _ in range(body.count()):
                funcs.append(_type_at(types, body.uleb()))
        elif section == _TABLE:
            for _ in range(body.count()):
                if body.data[body.pos:body.pos + 1] == b"\x40":  # a table with an initializer
                    body.take(2)
                    tables.append(body.table_type())
                    body.skip_const_expr()
                else:
                    tables.append(body.table_type())
        elif section == _MEMORY:
            for _ in range(body.count()):
                memories.append(body.limits(memory=True))
        elif section == _GLOBAL:
            for _ in range(body.count()):
                globals_.append(body.global_type())
                body.skip_const_expr()
        elif section == _EXPORT:
            for _ in range(body.count()):
                name, kind, index = body.name(), body.byte(), body.uleb()
                if kind == 0:
                    exports.append(Item(name, "func", func_type=_at(funcs, index, "function")))
                elif kind == 1:
                    exports.append(Item(name, "table", table=_at(tables, index, "table")))
                elif kind == 2:
                    exports.append(Item(name, "memory", memory=_at(memories, index, "memory")))
                elif kind == 3:
                    exports.append(Item(name, "global", global_type=_at(globals_, index, "global")))
                else:
                    exports.append(Item(name, _KINDS.get(kind, f"kind 0x{kind:02x}")))
        elif section == _START:
            start = True
    return Shape(tuple(imports), tuple(exports), start, len(memories))


def _type_at(types: list[FuncType], index: int) -> FuncType:
    return _at(types, index, "type")


def _at(items: list, index: int, what: str):
    if index >= len(items):
        raise InvalidModule(f"the module refers to {what} {index}, which it does not have", hint="rebuild the module")
    return items[index]


def _truncated() -> InvalidModule:
    return InvalidModule("the module is truncated: a section runs past its end", hint="rebuild the module")


def _unsupported(what: str) -> InvalidModule:
    return InvalidModule(f"the module uses {what}, which this node does not support",
                         hint="build the module for WebAssembly 2.0 without the GC, exceptions or custom-page proposals")
