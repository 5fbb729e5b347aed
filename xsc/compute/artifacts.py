"""Compiled artifacts are native code: only load what this node compiled itself.

`Module.deserialize` trusts its input completely (a flipped byte can crash the
process or worse), so every artifact written to LevelDB is sealed with an
HMAC-SHA256 under a secret that never leaves the data dir, bound to the key it
is stored under (module hash + engine fingerprint).  An artifact whose MAC does
not check is never deserialized: the module is compiled again from its wasm.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from ..identity import write_secret

SECRET_FILE = "compute-artifact.key"
MAC_SIZE = 32


def load_or_create_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if path.exists():
        secret = path.read_bytes()
        if len(secret) == 32:
            return secret
    # Missing or damaged: a new secret only costs recompiling each module once.
    secret = os.urandom(32)
    write_secret(path, secret)
    return secret


def seal(secret: bytes, key: bytes, artifact: bytes) -> bytes:
    return hmac.new(secret, key + artifact, hashlib.sha256).digest() + artifact


def unseal(secret: bytes, key: bytes, sealed: bytes) -> bytes | None:
    """The artifact if its MAC checks under this key, else None."""
    mac, artifact = sealed[:MAC_SIZE], sealed[MAC_SIZE:]
    expected = hmac.new(secret, key + artifact, hashlib.sha256).digest()
    return artifact if len(mac) == MAC_SIZE and hmac.compare_digest(mac, expected) else None
