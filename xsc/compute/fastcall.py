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
import os
import threading
import typing
from ctypes import POINTER, byref

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._wasi import CUSTOM_OUTPUTS, CustomOutput, custom_call, custom_finalize

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
_epoch_callback = _held("wasmtime_store_epoch_deadline_callback")
_EpochCallback = _epoch_callback.argtypes[1]
_NO_DATA_FINALIZER = ctypes.cast(0, _epoch_callback.argtypes[3])
_error_new = _held("wasmtime_error_new")
_export_get = _held("wasmtime_instance_export_get")
_instance_new_held = _held("wasmtime_instance_new")
_memory_size = _held("wasmtime_memory_size")
_func_call_held = _held("wasmtime_func_call")
_store_delete_held = _held("wasmtime_store_delete")
_pre_instantiate_held = _held("wasmtime_instance_pre_instantiate")
_set_wasi = _held("wasmtime_context_set_wasi")
_wasi_config_new = _held("wasi_config_new")
_wasi_argv = _held("wasi_config_set_argv")
_wasi_env = _held("wasi_config_set_env")
_wasi_stdin_file = _held("wasi_config_set_stdin_file")
_wasi_stdout_file = _held("wasi_config_set_stdout_file")
_wasi_stdout_custom = _held("wasi_config_set_stdout_custom")
_wasi_stderr_file = _held("wasi_config_set_stderr_file")
_wasi_stderr_custom = _held("wasi_config_set_stderr_custom")
_wasi_preopen_dir = _held("wasi_config_preopen_dir")
# argv and the environment are handed over as arrays of C strings built in one call each (wasmtime-py's
# to_char_array makes and stores a c_char_p object per string: twice the time for a request's twenty variables)
_wasi_argv.argtypes = [_wasi_argv.argtypes[0], ctypes.c_size_t, ctypes.c_void_p]
_wasi_env.argtypes = [_wasi_env.argtypes[0], ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


# --- a run's pipes: system calls that never block, made without releasing the GIL -------------------------
# On the worker running a web function (compute/functions.py), each call that releases the GIL (os.pipe2, os.read,
# os.close, fcntl) lets the loop take it, and the worker waits to get it back: a thread switch each, several a
# request.  These calls on a pipe whose reading end does not block take a microsecond or two.
_LIBC = ctypes.PyDLL(None, use_errno=True)
_BUFFERS = threading.local()
_pipe2, _read, _close, _fcntl = _LIBC.pipe2, _LIBC.read, _LIBC.close, _LIBC.fcntl
_pipe2.argtypes, _pipe2.restype = [ctypes.POINTER(ctypes.c_int * 2), ctypes.c_int], ctypes.c_int
_read.argtypes, _read.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ssize_t
_close.argtypes, _close.restype = [ctypes.c_int], ctypes.c_int
_fcntl.argtypes, _fcntl.restype = [ctypes.c_int, ctypes.c_int, ctypes.c_int], ctypes.c_int


def pipe_held(flags: int) -> tuple[int, int]:
    """os.pipe2(flags) (its reading end, its writing end) without releasing the GIL."""
    ends = (ctypes.c_int * 2)()
    if _pipe2(byref(ends), flags) < 0:
        _os_error()
    return ends[0], ends[1]


def fcntl_held(fd: int, command: int, argument: int) -> int:
    result = _fcntl(fd, command, argument)
    if result < 0:
        _os_error()
    return result


def read_held(fd: int, size: int) -> bytes:
    """os.read(fd, size) of a non-blocking descriptor without releasing the GIL: b"" at its end, BlockingIOError
    if nothing is there yet."""
    buffer = getattr(_BUFFERS, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _BUFFERS.buffer = ctypes.create_string_buffer(size)  # one a thread, reused
    n = _read(fd, buffer, size)
    if n < 0:
        _os_error()
    return buffer.raw[:n] if n == len(buffer) else ctypes.string_at(buffer, n)


def close_held(fd: int) -> None:
    if _close(fd) < 0:
        _os_error()


def _os_error() -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code))


