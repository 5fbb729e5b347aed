"""The storage API of a real node on a free port, with a real LevelDB in a temp dir."""

from __future__ import annotations

import asyncio
import os

import pytest

from xsc import keys
from xsc.node import DB
from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage.core import layout

from tests.support.waiting import eventually_async

SEG = 4096  # small segments keep many-segment cases fast


@pytest.fixture
async def store_node(node_factory):
    return await node_factory(storage={"segment_size": SEG, "capacity": 4 * 1024 * 1024})


async def put(client, data: bytes, name: str = "f") -> dict:
    resp = await client.post("/v1/store/files", data=data, params={"name": name},
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def get(client, cap: str):
    return await client.get(f"/v1/store/files/{cap}")


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, SEG - 17, SEG - 16, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 7])
async def test_put_get_round_trip_at_and_around_boundaries(store_node, size: int) -> None:
    data = os.urandom(size)
    result = await put(store_node, data)
    assert result["size"] == size
    assert result["segments"] == layout.segment_count(size, SEG)
    resp = await get(store_node, result["capability"])
    assert resp.status == 200
    assert await resp.read() == data


async def test_capacity_accounting_is_exact(store_node) -> None:
    store = store_node.app[NODE].gateway.store
    before = store.used
    data = os.urandom(10_000)
    result = await put(store_node, data)
    assert store.used - before == layout.stored_bytes(10_000, SEG) == result["stored_bytes"]
    assert store.shares_held == 6
    resp = await store_node.delete(f"/v1/store/files/{result['capability']}")
    assert resp.status == 200
    assert store.used == before and store.shares_held == 0
    assert (await get(store_node, result["capability"])).status == 404


async def test_a_put_that_does_not_fit_is_refused_before_anything_is_written(store_node) -> None:
    store = store_node.app[NODE].gateway.store
    await put(store_node, os.urandom(1000))
    used = store.used
    keys_before = sum(1 for _ in store_node.app[DB].iterator(prefix=b"s/", include_value=False))
    deals_before = sum(1 for _ in store_node.app[DB].iterator(prefix=keys.STORAGE_DEALS, include_value=False))
    resp = await store_node.post("/v1/store/files", data=os.urandom(3 * 1024 * 1024))
    assert resp.status == 507
    body = await resp.json()
    assert body["code"] == "storage-full" and "free" in body["detail"]
    assert store.used == used and store.reserved == 0
    # Nothing stored (the market keeps the clearing it computed: that is history, not storage).
    assert sum(1 for _ in store_node.app[DB].iterator(prefix=b"s/", include_value=False)) == keys_before
    assert sum(1 for _ in store_node.app[DB].iterator(prefix=keys.STORAGE_DEALS, include_value=False)) == deals_before


async def test_a_put_right_after_another_is_told_the_room_this_node_has_now_not_what_it_last_published(
        node_factory) -> None:
    # Its offer is published again only after market.publish_delay: held long, the book's copy is the one from before
    # the first put, offering the whole capacity.
    node = await node_factory(storage={"segment_size": SEG, "capacity": 1_000_000}, market={"publish_delay": 60})
    store = node.app[NODE].gateway.store
    await put(node, os.urandom(600_000))
    resp = await node.post("/v1/store/files", data=os.urandom(300_000))
    body = await resp.json()
    assert resp.status == 507 and body["code"] == "storage-full", body
    assert body["detail"].endswith(f"the most free on one provider is {1_000_000 - store.used} bytes)"), body


async def test_the_room_for_a_put_is_told_without_its_body_as_its_put_would_be_refused(store_node) -> None:
    """GET /v1/store/room?size=N: a put of N bytes finds room (200), or its refusal, as the put's own Expect answers it
    (507 storage-full past the 4 MiB capacity, its hint the put's); a size not said, or not a size, is a 400."""
    fits = await store_node.get("/v1/store/room", params={"size": str(1024**2)})
    assert fits.status == 200 and await fits.json() == {"size": 1024**2}
    over = await store_node.get("/v1/store/room", params={"size": str(4 * 1024**2)})  # 6 MiB of blocks
    problem = await over.json()
    assert over.status == 507 and problem["code"] == "storage-full", problem
    assert problem["detail"].startswith("not enough storage: this needs 6.0 MiB of block space"), problem
    assert problem["hint"].startswith("free space with `xsc store rm`, or raise it"), problem
    for query in ({}, {"size": "-1"}, {"size": "lots"}, {"size": str(2**64)}):
        refused = await store_node.get("/v1/store/room", params=query)
        assert refused.status == 400 and (await refused.json())["code"] == "invalid-argument", query
    store = store_node.app[NODE].gateway.store
    assert (store.used, store.reserved) == (0, 0)  # asking reserves nothing


