"""A small tmpfs as a data dir's disk, for tests of a full disk (mounting needs root: elsewhere the test skips)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def mount_tmpfs(path: Path, size: str, remount: bool = False, more: str = "") -> bool:
    options = (f"remount,size={size}" if remount else f"size={size}") + (f",{more}" if more else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


@contextmanager
def tmpfs(path: Path, size: str, more: str = "") -> Iterator[Path]:
    """`path` (made here) with a tmpfs of `size` mounted on it (`more`: further mount options, "ro", "nr_inodes=1"),
    unmounted afterwards; skips the test if it cannot be mounted."""
    path.mkdir()
    if os.geteuid() != 0 or not mount_tmpfs(path, size, more=more):
        pytest.skip("mounting a tmpfs needs root (and a kernel that allows it here)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
