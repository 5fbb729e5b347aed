"""A repair against holders in this process that lie while they are read from: the shares it reads to rebuild the
broken ones are hashed block by block, and a holder that sends bad blocks has its own share marked damaged and
rebuilt by the same repair, never spread."""

from __future__ import annotations

import io
import os
import time

import pytest

from xsc import codec, keys
from xsc.errors import NotEnoughShares
from xsc.storage import gateway_get, gateway_put, gateway_repair, remote
from xsc.storage.core import erasure

from tests.support.shares import Holding, gateway_core

SEGMENT = 4096
NAMES = ["b", "c"] + ["me"] * 4  # shares 0 and 1 on other nodes, the rest here


async def _put(gateway, holders: dict[int, Holding], data: bytes):
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    result = await gateway_put.put(gateway, read, len(data), place=lambda si, size: (list(NAMES), holders), me="me")
    return result.capability


async def _get(gateway, cap, holders, names) -> bytes:
    size, chunks = await gateway_get.open_file(gateway, cap, holders, names)
    return b"".join([chunk async for chunk in chunks])


@pytest.fixture
async def stored(tmp_path):
    """A file put through a gateway in this process, shares 0 and 1 on holders (fakes), the rest here:
    (gateway, holders, data, capability)."""
    data = os.urandom(6 * SEGMENT + 5)
    holders = {0: Holding(), 1: Holding()}
    with gateway_core(tmp_path, SEGMENT) as gateway:
        yield gateway, holders, data, await _put(gateway, holders, data)


async def test_a_holder_that_sends_bad_blocks_to_a_repair_has_its_share_rebuilt_by_it(stored) -> None:
    gateway, holders, data, cap = stored
    si = cap.storage_index
    gateway.store.delete_share(si, 2)  # a share here lost: the repair reads shares 0, 1 and 3 to rebuild it
    holders[0].lying = True  # its metadata checks out; the blocks it sends do not
    result = await gateway_repair.repair(gateway, cap, holders, list(NAMES), me="me")
    # Share 2 rebuilt from the honest shares, and share 0 found bad while it was read, rebuilt here.
    assert result["repaired"] == [0, 2] and result["placement"] == ["me", "c"] + ["me"] * 4
    assert holders[0].deleted and gateway.store.damaged(si) == {}
    reports = await gateway_repair.verify(gateway, cap, {1: holders[1]}, result["placement"])
    assert [r.status for r in reports] == ["ok"] * erasure.N
    assert await _get(gateway, cap, {1: holders[1]}, result["placement"]) == data
    # Run again, the repair finds nothing to do.
    assert (await gateway_repair.repair(gateway, cap, {1: holders[1]}, result["placement"], me="me")
            )["repaired"] == []


async def test_a_repair_short_of_intact_shares_because_a_holder_lies_names_it_and_changes_nothing(stored) -> None:
    gateway, holders, data, cap = stored
    si = cap.storage_index
    for share in (2, 3):  # four shares left, one of them on a holder that lies
        gateway.store.delete_share(si, share)
    holders[0].lying = True
    with pytest.raises(NotEnoughShares, match=r"segment 0 cannot be rebuilt: shares \[0, 2, 3\]"):
        await gateway_repair.repair(gateway, cap, holders, list(NAMES), me="me")
    assert sorted(m.share for m in gateway.store.share_metas(si)) == [4, 5]  # nothing rebuilt half-way
    assert list(gateway.store.damaged(si)) == [0] and not holders[0].deleted
    # The next attempt knows why at once, and names the shares that are missing.
    with pytest.raises(NotEnoughShares, match=r"only 3 of 6 shares are intact and 4 are needed: share 0 on "
                                              r"node b, shares 2, 3 here are missing, unreachable or corrupt; "
                                              r"nothing was changed") as err:
        await gateway_repair.repair(gateway, cap, holders, list(NAMES), me="me")
    assert err.value.details["missing_shares"] == [0, 2, 3]
    holders[0].lying = False  # its share was intact all along: nothing of the file was lost
    assert await _get(gateway, cap, holders, list(NAMES)) == data


class Crash(Exception):
    """The node's process ending there (kill -9): nothing after it runs."""