async def test_a_chunked_put_that_outgrows_the_store_is_rolled_back(store_node) -> None:
    store = store_node.app[NODE].gateway.store

    async def body():
        for _ in range(800):
            yield os.urandom(SEG)

    def held() -> set[bytes]:  # the keys but the market clearing's, which the node rewrites on its own
        return {k for k in store_node.app[DB].iterator(include_value=False) if not k.startswith(keys.MARKET)}

    before = held()
    resp = await store_node.post("/v1/store/files", data=body())
    assert resp.status == 507
    # what keeps a larger store: the config (a start's --storage-capacity holds for that run only)
    assert (await resp.json())["hint"] == ("free space with `xsc store rm`, or raise it: xsc config set "
                                           "storage.capacity SIZE, then restart")
    assert store.used == 0 and store.reserved == 0
    assert held() == before  # nothing of the put is left


async def test_a_chunked_put_asked_to_leave_this_node_is_refused_not_kept_here(store_node) -> None:
    # A stream of unknown size is kept whole on this node: --spread or this node in --avoid cannot be honoured.
    me = (await (await store_node.get("/v1/node/status")).json())["id"]

    async def body():
        yield b"hello"

    for params in ({"spread": "1"}, {"avoid": me}):
        resp = await store_node.post("/v1/store/files", data=body(), params={"name": "f", **params})
        problem = await resp.json()
        assert resp.status == 400 and problem["code"] == "invalid-argument", problem
        assert "put it from a file" in problem["hint"]
    assert (await (await store_node.get("/v1/store/files")).json())["files"] == []


async def test_token_is_required(store_node) -> None:
    url = "/v1/store/files"
    resp = await store_node.session.get(store_node.make_url(url), headers={"Authorization": ""})
    assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"
    resp = await store_node.session.get(store_node.make_url(url), headers={"Authorization": "Bearer nope"})
    assert resp.status == 401 and "wrong API token" in (await resp.json())["detail"]
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_malformed_and_unknown_capabilities(store_node) -> None:
    resp = await get(store_node, "xsc:chk:abc")
    assert resp.status == 400 and (await resp.json())["code"] == "invalid-capability"
    unknown = Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10)
    resp = await get(store_node, str(unknown))
    assert resp.status == 404 and (await resp.json())["code"] == "not-found"
    good = (await put(store_node, b"hello"))["capability"]
    # The file's key with another manifest hash: the node put that file under its own capability, so this one is the
    # caller's mistake (400), whatever route reads it.
    wrong_hash = str(Capability(key=Capability.parse(good).key, manifest_hash=os.urandom(32), size=5))
    for method, path in [("GET", ""), ("GET", "/check"), ("POST", "/verify"), ("POST", "/repair")]:
        resp = await store_node.request(method, f"/v1/store/files/{wrong_hash}{path}")
        problem = await resp.json()
        assert resp.status == 400 and problem["code"] == "invalid-capability", (path, problem)
        assert problem["detail"].startswith("the capability does not match the file stored under its storage index")
        assert "copied whole" in problem["hint"], problem


async def test_a_capability_mangled_in_its_size_is_the_callers_error_on_every_route_that_reads_it(store_node) -> None:
    """The manifest checked against the capability's hash says the file's size: a capability that says another was
    mangled on its way to the caller, a 400 naming both, not a fault of the node's."""
    good = (await put(store_node, b"hello"))["capability"]
    mangled = good.rsplit(":", 1)[0] + ":50"
    for method, path in [("GET", ""), ("GET", "/check"), ("POST", "/verify"), ("POST", "/repair")]:
        resp = await store_node.request(method, f"/v1/store/files/{mangled}{path}")
        problem = await resp.json()
        assert resp.status == 400 and problem["code"] == "invalid-capability", (path, problem)
        assert problem["detail"] == "the file is 5 bytes, the capability says 50", problem


