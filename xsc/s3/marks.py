"""The front's own files in the store, marked so that no file a user names can pass for one.

The front reconciles the store with the bucket index: a file it stored whose object record never came (the
node died in between) is removed.  Which files are the front's is told by their names; a user can name a file
anything (`xsc store put F --name s3:backup`), so a name prefix alone would let reconciliation delete a user's
file.  Each name the front gives ends with `#TAG`, an HMAC of the rest under a secret only the front knows
(`<data dir>/s3-files.key`, mode 0600, made on first use): a name without a valid tag is never the front's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..buckets.index import FILE_PREFIX

FILE_NAME = "s3-files.key"
TAG_HEX = 32  # 128 bits of HMAC-SHA256


class FileMarks:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def load(cls, data_dir: Path) -> FileMarks:
        """The front's marks for a data dir, the secret made (0600) the first time."""
        path = Path(data_dir) / FILE_NAME
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another front made it meanwhile
            return cls(bytes.fromhex(path.read_text().strip()))
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex())
            f.flush()
            os.fsync(f.fileno())
        return cls(secret)

    def name(self, label: str) -> str:
        """The name of a file the front stores for `label` (an object's bucket and key, an upload's part)."""
        return f"{FILE_PREFIX}{label}#{self._tag(label)}"

    def ours(self, name: str) -> bool:
        """Whether a stored file's name is one this front gave."""
        if not name.startswith(FILE_PREFIX):
            return False
        label, sep, tag = name[len(FILE_PREFIX):].rpartition("#")
        return bool(sep) and hmac.compare_digest(tag.encode("utf-8", "surrogatepass"), self._tag(label).encode())

    def _tag(self, label: str) -> str:
        return hmac.new(self._secret, label.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:TAG_HEX]
