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
"""

from .core import erasure, layout, leases, merkle, placement
from .core.capability import Capability
from .gateway import Gateway, Holder, PutResult, ShareReport
from .core.manifest import MANIFEST_VERSION, Manifest
from .share_store import ShareMeta, ShareStore, Upload

__all__ = ["Capability", "Gateway", "Holder", "MANIFEST_VERSION", "Manifest", "PutResult", "ShareReport", "ShareMeta",
           "ShareStore", "Upload", "erasure", "layout", "leases", "merkle", "placement"]
