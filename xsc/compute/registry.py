"""The node's deployed modules: validated, compiled, sealed in LevelDB, and kept ready to run in memory.

`ModuleRegistry` owns them: their records and wasm (through ComputeStore), their compiled artifacts (sealed with
the node's secret: artifacts.py), and the prepared modules kept in memory (MODULE_CACHE_SIZE at most, the least
recently used dropped first).  A module is compiled when deployed; a peer's module pushed for a call compiles in a
child process on a thread of its own (`pushed_pool`, compiler.py), never on the threads the operator's calls run
on.  A module not in memory is loaded from its artifact, or compiled again from its wasm if the artifact is
missing, fails its seal or does not load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import wasmtime

from ..db import Rows
from ..errors import ImportsNotAllowed, InvalidArgument, InvalidModule, ModuleNotFound
from ..tasks import Workers
from ..units import plural_for
from . import artifacts, compiler, provenance
from . import modules as mods
from . import sandbox
from .modules import ModuleInfo
from .store import ComputeStore

log = logging.getLogger(__name__)

MODULE_CACHE_SIZE = 64  # compiled modules kept in memory (each holds its native code)


class ModuleRegistry:
    def __init__(self, *, engine: wasmtime.Engine, fingerprint: bytes, store: ComputeStore, secret: bytes,
                 pool: Workers, max_module_size: int, peer_compile_timeout: float) -> None:
        """`pool`: the threads the operator's deploys compile on (the compute service's)."""
        self.engine, self.fingerprint, self.store = engine, fingerprint, store
        self.max_module_size, self.peer_compile_timeout = max_module_size, peer_compile_timeout
        self._secret = secret
        self._pool = pool
        # Peers' modules compile here, one at a time, never on the threads the operator's calls run on.
        self.pushed_pool = Workers(1, "xsc-wasm-pushed")
        self._cache: OrderedDict[bytes, sandbox.Prepared] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load (deserialize or compile) per module at a time
        self._deploy_lock = threading.RLock()  # _existing takes it again inside _deploy
        self.stats = {"compiled": 0, "loaded": 0, "rejected_artifacts": 0}
        self.compiling = 0  # peers' modules compiling right now (one thread: 0 or 1)

    def status(self) -> dict[str, int]:
        return {"modules_in_memory": len(self._cache), "compiling": self.compiling, **self.stats}

    def close(self) -> None:
        self.pushed_pool.shutdown(wait=True)

    async def deploy(self, wasm: bytes, *, wasi: bool = False, pushed_by: str | None = None,
                     facts: dict[str, str] | None = None, also: Rows = ()) -> tuple[ModuleInfo, bool]:
        """Validate, compile and cache a module; returns its info and whether it is new here.

        `facts`: the module's name, version, description; `pushed_by`: the peer that pushed it for a call (it
        compiles on the pushed modules' own thread); `also`: rows written with it if it is new (a push's compile)."""
        facts = check_facts(facts or {})
        pool = self._pool if pushed_by is None else self.pushed_pool
        return await pool.run(self._deploy, wasm, wasi, pushed_by, facts, also)

    def _deploy(self, wasm: bytes, wasi: bool, pushed_by: str | None = None, facts: dict[str, str] | None = None,
                also: Rows = ()) -> tuple[ModuleInfo, bool]:
        mods.check_bytes(wasm, self.max_module_size)
        module_id = mods.module_id(wasm)
        module_hash = bytes.fromhex(module_id)
        existing = self._existing(module_hash, wasi, pushed_by, facts)
        if existing is not None:
            return existing, False
        # Compiled outside the lock: a peer's module compiling never holds up the operator's deploys.
        module = mods.compile_module(self.engine, wasm) if pushed_by is None else self._compile_pushed(wasm)
        # Described from the bytes, never through wasmtime's type API (it aborts the process on v128).
        exports, imports, start = mods.describe(wasm)
        mods.check_imports(imports, wasi)
        wasi_pre = self._link_wasi(module) if imports else None
        artifact = bytes(module.serialize())
        with self._deploy_lock:
            existing = self._existing(module_hash, wasi, pushed_by, facts)
            if existing is not None:
                return existing, False
            self.stats["compiled"] += 1
            info = ModuleInfo(module_id, len(wasm), exports, imports, provenance.timestamp(time.time_ns()),
                              start=start, pushed_by=pushed_by, **(facts or {}))
            key = self.store.artifact_key(module_hash, self.fingerprint)
            self.store.save_module(module_hash, info, wasm, key, artifacts.seal(self._secret, key, artifact), also)
            self._remember(sandbox.Prepared(module_hash, module, info, wasi_pre, mods.has_hidden_memory(wasm)))
            log.info("deployed module %s (%d bytes)", module_id, len(wasm))
            return info, True

    def _compile_pushed(self, wasm: bytes) -> wasmtime.Module:
        """A peer's module, compiled in a child process within the peer compile CPU budget (compiler.py)."""
        self.compiling += 1
        try:
            artifact = compiler.compile_artifact(wasm, self.peer_compile_timeout)
        finally:
            self.compiling -= 1
        return wasmtime.Module.deserialize(self.engine, artifact)

    def _existing(self, module_hash: bytes, wasi: bool, pushed_by: str | None,
                  facts: dict[str, str] | None) -> ModuleInfo | None:
        """The module if it is deployed here already (the operator deploying it makes it theirs)."""
        with self._deploy_lock:
            existing = self.store.module(module_hash)
            if existing is None:
                return None
            mods.check_imports(existing.imports, wasi)
            if pushed_by is None and (existing.pushed_by or facts):  # the operator deploys it: theirs now
                existing.pushed_by = None
                for name, value in (facts or {}).items():
                    setattr(existing, name, value)
                self.store.update_module(module_hash, existing)
                self._forget(module_hash)
            return existing

    def _link_wasi(self, module: wasmtime.Module) -> wasmtime.InstancePre:
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        try:
            return linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            cause = sandbox.wasmtime_cause(exc)
            raise ImportsNotAllowed(f"the module imports something WASI does not provide: {cause}",
                                    hint="only wasi_snapshot_preview1 functions are available with --wasi") from None

    def modules(self) -> list[ModuleInfo]:
        return self.store.modules()

    def module(self, module_id: str) -> ModuleInfo:
        info = self.store.module(mods.parse_module_id(module_id))
        if info is None:
            raise not_deployed(module_id)
        return info

    def has_module(self, module_id: str) -> bool:
        module_hash = bytes.fromhex(module_id)
        with self._cache_lock:
            if module_hash in self._cache:
                return True
        return self.store.module(module_hash) is not None

    def set_status(self, module_id: str, status: str) -> ModuleInfo:
        """Enable or disable a module: a disabled one is refused (module-disabled); its records are kept."""
        if status not in ("active", "disabled"):
            raise InvalidArgument(f"status must be active or disabled, not {status!r}")
        info = self.module(module_id)
        info.status = status
        self.store.update_module(bytes.fromhex(info.id), info)
        self._forget(bytes.fromhex(info.id))
        return info

    def remove(self, module_id: str) -> ModuleInfo:
        """Remove a module (its wasm and compiled code); the provenance records of its runs are kept."""
        info = self.module(module_id)
        module_hash = bytes.fromhex(info.id)
        with self._deploy_lock:
            self.store.remove_module(module_hash)
            self._forget(module_hash)
        log.info("removed module %s", info.id)
        return info

    async def remove_unused_pushed(self, ttl: float, now: float) -> list[str]:
        """Remove modules peers pushed whose last run (or push) is older than `ttl` seconds; their ids."""
        removed = []
        for info in self.store.modules():
            if info.pushed_by is None:
                continue
            used_ns = self.store.last_used_ns(bytes.fromhex(info.id))
            used = used_ns / 1e9 if used_ns else _parse_time(info.first_deployed)
            if now - used > ttl:
                self.remove(info.id)
                removed.append(info.id)
        return removed

    def _forget(self, module_hash: bytes) -> None:
        with self._cache_lock:
            self._cache.pop(module_hash, None)

    def _remember(self, prepared: sandbox.Prepared) -> None:
        with self._cache_lock:
            self._cache[prepared.module_hash] = prepared
            self._cache.move_to_end(prepared.module_hash)
            while len(self._cache) > MODULE_CACHE_SIZE:
                self._cache.popitem(last=False)

    def cached(self, module_hash: bytes) -> sandbox.Prepared | None:
        """The module if it is ready in memory (marked in use: the last to be dropped), else None: nothing loaded."""
        with self._cache_lock:
            prepared = self._cache.get(module_hash)
            if prepared is not None:
                self._cache.move_to_end(module_hash)
            return prepared

    def prepared(self, module_hash: bytes) -> sandbox.Prepared:
        """The module ready to run: from memory, else deserialized from its sealed artifact, else compiled."""
        prepared = self.cached(module_hash)
        if prepared is not None:
            return prepared
        with self._load_lock:
            with self._cache_lock:
                if module_hash in self._cache:
                    return self._cache[module_hash]
            info = self.store.module(module_hash)
            if info is None:
                raise not_deployed(module_hash.hex())
            module = self._load_compiled(module_hash)
            wasm = self.store.wasm(module_hash)
            prepared = sandbox.Prepared(module_hash, module, info, self._link_wasi(module) if info.imports else None,
                                        wasm is None or mods.has_hidden_memory(wasm))
            self._remember(prepared)
            return prepared

    def _load_compiled(self, module_hash: bytes) -> wasmtime.Module:
        key = self.store.artifact_key(module_hash, self.fingerprint)
        sealed = self.store.artifact(key)
        if sealed is not None:
            artifact = artifacts.unseal(self._secret, key, sealed)
            if artifact is None:
                self.stats["rejected_artifacts"] += 1
                log.warning("compiled artifact of module %s fails its HMAC check; not loading it, recompiling",
                            module_hash.hex())
            else:
                try:
                    module = wasmtime.Module.deserialize(self.engine, artifact)
                    self.stats["loaded"] += 1
                    return module
                except wasmtime.WasmtimeError as exc:
                    log.warning("compiled artifact of module %s does not load (%s); recompiling",
                                module_hash.hex(), exc)
        wasm = self.store.wasm(module_hash)
        if wasm is None:
            raise InvalidModule(f"module {module_hash.hex()} is registered but its wasm is missing",
                                hint="deploy the module again")
        module = mods.compile_module(self.engine, wasm)
        self.stats["compiled"] += 1
        self.store.save_artifact(key, artifacts.seal(self._secret, key, bytes(module.serialize())))
        return module


FACT_LIMITS = {"name": 64, "version": 32, "description": 512}


def check_facts(facts: dict[str, Any]) -> dict[str, str]:
    """The facts about a module given at deploy (name, version, description): short text, nothing else."""
    unknown = set(facts) - set(FACT_LIMITS)
    if unknown:
        raise InvalidArgument(f"unknown module {plural_for(len(unknown), 'fact')}: {', '.join(sorted(unknown))}",
                              hint="give name, version, description")
    for key, value in facts.items():
        if not isinstance(value, str) or not 0 < len(value) <= FACT_LIMITS[key] or not value.isprintable():
            raise InvalidArgument(f"{key} must be printable text of 1 to {FACT_LIMITS[key]} characters")
    return dict(facts)


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def not_deployed(module_id: str) -> ModuleNotFound:
    return ModuleNotFound(f"module {module_id} is not deployed on this node",
                          hint="deploy it first: xsc compute deploy FILE.wasm (or invoke the .wasm file directly)")


__all__ = ["MODULE_CACHE_SIZE", "ModuleRegistry", "check_facts", "not_deployed"]
