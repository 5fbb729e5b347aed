"""The peers' records in the node's LevelDB (keys spelled in xsc/keys.py): the only module of xsc/peers that
reads or writes them.

    p/d/<key>   a node's newest signed descriptor (JSON)          PeerDirectory
    p/x/<key>   when the user removed that node (ms)              PeerDirectory
    h/p/<key>   a peer's probe history and audit result (JSON)    HealthService
    p/q/<key>   why and until when a peer is quarantined (JSON)   Quarantine
    p/s/<key>   when it misbehaved in the last hour (JSON)        Quarantine

Reads decode what they can and name the key of what they cannot; writes go one at a time (`PeerStore`) or
together in one batch (`PeerStore.batch()`, a `PeerWrites`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import codec, keys
from ..db import Database
from ..identity import public_id


class PeerWrites:
    """Writes of peer records that go to the database together (a write batch, or the database itself)."""

    def __init__(self, target: Any) -> None:
        self._target = target  # anything with put and delete: the database or one of its write batches

    def descriptor(self, node_key: bytes, encoded: bytes) -> None:
        self._target.put(keys.peer_descriptor(node_key), encoded)

    def forget_descriptor(self, node_key: bytes) -> None:
        self._target.delete(keys.peer_descriptor(node_key))

    def removed(self, node_key: bytes, at_ms: int) -> None:
        self._target.put(keys.peer_removed(node_key), at_ms.to_bytes(8, "big"))

    def unremoved(self, node_key: bytes) -> None:
        self._target.delete(keys.peer_removed(node_key))

    def history(self, node_key: bytes, history: dict) -> None:
        self._target.put(keys.health_peer(node_key), codec.dumps(history))

    def forget_history(self, node_key: bytes) -> None:
        self._target.delete(keys.health_peer(node_key))

    def quarantine(self, node_key: bytes, entry: dict) -> None:
        self._target.put(keys.peer_quarantine(node_key), codec.dumps(entry))

    def lift(self, node_key: bytes) -> None:
        self._target.delete(keys.peer_quarantine(node_key))

    def strikes(self, node_key: bytes, times: list[float], last: dict[str, float]) -> None:
        self._target.put(keys.peer_strikes(node_key), codec.dumps({"at": times, "last": last}))

    def forget_strikes(self, node_key: bytes) -> None:
        self._target.delete(keys.peer_strikes(node_key))


class _Batch(PeerWrites):
    def __init__(self, db: Database) -> None:
        self._batch = db.write_batch()
        super().__init__(self._batch)

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._batch.__exit__(*exc)


class PeerStore(PeerWrites):
    """The peers' records: read at start, written one at a time or in a batch."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._db = db

    def batch(self) -> _Batch:
        """Writes that go to the database together, when the `with` block ends."""
        return _Batch(self._db)

    def _records(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        """(node key, decoded JSON) of every record under `prefix`; what is not JSON as (node key, None)."""
        for key, value in self._db.iterator(prefix=prefix):
            try:
                yield key[len(prefix):], codec.loads(value)
            except ValueError:
                yield key[len(prefix):], None

    def descriptors(self) -> Iterator[tuple[bytes, Any]]:
        """Every stored descriptor: (node key, its JSON form; None if unreadable)."""
        return self._records(keys.PEER_DESCRIPTORS)

    def removed_nodes(self) -> Iterator[str]:
        """The ids of the nodes the user removed."""
        for key in self._db.iterator(prefix=keys.PEER_REMOVED, include_value=False):
            yield public_id(key[len(keys.PEER_REMOVED):])

    def histories(self) -> Iterator[tuple[bytes, Any]]:
        """Every peer's probe history: (node key, its JSON form; None if unreadable)."""
        return self._records(keys.HEALTH_PEERS)

    def quarantines(self) -> Iterator[tuple[bytes, Any]]:
        """Every quarantine entry: (node key, its JSON form; None if unreadable)."""
        return self._records(keys.PEER_QUARANTINE)

    def all_strikes(self) -> Iterator[tuple[bytes, Any]]:
        """Every peer's recent strikes: (node key, its JSON form; None if unreadable)."""
        return self._records(keys.PEER_STRIKES)
