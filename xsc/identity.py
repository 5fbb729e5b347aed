"""Ed25519 identities: key files, signing, verifying, and the text form of public keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BadRequest

NODE_KEY_FILE = "node.key"
CLIENT_KEY_FILE = "client.key"  # the local user's account key, distinct from the node's


def public_id(public_key: bytes) -> str:
    """The short, copyable text form of a public key: unpadded base32, lower case."""
    return base64.b32encode(public_key).decode().rstrip("=").lower()


def parse_public_id(text: str) -> bytes:
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (ValueError, base64.binascii.Error) as e:
        raise BadRequest(f"not an account or node id: {text!r}") from e
    if len(raw) != 32:
        raise BadRequest(f"not an account or node id: {text!r} (must encode 32 bytes)")
    return raw


class Identity:
    """A private key with the operations XSC needs from it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes_raw()
        self.id: str = public_id(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load a raw 32-byte private key file, creating it (mode 0600) if missing."""
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        identity = cls.generate()
        write_secret(path, identity._key.private_bytes_raw())
        return identity

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def write_secret(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
