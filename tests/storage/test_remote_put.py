"""A put whose shares go to other nodes, against holders in this process: the first segments read and encoded while
the begins are on their way, a refused begin replaced with every block reaching the replacement, a begin that
cannot be replaced failing the put with every upload taken back, and more batches in flight on a long path."""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest

from tests.support.shares import DEAL_PRICE, gateway_core, holder_net, in_flight
from tests.support.waiting import eventually_async
from xsc.errors import MarketNoDeal, PeerError, PeerRefused, PeerUnreachable
from xsc.node.appkeys import NODE
from xsc.storage import gateway_put, gateway_repair, remote
from xsc.storage.core import layout
from xsc.storage.core.merkle import block_hash
from xsc.storage.files import reader
from xsc.storage.gateway_core import GatewayCore
from xsc.storage.holder_client import RemoteHolder
from xsc.storage.put_budget import PutBudget
from xsc.storage.share_store import writing

SEGMENT = 4096
DATA = os.urandom(12 * SEGMENT)
WAIT = 10.0  # seconds a test waits for an event that must come


class Holding:
    """A holder on another node as the gateway sees it (storage/remote.py: Holder): it stages what it is sent in
    order and checks it against the hashes of the commit.  `refusing`: its begin refuses; `begin_after`: its begin
    answers once this event is set; `gate`: each batch is answered once this event is set; `round_trip`: the probes'
    average round trip to it."""

    def __init__(self, refusing: bool = False, begin_after: asyncio.Event | None = None,
                 gate: asyncio.Event | None = None, round_trip: float | None = None,
                 commit_answer_lost: bool = False, commit_after: asyncio.Event | None = None) -> None:
        self.refusing, self.begin_after, self.gate, self.round_trip = refusing, begin_after, gate, round_trip
        self.commit_answer_lost = commit_answer_lost  # it commits, but its answer never reaches the gateway
        self.commit_after = commit_after  # its commit answers once this event is set
        self.asked: list[str] = []
        self.blocks: list[bytes] = []
        self.committed: list[bytes] | None = None
        self.in_flight = self.most_in_flight = 0
        self.changed = asyncio.Condition()

    async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
        self.asked.append("begin")
        if self.begin_after is not None:
            await asyncio.wait_for(self.begin_after.wait(), WAIT)
        if self.refusing:
            raise PeerRefused("this holder is full", url="holding")
        return "upload"

    async def put_segments(self, upload, first, blocks) -> None:
        async with in_flight(self, self.gate, WAIT):
            async with self.changed:  # in order, as the holder's turns make them
                await asyncio.wait_for(self.changed.wait_for(lambda: len(self.blocks) == first), WAIT)
                self.blocks.extend(blocks)
                self.changed.notify_all()

    async def commit(self, upload, block_hashes, manifest, *, first=0, blocks=None) -> None:
        self.asked.append("commit")
        if blocks:  # the share's last blocks come with it: staged in their turn first
            await self.put_segments(upload, first, blocks)
        assert [block_hash(b) for b in self.blocks] == block_hashes
        self.committed = block_hashes
        if self.commit_after is not None:
            await asyncio.wait_for(self.commit_after.wait(), WAIT)
        if self.commit_answer_lost:
            raise PeerUnreachable("the connection was cut", url="holding", sent=True)

    async def abort(self, upload) -> None:
        self.asked.append("abort")
        if self.committed is not None:
            raise PeerRefused("no upload in progress", url="holding")

    async def delete(self, si, share) -> None:
        self.asked.append("delete")

    async def meta(self, si, share, segment_count=None, **_) -> dict:
        return {"block_hashes": self.committed, "segment_count": len(self.committed),
                "stored_bytes": sum(len(b) for b in self.blocks), "lease_expiry": int(time.time()) + 3600}

    async def touch(self, upload) -> None:
        self.asked.append("touch")


@pytest.fixture
def gateway(tmp_path):
    with gateway_core(tmp_path, SEGMENT) as core:
        yield core


