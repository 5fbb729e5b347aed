"""A module file as the CLI sends it: a binary module as it is, WebAssembly text (a .wat file, as wasmtime's own CLI
runs) compiled to binary here first by wasmtime's wat2wasm, so that nodes and peers only ever receive binary modules
(a node's API refuses text, naming this)."""

from __future__ import annotations

import re
from pathlib import Path

from ..compute.shape import WASM_MAGIC, looks_like_text
from ..errors import InvalidArgument

# wat2wasm's error: its message, then where, as `--> <anon>:LINE:COLUMN` over the line quoted
_WHERE = re.compile(r"-->\s*\S*?:(\d+):(\d+)")


def read_module(path: str, hint: str) -> bytes:
    """The binary module of the file at `path`: its bytes, or its text compiled; `hint` says what else to give when
    there is no such file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"no such file: {path}", hint=hint) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    return compiled(path, data) if is_text(path, data) else data


def is_text(path: str, data: bytes) -> bool:
    """Whether a module file is WebAssembly text: named .wat, or beginning as text does (`(module`, a `;;` comment),
    and not with the binary's magic bytes (a binary named .wat is sent as it is).  Anything else goes to the node as
    it is, which says what it is not."""
    return not data.startswith(WASM_MAGIC) and (path.lower().endswith(".wat") or looks_like_text(data))


def compiled(path: str, text: bytes) -> bytes:
    """WebAssembly text compiled to a binary module; a syntax error is one line naming the file, the line and the
    column wat2wasm gives."""
    import wasmtime  # only for text: the CLI starts without it

    fix = "fix the WebAssembly text, or give a binary .wasm file"
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: not WebAssembly text: byte {exc.start + 1} is not UTF-8", hint=fix) from None
    try:
        return bytes(wasmtime.wat2wasm(source))
    except wasmtime.WasmtimeError as exc:
        said = str(exc)
        where = _WHERE.search(said)
        message = said.strip().splitlines()[0] if said.strip() else "not WebAssembly text"
        at = f"{path}:{where.group(1)}:{where.group(2)}" if where else path
        raise InvalidArgument(f"{at}: {message}", hint=fix) from None