@pytest.mark.parametrize("at", ["placement", "publish", "marks"])
async def test_a_repair_cut_short_at_any_step_of_its_end_is_finished_by_the_next_one(stored, monkeypatch,
                                                                                     at: str) -> None:
    gateway, holders, data, cap = stored
    si = cap.storage_index
    holders[0].lying = True
    gateway.store.mark_damaged(si, 0, "failed an audit on node b")  # as a failed audit marks it
    placement = list(NAMES)

    def placed(si: bytes, before: list[str], after: list[str], lease: int) -> None:
        if at == "placement":
            raise Crash()
        placement[:] = after
        gateway.store.set_placement(si, after)

    async def publish(*args, **kwargs) -> None:
        raise Crash()

    if at == "publish":
        monkeypatch.setattr(gateway.publisher, "publish", publish)
    if at == "marks":
        monkeypatch.setattr(gateway.store, "clear_damage", lambda si, share: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        await gateway_repair.repair(gateway, cap, holders, list(placement), me="me", placed=placed)
    monkeypatch.undo()
    at = "done"
    # After the restart the placement on record is what the next repair starts from.
    remote = {s: holders[s] for s, node in enumerate(placement) if node != "me"}
    result = await gateway_repair.repair(gateway, cap, remote, list(placement), me="me", placed=placed)
    assert result["placement"] == placement == ["me", "c"] + ["me"] * 4
    assert gateway.store.damaged(si) == {}
    reports = await gateway_repair.verify(gateway, cap, {1: holders[1]}, placement)
    assert [r.status for r in reports] == ["ok"] * erasure.N
    assert await _get(gateway, cap, {1: holders[1]}, placement) == data


async def test_a_mark_left_on_a_share_that_moved_since_holds_no_more(stored) -> None:
    # A node reading another's file marks the share a holder sent bad blocks of; its uploader moves the share to a
    # node of its own choosing.  The reader's mark must not make that share look corrupt, nor be rebuilt again.
    gateway, holders, data, cap = stored
    si = cap.storage_index
    holders[0].lying = True
    assert await _get(gateway, cap, holders, list(NAMES)) == data
    assert list(gateway.store.damaged(si)) == [0]
    moved = {0: Holding(), 1: holders[1]}  # share 0 now on node x, intact
    moved[0].stored = list(holders[0].stored)
    now = ["x", "c"] + ["me"] * 4
    reports = await gateway_repair.check(gateway, cap, moved, now)
    assert [r.status for r in reports] == ["ok"] * erasure.N
    assert (await gateway_repair.repair(gateway, cap, moved, now, me="me"))["repaired"] == []
    assert gateway.store.damaged(si) == {}  # the mark that no longer holds is gone
    gateway.store.mark_damaged(si, 0, "bad or missing blocks in segments [0]", "b")
    # On the node it was found on, a mark still holds.
    assert gateway.store.damage_marks(si) == {0: ("bad or missing blocks in segments [0]", "b")}
    assert [r.status for r in await gateway_repair.check(gateway, cap, holders, list(NAMES))][0] == "corrupt"


async def test_a_copy_a_repair_committed_and_never_placed_is_released_and_a_placed_one_kept(stored, monkeypatch) -> None:
    """A repair killed after its new holder committed the share and before the placement was written left that copy
    under no deal, unpaid: its note names it, and the next start (or repair of the file) deletes it there, unless
    the placement holds it after all."""
    gateway, holders, data, cap = stored
    si = cap.storage_index
    holders[0].stored = []  # share 0 lost on its holder: the repair moves it to `d`
    d = Holding()

    async def relocate(share, used, failed):
        return "d", d

    def killed(si, before, after, lease):
        raise SystemExit("killed")  # kill -9 between the commits and the placement: nothing is undone

    async def no_undo(self) -> None:
        pass

    monkeypatch.setattr(remote.RemoteShareWriter, "undo", no_undo)
    with pytest.raises(SystemExit):
        await gateway_repair.repair(gateway, cap, holders, list(NAMES), relocate=relocate, me="me", placed=killed)
    assert d.stored and not d.deleted  # committed there, and no placement names it
    [(noted, shares, _)] = gateway.store.strays()
    assert (noted, shares) == (si, {0: "d"})

    # Placed after all (the placement written, the note not yet dropped): kept, and the note goes.
    gateway.store.db.put(keys.file(si), codec.dumps({"storage_index": si.hex(), "placement": ["d"] + NAMES[1:]}))
    assert await gateway_repair.release_strays(gateway, {"d": d}.__getitem__, si) == 0
    assert not d.deleted and gateway.store.strays() == []
    # A placement written drops from the note the copies it holds, and only those.
    gateway.store.note_strays(si, {0: "d", 1: "e"}, int(time.time()) + 3600)
    gateway.store.set_placement(si, ["d"] + NAMES[1:])
    assert [shares for _, shares, _ in gateway.store.strays()] == [{1: "e"}]
    gateway.store.set_placement(si, ["d", "e"] + NAMES[2:])
    assert gateway.store.strays() == []
    # Not placed: deleted there, and the note goes.
    gateway.store.note_strays(si, {0: "d"}, int(time.time()) + 3600)
    gateway.store.db.put(keys.file(si), codec.dumps({"storage_index": si.hex(), "placement": list(NAMES)}))
    assert await gateway_repair.release_strays(gateway, {"d": d}.__getitem__, si) == 1
    assert d.deleted and gateway.store.strays() == []
    # Their lease over, the copies are their holder's lease GC's: none is asked for, and the note goes.
    gateway.store.note_strays(si, {0: "gone"}, int(time.time()) - 1)
    assert await gateway_repair.release_strays(gateway, {}.__getitem__, si) == 0
    assert gateway.store.strays() == []
