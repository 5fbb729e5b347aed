"""The manifest: what a reader needs to find, check and decode a file's shares.

Canonical encoding: UTF-8 JSON with sorted keys and no whitespace, hashes in
lower-case hex.  The manifest hash (in the capability) is SHA-256 over a tag and
that encoding, so any change to a stored manifest is detected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from ... import codec
from ...errors import IntegrityError

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


def ciphertext_hash(segment_hashes: list[bytes]) -> str:
    return hashlib.sha256(b"xsc:ciphertext:v1:" + b"".join(segment_hashes)).hexdigest()