async def _put(gateway: GatewayCore, holders: dict[str, Holding], spares: list[str], read_started=None):
    """Put DATA with shares 4 and 5 on holders "b" and "c", replacing a refusing one by the next spare;
    `read_started` is set as the upload's first bytes are read."""
    stream = io.BytesIO(DATA)

    async def read(n: int) -> bytes:
        if read_started is not None:
            read_started.set()
        return stream.read(n)

    def place(si: bytes, share_bytes: int):
        return ["me"] * 4 + ["b", "c"], {4: holders["b"], 5: holders["c"]}

    async def replace(share: int, tried: set):
        node = next((n for n in spares if n not in tried), None)
        return None if node is None else (node, holders[node])

    return await gateway_put.put(gateway, read, len(DATA), place=place, replace=replace, me="me")


async def test_the_first_segments_are_read_while_the_begins_are_on_their_way(gateway) -> None:
    reading = asyncio.Event()
    holders = {"b": Holding(begin_after=reading), "c": Holding(begin_after=reading)}
    result = await _put(gateway, holders, [], read_started=reading)
    assert result.placement == ["me"] * 4 + ["b", "c"]
    assert holders["b"].committed is not None and holders["c"].committed is not None


async def test_a_refused_begin_is_replaced_and_the_replacement_gets_every_block(gateway) -> None:
    reading = asyncio.Event()
    holders = {"b": Holding(refusing=True, begin_after=reading), "c": Holding(), "d": Holding()}
    result = await _put(gateway, holders, ["d"], read_started=reading)
    assert result.placement == ["me"] * 4 + ["d", "c"]
    assert holders["b"].blocks == [] and holders["b"].asked == ["begin"]
    assert holders["d"].committed is not None and len(holders["d"].blocks) == len(DATA) // SEGMENT


async def test_a_begin_that_cannot_be_replaced_fails_the_put_and_every_upload_is_taken_back(gateway) -> None:
    reading = asyncio.Event()
    holders = {"b": Holding(refusing=True, begin_after=reading), "c": Holding(), "d": Holding(refusing=True)}
    with pytest.raises(PeerError):
        await _put(gateway, holders, ["d"], read_started=reading)
    assert holders["c"].asked == ["begin", "abort"] and holders["c"].blocks == []
    assert gateway.store.reserved == 0


@pytest.mark.parametrize("round_trip, expected", [(None, remote.SEND_AHEAD), (remote.LONG_PATH / 2, remote.SEND_AHEAD),
                                                   (remote.LONG_PATH * 4, remote.SEND_AHEAD_LONG)])
async def test_a_long_path_keeps_more_batches_of_a_share_in_flight(gateway, monkeypatch, round_trip, expected) -> None:
    monkeypatch.setattr(remote, "SEND_BATCH", 1)  # a batch a segment
    assert remote.SEND_AHEAD_LONG > remote.SEND_AHEAD
    gate = asyncio.Event()
    holders = {"b": Holding(gate=gate, round_trip=round_trip), "c": Holding()}
    putting = asyncio.ensure_future(_put(gateway, holders, []))
    b = holders["b"]
    async with b.changed:
        await asyncio.wait_for(b.changed.wait_for(lambda: b.in_flight == expected), WAIT)
    gate.set()
    await putting
    assert b.most_in_flight == expected and b.committed is not None


async def test_a_holder_carries_the_probes_average_round_trip_to_its_node(node_factory) -> None:
    net = await holder_net(node_factory)
    a, b_id = net["a"].app[NODE], net["b"].app[NODE].peers.identity.id
    await a.health.probe_round()
    latency = a.peers.availability(b_id).latency_ms
    assert latency is not None and a.storage.holder(b_id).round_trip == latency / 1000
    assert a.storage.holder("f" * 64).round_trip is None  # a node it does not know


async def test_the_last_batch_goes_with_the_commit_while_the_batches_before_it_are_on_their_way(gateway,
                                                                                                monkeypatch) -> None:
    """The commit costs no round trip of its own: it leaves with the share's last blocks, without waiting for the
    earlier batches' answers (the holder stages them in order, then commits)."""
    monkeypatch.setattr(remote, "SEND_BATCH", 3 * layout.segment_block_length(SEGMENT))  # 4 batches of 3 segments
    gate = asyncio.Event()
    holders = {"b": Holding(gate=gate, round_trip=remote.LONG_PATH * 4), "c": Holding()}
    putting = asyncio.ensure_future(_put(gateway, holders, []))
    b = holders["b"]
    async with b.changed:  # three batches unanswered and the last with the commit
        await asyncio.wait_for(b.changed.wait_for(lambda: b.in_flight == 4), WAIT)
    assert b.asked == ["begin", "commit"] and b.committed is None
    gate.set()
    result = await putting
    assert result.placement == ["me"] * 4 + ["b", "c"]
    assert b.committed is not None and len(b.blocks) == len(DATA) // SEGMENT and b.most_in_flight == 4


