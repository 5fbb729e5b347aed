"""A job other nodes place here, its data (hosted_jobs.py): the streams its begin names (stdin, then each input), bounded
before a byte is taken, staged as empty files, then filled in order, each checked against its SHA-256 as its last
byte comes.  A job's bytes are run only once they are exactly the ones its sender named."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument, PayloadTooLarge

_HEX = frozenset("0123456789abcdef")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass
class Item:
    path: str  # "stdin" or /in/NAME
    size: int
    sha256: str
    verify_hash: str
    file: Path


def items(value: Any, spec, work: Path) -> list[Item]:
    """The data a sent job says it brings: stdin first (if it reads one), then each input, each with its size and
    hash, bounded before anything is taken (a stream of no bytes has the empty stream's hash: it is all here)."""
    expected = (["stdin"] if spec.stdin is not None else []) + [i.path for i in spec.inputs]
    if not isinstance(value, list) or len(value) != len(expected):
        raise InvalidArgument(f"the job's data names {len(expected)} streams: stdin (if any), then each input")
    found: list[Item] = []
    for path, entry in zip(expected, value):
        if not isinstance(entry, dict) or entry.get("path") != path or type(entry.get("size")) is not int \
                or entry["size"] < 0 or not _is_sha256(entry.get("sha256")) \
                or not _is_verify_hash(entry.get("verify_hash", "")):
            raise InvalidArgument(f"the job's data for {path} is {{path, size, sha256, verify_hash}}")
        if entry["size"] == 0 and entry["sha256"] != EMPTY_SHA256:
            raise InvalidArgument(f"{path} has no bytes, so its SHA-256 is {EMPTY_SHA256}")
        file = work / "stdin" if path == "stdin" else work / "in" / path[4:]
        found.append(Item(path, entry["size"], entry["sha256"], entry.get("verify_hash", ""), file))
    return found


def stage(work: Path, items: list[Item]) -> None:
    """A job's work directory, with an empty file for each stream its data fills."""
    work.mkdir()
    (work / "in").mkdir()
    for item in items:
        item.file.touch()


def _is_sha256(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def _is_verify_hash(text: Any) -> bool:
    return isinstance(text, str) and len(text) <= 64 * 1024 and set(text) <= _HEX | {":", ","}


def write(job: Any, data: bytes) -> None:
    """On a worker: `data` at the job's next byte, split over the streams it falls in; a stream whose last byte
    came is checked against its hash (a mismatch drops the job, `take`: the sender may send it again)."""
    view = memoryview(data)
    while view:
        start = 0
        for item in job.items:
            if job.received < start + item.size:
                break
            start += item.size
        else:
            raise PayloadTooLarge("the job's data is longer than it said")
        take = min(len(view), start + item.size - job.received)
        with open(item.file, "ab") as f:
            f.write(view[:take])
        job.digest.update(view[:take])
        job.received += take
        view = view[take:]
        if job.received == start + item.size:
            _finish_item(job, item)


def _finish_item(job: Any, item: Item) -> None:
    digest, job.digest = job.digest.hexdigest(), hashlib.sha256()
    if digest != item.sha256:
        raise InvalidArgument(f"the bytes of {item.path} do not match the SHA-256 the job named for them",
                              hint="send the job again")


def read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


__all__ = ["EMPTY_SHA256", "Item", "items", "read", "stage", "write"]
