"""A share of one segment placed on another node in one request (storage/core/wire.py: a whole share): the begin,
block and commit of the three-request upload at once, each of their refusals still made, nothing left behind;
several such shares in one request, each placed or refused on its own; and the gateway that places a small file's
remote shares so, a refusing holder replaced before the put fails."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import plyvel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.disks import tmpfs
from tests.support.nodes import close_node, node_config, serve
from xsc import codec
from xsc.identity import sign_request
from xsc.errors import InvalidArgument, PeerError, PeerRefused, PeerUnreachable
from xsc.net.peer_client import PeerResponse
from xsc.node.appkeys import METRICS, NODE
from xsc.storage.core import wire
from xsc.storage.core.merkle import block_hash
from xsc.storage.core.wire import WholeShare, parse_whole_shares, whole_shares_body
from xsc.storage.gateway_core import GatewayCore
from xsc.storage.gateway_put import put
from xsc.storage import holder_client
from xsc.storage.holder_client import RemoteHolder, SenderLanes
from xsc.storage.share_store import ShareStore

from tests.support.shares import (DEAL_PRICE, SEGMENT, SHARE, EncodedFile, holder_net, lease, nothing_staged, place,
                                   refused)


@pytest.fixture
async def net(node_factory):
    return await holder_net(node_factory)


async def _whole(holder, f: EncodedFile, share: int = SHARE, **changed) -> None:
    args = {"size": f.size, "segment_size": f.segment_size, "lease_expiry": lease(), "block": f.blocks[share][0],
            "block_hash": f.hashes[share][0], "manifest": f.manifest.encode(), **changed}
    await holder.place_whole(f.si, share, args["size"], args["segment_size"], args["lease_expiry"], args["block"],
                             args["block_hash"], args["manifest"])


async def test_a_share_of_one_segment_is_placed_whole_and_reads_back(net) -> None:
    store, from_a = net["store"], net["from_a"]
    f = EncodedFile(1000)
    await _whole(from_a, f)
    assert (store.used, store.reserved, store.shares_held) == (f.share_bytes, 0, 1)
    assert await from_a.blocks(f.si, SHARE, 0, 1, f.lengths(0, 1)) == f.blocks[SHARE]
    assert (await from_a.meta(f.si, SHARE))["block_hashes"] == f.hashes[SHARE]
    with pytest.raises(PeerRefused) as err:  # placed once: a second is refused, the first kept
        await _whole(from_a, f)
    refused(err, 409, "share-exists")
    assert store.shares_held == 1


async def test_a_whole_share_that_does_not_check_out_is_refused_and_leaves_nothing(net) -> None:
    store, from_a, from_c = net["store"], net["from_a"], net["from_c"]
    f = EncodedFile(1000)
    block = f.blocks[SHARE][0]
    other_roots = list(f.manifest.share_roots)
    other_roots[SHARE] = f.manifest.share_roots[SHARE + 1]
    cases = [
        ({"block_hash": block_hash(b"other")}, 409, "share-mismatch"),
        ({"block": bytes([block[0] ^ 1]) + block[1:]}, 409, "share-mismatch"),
        ({"block": block[:-1]}, 400, "bad-request"),
        ({"manifest": replace(f.manifest, share_roots=tuple(other_roots)).encode()}, 409, "share-mismatch"),
        ({"manifest": b"{}"}, 400, "invalid-argument"),
        ({"lease_expiry": int(time.time()) - 1}, 400, "invalid-argument"),
        ({"size": 2 * SEGMENT}, 400, "invalid-argument"),  # a share of two segments is placed in parts
    ]
    for changed, status, code in cases:
        with pytest.raises(PeerRefused) as err:
            await _whole(from_a, f, **changed)
        refused(err, status, code)
        assert nothing_staged(store, f.si) and store.used == 0 and len(net["b"].app[NODE].share_holder) == 0
    # Nothing is stored without a priced deal at or above the holder's ask.
    for price in (None, 1):
        with pytest.raises(PeerRefused) as err:
            await _whole(RemoteHolder(from_a.client, from_a.node_id, from_a.url, price), f)
        refused(err, 403, "deal-refused")
    # Another uploader's share of the same file is not placed beside the first's.
    await _whole(from_a, f)
    with pytest.raises(PeerRefused) as err:
        await _whole(from_c, f, share=SHARE + 1)
    refused(err, 409, "share-exists")
    assert (store.shares_held, store.used) == (1, f.share_bytes)


def _terms(holder: RemoteHolder, f: EncodedFile, share: int = SHARE, **changed) -> WholeShare:
    terms = {"size": f.size, "segment_size": f.segment_size, "lease_expiry": lease(), "price": holder.price,
             "block_hash": f.hashes[share][0].hex(), "manifest": f.manifest.encode().hex(), **changed}
    return WholeShare(f.si, share, terms, f.blocks[share][0])


async def test_shares_placed_in_one_request_are_each_placed_or_refused_on_its_own(net) -> None:
    store, from_a = net["store"], net["from_a"]
    good, bad, other = EncodedFile(1000), EncodedFile(2000), EncodedFile(3000)
    answers = await from_a.place_shares([_terms(from_a, good), _terms(from_a, bad, block_hash="00" * 32),
                                         _terms(from_a, other, share=SHARE + 1)])
    assert [a["share"] if isinstance(a, dict) else None for a in answers] == [SHARE, None, SHARE + 1]
    refused(answers[1], 409, "share-mismatch")
    assert 'xsc_peer_refusals_total{code="share-mismatch"} 1.0' in net["b"].app[METRICS].render().decode()
    assert nothing_staged(store, bad.si) and store.shares_held == 2
    assert store.used == good.share_bytes + other.share_bytes and store.reserved == 0
    assert await from_a.blocks(other.si, SHARE + 1, 0, 1, other.lengths(0, 1)) == other.blocks[SHARE + 1]


async def test_whole_shares_given_at_once_go_to_their_holder_together_and_each_is_answered(net) -> None:
    store, from_a = net["store"], net["from_a"]
    files = [EncodedFile(1000 + n) for n in range(6)]
    bad = EncodedFile(900)
    outcomes = await asyncio.gather(*(_whole(from_a, f) for f in files), _whole(from_a, bad, block_hash=b"\0" * 32),
                                    return_exceptions=True)
    assert outcomes[:-1] == [None] * 6
    refused(outcomes[-1], 409, "share-mismatch")
    assert from_a.whole.groups == 1 and store.shares_held == 6 and nothing_staged(store, bad.si)
    # Given while a request is under way, shares wait for it and go together in the next.
    more = [EncodedFile(1000 + n) for n in range(3)]
    first = asyncio.ensure_future(_whole(from_a, more[0]))
    await _until(lambda: from_a.whole.groups == 2)  # the first one's request is under way
    await asyncio.gather(first, *(_whole(from_a, f) for f in more[1:]))
    assert (from_a.whole.groups, from_a.whole.items) == (3, 10) and store.shares_held == 9


async def test_a_share_whose_put_is_cancelled_before_its_request_goes_is_not_sent(net) -> None:
    store, from_a = net["store"], net["from_a"]
    kept, dropped = EncodedFile(1000), EncodedFile(1100)
    sending = asyncio.ensure_future(_whole(from_a, kept))
    waiting = asyncio.ensure_future(_whole(from_a, dropped))
    await _until(lambda: from_a.whole.waiting == 2)  # both given, neither sent yet
    waiting.cancel()
    await sending
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (from_a.whole.groups, from_a.whole.items) == (1, 1) and store.shares_held == 1
    assert nothing_staged(store, dropped.si)


async def test_a_request_of_whole_shares_that_fails_fails_each_of_its_shares(net) -> None:
    a, b = net["a"], net["b"]
    away = RemoteHolder(a.app[NODE].peers.client, b.app[NODE].peers.identity.id, "https://127.0.0.1:9", DEAL_PRICE)
    outcomes = await asyncio.gather(*(_whole(away, EncodedFile(1000)) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, PeerUnreachable) for o in outcomes)
    assert (away.whole.groups, away.whole.items, away.whole.waiting) == (1, 3, 0)


class _Answering:
    """A peer client whose every answer is `body` (a holder that does not keep to the protocol)."""

    def __init__(self, body) -> None:
        self.body = body

    async def request(self, *args, **kwargs):
        return PeerResponse(200, {}, codec.dumps(self.body))  # from no node proven: nobody struck


@pytest.mark.parametrize("body", [{"shares": []}, {"shares": [{"share": 1}, {"share": 2}]}, {"shares": ["placed"]},
                                  {"shares": {"share": 1}}, {"placed": 1}, [1]])
async def test_an_answer_that_is_not_one_for_each_share_fails_each_share(body) -> None:
    holder = RemoteHolder(_Answering(body), "b" * 64, "https://127.0.0.1:9", DEAL_PRICE)
    f = EncodedFile(1000)
    with pytest.raises(PeerRefused):
        await _whole(holder, f)


async def test_a_holders_refusal_of_a_share_is_quoted_on_one_line_without_control_characters() -> None:
    """A holder's refusal of one share of several reaches the put's error and the log: its escape sequences and line
    breaks forge no line there, and its length is bounded, as any peer's refusal is (xsc/errors.py: shown)."""
    refusal = {"code": "\x1b[31mquota-exceeded\n" + "q" * 500, "status": 507,
               "detail": "\x1b]0;owned\x07no room\nERROR xsc.storage: node " + "e" * 64 + " is lying" + "x" * 1000}
    holder = RemoteHolder(_Answering({"shares": [refusal]}), "b" * 64, "https://127.0.0.1:9", DEAL_PRICE)
    with pytest.raises(PeerRefused) as refused:
        await _whole(holder, EncodedFile(1000))
    said, code = refused.value.message, refused.value.details["peer_code"]
    assert said.isprintable() and "]0;ownedno room ERROR xsc.storage: node" in said and said.endswith("…"), said
    assert code.isprintable() and code.startswith("[31mquota-exceeded q") and len(code) == 100, code


