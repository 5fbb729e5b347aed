"""The market's records in LevelDB: the newest commitment of each participant in the book, and this node's own
state (its ITC stamp and recognition counters), written with its own commitment."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .. import keys
from ..db import Database
from ..identity import parse_public_id


class MarketStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def commitments(self) -> Iterator[bytes]:
        """Every stored commitment, as the JSON it was kept as."""
        for _, value in self.db.iterator(prefix=keys.MARKET_COMMITMENTS):
            yield value

    def keep(self, commitments: Iterable[tuple[str, bytes]]) -> None:
        """(participant, JSON) of commitments taken into the book, in one write (not synced: the book is gossip,
        its peers hold it too)."""
        with self.db.write_batch() as batch:
            for participant, raw in commitments:
                batch.put(keys.market_commitment(parse_public_id(participant)), raw)

    def forget(self, participant: str) -> None:
        self.db.delete(keys.market_commitment(parse_public_id(participant)))

    def own_state(self) -> bytes | None:
        return self.db.get(keys.MARKET_SELF)

    def keep_own(self, participant: str, raw: bytes, state: bytes) -> None:
        """This node's commitment with its state, synced: its stamp must only grow across restarts."""
        with self.db.write_batch(sync=True) as batch:
            batch.put(keys.market_commitment(parse_public_id(participant)), raw)
            batch.put(keys.MARKET_SELF, state)

    def save_state(self, state: bytes) -> None:
        # Not synced: recognition counters a crash may lose a few increments of (the next publish syncs them).
        self.db.put(keys.MARKET_SELF, state)
