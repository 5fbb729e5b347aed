"""ETags as S3 computes them: the MD5 of the bytes for a single-part object, and for a multipart object
the MD5 of the concatenated binary MD5s of its parts followed by `-N` (N parts).  Pure."""

from __future__ import annotations

import hashlib
from typing import Iterable


def single(md5_hex: str) -> str:
    return md5_hex


def of_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart(part_etags: Iterable[str]) -> str:
    etags = list(part_etags)
    digest = hashlib.md5(b"".join(bytes.fromhex(p) for p in etags)).hexdigest()
    return f"{digest}-{len(etags)}"