class Store:
    """A Store for one call.  wasmtime-py helpers accept it where they want a Store (they only call
    `_context()`).  `close()` frees it (and its instance and memory) at once."""

    __slots__ = ("_ptr", "_context_ptr", "_on_epoch")

    def __init__(self, engine: wasmtime.Engine, *, fuel: int, memory: int, table_elements: int, instances: int,
                 tables: int, memories: int, deadline_ticks: int) -> None:
        self._ptr = _store_new(engine.ptr(), None, _NO_FINALIZER)
        self._context_ptr = _store_context(self._ptr)
        self._on_epoch = None
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

    def set_deadline(self, ticks: int) -> None:
        """Trap once the engine's epoch has moved `ticks` past where it is now."""
        _set_epoch_deadline(self._context(), ticks)

    def on_epoch(self, check: typing.Callable[[], str | None]) -> None:
        """Call `check` (on the thread running the Store's code) each time its epoch deadline is reached, instead
        of trapping: None gives the code one more tick; a text stops it, raised from the call as a WasmtimeError
        with that text (not a Trap: wasmtime's C API makes no trap of a callback's error).  An exception in
        `check` stops it too: a check that cannot tell must not let it run on unchecked."""
        def call(context, data, delta, kind) -> int:
            try:
                stop = check()
            except Exception as exc:  # noqa: BLE001 - ctypes would print it and go on with a delta of 0
                stop = f"the check of a running call failed: {exc!r}"
            if stop is None:
                delta[0], kind[0] = 1, 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
                return 0
            return ctypes.cast(_error_new(stop.encode()), ctypes.c_void_p).value

        self._on_epoch = _EpochCallback(call)  # kept while the Store lives: wasmtime calls it
        _epoch_callback(self._ptr, self._on_epoch, None, _NO_DATA_FINALIZER)

    def set_wasi(self, config: WasiConfig) -> None:
        _raise(_set_wasi(self._context(), config.consume()), None)

    def close(self, *, hold_gil: bool = False) -> None:
        """Free the Store; `hold_gil` without releasing the GIL (a small memory: unmapping it is quick)."""
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            (_store_delete_held if hold_gil else ffi.wasmtime_store_delete)(ptr)
            self._on_epoch = None  # wasmtime calls it no more: what it holds (a job's streams) goes now

    def __del__(self) -> None:
        self.close()


class WasiConfig:
    """A WASI context's configuration (wasmtime-py's setters, for what a run uses), made through calls that keep
    the GIL: they copy a few strings and open a file or two.  `Store.set_wasi` takes it."""

    def __init__(self) -> None:
        self._ptr = _wasi_config_new()

    def argv(self, argv: list[str]) -> None:
        _wasi_argv(self._ptr, len(argv), _strings([arg.encode() for arg in argv])) or _failed("argv")

    def env(self, pairs: list[tuple[str, str]]) -> None:
        names, values = _strings([n.encode() for n, _ in pairs]), _strings([v.encode() for _, v in pairs])
        _wasi_env(self._ptr, len(pairs), names, values) or _failed("environment")

    def stdin_file(self, path: str) -> None:
        _wasi_stdin_file(self._ptr, path.encode()) or _failed(f"stdin {path}")

    def stdout_file(self, path: str) -> None:
        _wasi_stdout_file(self._ptr, path.encode()) or _failed(f"stdout {path}")

    def stdout_custom(self, write: CustomOutput) -> None:
        _wasi_stdout_custom(self._ptr, custom_call, CUSTOM_OUTPUTS.allocate(write), custom_finalize)

    def stderr_file(self, path: str) -> None:
        _wasi_stderr_file(self._ptr, path.encode()) or _failed(f"stderr {path}")

    def stderr_custom(self, write: CustomOutput) -> None:
        _wasi_stderr_custom(self._ptr, custom_call, CUSTOM_OUTPUTS.allocate(write), custom_finalize)

    def preopen_dir(self, path: str, guest_path: str, *, fs_mutable: bool) -> None:
        _wasi_preopen_dir(self._ptr, path.encode(), guest_path.encode(), fs_mutable) or _failed(f"preopen {path}")

    def consume(self):
        ptr, self._ptr = self._ptr, None
        return ptr

    def __del__(self) -> None:
        if self._ptr is not None:
            ffi.wasi_config_delete(self.consume())


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
        self._pre_instantiate = _pre_instantiate_held if quick_instantiate else ffi.wasmtime_instance_pre_instantiate
        self._name = name.encode()
        self._params = [(_KINDS[t], t) for t in signature.params]
        self._results = list(signature.results)
        self._array_params = ffi.wasmtime_val_t * len(self._params)
        self._array_results = ffi.wasmtime_val_t * len(self._results)

    def instantiate(self, store: Store) -> ffi.wasmtime_instance_t:
        instance = ffi.wasmtime_instance_t()
        trap = POINTER(ffi.wasm_trap_t)()
        if self._pre is not None:
            error = self._pre_instantiate(self._pre.ptr(), store._context(), byref(instance), byref(trap))
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


def _strings(encoded: list[bytes]) -> ctypes.Array:
    """A C array of the strings' pointers (it keeps the bytes alive; wasmtime copies them)."""
    return (ctypes.c_char_p * len(encoded))(*encoded)


def _failed(what: str) -> None:
    raise wasmtime.WasmtimeError(f"failed to configure WASI: {what}")


def _raise(error: ctypes._Pointer, trap: ctypes._Pointer) -> None:
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


def instance_object(instance: ffi.wasmtime_instance_t) -> wasmtime.Instance:
    """The high-level Instance for a raw one (to look at its memories after a trap)."""
    return wasmtime.Instance._from_raw(instance)