async def test_a_commit_whose_answer_is_lost_is_taken_back_and_the_put_goes_on_without_the_share(gateway) -> None:
    """The holder committed but the gateway never heard it: the put publishes the file without the share, which
    stays noted to delete (the holder, which did not answer, is not kept waiting for), and is deleted there once the
    copies noted are released (at the next start, and every storage.gc_interval)."""
    holders = {"b": Holding(commit_answer_lost=True), "c": Holding()}
    result = await _put(gateway, holders, [])
    assert holders["b"].asked == ["begin", "commit"] and holders["c"].asked == ["begin", "commit"]
    si = result.capability.storage_index
    assert result.placement == ["me"] * 5 + ["c"] and "share 4" in result.lost
    assert [(found, noted) for found, noted, _ in gateway.store.strays()] == [(si, {4: "b"})]
    assert list(gateway.store.damaged(si)) == [4] and gateway.store.damaged_files() == [si]
    assert await gateway_repair.release_strays(gateway, holders.__getitem__, si) == 1
    assert holders["b"].asked[-1] == "delete" and "delete" not in holders["c"].asked and gateway.store.strays() == []


async def test_the_copies_a_put_commits_are_noted_to_delete_until_the_write_that_records_its_file(gateway) -> None:
    """A kill -9 between the holders' commits and the file's record leaves copies no file holds: noted before the
    commits, they are deleted at the next start (gateway_repair.release_strays), and not while the put goes on."""
    committing = asyncio.Event()
    holders = {"b": Holding(), "c": Holding(commit_after=committing)}
    put = asyncio.ensure_future(_put(gateway, holders, []))
    await eventually_async(lambda: holders["c"].committed is not None, "the holders to commit", WAIT)
    [(si, noted, _)] = gateway.store.strays()
    assert noted == {4: "b", 5: "c"} and list(gateway.putting) == [si]
    assert await gateway_repair.release_strays(gateway, holders.__getitem__, si) == 0  # the put's own
    assert "delete" not in holders["b"].asked + holders["c"].asked

    committing.set()
    result = await put
    assert result.capability.storage_index == si and gateway.store.file_record(si) is not None
    assert gateway.store.strays() == [] and not gateway.putting


def _remote_bytes(segments: int) -> int:
    """What `segments` segments of DATA hold for the two holders of `_put`."""
    return 2 * segments * layout.segment_block_length(SEGMENT)


