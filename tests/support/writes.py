"""What a node writes to its database: the keys of each synced write batch, for tests of what goes in one write."""

from __future__ import annotations

from xsc.db import Database


def record_synced_writes(monkeypatch) -> list[set[bytes]]:
    """From now on (for the test), the keys each synced write batch puts, one set per batch, in order."""
    synced: list[set[bytes]] = []
    batch = Database.write_batch

    def recording(self, **kwargs):
        made = batch(self, **kwargs)
        if kwargs.get("sync"):
            written: set[bytes] = set()
            synced.append(written)
            put = made.put

            def put_and_record(key: bytes, value: bytes) -> None:
                written.add(key)
                put(key, value)

            made.put = put_and_record
        return made

    monkeypatch.setattr(Database, "write_batch", recording)
    return synced
