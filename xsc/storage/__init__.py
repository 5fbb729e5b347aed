"""Erasure-coded, encrypted storage: segments -> AES-256-GCM -> RS(4,2) -> blocks in LevelDB.

Public API:
  Capability          parse and print `xsc:chk:...` capabilities
  Gateway             streaming put/get, check, verify, repair over a ShareStore
  ShareStore          blocks, share metadata and manifests in LevelDB, exact capacity accounting
  ShareMeta, PutResult, ShareReport
  erasure, layout     the pure RS(4,2) codec and the exact size arithmetic
  placement           weighted rendezvous placement of shares on nodes, failures survived
"""

from . import erasure, layout, placement
from .capability import Capability
from .gateway import Gateway, PutResult, ShareReport
from .share_store import ShareMeta, ShareStore

__all__ = ["Capability", "Gateway", "PutResult", "ShareReport", "ShareMeta", "ShareStore", "erasure", "layout", "placement"]