async def test_a_put_whose_max_price_int_cannot_read_is_refused(store_node) -> None:
    # Found by the API fuzzer (bench/api_fuzz.py): ?max_price=\u00b2, a digit to str.isdigit(), was a 500.
    for price in ("\u00b2", "1\u00b2"):
        resp = await store_node.post("/v1/store/files", data=b"x", params={"name": "f", "max_price": price},
                                     headers={"Content-Type": "application/octet-stream"})
        assert resp.status == 400 and (await resp.json())["code"] == "invalid-argument", await resp.text()


async def _drop_shares(client, cap: str, shares: list[int]) -> None:
    store = client.app[NODE].gateway.store
    for share in shares:
        assert store.delete_share(Capability.parse(cap).storage_index, share)


async def test_two_shares_lost_get_returns_exact_bytes(store_node) -> None:
    data = os.urandom(5 * SEG + 123)
    cap = (await put(store_node, data))["capability"]
    await _drop_shares(store_node, cap, [0, 3])
    resp = await get(store_node, cap)
    assert resp.status == 200 and await resp.read() == data
    check = await (await store_node.get(f"/v1/store/files/{cap}/check")).json()
    assert [s["status"] for s in check["shares"]] == ["missing", "ok", "ok", "missing", "ok", "ok"]
    assert check["recoverable"] and not check["healthy"]


async def test_three_shares_lost_is_a_clear_error_before_any_byte(store_node) -> None:
    cap = (await put(store_node, os.urandom(3 * SEG)))["capability"]
    await _drop_shares(store_node, cap, [1, 4, 5])
    resp = await get(store_node, cap)
    assert resp.status == 503
    body = await resp.json()
    assert body["code"] == "not-enough-shares"
    assert body["missing_shares"] == [1, 4, 5]
    assert body["detail"].endswith(": shares 1, 4, 5 missing"), body  # one reason: the shares named together


async def test_flipped_bit_is_survived_verified_and_repaired(store_node) -> None:
    data = os.urandom(4 * SEG)
    cap = (await put(store_node, data))["capability"]
    si = Capability.parse(cap).storage_index
    store = store_node.app[NODE].gateway.store
    block = bytearray(store.get_block(si, 2, 1))
    block[17] ^= 0x04
    store.put_repaired_blocks(si, 1, {2: bytes(block)})  # write the damaged block back

    resp = await get(store_node, cap)
    assert resp.status == 200 and await resp.read() == data
    await _reported_corrupt(store_node, cap, [2])  # the get found it (the segment's tag failed) and said so

    verify = await (await store_node.post(f"/v1/store/files/{cap}/verify")).json()
    bad = [s for s in verify["shares"] if s["status"] != "ok"]
    me = store_node.app[NODE].peers.identity.id  # where the share is: here
    assert bad == [{"share": 2, "status": "corrupt", "detail": "1 bad block", "bad_blocks": [1], "node": me}]

    repair = await (await store_node.post(f"/v1/store/files/{cap}/repair")).json()
    assert repair["repaired"] == [2]
    verify = await (await store_node.post(f"/v1/store/files/{cap}/verify")).json()
    assert verify["healthy"]
    assert (await (await store_node.get(f"/v1/store/files/{cap}/check")).json())["healthy"]


async def _reported_corrupt(client, cap: str, shares: list[int]) -> None:
    async def reported() -> bool:
        check = await (await client.get(f"/v1/store/files/{cap}/check")).json()
        return [s["share"] for s in check["shares"] if s["status"] == "corrupt"] == shares
    await eventually_async(reported, f"shares {shares} reported corrupt")


@pytest.mark.parametrize("damage", ["longer", "shorter"])
async def test_a_local_block_of_the_wrong_length_is_found_by_a_get(store_node, damage: str) -> None:
    """A data block with a byte more (which the decoder's cut would drop) or less: skipped and reported."""
    data = os.urandom(3 * SEG)
    cap = (await put(store_node, data))["capability"]
    si = Capability.parse(cap).storage_index
    store = store_node.app[NODE].gateway.store
    block = store.get_block(si, 3, 1)
    store.put_repaired_blocks(si, 1, {3: block + b"\0" if damage == "longer" else block[:-1]})
    resp = await get(store_node, cap)
    assert resp.status == 200 and await resp.read() == data
    await _reported_corrupt(store_node, cap, [3])


