"""A file's removal begun while a repair of it runs (in one write with another owner's records, as a job's new run
replaces its last run's outputs, without the file's repair lock): the repair writes neither placement nor deals for
it and gives back the copy it moved, and the removal finishes with nothing of the file left on any node.  A holder
that no longer has its share has nothing left to delete: only the holders that did not answer are named and noted.
A share a repair moved off a holder that did not answer is noted, and deleted there once it answers; a holder its
probes find down is not asked meanwhile."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import pytest

from xsc.errors import NotFound, PeerUnreachable
from xsc.node.appkeys import NODE
from xsc.storage import Capability, holder_client, remote

from tests.support.waiting import eventually_async


QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
WAIT = 30.0  # seconds a test waits for an event that must come


def _id(node) -> str:
    return node.app[NODE].peers.identity.id


@pytest.fixture
async def spread(node_factory):
    """a (the gateway) put a file over itself, b and c, then came to know d, which holds nothing of it:
    (nodes by name, capability, placement)."""
    nodes = {name: await node_factory(name, storage={"segment_size": 4096}, **QUIET) for name in "abcd"}
    a = nodes["a"]
    for name in "bc":
        await a.app[NODE].peers.add(nodes[name].app[NODE].peers.url)
    response = await a.post("/v1/store/files", params={"name": "spread"}, data=os.urandom(40_000))
    assert response.status == 201, await response.text()
    put = await response.json()
    assert set(put["placement"]) == {_id(nodes[n]) for n in "abc"}, put["placement"]
    await a.app[NODE].peers.add(nodes["d"].app[NODE].peers.url)
    d = _id(nodes["d"])

    async def offered() -> bool:
        await a.app[NODE].market.fill_book(kind="storage", wanted=4)
        return a.app[NODE].market.book.get(d) is not None
    await eventually_async(offered, "d's storage offer in a's book", WAIT)
    return nodes, Capability.parse(put["capability"]), put["placement"]


async def test_a_removal_begun_while_a_repair_moves_a_share_leaves_nothing_of_the_file_anywhere(spread,
                                                                                                monkeypatch) -> None:
    nodes, cap, placement = spread
    si = cap.storage_index
    a = nodes["a"].app[NODE]
    lost = placement.index(_id(nodes["b"]))
    a.store.mark_damaged(si, lost, "a failed audit", _id(nodes["b"]))  # the repair moves it to d, the node spare
    committed, go_on = asyncio.Event(), asyncio.Event()
    commit = remote.RemoteShareWriter.commit

    async def held(writer, *args, **kwargs):
        result = await commit(writer, *args, **kwargs)
        committed.set()  # the copy is on d: the repair writes its placement next
        await asyncio.wait_for(go_on.wait(), WAIT)
        return result

    monkeypatch.setattr(remote.RemoteShareWriter, "commit", held)
    repair = asyncio.ensure_future(a.storage.repair(cap))
    await asyncio.wait_for(committed.wait(), WAIT)
    assert nodes["d"].app[NODE].gateway.store.share_meta(si, lost) is not None
    await a.storage.removals.begin([cap], int(time.time()), {})  # as a job's new run replaces its outputs
    go_on.set()
    [outcome] = await asyncio.gather(repair, return_exceptions=True)
    await a.storage.removals.finish([cap])

    for name, node in nodes.items():
        assert node.app[NODE].gateway.store.share_metas(si) == [], f"node {name} still holds a share of the file"
    assert a.store.file_record(si) is None and a.store.removals() == [] and a.store.strays() == []
    deals = a.deals.of_file(si)
    assert {d.node for d in deals} <= set(placement) and all(d.ended for d in deals), deals
    assert isinstance(outcome, NotFound) and "removed while it was being repaired" in str(outcome), outcome


async def test_a_repair_asked_for_once_a_removal_began_and_before_it_finished_is_refused(spread) -> None:
    nodes, cap, placement = spread
    si = cap.storage_index
    a = nodes["a"].app[NODE]
    lost = placement.index(_id(nodes["b"]))
    a.store.mark_damaged(si, lost, "a failed audit", _id(nodes["b"]))
    await a.storage.removals.begin([cap], int(time.time()), {})
    with pytest.raises(NotFound, match="removed while its repair waited"):  # not repaired as another node's file
        await a.storage.repair(cap)
    assert nodes["d"].app[NODE].gateway.store.share_metas(si) == []
    await a.storage.removals.finish([cap])
    for name, node in nodes.items():
        assert node.app[NODE].gateway.store.share_metas(si) == [], f"node {name} still holds a share of the file"
    assert all(d.ended and d.node in placement for d in a.deals.of_file(si))


async def test_a_removal_counts_a_share_its_holder_no_longer_has_as_deleted(spread, monkeypatch) -> None:
    nodes, cap, placement = spread
    si = cap.storage_index
    a = nodes["a"].app[NODE]
    b, c = _id(nodes["b"]), _id(nodes["c"])
    assert nodes["b"].app[NODE].gateway.store.delete_share(si, placement.index(b))  # lost on b: its delete is a 404
    delete = holder_client.RemoteHolder.delete

    async def c_unreachable(holder, si, share):
        if holder.node_id == c:
            raise PeerUnreachable(f"peer {holder.url} did not answer")
        return await delete(holder, si, share)

    monkeypatch.setattr(holder_client.RemoteHolder, "delete", c_unreachable)
    removed = await a.storage.removals.remove(cap)
    assert set(removed["not_deleted_on"]) == {c}, removed  # b has nothing of the file left; c may still
    assert [set(shares.values()) for _, shares, _ in a.store.strays()] == [{c}]

async def _repaired_while_b_is_down(nodes, cap, placement, monkeypatch) -> tuple[int, set[str], list]:
    """The file repaired by a while b answers nothing (its requests refused, each one noted): the share moved off b,
    the set of nodes down (clear it to bring b back), and b's requests asked meanwhile."""
    a, b = nodes["a"].app[NODE], _id(nodes["b"])
    lost, call = placement.index(b), holder_client.RemoteHolder._call
    down, asked = {b}, []

    async def b_down(holder, *args, **kwargs):
        if holder.node_id in down:
            asked.append(args)
            raise PeerUnreachable(f"peer {holder.url} is unreachable: connection refused")
        return await call(holder, *args, **kwargs)

    monkeypatch.setattr(holder_client.RemoteHolder, "_call", b_down)
    repaired = await a.storage.repair(cap)
    assert repaired["repaired"] == [lost] and repaired["placement"][lost] != b, repaired
    return lost, down, asked


