"""What a module is: its id, exports with their signatures, imports; and the rules a module must meet."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import wasmtime

from ..errors import ImportsNotAllowed, InvalidArgument, InvalidModule, ModuleTooLarge, quoted_id
from ..units import counted, format_size
from .shape import WASM_MAGIC, Item, looks_like_text, read_shape
from .values import Signature

WASI_MODULE = "wasi_snapshot_preview1"
PAGE = 65536
_ID_RE = re.compile(r"[0-9a-f]{64}")


def module_id(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


def parse_module_id(text: str) -> bytes:
    text = text.strip().lower()
    if not _ID_RE.fullmatch(text):
        raise InvalidArgument(f"not a module id: {quoted_id(text)}",
                              hint="a module id is the 64-hex-digit SHA-256 deploy printed (see: xsc compute modules)")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class Export:
    name: str
    kind: str  # func, memory, global, table
    signature: Signature | None = None  # functions only
    detail: str = ""  # what a non-function export is, e.g. "1 page, no maximum"

    @cached_property
    def callable(self) -> bool:
        """A function whose parameters and results are all numbers."""
        return self.signature is not None and self.signature.callable_problem() is None

    def describe(self) -> str:
        if self.signature is not None:
            return f"{self.name}{self.signature}"
        return f"{self.name} ({self.kind}{': ' + self.detail if self.detail else ''})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.signature is not None:
            out["params"] = list(self.signature.params)
            out["results"] = list(self.signature.results)
            out["signature"] = f"{self.name}{self.signature}"
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Export:
        sig = Signature(tuple(data["params"]), tuple(data["results"])) if data["kind"] == "func" else None
        return cls(data["name"], data["kind"], sig, data.get("detail", ""))


@dataclass
class ModuleInfo:
    id: str
    size: int
    exports: list[Export]
    imports: list[str]  # "module.name (kind)"
    first_deployed: str
    invocations: int = 0
    start: bool = True  # has a start function (runs at instantiation); unknown counts as yes
    # The registry's facts (seed 000's program registry): what the operator calls it, and whether it may run.
    name: str | None = None
    version: str | None = None
    description: str | None = None
    status: str = "active"  # or "disabled": refused with module-disabled, its records kept
    pushed_by: str | None = None  # the peer that pushed it for a call (removed when unused); None: deployed here
    _functions: dict[str, Export] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._functions = {e.name: e for e in self.exports}

    def export(self, name: str) -> Export | None:
        return self._functions.get(name)

    @property
    def wasi(self) -> bool:
        return bool(self.imports)  # the import check lets nothing but WASI imports through

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "size": self.size, "exports": [e.to_json() for e in self.exports],
            "imports": self.imports, "wasi": self.wasi, "first_deployed": self.first_deployed,
            "invocations": self.invocations, "start": self.start, "name": self.name, "version": self.version,
            "description": self.description, "status": self.status, "pushed_by": self.pushed_by,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleInfo:
        return cls(data["id"], data["size"], [Export.from_json(e) for e in data["exports"]], list(data["imports"]),
                   data["first_deployed"], data.get("invocations", 0), data.get("start", True), data.get("name"),
                   data.get("version"), data.get("description"), data.get("status", "active"), data.get("pushed_by"))


def check_bytes(wasm: bytes, max_size: int) -> None:
    """Refuse what is obviously not a module before compiling anything."""
    if len(wasm) > max_size:
        raise too_large(len(wasm), max_size)
    if not wasm:
        raise InvalidModule("the module is empty", hint="deploy a .wasm file")
    if looks_like_text(wasm):  # a .wat file sent as it is: nodes and peers only ever take binary modules
        raise InvalidModule("not a WebAssembly module: it does not start with the wasm magic bytes \\0asm (it looks "
                            "like WebAssembly text, a .wat module: a node takes binary modules only)",
                            hint="send it with the CLI, which compiles a .wat to binary first: xsc compute deploy "
                                 "FILE.wat; or build FILE.wasm with wat2wasm")
    if not wasm.startswith(WASM_MAGIC):
        raise InvalidModule("not a WebAssembly module: it does not start with the wasm magic bytes \\0asm",
                            hint="deploy a binary .wasm file, or a .wat file with the CLI")


def has_start_function(wasm: bytes) -> bool:
    """Whether a (valid) module has a start section: then instantiating it runs wasm code."""
    return read_shape(wasm).start


def too_large(size: int | None, max_size: int) -> ModuleTooLarge:
    what = f"the module is {format_size(size)}" if size is not None else "the module is too large"
    return ModuleTooLarge(f"{what}, over this node's limit of {format_size(max_size)}",
                          hint="shrink the module (wasm-opt -Oz, no debug info) or raise compute.max_module_size",
                          limit=max_size)


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise InvalidModule(f"not a valid WebAssembly module: {_first_line(exc)}",
                            hint="check the module with wasm-validate or rebuild it") from None


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # wasmtime puts the cause last ("Caused by: ..."); the first line is often just context
    return lines[-1] if lines else type(exc).__name__


def describe_imports(wasm: bytes) -> list[str]:
    """"module.name (kind)" per import, read from the bytes (see shape.py: never from wasmtime's types)."""
    return describe(wasm)[1]


def check_imports(imports: list[str], wasi: bool) -> None:
    """No host imports, except WASI functions when the WASI profile is asked for."""
    if not imports:
        return
    listed = ", ".join(imports)
    if not wasi:
        raise ImportsNotAllowed(
            f"the module imports {counted(len(imports), 'item')} from the host: {listed}; "
            "this node gives modules no host imports",
            hint="remove the imports, or, for a WASI program, pass --wasi (wasi=true)", imports=imports)
    other = [i for i in imports if not (i.startswith(WASI_MODULE + ".") and i.endswith("(func)"))]
    if other:
        raise ImportsNotAllowed(
            f"the module imports items the WASI profile does not provide: {', '.join(other)}",
            hint=f"only {WASI_MODULE} functions are available with --wasi", imports=other)


def describe(wasm: bytes) -> tuple[list[Export], list[str], bool]:
    """(exports, imports, has a start function) of a module wasmtime has validated, from one read of its bytes."""
    shape = read_shape(wasm)
    return ([_export(item) for item in shape.exports], [f"{i.module}.{i.name} ({i.kind})" for i in shape.imports],
            shape.start)


def has_hidden_memory(wasm: bytes) -> bool:
    """Whether the module has a linear memory it does not export (its size cannot be read after a call)."""
    shape = read_shape(wasm)
    return shape.memories > 0 and not any(item.kind == "memory" for item in shape.exports)


def describe_exports(wasm: bytes) -> list[Export]:
    """The exports of a module wasmtime has validated, read from its bytes (see shape.py)."""
    return describe(wasm)[0]


def _export(item: Item) -> Export:
    if item.func_type is not None:
        return Export(item.name, "func", Signature(item.func_type.params, item.func_type.results))
    if item.memory is not None:
        minimum, maximum = item.memory
        most = f"at most {maximum} pages" if maximum is not None else "no maximum"
        return Export(item.name, "memory", None, f"{minimum} pages ({format_size(minimum * PAGE)}), {most}")
    if item.global_type is not None:
        vtype, mutable = item.global_type
        return Export(item.name, "global", None, f"{'mutable ' if mutable else ''}{vtype}")
    if item.table is not None:
        element, minimum = item.table
        return Export(item.name, "table", None, f"{minimum} {element} elements")
    return Export(item.name, item.kind)
