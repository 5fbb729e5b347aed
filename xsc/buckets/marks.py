"""The S3 front's own files in the store, marked so that no file a user names can pass for one.

The front reconciles the store with the bucket index: a file it stored whose object record never came (the
node died in between) is removed.  Which files are the front's is told by their names; a user can name a file
anything (`xsc store put F --name s3:backup`), so a name prefix alone would let reconciliation delete a user's
file.  Each name the front gives ends with `#NONCE TAG`: a fresh random nonce, and an HMAC of the rest under a
secret of the node's data dir (`<data dir>/s3-files.key`, mode 0600, made on first use), which the node's own front
and an `xsc s3 serve` of that data dir read, and no request carries.  A name without a valid tag is never the front's;
and since no two names the front gives are alike, a name two stored files share is one a user copied (from `xsc
store ls`): neither file is counted as the front's.

The node holds the files a user's charge or an import names to the same marks (`S3Index`): whoever holds its API token
can store a file under a name of the front's shape, but not one whose tag checks.  An `xsc s3 serve` with a data dir of
its own (on another host) holds a copy of the node's key, checked as it starts: the node proves its key on a challenge
of the front's (`proof`), a MAC no name's tag can be, so neither the key nor a usable tag crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..errors import BadRequest
from ..ids import unique_bytes

FILE_NAME = "s3-files.key"
FILE_PREFIX = "s3:"  # the names of the store's files the S3 front put (see reconcile)
NONCE_HEX = 16  # a front's file name ends with `#`, a nonce of 64 random bits and ...
TAG_HEX = 32  # ... a 128-bit HMAC of the rest
CHALLENGE_HEX = 64  # a front's challenge to its node's key: 256 random bits
PROOF = b"\xffxsc s3-files.key proof\x00"  # begins a proof's message: no name's UTF-8 holds the byte 0xff
LISTING = b"\xffxsc s3 continuation tokens\x00"  # the message the continuation tokens' key is the MAC of
SHAPE = re.compile(rf"{FILE_PREFIX}.*#[0-9a-f]{{{NONCE_HEX}}}[0-9a-f]{{{TAG_HEX}}}", re.DOTALL)


class FileMarks:
    def __init__(self, secret: bytes, path: Path | None = None) -> None:
        self._secret = secret
        self.path = path  # the file the secret was read from (named to whoever must copy it), None if given

    @classmethod
    def load(cls, data_dir: Path) -> FileMarks:
        """The front's marks for a data dir, the secret made (0600) the first time."""
        path = Path(data_dir) / FILE_NAME
        try:
            return cls(bytes.fromhex(path.read_text().strip()), path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another front made it meanwhile
            return cls(bytes.fromhex(path.read_text().strip()), path)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex())
            f.flush()
            os.fsync(f.fileno())
        return cls(secret, path)

    def name(self, label: str) -> str:
        """A new name for a file the front stores for `label` (an object's bucket and key, an upload's part)."""
        marked = f"{label}#{unique_bytes(NONCE_HEX // 2).hex()}"
        return f"{FILE_PREFIX}{marked}{self._tag(marked)}"

    def ours(self, name: str) -> bool:
        """Whether a stored file's name is one this front gave (a copy of it passes too: see `files`)."""
        if not name.startswith(FILE_PREFIX) or len(name) < len(FILE_PREFIX) + 1 + NONCE_HEX + TAG_HEX:
            return False
        marked, tag = name[len(FILE_PREFIX):-TAG_HEX], name[-TAG_HEX:]
        return marked[-NONCE_HEX - 1] == "#" and hmac.compare_digest(tag.encode("utf-8", "surrogatepass"),
                                                                     self._tag(marked).encode())

    @staticmethod
    def shaped(name: str) -> bool:
        """Whether a name has the shape of one the front gives, whatever its tag (`ours` checks the tag)."""
        return SHAPE.fullmatch(name) is not None

    def files(self, stored: Iterable[dict]) -> list[str]:
        """The capabilities of the front's files among the store's (`{"name", "capability"}` each): a name this
        front gave, held by that one file only (two files under one such name: a user copied it)."""
        return self.alone([f for f in stored if self.ours(f.get("name", ""))])

    @staticmethod
    def alone(ours: list[dict]) -> list[str]:
        """Of files whose names are the front's (`ours`), the capabilities of those no other file shares a name with."""
        count = Counter(f["name"] for f in ours)
        return [f["capability"] for f in ours if count[f["name"]] == 1]

    def proof(self, challenge: object) -> str:
        """The key's MAC of a front's `challenge` (CHALLENGE_HEX hex digits), in a domain of its own: what the node
        answers proves its key to a front holding the same, and tags no name."""
        if not isinstance(challenge, str) or not re.fullmatch(f"[0-9a-f]{{{CHALLENGE_HEX}}}", challenge):
            raise BadRequest(f"a challenge is {CHALLENGE_HEX} lowercase hex digits", hint="send {\"challenge\": HEX}")
        return hmac.new(self._secret, PROOF + bytes.fromhex(challenge), hashlib.sha256).hexdigest()

    def listing_key(self) -> bytes:
        """The key the front's continuation tokens are made under (buckets/core/listing.py `Tokens`): derived from
        the secret by a message no name's tag (UTF-8, never 0xff) nor a proof (PROOF's words) is a MAC of."""
        return hmac.new(self._secret, LISTING, hashlib.sha256).digest()

    def _tag(self, marked: str) -> str:
        return hmac.new(self._secret, marked.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:TAG_HEX]