async def test_a_share_moved_off_a_holder_that_did_not_answer_is_deleted_there_once_it_answers(spread,
                                                                                              monkeypatch) -> None:
    nodes, cap, placement = spread
    si = cap.storage_index
    a = nodes["a"].app[NODE]
    lost, down, _ = await _repaired_while_b_is_down(nodes, cap, placement, monkeypatch)
    assert nodes["b"].app[NODE].gateway.store.share_meta(si, lost) is not None  # b, down, kept its copy

    down.clear()  # b answers again: the removal deletes the copy the repair left there with the file's shares
    removed = await a.storage.removals.remove(cap)
    assert removed["not_deleted_on"] == {}, removed
    for name, node in nodes.items():
        assert node.app[NODE].gateway.store.share_metas(si) == [], f"node {name} still holds a share of the file"
    assert a.store.strays() == []


async def test_the_copy_left_on_a_holder_probed_down_waits_for_a_probe_to_find_it_up(spread, monkeypatch) -> None:
    nodes, cap, placement = spread
    si = cap.storage_index
    a = nodes["a"].app[NODE]
    b = _id(nodes["b"])
    lost, down, asked = await _repaired_while_b_is_down(nodes, cap, placement, monkeypatch)
    assert [set(shares.values()) for _, shares, _ in a.store.strays()] == [{b}]
    availability = type(a.peers).availability
    probed = {b: False}

    def as_probed(peers, node):
        found = availability(peers, node)
        return replace(found, up=probed[node]) if node in probed else found

    monkeypatch.setattr(type(a.peers), "availability", as_probed)
    asked.clear()
    await a.storage.removals.release_strays()  # a round of the node's storage-strays loop
    assert asked == [] and [set(shares.values()) for _, shares, _ in a.store.strays()] == [{b}]

    probed[b] = True  # a probe finds b up, and it answers: the copy goes
    down.clear()
    await a.storage.removals.release_strays()
    assert a.store.strays() == []
    assert nodes["b"].app[NODE].gateway.store.share_meta(si, lost) is None


async def test_a_removal_a_full_disk_stopped_halfway_is_said_so_and_finished_by_the_same_rm_again(node,
                                                                                                  monkeypatch) -> None:
    """The file is unlisted first, durably; the records of its shares are deleted after.  A full disk refusing that
    second write answers 507 saying the file is no longer listed (not that nothing was stored), and the rm the answer
    says to run again finishes the removal, not "no file with that capability" while its bytes stay counted."""
    import plyvel

    store = node.app[NODE].storage.store
    used = store.used
    response = await node.post("/v1/store/files", params={"name": "half"}, data=os.urandom(200_000))
    assert response.status == 201, await response.text()
    cap = (await response.json())["capability"]
    real = store.delete_files

    def full(sis: list[bytes]) -> None:
        raise plyvel.IOError(b"IO error: db/000007.log: No space left on device")

    monkeypatch.setattr(store, "delete_files", full)
    refused = await node.delete(f"/v1/store/files/{cap}")
    problem = await refused.json(content_type=None)
    assert refused.status == 507 and "no longer listed" in problem["detail"], problem
    assert "xsc store rm again" in problem["hint"], problem
    assert (await (await node.get("/v1/store/files")).json())["files"] == []

    monkeypatch.setattr(store, "delete_files", real)  # room again
    again = await node.delete(f"/v1/store/files/{cap}")
    assert again.status == 200, await again.text()
    assert store.used == used and store.removals() == []
    gone = await node.delete(f"/v1/store/files/{cap}")
    assert gone.status == 404
