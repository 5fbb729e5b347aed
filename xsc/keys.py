"""The one key layout of the node's LevelDB database.

Nothing else in XSC spells a key or a prefix: every module asks this one for
its keys.  Keys are bytes: a namespace prefix, then fixed-width binary fields
so that range scans come out in a useful order.

Namespaces:
  s/  storage: blocks, share metadata, manifests, uploads in progress, files, counters
  c/  compute: modules, compiled artifacts, provenance records
  l/  ledger:  entries, chain heads, balances, settled authorizations, forks
  h/  health:  peer availability history
  p/  peers:   known node descriptors
  m/  market:  slots, orders, recognition
  n/  node:    node-wide metadata (schema version)
"""

from __future__ import annotations

import struct

SCHEMA_VERSION = b"n/schema"

# --- storage (s/) ----------------------------------------------------------------
_BLOCK = b"s/b/"  # + storage index (32) + share (1) + segment (4, big endian) -> block bytes
_SHARE = b"s/h/"  # + storage index + share -> share metadata (published: visible)
_MANIFEST = b"s/m/"  # + storage index -> manifest bytes
_UPLOAD = b"s/u/"  # + upload id -> staging record of an upload in progress
_FILE = b"s/f/"  # + storage index -> record of a file this node uploaded (gateway side)
_DAMAGE = b"s/d/"  # + storage index + share -> why a share is known damaged
STORAGE_USED = b"s/c/used"  # exact count of block bytes held in published shares


def block(storage_index: bytes, share: int, segment: int) -> bytes:
    return _BLOCK + storage_index + struct.pack(">BI", share, segment)


def blocks_of_share(storage_index: bytes, share: int) -> bytes:
    """Prefix of every block of one share, in segment order."""
    return _BLOCK + storage_index + struct.pack(">B", share)


def share(storage_index: bytes, share_number: int) -> bytes:
    return _SHARE + storage_index + struct.pack(">B", share_number)


def shares_of(storage_index: bytes) -> bytes:
    return _SHARE + storage_index


SHARES = _SHARE


def split_share(key: bytes) -> tuple[bytes, int]:
    rest = key[len(_SHARE):]
    return rest[:32], rest[32]


def manifest(storage_index: bytes) -> bytes:
    return _MANIFEST + storage_index


def upload(upload_id: bytes) -> bytes:
    return _UPLOAD + upload_id


UPLOADS = _UPLOAD


def file(storage_index: bytes) -> bytes:
    return _FILE + storage_index


FILES = _FILE


def damage(storage_index: bytes, share_number: int) -> bytes:
    return _DAMAGE + storage_index + struct.pack(">B", share_number)


def damage_of(storage_index: bytes) -> bytes:
    return _DAMAGE + storage_index


# --- compute (c/) ----------------------------------------------------------------
COMPUTE = b"c/"

# --- ledger (l/) -----------------------------------------------------------------
LEDGER = b"l/"

# --- health (h/) -----------------------------------------------------------------
HEALTH = b"h/"

# --- peers (p/) ------------------------------------------------------------------
PEERS = b"p/"

# --- market (m/) -----------------------------------------------------------------
MARKET = b"m/"