async def test_damage_in_the_padding_of_the_last_segment_is_found_by_a_get(store_node) -> None:
    """The padding after the last segment's ciphertext is no part of what its tag authenticates: those blocks
    are hashed, so a changed padding byte still marks the share for repair."""
    data = os.urandom(2 * SEG + 5)  # the last segment: 21 bytes of ciphertext in 4 blocks of 6
    cap = (await put(store_node, data))["capability"]
    si = Capability.parse(cap).storage_index
    store = store_node.app[NODE].gateway.store
    block = bytearray(store.get_block(si, 3, 2))
    block[-1] ^= 0x01  # past the ciphertext's end
    store.put_repaired_blocks(si, 2, {3: bytes(block)})
    resp = await get(store_node, cap)
    assert resp.status == 200 and await resp.read() == data
    await _reported_corrupt(store_node, cap, [3])


async def test_a_get_hashes_only_the_local_blocks_the_tag_does_not_cover(store_node, monkeypatch) -> None:
    from xsc.storage import gateway_core

    hashed: list[int] = []

    def counting(block: bytes) -> bytes:
        hashed.append(len(block))
        return real(block)

    real = gateway_core.block_hash
    data = os.urandom(3 * SEG + 5)
    cap = (await put(store_node, data))["capability"]
    monkeypatch.setattr(gateway_core, "block_hash", counting)
    resp = await get(store_node, cap)
    assert resp.status == 200 and await resp.read() == data
    assert hashed == [layout.segment_block_length(5)] * 4  # the last segment's four, padded; none of the others


async def test_repair_rebuilds_missing_shares_with_exact_accounting(store_node) -> None:
    data = os.urandom(3 * SEG + 5)
    cap = (await put(store_node, data))["capability"]
    store = store_node.app[NODE].gateway.store
    used = store.used
    await _drop_shares(store_node, cap, [0, 5])
    assert store.used == used - 2 * layout.share_bytes(len(data), SEG)
    repair = await (await store_node.post(f"/v1/store/files/{cap}/repair")).json()
    assert repair["repaired"] == [0, 5]
    assert store.used == used and store.shares_held == 6
    await _drop_shares(store_node, cap, [1, 2])  # the rebuilt shares 0 and 5 now carry the file
    assert await (await get(store_node, cap)).read() == data


async def _repair_held_before_publishing(store_node, monkeypatch, cap: str) -> tuple[asyncio.Future, asyncio.Event]:
    """A repair of `cap` started and held once its rebuilt share is written, before it is published: (the repair's
    answer to come, the event that lets it go on)."""
    writing, go_on = asyncio.Event(), asyncio.Event()
    publisher = store_node.app[NODE].gateway.publisher
    publish = publisher.publish

    async def held_up(*args, **kwargs):
        writing.set()
        await go_on.wait()
        return await publish(*args, **kwargs)

    monkeypatch.setattr(publisher, "publish", held_up)
    repair = asyncio.ensure_future(store_node.post(f"/v1/store/files/{cap}/repair"))
    await writing.wait()
    return repair, go_on


async def test_a_file_removed_while_it_is_repaired_keeps_no_share_nor_space(store_node, monkeypatch) -> None:
    """`store rm` while a repair of the file has rebuilt a share and not yet published it: the removal waits for the
    repair, then deletes what it rebuilt too: no share is published for a file that is gone.  The repair answers
    what it did and the file's check before the removal goes on: its check is held back here until the removal
    could have taken the file, as a busy machine may do (a check made then would find no node holding it)."""
    cap = (await put(store_node, os.urandom(3 * SEG + 5)))["capability"]
    store, storage = store_node.app[NODE].gateway.store, store_node.app[NODE].storage
    await _drop_shares(store_node, cap, [0])
    repair, go_on = await _repair_held_before_publishing(store_node, monkeypatch, cap)
    removal = asyncio.ensure_future(store_node.delete(f"/v1/store/files/{cap}"))
    si, locks = Capability.parse(cap).storage_index, storage.repair_locks
    await eventually_async(lambda: removal.done() or locks.waiting(si), "the removal done, or waiting for the repair")
    check = storage.check

    async def checked_once_the_removal_had_its_chance(checked: Capability) -> dict:
        # a removal that could take the file now (the lock free, or its) is let go first
        await eventually_async(lambda: removal.done() or locks.locked(si) and locks.waiting(si),
                               "the removal done, or held back by the repair's lock")
        return await check(checked)

    monkeypatch.setattr(storage, "check", checked_once_the_removal_had_its_chance)
    go_on.set()
    answer = await repair
    assert answer.status == 200, await answer.text()
    assert (await removal).status == 200
    assert (store.shares_held, store.used) == (0, 0)
    assert (await store_node.post(f"/v1/store/files/{cap}/repair")).status == 404


