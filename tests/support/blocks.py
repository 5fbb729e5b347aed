"""Damage on disk: a block a stopped node holds changed (a byte flipped, or its length); the node a NodeProcess or a
ThreadedNode (support/cli.py)."""

from __future__ import annotations

from collections.abc import Callable

import plyvel

from xsc import keys
from xsc.node.datadir import BLOCKS_DIR, DB_DIR

from .nodes import NodeProcess


def corrupt_block(holder: NodeProcess, si: bytes, share: int, segment: int) -> None:
    """Flip one byte of a stored block, the node stopped (LevelDB has one owner); then start it again."""

    def flip(block: bytes) -> bytes:
        changed = bytearray(block)
        changed[len(changed) // 2] ^= 0x01
        return bytes(changed)

    change_block(holder, si, share, segment, flip)


def change_block(holder: NodeProcess, si: bytes, share: int, segment: int, change: Callable[[bytes], bytes]) -> None:
    """A stored block replaced by `change(block)`, the node stopped (LevelDB has one owner); then start it again."""
    assert holder.stop() in (0, None)  # a node served from a thread of the test (support/cli.py) has no exit code
    key = keys.block(si, share, segment)
    for folder in (BLOCKS_DIR, DB_DIR):  # a staged upload's blocks, else the records' (where a node looks)
        db = plyvel.DB(str(holder.data_dir / folder))
        try:
            block = db.get(key)
            if block is not None:
                db.put(key, change(block), sync=True)
                break
        finally:
            db.close()
    else:
        raise AssertionError(f"no block {key.hex()} in {holder.data_dir}")
    holder.start()
