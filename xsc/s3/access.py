"""Access keys of the S3 front: `<data dir>/s3-keys.json`, mode 0600, written atomically.

The node owner creates them (`xsc s3 keys create`); the front reads the file again whenever it changes,
so a removed key stops working without a restart.  A key is an access key id (20 characters, like
AWS's) and a secret (40 characters); the secret never leaves this file except when it is created.
Each key belongs to a user (`--user`; names.DEFAULT_USER when none is named): a user sees and changes its
own buckets, and those other users granted it (`xsc s3 grant`).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from .. import codec
from ..buckets.core.names import DEFAULT_USER, check_user
from ..errors import NotFound, S3Error
from .core.sigv4 import UNKNOWN_KEY_HINT

FILE_NAME = "s3-keys.json"
# A file changed less than this long ago is read again at each use: a write within the same tick of the kernel's
# clock as the one read could leave its time and its size as they were (the "racy" case, as git's index has it).
# Once its time is this far behind, any later write gives it a later time.
SETTLED_NS = 1_000_000_000
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def key_file(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


class KeyRing:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys = None, {}
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            data = codec.loads(self.path.read_text() or "{}")
            self._keys = {k["access_key"]: k for k in data.get("keys", [])}
            self._stamp = stamp if time.time_ns() - st.st_mtime_ns > SETTLED_NS else None
        return self._keys

    def secret(self, access_key: str) -> str | None:
        key = self._load().get(access_key)
        return key["secret_key"] if key else None

    def user_as_read(self, access_key: str) -> str:
        """The key's user in the file as it was last read (by `secret`, checking the same request's signature:
        the file is not looked at again).  A key that file no longer holds is refused, never taken for the
        operator's (DEFAULT_USER may do anything): a removal read between the two must not widen a request."""
        key = self._keys.get(access_key)
        if key is None:
            raise S3Error("the access key does not exist here", s3_code="InvalidAccessKeyId", status=403,
                          operator_hint=UNKNOWN_KEY_HINT)
        return key.get("user", DEFAULT_USER)

    def list(self) -> list[dict]:
        return [{"access_key": k["access_key"], "user": k.get("user", DEFAULT_USER), "created": k["created"]}
                for k in self._load().values()]

    def _write(self, keys: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(codec.text({"keys": list(keys.values())}, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._stamp = None

    def create(self, user: str = DEFAULT_USER) -> dict:
        check_user(user)
        keys = dict(self._load())
        access_key = "XSC" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))
        secret_key = secrets.token_urlsafe(30)[:40]
        keys[access_key] = {"access_key": access_key, "secret_key": secret_key, "user": user,
                            "created": int(time.time())}
        self._write(keys)
        return {"access_key": access_key, "secret_key": secret_key, "user": user}

    def remove(self, access_key: str) -> str:
        """Remove the key; the user it belonged to."""
        keys = dict(self._load())
        if access_key not in keys:
            raise NotFound(f"no access key {access_key!r}", hint="`xsc s3 keys ls` lists them")
        removed = keys.pop(access_key)
        self._write(keys)
        return removed.get("user", DEFAULT_USER)