async def test_lanes_to_holders_are_bounded_and_one_in_use_is_never_dropped(monkeypatch) -> None:
    """A lane per holder met (whoever the matching, a placement or a stranger's records name): past MOST_HOLDERS the
    least recently used idle ones go, never one with a body in flight or waiting, nor whole shares on their way."""
    monkeypatch.setattr(holder_client, "MOST_HOLDERS", 8)
    lanes = SenderLanes(width=1)
    sending, go_on = asyncio.Event(), asyncio.Event()
    sent: list[str] = []

    class Held:  # a holder whose answer to whole shares waits for `go_on`
        def __init__(self, body) -> None:
            self.body = body

        async def request(self, *args, **kwargs):
            sending.set()
            await go_on.wait()
            body = self.body
            return type("Answer", (), {"json": lambda self: body})()

    async def body_to(node_id: str, name: str) -> None:
        async with lanes.to(node_id):
            sent.append(name)
            if name == "first":
                await go_on.wait()

    first = asyncio.create_task(body_to("busy", "first"))
    await _until(lambda: sent == ["first"])
    second = asyncio.create_task(body_to("busy", "second"))  # waits its turn: the lane is one body wide
    whole = RemoteHolder(Held({"shares": [{"share": 1}]}), "w" * 52, "https://127.0.0.1:9", DEAL_PRICE, lanes=lanes)
    placing = asyncio.create_task(_whole(whole, EncodedFile(1000)))
    await sending.wait()
    for n in range(100):
        async with lanes.to(f"holder{n}"):
            pass
    assert len(lanes) == 8 and sent == ["first"]  # the busy lane kept: the second body still waits its turn
    go_on.set()
    await asyncio.gather(first, second, placing)
    assert sent == ["first", "second"] and whole.whole.items == 1 and len(lanes) == 8