async def test_repairs_that_fail_leave_no_lock_behind_and_one_running_keeps_its_own(store_node, monkeypatch) -> None:
    """A file's repair lock lives while a repair or removal of it runs or waits: a repair that fails (a file nobody
    holds, holders that refuse) leaves nothing, so the locks never grow with the files a repair was tried on."""
    storage = store_node.app[NODE].storage
    for _ in range(20):
        unknown = Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10)
        response = await store_node.post(f"/v1/store/files/{unknown}/repair")
        assert response.status == 404, await response.text()
    assert len(storage.repair_locks) == 0
    cap = (await put(store_node, os.urandom(3 * SEG + 5)))["capability"]
    si = Capability.parse(cap).storage_index
    await _drop_shares(store_node, cap, [0])
    repair, go_on = await _repair_held_before_publishing(store_node, monkeypatch, cap)
    for _ in range(5):  # others fail meanwhile: the running repair's lock is untouched
        unknown = Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10)
        assert (await store_node.post(f"/v1/store/files/{unknown}/repair")).status == 404
    assert storage.repairing(si) and len(storage.repair_locks) == 1
    go_on.set()
    assert (await repair).status == 200
    assert len(storage.repair_locks) == 0 and not storage.repairing(si)


async def test_many_files_are_removed_in_one_request_each_once_and_those_not_held_named_apart(store_node) -> None:
    store = store_node.app[NODE].gateway.store
    before = store.used
    caps = [(await put(store_node, os.urandom(100 + n), name=f"f{n}"))["capability"] for n in range(5)]
    unknown = str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10))
    resp = await store_node.post("/v1/store/remove", json={"caps": [caps[0], unknown, caps[1], f" {caps[2]}\n",
                                                                      caps[0]]})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"removed": caps[:3], "to_finish": [], "not_held": [unknown]}
    files = (await (await store_node.get("/v1/store/files")).json())["files"]
    assert {f["capability"] for f in files} == set(caps[3:]) and store.shares_held == 12
    assert (await get(store_node, caps[0])).status == 404
    resp = await store_node.post("/v1/store/remove", json={"caps": []})  # nothing named: nothing to do
    assert resp.status == 200 and await resp.json() == {"removed": [], "to_finish": [], "not_held": []}
    resp = await store_node.post("/v1/store/remove", json={"caps": caps[3:]})
    assert (await resp.json())["removed"] == caps[3:] and store.used == before and store.shares_held == 0


@pytest.mark.parametrize("fault", ["disk full", "another"])
async def test_a_removal_of_many_files_not_finished_now_says_so_and_is_finished_later(store_node, monkeypatch,
                                                                                     fault) -> None:
    """The files are taken out of the listing in one write, then their records deleted in another: that second write
    failing (a full disk, or any other fault of the node's) answers each file as to be finished, with why, not as
    removed; the same removal again finishes it, as the node does on its own every storage.gc_interval."""
    import plyvel

    store = store_node.app[NODE].gateway.store
    before = store.used
    caps = [(await put(store_node, os.urandom(100 + n), name=f"f{n}"))["capability"] for n in range(2)]
    unknown = str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=10))
    real = store.delete_files

    def failing(sis: list[bytes]) -> None:
        if fault == "disk full":
            raise plyvel.IOError(b"IO error: db/000007.log: No space left on device")
        raise RuntimeError("the records could not be deleted")

    monkeypatch.setattr(store, "delete_files", failing)
    resp = await store_node.post("/v1/store/remove", json={"caps": [caps[0], unknown, caps[1]]})
    assert resp.status == 200, await resp.text()
    why = "the data dir's disk is full" if fault == "disk full" else "this node failed (RuntimeError: see its log)"
    assert await resp.json() == {"removed": [], "to_finish": [{"capability": cap, "reason": why} for cap in caps],
                                 "not_held": [unknown]}
    assert (await (await store_node.get("/v1/store/files")).json())["files"] == []  # no longer listed
    assert len(store.removals()) == 2 and store.used > before  # not all deleted yet

    monkeypatch.setattr(store, "delete_files", real)
    resp = await store_node.post("/v1/store/remove", json={"caps": caps})
    assert await resp.json() == {"removed": caps, "to_finish": [], "not_held": []}
    assert store.removals() == [] and store.used == before


