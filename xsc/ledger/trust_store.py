"""The trust lines' keys (xsc/keys.py: `trust_line`, `trust_credit`, `trust_paid`, `trust_owed`): each peer's running
totals, the credit its user gave it, and the markers that count a receipt or a payment once.  Read and written by
ledger/trust.py's TrustLines alone, which caches and locks."""

from __future__ import annotations

from .. import codec
from .. import keys
from ..db import Database
from ..identity import parse_public_id, public_id
from .retirement import guard_row


class TrustStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def totals(self, peer: str) -> dict:
        """The peer's totals as written ({} if none)."""
        raw = self._db.get(keys.trust_line(parse_public_id(peer)))
        return {} if raw is None else codec.loads(raw)

    def credit(self, peer: str) -> int | None:
        """The credit line the user set for the peer (None: none set)."""
        raw = self._db.get(keys.trust_credit(parse_public_id(peer)))
        return None if raw is None else int(raw)

    def peers(self) -> list[str]:
        """Every peer with a line: work or payments counted, or a credit line its user set."""
        found = {key[len(prefix):] for prefix in (keys.TRUST_LINES, keys.TRUST_CREDIT)
                 for key in self._db.iterator(prefix=prefix, include_value=False)}
        return [public_id(peer) for peer in sorted(found)]

    def put_totals(self, peer: str, totals: dict[str, int]) -> None:
        """Write the peer's totals."""
        self._db.put(keys.trust_line(parse_public_id(peer)), codec.dumps(totals))

    @staticmethod
    def marker(total: str, authorization_id: bytes) -> bytes:
        """The key marking that a receipt ("paid") or a payment ("owed") was counted."""
        return keys.trust_paid(authorization_id) if total == "paid" else keys.trust_owed(authorization_id)

    def counted(self, marker: bytes) -> bool:
        return self._db.get(marker) is not None

    @staticmethod
    def uncounted_record(total: str, authorization_id: bytes) -> bytes:
        """The ledger's record, written with its receipt ("paid") or its payment ("owed"), that says it is not
        counted yet."""
        return (keys.ledger_sender(authorization_id) if total == "paid" else
                keys.ledger_uncounted(authorization_id))

    def uncounted(self, total: str, authorization_id: bytes) -> bool:
        return self._db.get(self.uncounted_record(total, authorization_id)) is not None

    def counted_rows(self, peer: str, totals: dict[str, int], total: str, authorization_id: bytes,
                     expires_at: int, retention: int) -> dict[bytes, bytes]:
        """The rows of a count: the new totals and the marker that counts them, which goes `retention` past its
        authorization's expiry `expires_at` (Retirement.retire)."""
        marker = self.marker(total, authorization_id)
        return dict((guard_row(marker, expires_at, retention), (marker, b""),
                     (keys.trust_line(parse_public_id(peer)), codec.dumps(totals))))

    def put_counted(self, peer: str, totals: dict[str, int], total: str, authorization_id: bytes,
                    expires_at: int, retention: int) -> None:
        """A count's rows written together, with the ledger's record that it was not counted deleted."""
        rows = self.counted_rows(peer, totals, total, authorization_id, expires_at, retention)
        with self._db.write_batch(transaction=True) as batch:
            for key, value in rows.items():
                batch.put(key, value)
            batch.delete(self.uncounted_record(total, authorization_id))

    def set_credit(self, peer: str, amount: int | None) -> None:
        key = keys.trust_credit(parse_public_id(peer))
        if amount is None:
            self._db.delete(key, sync=True)
        else:
            self._db.put(key, str(amount).encode(), sync=True)


__all__ = ["TrustStore"]
