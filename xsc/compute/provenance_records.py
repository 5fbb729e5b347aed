"""The provenance records a node keeps, as its user, its dashboard and its peers read them: one by its id, the
newest, and how many runs ended in each recent minute.  The journal writes and signs them (journal.py); a record
read moments after its write, before its batch's signature, has the batch signed first (`Journal.sign_pending`)."""

from __future__ import annotations

import functools
import time
from typing import Any

from ..errors import ProvenanceNotFound
from . import provenance
from .journal import Journal, unsigned
from .store import ComputeStore

# What `provenance-not-found` tells its user: where a run's record is when it is not on the node asked.
NOT_HERE_HINT = ("a call another node ran is recorded and signed there, kept compute.record_retention: xsc compute "
                 "provenance ID --provider NODE (the node its answer names as provider); this node's: xsc compute "
                 "provenance --list")


def provenance_not_found(provenance_id: str) -> ProvenanceNotFound:
    """No record `provenance_id` here, or none shown to the node that asks: the same words, so a node shown none
    cannot tell which."""
    return ProvenanceNotFound(f"no provenance record {provenance_id} on this node", hint=NOT_HERE_HINT)


class ProvenanceRecords:
    def __init__(self, store: ComputeStore, journal: Journal) -> None:
        self._store = store
        self._journal = journal

    def get(self, provenance_id: str) -> dict[str, Any]:
        record_id = provenance.parse_id(provenance_id)
        data = self._store.provenance(record_id)
        if data is not None and unsigned(data):  # written moments ago: its batch is signed now
            self._journal.sign_pending()
            data = self._store.provenance(record_id)
        if data is None:
            raise provenance_not_found(provenance_id)
        return provenance.decode(data)

    def per_minute(self, minutes: int, cap: int = 200_000) -> dict[str, Any]:
        """Runs on this node (provenance records) in each of the last `minutes` minutes, oldest first (the
        dashboard's chart); `complete` is false when more than `cap` records were there to count."""
        minute = 60 * 10**9
        now = time.time_ns()
        since = (now // minute - minutes + 1) * minute
        counts, complete = self._store.provenance_counts(since, minute, minutes, cap)
        return {"since_ms": since // 10**6, "counts": counts, "complete": complete}

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest signed records, each with whether its signature is the node's (the dashboard shows it)."""
        found = self._store.recent_provenance(limit)
        if any(unsigned(d) for d in found):  # written moments ago: their batch is signed now
            self._journal.sign_pending()
            found = self._store.recent_provenance(limit)
        # A record still unsigned (its write had not returned yet) is listed from the next read on.
        return [{**provenance.decode(d), "signature_valid": _rule(d) is not None, "signature_rule": _rule(d)}
                for d in found if not unsigned(d)]


@functools.lru_cache(maxsize=4096)
def _rule(data: bytes) -> str | None:
    """The rule a stored provenance record's signature holds under (`provenance.rule`): a function of its bytes,
    so checked once (the dashboard reads the newest 200 every poll)."""
    return provenance.rule(provenance.decode(data), stored=True)
