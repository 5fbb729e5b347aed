"""Erasure-coded, encrypted storage: segments -> AES-256-GCM -> RS(4,2) -> blocks in LevelDB.

Public API:
  Capability          parse and print `xsc:chk:...` capabilities
  Gateway             streaming put/get, check, verify, repair over a ShareStore
  ShareStore          blocks, share metadata and manifests in LevelDB, exact capacity accounting
  ShareMeta, PutResult, ShareReport
  Manifest, MANIFEST_VERSION, Upload
  erasure, layout     the pure RS(4,2) codec and the exact size arithmetic
  merkle              block hashes, share roots, proofs
  placement           weighted rendezvous placement of shares on nodes, failures survived
  leases              lease bounds, renewal (never shortens), what a renewal adds, when a file expired

Each name is imported when first used (module `__getattr__`), so a program that only checks a capability (the
CLI, before its request) does not load the gateway, asyncio and LevelDB: ~0.1 s of every `xsc store` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for readers and type checkers (and tests/test_architecture.py's graph)
    from .core import erasure, layout, leases, merkle, placement
    from .core.capability import Capability
    from .gateway import Gateway, Holder, PutResult, ShareReport
    from .core.manifest import MANIFEST_VERSION, Manifest
    from .share_store import ShareMeta, ShareStore, Upload

_FROM = {
    **dict.fromkeys(["erasure", "layout", "leases", "merkle", "placement"], ".core"),
    "Capability": ".core.capability",
    **dict.fromkeys(["Gateway", "Holder", "PutResult", "ShareReport"], ".gateway"),
    **dict.fromkeys(["MANIFEST_VERSION", "Manifest"], ".core.manifest"),
    **dict.fromkeys(["ShareMeta", "ShareStore", "Upload"], ".share_store"),
}

__all__ = ["Capability", "Gateway", "Holder", "MANIFEST_VERSION", "Manifest", "PutResult", "ShareReport", "ShareMeta",
           "ShareStore", "Upload", "erasure", "layout", "leases", "merkle", "placement"]


def __getattr__(name: str) -> Any:
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _FROM[name]
    value = importlib.import_module(f"{where}.{name}" if where == ".core" else where, __name__)
    if where != ".core":
        value = getattr(value, name)
    globals()[name] = value  # found once: later uses are plain attribute reads
    return value
