"""Damage on disk: flip a byte of a block a stopped node holds."""

from __future__ import annotations

import plyvel

from xsc import keys
from xsc.node.datadir import DB_DIR

from .nodes import NodeProcess


def corrupt_block(holder: NodeProcess, si: bytes, share: int, segment: int) -> None:
    """Flip one byte of a stored block, the node stopped (LevelDB has one owner); then start it again."""
    assert holder.stop() == 0
    db = plyvel.DB(str(holder.data_dir / DB_DIR))
    try:
        key = keys.block(si, share, segment)
        block = bytearray(db.get(key))
        block[len(block) // 2] ^= 0x01
        db.put(key, bytes(block), sync=True)
    finally:
        db.close()
    holder.start()