async def test_puts_at_once_share_one_budget_of_blocks_on_their_way_and_give_all_of_it_back(gateway,
                                                                                            monkeypatch) -> None:
    monkeypatch.setattr(remote, "SEND_BATCH", 4 * layout.segment_block_length(SEGMENT))  # batches of 4 segments
    gateway.sending = PutBudget(_remote_bytes(3))  # less than one put's batch: each sends on what it holds first
    gateway.budget = PutBudget(SEGMENT)  # and one segment at a time in all: a put waiting for either holds neither
    most = 0
    take = gateway.sending.try_take

    def taking(n: int) -> bool:
        nonlocal most
        taken = take(n)
        most = max(most, gateway.sending.held)
        return taken

    monkeypatch.setattr(gateway.sending, "try_take", taking)
    holders = [{"b": Holding(), "c": Holding()} for _ in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*(_put(gateway, h, []) for h in holders)), WAIT)
    assert [r.placement for r in results] == [["me"] * 4 + ["b", "c"]] * 3
    assert all(len(h["b"].blocks) == len(DATA) // SEGMENT for h in holders)
    assert 0 < most <= _remote_bytes(3) and gateway.sending.held == 0 and gateway.sending.waiting == 0


class Failing(Holding):
    """A holder that fails the share's batches from segment 4 on with `error` (its upload begun and fed before)."""

    def __init__(self, error: PeerError) -> None:
        super().__init__()
        self.error = error

    async def put_segments(self, upload, first, blocks) -> None:
        if first >= 4:
            raise self.error
        await super().put_segments(upload, first, blocks)

    async def commit(self, upload, block_hashes, manifest, *, first=0, blocks=None) -> None:
        self.asked.append("commit")
        raise self.error


CUT = PeerUnreachable("the connection was cut", url="failing")
GONE = PeerRefused("no upload in progress", url="failing", peer_status=404, peer_code="upload-not-found")
FAULT = PeerRefused("internal error", url="failing", peer_status=500, peer_code="internal-error")


@pytest.mark.parametrize("error", [CUT, GONE, FAULT], ids=["cut", "upload-not-found", "5xx"])
async def test_a_holder_that_fails_a_share_mid_put_loses_the_put_that_share_only(gateway, monkeypatch,
                                                                                  error) -> None:
    """A holder killed, restarted, or whose upload was aborted to make room while its share's blocks went: its upload
    is aborted there, the file published without the share (no deal, no copy noted to delete), the share marked
    damaged in the same write, for the repair loop to rebuild here."""
    monkeypatch.setattr(remote, "SEND_BATCH", 2 * layout.segment_block_length(SEGMENT))
    holders = {"b": Failing(error), "c": Holding()}
    result = await _put(gateway, holders, [])
    si = result.capability.storage_index
    assert result.placement == ["me"] * 5 + ["c"]
    assert result.lost.startswith("node b failed share 4 (") and "rebuilds it on this node" in result.lost
    assert result.to_json()["lost"] == result.lost
    # Only a holder that answered is asked to abort: one that did not, or holds no upload, is not waited for.
    assert holders["b"].asked == ["begin"] + (["abort"] if error is FAULT else [])
    assert holders["c"].committed is not None and len(holders["c"].blocks) == len(DATA) // SEGMENT
    _, metas, bad = gateway.load(result.capability)
    assert sorted(metas) == [0, 1, 2, 3] and bad == {4: "missing", 5: "missing"}  # (5: on c, not read here)
    assert list(gateway.store.damaged(si)) == [4] and gateway.store.damaged_files() == [si]
    assert gateway.store.strays() == [] and gateway.store.file_record(si)["placement"] == result.placement
    assert gateway.sending.held == 0 and gateway.budget.held == 0 and gateway.store.reserved == 0

    # A repair's writer (not `may_lose`) fails its repair on the same error, which then places the share elsewhere.
    block = b"x" * layout.segment_block_length(SEGMENT)
    repairing = remote.RemoteShareWriter(Failing(error), "b", si, 4)
    await repairing.begin(8 * SEGMENT, SEGMENT, 0)
    with pytest.raises(PeerError):
        for _ in range(7):
            await repairing.add(block)
        await repairing.commit([block_hash(block)] * 8, b"manifest")
    assert repairing.lost is None
    await repairing.undo()


async def test_a_share_lost_by_a_put_that_keeps_none_here_is_rebuilt_on_another_node(gateway, monkeypatch) -> None:
    """A put that keeps no share on this node on purpose (`--spread`, this node in `--avoid`, or it offers no
    storage): its share lost is listed in the file's record, written with its damage mark, and the repair rebuilds it
    on a node the relocator offers, never here; with none offered the repair fails and changes nothing."""
    monkeypatch.setattr(remote, "SEND_BATCH", 2 * layout.segment_block_length(SEGMENT))
    holders = {"b": Failing(CUT), "c": Holding(), "d": Holding()}
    result = await gateway_put.put(gateway, reader(DATA), len(DATA), me="me", rebuild_away=True,
                                   place=lambda si, n: (["me"] * 4 + ["b", "c"], {4: holders["b"], 5: holders["c"]}))
    si = result.capability.storage_index
    assert result.lost.endswith("the repair loop rebuilds it on another node"), result.lost
    assert gateway.store.file_record(si)["away"] == [4] and list(gateway.store.damaged(si)) == [4]
    names, away = list(result.placement), gateway.store.file_record(si)["away"]
    asked: list[set] = []

    async def nowhere(share: int, used: set, failed: dict):
        asked.append(used)
        return None

    with pytest.raises(MarketNoDeal, match="no other node takes share 4 of this file"):
        await gateway_repair.repair(gateway, result.capability, {5: holders["c"]}, names, nowhere, "me", away=away)
    assert all("me" in used for used in asked) and list(gateway.store.damaged(si)) == [4]
    assert gateway.store.file_record(si)["placement"] == names and 4 not in gateway.load(result.capability)[1]

    async def relocate(share: int, used: set, failed: dict):
        asked.append(used)
        return None if "c" in used else ("d", holders["d"])  # offered once nodes holding shares may be

    asked.clear()
    repaired = await gateway_repair.repair(gateway, result.capability, {5: holders["c"]}, names, relocate, "me",
                                           away=away)
    assert repaired["repaired"] == [4] and repaired["placement"] == ["me"] * 4 + ["d", "c"]
    assert asked == [{"me", "c"}, {"me"}]  # a node free of the file's shares first, then any but this one
    assert holders["d"].committed is not None and 4 not in gateway.load(result.capability)[1]
    assert list(gateway.store.damaged(si)) == [] and gateway.store.file_record(si)["placement"] == repaired["placement"]


async def test_a_put_that_lost_a_share_says_how_many_node_losses_the_shares_it_placed_survive(gateway,
                                                                                             monkeypatch) -> None:
    """A spread put on six nodes whose holder of share 5 is lost: until the repair rebuilds it, five shares on five
    nodes survive the loss of one node, not two (the placement names this node for the missing share, which holds
    none of it)."""
    monkeypatch.setattr(remote, "SEND_BATCH", 2 * layout.segment_block_length(SEGMENT))
    holders = {**{n: Holding() for n in "abcde"}, "f": Failing(CUT)}
    result = await gateway_put.put(gateway, reader(DATA), len(DATA), me="me", rebuild_away=True,
                                   place=lambda si, n: ([*holders], dict(enumerate(holders.values()))))
    assert result.placement == [*"abcde", "me"] and "share 5" in result.lost
    answer = result.to_json()
    assert (answer["nodes"], answer["node_failures_survived"]) == (5, 1), answer
    assert answer["placement_note"] == "the 5 shares are on 5 nodes: the file survives the loss of any 1 of them"


async def test_a_put_whose_holders_fail_too_many_shares_fails_and_gives_everything_back(gateway, monkeypatch) -> None:
    """Two shares lost of six leave the file no loss to spare: the put fails saying so, with nothing kept; and so
    does one whose holder refuses a batch as wrong."""
    monkeypatch.setattr(remote, "SEND_BATCH", 2 * layout.segment_block_length(SEGMENT))
    with pytest.raises(PeerError) as failed:
        await _put(gateway, {"b": Failing(CUT), "c": Failing(GONE)}, [])
    assert str(failed.value).startswith("only 4 of 6 shares could be placed (5 are needed")
    assert "node b failed share 4 (peer-unreachable)" in str(failed.value)
    assert "node c failed share 5 (upload-not-found)" in str(failed.value)
    assert gateway.sending.held == 0 and gateway.budget.held == 0 and gateway.store.reserved == 0
    assert gateway.store.damaged_files() == [] and gateway.store.strays() == [] and not gateway.putting

    # Only a holder lost (no answer, its upload gone, its own fault) loses a share; a request it found wrong is this
    # node's fault, which a put never hides.
    wrong = PeerRefused("segment 4 out of order", url="failing", peer_status=409, peer_code="segment-out-of-order")
    with pytest.raises(PeerError, match="out of order"):
        await _put(gateway, {"b": Failing(wrong), "c": Holding()}, [])
    assert gateway.sending.held == 0 and gateway.budget.held == 0 and gateway.store.reserved == 0


async def test_a_put_whose_client_pauses_sends_on_the_blocks_it_holds_for_other_nodes(gateway) -> None:
    """A client that stops sending for a while holds none of the budget of blocks on their way: what its put holds
    for other nodes goes to them, though a batch is not full."""
    resume = asyncio.Event()
    stream = io.BytesIO(DATA)

    async def read(n: int) -> bytes:
        if stream.tell() >= 3 * SEGMENT:
            await resume.wait()
        return stream.read(n)

    holders = {"b": Holding(), "c": Holding()}
    putting = asyncio.ensure_future(gateway_put.put(
        gateway, read, len(DATA), place=lambda si, n: (["me"] * 4 + ["b", "c"], {4: holders["b"], 5: holders["c"]}),
        me="me"))
    b = holders["b"]
    async with b.changed:
        await asyncio.wait_for(b.changed.wait_for(lambda: len(b.blocks) == 3), WAIT)
    await eventually_async(lambda: gateway.sending.held == 0, "the paused put holding nothing for the holders")
    resume.set()
    await asyncio.wait_for(putting, WAIT)
    assert len(b.blocks) == len(DATA) // SEGMENT and gateway.sending.held == 0


async def test_a_writer_touches_its_upload_only_once_nothing_was_sent_for_a_while() -> None:
    """`keep_alive` (the gateway's loop, for the puts that wait) touches a begun upload once no request about it was
    sent or answered for KEEP_ALIVE seconds; never while a batch is on its way, nor once its commit is sent."""
    gate = asyncio.Event()
    holder = Holding(gate=gate)
    writer = remote.RemoteShareWriter(holder, "b", b"\0" * 32, 4)
    await writer.keep_alive(time.monotonic() + remote.KEEP_ALIVE)  # not begun: nothing to touch
    await writer.begin(3 * SEGMENT, SEGMENT, 0)
    await writer.keep_alive(time.monotonic())
    assert holder.asked == ["begin"]
    await writer.keep_alive(time.monotonic() + remote.KEEP_ALIVE)
    await writer.keep_alive(time.monotonic() + remote.KEEP_ALIVE)  # touched just now
    assert holder.asked == ["begin", "touch"]
    await writer.add(b"x" * remote.SEND_BATCH)  # a batch on its way, its answer held back
    await writer.keep_alive(time.monotonic() + 3 * remote.KEEP_ALIVE)
    assert holder.asked == ["begin", "touch"]
    gate.set()
    await eventually_async(lambda: holder.blocks, "the batch answered", WAIT)
    await writer.commit([block_hash(b"x" * remote.SEND_BATCH)], b"manifest")
    await writer.keep_alive(time.monotonic() + 3 * remote.KEEP_ALIVE)
    assert holder.asked == ["begin", "touch", "commit"]


async def test_a_begin_a_holder_rate_limits_is_sent_again_after_its_retry_after(node_factory) -> None:
    """A holder that rate limits this node's requests answers a begin 429 with Retry-After: the put sends the begin
    once more after that wait, as it does a body a busy holder refused, rather than fail the share there."""
    quiet = {"health": {"probe_interval": 3600}}
    holder = await node_factory("holder", **quiet, peers={"gossip_interval": 3600, "rate_limit": 1.0})
    gateway = await node_factory("gateway", **quiet, peers={"gossip_interval": 3600}, storage={"segment_size": SEGMENT})
    b_url, b_id = holder.app[NODE].peers.url, holder.app[NODE].peers.identity.id
    await gateway.app[NODE].peers.add(b_url)
    b = RemoteHolder(gateway.app[NODE].peers.client, b_id, b_url, DEAL_PRICE)
    for _ in range(10):  # its burst spent: the next request within a second is refused
        try:
            await b.meta(os.urandom(32), 0)
        except PeerRefused as err:
            if err.details["peer_status"] == 429:
                break
    else:
        pytest.fail("the holder never rate limited this node")
    stream = io.BytesIO(DATA)

    async def read(n: int) -> bytes:
        return stream.read(n)

    result = await gateway.app[NODE].gateway.put(read, len(DATA), place=lambda si, _: (["me"] * 5 + [b_id], {5: b}),
                                                 me="me")
    assert result.placement == ["me"] * 5 + [b_id] and not result.lost
    assert [m.share for m in holder.app[NODE].gateway.store.share_metas(result.capability.storage_index)] == [5]


async def test_a_put_of_one_large_segment_begins_its_shares_here_before_another_node_learns_its_storage_index(
        tmp_path) -> None:
    """A file of one segment whose blocks are too large to go whole begins its remote shares as it is read: the
    upload of the shares kept here is begun before, so that a holder told the storage index cannot begin one of
    them here first (its upload would stage under the same keys, and its abort delete what the put wrote)."""
    segment = 8 * 1024 * 1024
    data = os.urandom(5 * 1024 * 1024)  # blocks of 1.25 MiB: past a whole share's
    seen = []
    with gateway_core(tmp_path, segment) as core:

        class Telling(Holding):
            async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
                seen.append(writing(core.store, si, 0))
                return await super().begin(si, share, size, segment_size, lease_expiry)

        stream = io.BytesIO(data)

        async def read(n: int) -> bytes:
            return stream.read(n)

        result = await gateway_put.put(core, read, len(data), place=lambda si, _: (["me"] * 5 + ["b"], {5: Telling()}),
                                       me="me")
        assert result.placement == ["me"] * 5 + ["b"] and seen == [True]
