"""This node's need slots (xsc.market.needs.NeedRegistry): which are published with its commitment, and when."""

from __future__ import annotations

import time

from xsc.config import MarketSection
from xsc.db import Database, open_database
from xsc.market.needs import PUBLISH_AFTER, NeedRegistry


def _registry(tmp_path) -> tuple[NeedRegistry, list[str]]:
    needs = NeedRegistry(db=open_database(tmp_path / "db"), me="me", config=MarketSection())
    changes: list[str] = []
    needs.watch(lambda: changes.append("changed"))
    return needs, changes


def test_a_puts_needs_are_published_only_once_they_have_been_open_a_while(tmp_path) -> None:
    needs, changes = _registry(tmp_path)
    standing = needs.add_standing("storage", 1000, 600)
    changes.clear()
    put = [needs.make(f"put-{s}", "storage", 100, 3600, 10**6, group="put") for s in range(6)]
    needs.open(put)
    assert len(needs.bids()) == 7  # open: dealt with, held against their providers (Dealing)
    assert needs.published() == (standing,)  # a small put's needs never reach the peers
    needs.withdraw([b.slot.id for b in put])
    assert changes == []  # nothing published changed: the commitment is not signed and sent again

    longer = [needs.make("long-0", "storage", 100, 3600, 10**6)]
    needs.open(longer)
    assert needs.published(time.monotonic() + PUBLISH_AFTER) == (standing, *longer)  # the market's next look
    needs.withdraw(["long-0"])
    assert changes == ["changed"] and needs.published() == (standing,)


def test_needs_opened_alike_are_the_needs_make_would_make_but_for_their_ids(tmp_path) -> None:
    needs, _ = _registry(tmp_path)
    first = needs.make("put-0", "storage", 100, 3600, 10**6, group="put", avoid=("other",))
    needs.open_alike(first, [f"put-{s}" for s in range(3)])
    assert needs.open_ids() == {"put-0", "put-1", "put-2"}
    alike = needs.bids()
    made = needs.make("put-2", "storage", 100, 3600, 10**6, group="put", avoid=("other",))
    assert [b.slot.id for b in alike] == ["put-0", "put-1", "put-2"] and alike[0] is first
    for b in alike[1:]:  # each what a checked copy of the first would be: equal, hashed alike, dumped alike
        copy = first.model_copy(update={"slot": first.slot.model_copy(update={"id": b.slot.id})})
        assert b == copy and hash(b) == hash(copy) and b.model_fields_set == copy.model_fields_set
        assert b.model_dump_json() == copy.model_dump_json()
    assert alike[2].model_dump() == made.model_dump() | {"slot": {**made.slot.model_dump(),
                                                                  "start": alike[2].slot.start,
                                                                  "end": alike[2].slot.end}}
    assert needs.bids()[2] is alike[2]  # made once
    needs.withdraw(["put-1"])
    assert [b.slot.id for b in needs.bids()] == ["put-0", "put-2"]


def test_a_spend_cut_by_a_crash_leaves_the_standing_needs_as_before_or_as_after(tmp_path, monkeypatch) -> None:
    """Spending removes one need and shrinks another: a kill between the two writes kept half of it, and the
    restarted node asked its providers again for units it had already been served."""
    db = open_database(tmp_path / "db")
    needs = NeedRegistry(db=db, me="me", config=MarketSection())
    needs.add_standing("storage", 1000, 600)
    needs.add_standing("storage", 600, 600)
    writes = []

    def crash_on_the_second(write):
        def crashing(self, *args, **kwargs):
            writes.append(args[0])
            if len(writes) == 2:
                raise KeyboardInterrupt  # a kill -9, as far as this process goes
            return write(self, *args, **kwargs)
        return crashing

    monkeypatch.setattr(Database, "put", crash_on_the_second(Database.put))
    monkeypatch.setattr(Database, "delete", crash_on_the_second(Database.delete))
    try:
        needs.spend("storage", 1300)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    db.close()
    restarted = NeedRegistry(db=open_database(tmp_path / "db"), me="me", config=MarketSection())
    left = sorted(b.slot.quantity for b in restarted.standing())
    assert left in ([600, 1000], [300]), left
