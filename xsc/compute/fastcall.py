"""Instantiate-and-call through wasmtime's C API, with the export's signature known in advance.

wasmtime-py's `Instance(...)`, `instance.exports(store)[name]` and `Func.__call__`
rediscover on every call what deploy already knows: they list every export, build
Python objects for each, and fetch and compare the function's type for every
argument.  For a tiny export that is most of the cost of a call.  Here the
signature is checked once (at deploy), and a call is: set up the Store, make the
instance, look up one export by name, call it with a prebuilt argument array.

The Store is made and configured through functions bound without releasing the
GIL (ctypes.PyDLL): they only do bookkeeping, so releasing the GIL costs more
than the call, and under load every release hands the GIL to another thread and
waits to get it back.  Instantiation (unless the module is small and has no start
function, so that no wasm runs), the call, and dropping the Store (which unmaps up
to the whole memory limit: milliseconds for 64 MiB of touched pages) release it,
so that wasm runs in parallel and a big memory never stalls the event loop.

Errors are wasmtime-py's own exception types (`wasmtime.Trap`, `WasmtimeError`,
`ExitTrap`), so callers handle them exactly as with the high-level API.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, byref

import wasmtime
from wasmtime import _ffi as ffi

from .values import Signature

_KINDS = {"i32": ffi.WASMTIME_I32.value, "i64": ffi.WASMTIME_I64.value,
          "f32": ffi.WASMTIME_F32.value, "f64": ffi.WASMTIME_F64.value}
_FUNC = ffi.WASMTIME_EXTERN_FUNC.value
_GIL_HELD = ctypes.PyDLL(str(ffi.filename))  # the library wasmtime-py already loaded


def _held(name: str):
    """The C function `name`, called with the GIL held (same signature as wasmtime-py's binding)."""
    function, binding = getattr(_GIL_HELD, name), getattr(ffi.dll, name)
    function.argtypes, function.restype = binding.argtypes, binding.restype
    return function


_store_new = _held("wasmtime_store_new")
_store_context = _held("wasmtime_store_context")
_store_limiter = _held("wasmtime_store_limiter")
_set_fuel = _held("wasmtime_context_set_fuel")
_get_fuel = _held("wasmtime_context_get_fuel")
_set_epoch_deadline = _held("wasmtime_context_set_epoch_deadline")
_export_get = _held("wasmtime_instance_export_get")
_instance_new_held = _held("wasmtime_instance_new")
_memory_size = _held("wasmtime_memory_size")
_func_call_held = _held("wasmtime_func_call")
_store_delete_held = _held("wasmtime_store_delete")
_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


class Store:
    """A Store for one call.  wasmtime-py helpers accept it where they want a Store (they only call
    `_context()`).  `close()` frees it (and its instance and memory) at once."""

    __slots__ = ("_ptr", "_context_ptr")

    def __init__(self, engine: wasmtime.Engine, *, fuel: int, memory: int, table_elements: int, instances: int,
                 tables: int, memories: int, deadline_ticks: int) -> None:
        self._ptr = _store_new(engine.ptr(), None, _NO_FINALIZER)
        self._context_ptr = _store_context(self._ptr)
        _raise(_set_fuel(self._context_ptr, fuel), None)
        _store_limiter(self._ptr, memory, table_elements, instances, tables, memories)
        _set_epoch_deadline(self._context_ptr, deadline_ticks)

    def _context(self):
        if self._ptr is None:
            raise ValueError("the store is closed")
        return self._context_ptr

    def fuel(self) -> int:
        remaining = ctypes.c_uint64(0)
        _raise(_get_fuel(self._context(), byref(remaining)), None)
        return remaining.value

    def set_fuel(self, fuel: int) -> None:
        _raise(_set_fuel(self._context(), fuel), None)

    def set_wasi(self, config: wasmtime.WasiConfig) -> None:
        _raise(ffi.wasmtime_context_set_wasi(self._context(), config._consume()), None)

    def close(self, *, hold_gil: bool = False) -> None:
        """Free the Store; `hold_gil` without releasing the GIL (a small memory: unmapping it is quick)."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            (_store_delete_held if hold_gil else ffi.wasmtime_store_delete)(ptr)

    def __del__(self) -> None:
        self.close()


class Callable:
    """One export of one module, ready to call in any Store of the module's engine."""

    def __init__(self, module: wasmtime.Module, name: str, signature: Signature,
                 pre: wasmtime.InstancePre | None = None, *, quick_instantiate: bool = False,
                 memory: str | None = None) -> None:
        self._module = module
        self._memory = memory.encode() if memory is not None else None  # the module's exported memory
        self.slow = False  # a call of it once needed more than an inline try allows: it runs on the pool
        self.preempted = 0  # inline tries in a row that met their deadline barely run (service.py)
        self._pre = pre  # WASI modules: imports already resolved
        # Keep the GIL while instantiating: only for modules that run no code doing so (no start function).
        self._instance_new = _instance_new_held if quick_instantiate else ffi.wasmtime_instance_new
        self._name = name.encode()
        self._params = [(_KINDS[t], t) for t in signature.params]
        self._results = list(signature.results)
        self._array_params = ffi.wasmtime_val_t * len(self._params)
        self._array_results = ffi.wasmtime_val_t * len(self._results)

    def instantiate(self, store: Store) -> ffi.wasmtime_instance_t:
        instance = ffi.wasmtime_instance_t()
        trap = POINTER(ffi.wasm_trap_t)()
        if self._pre is not None:
            error = ffi.wasmtime_instance_pre_instantiate(self._pre.ptr(), store._context(), byref(instance),
                                                          byref(trap))
        else:
            error = self._instance_new(store._context(), self._module.ptr(), None, 0, byref(instance), byref(trap))
        _raise(error, trap)
        return instance

    def call(self, store: Store, instance: ffi.wasmtime_instance_t, args: list[int | float], *,
             hold_gil: bool = False) -> list:
        """Call the export; `hold_gil`: without releasing the GIL (a call run on the event loop, whose thread
        holds it anyway: released, it lets another thread take it and the loop waits to get it back)."""
        context = store._context()
        item = ffi.wasmtime_extern_t()
        if not _export_get(context, byref(instance), self._name, len(self._name), byref(item)) \
                or item.kind != _FUNC:
            raise wasmtime.WasmtimeError(f"export {self._name.decode()!r} is not a function of this instance")
        params = self._array_params()
        for slot, (kind, vtype), value in zip(params, self._params, args):
            slot.kind = kind
            setattr(slot.of, vtype, value)
        results = self._array_results()
        trap = POINTER(ffi.wasm_trap_t)()
        error = (_func_call_held if hold_gil else ffi.wasmtime_func_call)(
            context, byref(item.of.func), params, len(self._params), results, len(self._results), byref(trap))
        _raise(error, trap)
        return [getattr(slot.of, vtype) for slot, vtype in zip(results, self._results)]


    def memory_pages(self, store: Store, instance: ffi.wasmtime_instance_t | None) -> int:
        """The size of the instance's exported memory now, in 64 KiB pages: its peak (wasm memory never
        shrinks).  0 without an instance or an exported memory."""
        if instance is None or self._memory is None:
            return 0
        item = ffi.wasmtime_extern_t()
        if not _export_get(store._context(), byref(instance), self._memory, len(self._memory), byref(item)) \
                or item.kind != _MEMORY:
            return 0
        return _memory_size(store._context(), byref(item.of.memory))


def _raise(error: ctypes._Pointer, trap: ctypes._Pointer) -> None:
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


def instance_object(instance: ffi.wasmtime_instance_t) -> wasmtime.Instance:
    """The high-level Instance for a raw one (to look at its memories after a trap)."""
    return wasmtime.Instance._from_raw(instance)