async def test_a_removal_of_many_files_refused_removes_none_of_them(store_node) -> None:
    """Too many capabilities, one that is not a capability, a body not of its shape or too long: a 4xx problem saying
    what is wrong, and every file named is still there."""
    from xsc.node.http.storage import MAX_REMOVAL_BODY

    caps = [(await put(store_node, os.urandom(100 + n), name=f"f{n}"))["capability"] for n in range(2)]

    async def refused(status: int, code: str, **request) -> dict:
        resp = await store_node.post("/v1/store/remove", **request)
        problem = await resp.json()
        assert resp.status == status and problem["code"] == code, problem
        files = (await (await store_node.get("/v1/store/files")).json())["files"]
        assert {f["capability"] for f in files} == set(caps)
        return problem

    many = await refused(400, "invalid-argument", json={"caps": [caps[0]] * 1001})
    assert many["detail"] == "a removal names at most 1,000 files, this one 1,001", many
    assert many["hint"] == "send them 1,000 at a time"
    wrong = await refused(400, "invalid-capability", json={"caps": [caps[0], "xsc:chk:abc", caps[1]]})
    assert wrong["detail"] == "caps[1]: a capability has 7 fields separated by ':', this has 3", wrong
    for body in ({"caps": [caps[0], 7]}, {"caps": caps[0]}, {"files": caps}):
        shaped = await refused(400, "invalid-argument", json=body)
        assert shaped["hint"] == 'send {"caps": [CAPABILITY, ...]}, at most 1,000 capabilities a request', shaped
    await refused(400, "invalid-argument", json=caps)  # not an object
    await refused(400, "invalid-argument", data=b"not json", headers={"Content-Type": "application/json"})
    padded = b'{"caps": [' + b" " * MAX_REMOVAL_BODY + b"]}"
    said = await refused(413, "payload-too-large", data=padded, headers={"Content-Type": "application/json"})
    assert said["detail"] == f"the body is {len(padded):,} bytes; at most {MAX_REMOVAL_BODY:,} are taken here", said

    async def chunked():  # no Content-Length: refused once read
        yield padded

    said = await refused(413, "payload-too-large", data=chunked(), headers={"Content-Type": "application/json"})
    assert said["detail"] == f"the body is over {MAX_REMOVAL_BODY:,} bytes, the most taken here", said


async def test_ls_lists_uploaded_files(store_node) -> None:
    a = await put(store_node, b"a", name="a.txt")
    b = await put(store_node, b"bb", name="b.txt")
    files = (await (await store_node.get("/v1/store/files")).json())["files"]
    assert {(f["name"], f["size"], f["capability"]) for f in files} == {
        ("a.txt", 1, a["capability"]), ("b.txt", 2, b["capability"])}


async def test_health_and_metrics_need_no_token(store_node) -> None:
    await put(store_node, b"x" * 100)
    await get(store_node, (await put(store_node, b"y" * 10))["capability"])
    session = store_node.session
    resp = await session.get(store_node.make_url("/health"), headers={"Authorization": ""})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/health+json")
    health = await resp.json(content_type=None)
    assert health["status"] == "pass" and set(health["checks"]) >= {"database:responsive", "disk:free"}
    text = await (await session.get(store_node.make_url("/metrics"), headers={"Authorization": ""})).text()
    for name in ("xsc_http_requests_total", "xsc_http_errors_total"):
        assert name in text
    assert "xsc_storage" not in text  # what the user stores: only with the token (tests/node/test_health_figures.py)
    text = await (await store_node.get("/metrics")).text()
    for name in ("xsc_http_requests_total", "xsc_http_errors_total", "xsc_storage_bytes_stored",
                 "xsc_storage_bytes_served_total", "xsc_storage_shares_held", "xsc_storage_bytes_received_total"):
        assert name in text
    assert "xsc_storage_shares_held 12.0" in text

    async def served() -> bool:  # counted once the get's last write returned, which may be after its client read it
        return "xsc_storage_bytes_served_total 10.0" in await (await store_node.get("/metrics")).text()

    await eventually_async(served, "the get's 10 bytes counted as served", 10)


async def test_unknown_route_is_a_problem(store_node) -> None:
    resp = await store_node.get("/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["status"] == 404
