"""The node's data dir: its lock, its keys and token, its two LevelDBs (its records, its staged uploads' blocks)."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from pathlib import Path
from typing import Callable


from ..config import CONFIG_FILE, NodeConfig, write_default_config
from ..db import Database, open_database
from ..errors import ConfigError, NodeAlreadyRunning
from ..identity import CLIENT_KEY_FILE, NODE_KEY_FILE, Identity, id_difficulty, write_secret
from ..paths import LOCK_FILE, URL_FILE

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
DB_DIR = "db"
BLOCKS_DIR = "blocks"


class DataDirLock:
    """An exclusive flock on <data dir>/node.lock: one node per data dir.

    flock is released by the kernel when the process dies, so a kill -9 never
    leaves a stale lock behind."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise NodeAlreadyRunning(
                f"another node is already running on data dir {self.path.parent} (pid {holder})",
                hint="stop it first, or give this node its own --data-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def node_identity(config: NodeConfig, progress: Callable[[int], None] | None = None) -> Identity:
    """The node's key, minted on a first start with `peers.min_difficulty` bits of proof of work (`progress` is
    told how many keys were tried, every few thousand).  An older key of lower difficulty is kept: this node
    works as before, and each peer judges it by its own `peers.min_difficulty`."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = Identity.load_or_create(config.data_dir / NODE_KEY_FILE, config.peers.min_difficulty, progress)
    if id_difficulty(identity.public_key) < config.peers.min_difficulty:
        log.warning("this node's id has %d bits of proof of work, fewer than the %d peers.min_difficulty asks: "
                    "peers that ask as much refuse it (a new data dir mints a new id)",
                    id_difficulty(identity.public_key), config.peers.min_difficulty)
    return identity


def prepare(config: NodeConfig) -> tuple[Identity, Identity, str]:
    """Create what a first start needs; return the node identity, the local user's identity and the API token."""
    root = config.data_dir
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = node_identity(config)
    client = Identity.load_or_create(root / CLIENT_KEY_FILE)
    token = load_or_create_token(root)
    if not (root / CONFIG_FILE).exists():  # the first start writes the defaults; env and most flags stay one-off
        write_default_config(root)
    return identity, client, token


def record_url(root: Path, url: str) -> None:
    """Note where this node listens, for the CLI (XSC_NODE_LISTEN may be a one-off)."""
    tmp = root / (URL_FILE + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, root / URL_FILE)


def load_or_create_token(root: Path) -> str:
    path = root / TOKEN_FILE
    if path.exists():
        token = path.read_bytes().strip()
        if not token or not all(0x21 <= b <= 0x7E for b in token):  # a header carries it as it is
            raise ConfigError(f"{path} does not hold an API token", hint="delete it: a new one is written at start")
        return token.decode()
    token = secrets.token_hex(32)
    write_secret(path, token.encode())
    return token


# Blocks are ciphertext: compression only costs time.  Big files keep compaction (write amplification) down for
# 256 KiB values; the write buffer is held twice while one flushes: 16 MiB takes a quarter off a large put's peak
# memory (docs/storage.md, Memory).  A bloom filter per table answers most reads of a key that is not there.
_TABLES = dict(compression=None, write_buffer_size=16 << 20, max_file_size=64 << 20, block_size=64 << 10,
               max_open_files=500, bloom_filter_bits=10)


def open_db(root: Path) -> Database:
    """The data dir's records: all but the blocks of staged uploads (`open_blocks`)."""
    return open_database(root / DB_DIR, reserve_dir=root, lru_cache_size=32 << 20, **_TABLES)


def open_blocks(root: Path) -> Database:
    """Staged uploads' blocks: a LevelDB of their own (docs/storage.md), with the data dir's one disk reserve."""
    return open_database(root / BLOCKS_DIR, reserve_dir=root, lru_cache_size=8 << 20, **_TABLES)