async def _until(condition) -> None:
    """Let the loop turn until `condition()` holds (what other tasks do in their next steps)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_body_that_is_not_a_whole_share_is_refused_before_anything_is_held(net) -> None:
    a, b, store = net["a"], net["b"], net["store"]
    f = EncodedFile(1000)
    b_url, b_id = b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    share = WholeShare(f.si, SHARE, {"size": f.size}, f.blocks[SHARE][0])

    async def ask(body: bytes, status: int, code: str) -> None:
        with pytest.raises(PeerRefused) as err:
            await a.app[NODE].peers.request(b_url, "PUT", wire.WHOLE_PATH, to=b_id, data=body,
                                            max_size=wire.WHOLE_ANSWER)
        refused(err, status, code)

    def head(listed) -> bytes:
        return codec.framed({"shares": listed}, share.block)

    item = {"si": f.si.hex(), "share": SHARE, "terms": {}, "block_length": len(share.block)}
    await ask(b"", 400, "invalid-argument")
    await ask(b"\0\0\0\x10{}", 400, "invalid-argument")  # a head longer than the body
    await ask(b"\0\0\0\x02[]" + f.blocks[SHARE][0], 400, "invalid-argument")  # a head that is not an object
    await ask((wire.WHOLE_MAX_HEAD + 1).to_bytes(4, "big") + b"x" * 10, 400, "invalid-argument")
    await ask(head([]), 400, "invalid-argument")  # no share
    await ask(head([item] * (wire.WHOLE_MAX_SHARES + 1)), 400, "invalid-argument")  # too many at once
    await ask(head([{**item, "si": "00"}]), 400, "invalid-argument")
    await ask(head([{**item, "share": 6}]), 400, "invalid-argument")
    await ask(head([{**item, "share": "1"}]), 400, "invalid-argument")
    await ask(head([{**item, "terms": []}]), 400, "invalid-argument")
    await ask(head([{**item, "block_length": len(share.block) + 1}]), 400, "invalid-argument")  # more than sent
    await ask(head([{**item, "block_length": len(share.block) - 1}]), 400, "invalid-argument")  # bytes left over
    await ask(head([{**item, "block_length": -1}]), 400, "invalid-argument")
    await ask(b"\0" * (wire.WHOLE_MAX_BODY + 1), 413, "payload-too-large")  # from its length, before it is read
    assert nothing_staged(store, f.si) and store.used == 0
    await place(net["from_a"], EncodedFile(3 * SEGMENT))  # the holder takes the next upload as ever


_TERMS = st.dictionaries(st.text(max_size=8), st.integers(-2**60, 2**60) | st.text(max_size=20), max_size=5)


@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 5), _TERMS, st.binary(max_size=64)),
                min_size=1, max_size=wire.WHOLE_MAX_SHARES))
def test_a_whole_shares_body_parses_back_to_its_shares(shares) -> None:
    sent = [WholeShare(*share) for share in shares]
    assert parse_whole_shares(whole_shares_body(sent)) == sent


@given(st.binary(max_size=40))
def test_any_other_body_is_refused_or_is_shares_whose_blocks_make_what_follows_the_head(body: bytes) -> None:
    try:
        shares = parse_whole_shares(body)
    except InvalidArgument:
        return
    assert shares and body.endswith(b"".join(w.block for w in shares))


class Holding:
    """A holder on another node as the gateway sees it (storage/remote.py: Holder), in this process: what it was
    asked, and the blocks it took; `refusing`: it refuses every share."""

    round_trip = None

    def __init__(self, refusing: bool = False) -> None:
        self.refusing = refusing
        self.asked: list[str] = []
        self.blocks: dict[int, bytes] = {}

    async def place_whole(self, si, share, size, segment_size, lease_expiry, block, hash_, manifest) -> None:
        self.asked.append("place_whole")
        if self.refusing:
            raise PeerRefused("this holder is full", url="holding")
        assert hash_ == block_hash(block)
        self.blocks[share] = block

    async def begin(self, *args) -> str:
        self.asked.append("begin")
        return "upload"

    async def put_segments(self, upload, first, blocks) -> None:
        self.asked.append("put_segments")

    async def commit(self, *args, **last) -> None:
        self.asked.append("commit")

    async def abort(self, upload) -> None:
        self.asked.append("abort")

    async def delete(self, si, share) -> None:
        self.asked.append("delete")


@pytest.fixture
def gateway(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    with ThreadPoolExecutor(2) as pool:
        yield GatewayCore(ShareStore(db, 1 << 30), pool, segment_size=SEGMENT, lease_duration=86400,
                          node_key=b"k" * 32)
    db.close()


async def _put(gateway: GatewayCore, data: bytes, holders: dict[str, Holding], spares: list[str]):
    """Put `data` with shares 4 and 5 on holders "b" and "c", replacing a refusing one by the next spare."""
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    def place_(si: bytes, share_bytes: int):
        return ["me"] * 4 + ["b", "c"], {4: holders["b"], 5: holders["c"]}

    async def replace_(share: int, tried: set):
        node = next((n for n in spares if n not in tried), None)
        return None if node is None else (node, holders[node])

    return await put(gateway, read, len(data), place=place_, replace=replace_, me="me")


async def test_a_small_files_remote_shares_go_whole_a_refusing_holder_replaced(gateway) -> None:
    holders = {"b": Holding(refusing=True), "c": Holding(), "d": Holding()}
    result = await _put(gateway, b"x" * 1000, holders, spares=["d"])
    assert result.placement == ["me"] * 4 + ["d", "c"]
    assert holders["b"].asked == ["place_whole"] and holders["c"].asked == holders["d"].asked == ["place_whole"]
    assert set(holders["c"].blocks) == {5} and set(holders["d"].blocks) == {4}  # b's block went to d whole


async def test_a_larger_file_is_begun_sent_and_committed_and_a_failed_whole_put_takes_back_what_it_placed(
        gateway) -> None:
    holders = {"b": Holding(), "c": Holding()}
    await _put(gateway, b"y" * (3 * SEGMENT), holders, spares=[])
    assert holders["b"].asked == ["begin", "commit"]  # its one batch, the last, goes with the commit
    holders = {"b": Holding(refusing=True), "c": Holding(), "d": Holding(refusing=True)}
    with pytest.raises(PeerError):
        await _put(gateway, b"z" * 1000, holders, spares=["d"])
    assert holders["c"].asked == ["place_whole", "delete"] and holders["d"].asked == ["place_whole"]


async def _declared_only(holder, sender, length: int) -> tuple[int, dict]:
    """A PUT of whole shares signed by `sender`, declaring a body of `length` bytes and sending none of it: the
    holder's status and problem, which come only if it refuses the body from its length, before reading it."""
    headers = sign_request(sender, "PUT", wire.WHOLE_PATH, b"", receiver=holder.app[NODE].peers.identity.id)
    url = holder.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [f"PUT {wire.WHOLE_PATH} HTTP/1.1", f"Host: {url.host}:{url.port}", f"Content-Length: {length}",
            "Content-Type: application/octet-stream", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(head).encode())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 20)  # a holder reading the body: 408 after 30 s
        status = int(status_line.split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            length = int(value) if name.strip().lower() == "content-length" else length
        problem = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return status, problem


@pytest.mark.parametrize("full", ["capacity", "disk"])
async def test_whole_shares_a_holder_has_no_room_for_are_refused_from_their_length_before_they_are_read(
        node_factory, tmp_path, full) -> None:
    """A holder whose storage.capacity, or whose data dir's disk, has no room for the blocks a body of whole shares
    holds at least (its length less the largest head) refuses it whole (507 storage-full, a peer problem naming
    another node), from its Content-Length, the body never read; with room again, the same shares are placed."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a = await node_factory("a", **quiet)
    with contextlib.ExitStack() as stack:
        if full == "capacity":  # room for the four shares below, not for what the length says
            b = await node_factory("b", storage={"capacity": 128 * 1024}, **quiet)
        else:
            disk = stack.enter_context(tmpfs(tmp_path / "disk", "24m"))
            b = await serve(node_config(disk, "b", storage={"capacity": 1024**3}, **quiet))
        try:
            b_url, b_id = b.app[NODE].peers.url, b.app[NODE].peers.identity.id
            assert (await a.app[NODE].peers.add(b_url)).id == b_id
            files = [EncodedFile(50_000 + n, 64 * 1024) for n in range(4)]  # one block each, ~50 KiB together
            from_a = RemoteHolder(a.app[NODE].peers.client, b_id, b_url, DEAL_PRICE)
            length = len(whole_shares_body([_terms(from_a, f) for f in files]))
            if full == "disk":  # another program's file takes all but 16 KiB
                (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 16 * 1024))
            status, problem = await _declared_only(b, a.app[NODE].peers.identity, length + 512 * 1024)
            assert (status, problem["code"]) == (507, "storage-full"), problem
            assert problem["hint"] == "place this share on another node: this one has no room for it", problem
            said = "not enough room on the data dir's disk" if full == "disk" else "not enough storage"
            assert problem["detail"].startswith(said), problem
            store = b.app[NODE].gateway.store
            assert (store.used, store.reserved, len(b.app[NODE].share_holder)) == (0, 0, 0)
            if full == "disk":
                (disk / "filler").unlink()
            answers = await from_a.place_shares([_terms(from_a, f) for f in files])
            assert [a_["share"] if isinstance(a_, dict) else str(a_) for a_ in answers] == [SHARE] * 4, answers
        finally:
            if full == "disk":
                await close_node(b)
