"""The manifest: what a reader needs to find, check and decode a file's shares.

Canonical encoding: UTF-8 JSON with sorted keys and no whitespace, hashes in
lower-case hex.  The manifest hash (in the capability) is SHA-256 over a tag and
that encoding, so any change to a stored manifest is detected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from ... import codec
from ...errors import IntegrityError
from . import layout
from .erasure import K, M, N
from .merkle import root

MANIFEST_VERSION = 1
_TAG = b"xsc:manifest:v1:"


@dataclass(frozen=True)
class Manifest:
    size: int
    segment_size: int
    k: int
    m: int
    segment_count: int
    share_roots: tuple[str, ...]  # hex Merkle root of each share's block hashes
    ciphertext_hash: str  # hex SHA-256 over the per-segment ciphertext hashes, in order
    version: int = MANIFEST_VERSION

    def encode(self) -> bytes:
        body = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict deep-copies each value
        body["share_roots"] = list(self.share_roots)
        return codec.canonical(body)

    def digest(self) -> bytes:
        return manifest_hash(self.encode())

    def share_root(self, share: int) -> bytes:
        return bytes.fromhex(self.share_roots[share])


def manifest_hash(encoded: bytes) -> bytes:
    return hashlib.sha256(_TAG + encoded).digest()


def decode_manifest(encoded: bytes, expected_hash: bytes) -> Manifest:
    """Parse a stored manifest, refusing one whose hash is not the capability's."""
    if manifest_hash(encoded) != expected_hash:
        raise IntegrityError("the stored manifest does not match the capability's manifest hash",
                             hint="check the capability: copy it whole, as `xsc store put` printed it")
    body = codec.loads(encoded)
    if body.get("version") != MANIFEST_VERSION:
        raise IntegrityError(f"unsupported manifest version {body.get('version')}")
    body["share_roots"] = tuple(body["share_roots"])
    return Manifest(**body)


def unsettled(copies: Sequence[bytes], shares: Mapping[int, tuple[Sequence[bytes], int]], size: int) -> str | None:
    """Why the manifest stored under a storage index is not settled by its copies, or None when it is: every copy
    (this node's, each holder's that answered) the same bytes, a manifest in its canonical encoding whose layout adds
    up, of the file `size` a capability names, and each share that answered (`shares`: share -> its block hashes and
    stored bytes), at least K of them, hashing to its share root and holding the bytes it says.  A manifest that is
    all this is the one those shares were written under: a capability whose manifest hash is not its own names
    another file.  (A copy damaged alike on every holder in its ciphertext hash alone passes: only reading the whole
    file tells it.  A capability mixed up with another file's size too is taken for damage: never the reverse.)"""
    if not copies:
        return "no holder sent a copy of it"
    if any(copy != copies[0] for copy in copies):
        return "its holders' copies differ"
    try:  # a manifest from storage or a peer: anything it fails in being one is its own check failed
        body = codec.loads(copies[0])
        body["share_roots"] = tuple(body["share_roots"])
        manifest = Manifest(**body)
        share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
        whole = manifest.encode() == copies[0] and len(manifest.share_roots) == N \
            and (manifest.version, manifest.k, manifest.m) == (MANIFEST_VERSION, K, M) \
            and manifest.segment_count == layout.segment_count(manifest.size, manifest.segment_size)
    except Exception:  # noqa: BLE001 - not JSON, a field missing, of another type, a size that is no size
        whole = False
    if not whole:
        return "it is no whole manifest"
    if manifest.size != size:
        return f"it is of a file of {manifest.size} bytes, not the capability's {size}"
    agreed = [s for s, (hashes, stored) in shares.items() if 0 <= s < N and stored == share_bytes
              and len(hashes) == manifest.segment_count and root(list(hashes)).hex() == manifest.share_roots[s]]
    if len(agreed) < len(shares):
        return f"{len(shares) - len(agreed)} of the {len(shares)} shares that answered do not match it"
    return f"only {len(agreed)} shares answered, of the {K} that tell" if len(agreed) < K else None


def ciphertext_hash(segment_hashes: list[bytes]) -> str:
    return hashlib.sha256(b"xsc:ciphertext:v1:" + b"".join(segment_hashes)).hexdigest()
