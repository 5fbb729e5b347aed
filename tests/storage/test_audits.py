"""Audits, the scrubber and automatic repair on real node processes (seven: six shares and a spare node).

Each test corrupts or kills one holder of a file and waits for the gateway to rebuild that share on
another node; schedules are made fast with environment overrides (the waits are deadlines against
hangs, not timing assertions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc import keys
from xsc.errors import InvalidArgument, PeerRefused, PeerUnreachable
from xsc.identity import NODE_KEY_FILE, Identity, sign_request
from xsc.storage.audits import files_on, is_verdict, remote_shares
from xsc.storage.core.wire import parse_damage_report as parse_report
from xsc.storage import Capability
from xsc.tasks import Pacer

from tests.support.blocks import corrupt_block
from tests.support.nodes import NodeProcess, kill_all
from tests.support.peers import api, http, peer_health, start_star, wait_for_storage_offers
from tests.support.waiting import eventually, eventually_async

NO_SCRUB = {"XSC_AUDIT_SCRUB_RATE": "0"}
FAST_AUDITS = {"XSC_AUDIT_INTERVAL": "0.3", "XSC_AUDIT_BLOCKS_PER_ROUND": "6"}
NO_AUDITS = {"XSC_AUDIT_BLOCKS_PER_ROUND": "0"}
PATIENT = {"XSC_AUDIT_REPAIR_AFTER_FAILURES": "100000"}  # a holder stopped for a moment is not repaired away
SMALL_SEGMENTS = {"XSC_STORAGE_SEGMENT_SIZE": "65536"}


# --- pure parts ----------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 10**9), burst=st.integers(1, 10**9),
       steps=st.lists(st.tuples(st.integers(0, 10**9), st.floats(0, 5)), max_size=50))
def test_pacer_never_lets_more_than_burst_plus_rate_through(rate: int, burst: int, steps) -> None:
    now = 0.0
    pacer = Pacer(rate, burst, clock=lambda: now)
    used = 0
    for n, pause in steps:
        now += pacer.take(n)  # the caller sleeps as told ...
        used += n
        # ... so whatever it has used by then was allowed: the burst plus the rate over the time gone by.
        assert used <= (burst + rate * now) * (1 + 1e-9) + 1
        now += pause


def test_remote_shares_and_files_on_a_node() -> None:
    records = [{"storage_index": "aa" * 32, "placement": ["me", "b", "c", "b", "me", "d"]},
               {"storage_index": "bb" * 32, "placement": ["this node"] * 6},
               {"storage_index": "cc" * 32}]
    assert [(r["storage_index"][:2], s, n) for r, s, n in remote_shares(records, "me")] == [
        ("aa", 1, "b"), ("aa", 2, "c"), ("aa", 3, "b"), ("aa", 5, "d")]
    assert files_on(records, "b") == [bytes.fromhex("aa" * 32)]
    assert files_on(records, "z") == []


def test_only_answers_about_the_share_are_verdicts() -> None:
    assert not is_verdict(PeerUnreachable("down"))
    assert is_verdict(PeerRefused("gone", peer_status=404, peer_code="share-not-found"))
    assert is_verdict(PeerRefused("out of range", peer_status=416))
    assert is_verdict(PeerRefused("a malformed Merkle path"))
    for status in (401, 403, 429, 500, 503):
        assert not is_verdict(PeerRefused("no", peer_status=status))


def test_damage_reports_are_checked() -> None:
    si = "ab" * 32
    assert parse_report({"si": si, "share": 5, "segments": [3, 1, 3]}) == (bytes.fromhex(si), 5, [1, 3])
    for bad in ({"si": si, "share": 6, "segments": [0]}, {"si": si, "share": 0, "segments": []},
                {"si": si[:-2], "share": 0, "segments": [0]}, {"si": si, "share": True, "segments": [0]},
                {"si": si, "share": 0, "segments": [-1]}, {"si": si, "share": 0, "segments": "0"}, [si]):
        with pytest.raises(InvalidArgument):
            parse_report(bad)


async def test_a_bad_block_a_get_finds_is_repaired_without_waiting_for_anything_else(node_factory) -> None:
    # The get reads around it and marks the share damaged; audits pass over a marked share and the scrubber is off,
    # so only the repair watch can see the mark.
    from xsc.node.appkeys import NODE

    client = await node_factory(storage={"segment_size": 4096}, audit={"scrub_rate": 0, "interval": 0.2})
    app = client.server.app
    data, cap, si = await _stored_with_a_bad_block(client, share=1, segment=2)
    assert await (await client.get(f"/v1/store/files/{cap}")).read() == data

    async def repaired() -> list | None:
        recent = app[NODE].audits.status()["recent_repairs"]
        return recent if recent and app[NODE].store.damaged(si) == {} else None

    assert [r["repaired"] for r in await eventually_async(repaired, "the share the get found bad repaired", 30)] \
        == [[1]]
    verify = await (await client.post(f"/v1/store/files/{cap}/verify")).json()
    assert verify["healthy"], verify


# --- the audit service against a holder in this process ---------------------------------------
class _Peers:
    """The peer service as audits see it: every node known, at a URL, and up by its probes."""

    directory = {"b": object()}

    def peers(self) -> list:
        return []

    def availability(self, node: str):
        return SimpleNamespace(up=True, last_audit=None)

    def peer(self, node: str):
        return SimpleNamespace(url=f"https://{node}.example:7070")


REFUSED = PeerRefused("peer b refused POST /audit: internal error", peer_status=500)
NO_ANSWER = PeerUnreachable("peer b is unreachable: timeout", sent=True)


@contextlib.asynccontextmanager
async def _one_share_on_a_holder(tmp_path: Path, **config):
    """A 5-block file whose share 0 is on `holder` (a Holding whose `audits` say how each audit is answered), the
    rest here, and an AuditService over it with `config`: (gateway, audits, holder, verdicts, storage index)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from xsc.config import AuditSection
    from xsc.storage import gateway_put
    from xsc.storage.audits import AuditService
    from tests.support.shares import Holding, gateway_core

    holder, verdicts = Holding(), []
    with gateway_core(tmp_path, 4096) as gateway, ThreadPoolExecutor(1) as pool:
        data = io.BytesIO(os.urandom(5 * 4096))

        async def read(n: int) -> bytes:
            return data.read(n)

        put = await gateway_put.put(gateway, read, 5 * 4096, place=lambda si, size: (["b"] + ["me"] * 5, {0: holder}),
                                    me="me")
        audits = AuditService(config=AuditSection(blocks_per_round=1, **config), probe_interval=10.0, me="me",
                              gateway=gateway, pool=pool, peers=_Peers(), holder_for=lambda node, url: holder,
                              on_audit=lambda node, ok, detail, struck: verdicts.append(ok), repair=None)
        yield gateway, audits, holder, verdicts, put.capability.storage_index


async def test_a_holder_that_answers_its_probes_but_refuses_the_audits_of_a_share_has_it_rebuilt_and_is_not_struck(
        tmp_path: Path) -> None:
    async with _one_share_on_a_holder(tmp_path, repair_after_failures=3) as (gateway, audits, holder, verdicts, si):
        # Refused twice, then an answer: a busy holder starts again from nothing.  Audits that found no answer in
        # time do not count towards it, and fewer than three of them in a row are no failure either.
        holder.audits = [REFUSED, REFUSED, None, REFUSED, NO_ANSWER, REFUSED, NO_ANSWER, NO_ANSWER]
        for _ in range(8):
            await audits.audit_round()
        assert verdicts == [True] and gateway.store.damaged(si) == {} and audits.status()["repair_queue"] == 0
        holder.audits = [REFUSED]  # the third refusal in a row: its share is not one to count on
        await audits.audit_round()
        assert "refused 3 audits in a row of share 0" in gateway.store.damaged(si)[0]
        assert audits.status()["repair_queue"] == 1 and audits.counts["shares_unanswered"] == 1
        assert verdicts == [True]  # never a failed audit: no strike, no pay forfeited for it


async def test_a_holder_up_that_lets_every_audit_of_a_share_time_out_fails_it(tmp_path: Path) -> None:
    """Containment: an audit a holder up by its probes does not answer in time is asked again, and the third in a
    row (`audit.timeouts_before_failure`) is a failed audit; any answer in between starts it again from nothing."""
    async with _one_share_on_a_holder(tmp_path, timeouts_before_failure=3) as (gateway, audits, holder, verdicts, si):
        holder.audits = [NO_ANSWER, NO_ANSWER, None, NO_ANSWER, NO_ANSWER, REFUSED, NO_ANSWER, NO_ANSWER]
        for _ in range(8):
            await audits.audit_round()
        assert verdicts == [True] and gateway.store.damaged(si) == {} and audits.status()["repair_queue"] == 0
        holder.audits = [NO_ANSWER]  # the third in a row
        await audits.audit_round()
        assert verdicts == [True, False] and audits.counts["audits_failed"] == 1
        assert "3 audits of it in a row got no answer" in gateway.store.damaged(si)[0]
        assert audits.status()["repair_queue"] == 1


# --- one in-process node: its own shares -----------------------------------------------------
async def _stored_with_a_bad_block(client, *, share: int, segment: int) -> tuple[bytes, str, bytes]:
    """A file of 5 segments of 4 KiB put through the node of `client`, one block of it flipped in place: (its bytes,
    its capability, its storage index)."""
    from xsc.node import DB

    data = os.urandom(20_000)
    resp = await client.post("/v1/store/files", data=data, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    cap = (await resp.json())["capability"]
    si = Capability.parse(cap).storage_index
    db, key = client.server.app[DB], keys.block(si, share, segment)
    block = bytearray(db.get(key))
    block[0] ^= 0x80
    db.put(key, bytes(block))
    return data, cap, si



async def test_the_scrubber_finds_a_bad_block_of_a_local_share_and_the_node_repairs_it(node_factory) -> None:
    from xsc.node import DB
    from xsc.node.appkeys import NODE

    client = await node_factory(storage={"segment_size": 4096}, audit={"scrub_rate": 100_000})
    app = client.server.app
    data, cap, si = await _stored_with_a_bad_block(client, share=4, segment=3)
    app[DB].delete(keys.block(si, 1, 0))

    # The repair a report queues waits for the end of the pass: started at once, it can rebuild both shares before
    # the pass reaches the second.
    audits, queued = app[NODE].audits, []
    audits.queue = lambda si, why: queued.append((si, why))
    found = await app[NODE].scrubber.scrub_pass()  # paced at 100 kB/s: the 6 x 5 blocks take a few tenths of a second
    del audits.queue
    assert (found["shares"], found["damaged"]) == (6, 2) and queued
    for si_queued, why in queued:
        audits.queue(si_queued, why)

    async def rebuilt() -> dict | None:
        check = await (await client.get(f"/v1/store/files/{cap}/check")).json()
        return check if app[NODE].audits.counts["repairs"] and check["healthy"] else None

    check = await eventually_async(rebuilt, "both damaged shares rebuilt (one repair, or two)", 30)
    assert check["healthy"], check
    assert await (await client.get(f"/v1/store/files/{cap}")).read() == data
    assert (await app[NODE].scrubber.scrub_pass())["damaged"] == 0  # the blocks were rewritten in place


async def test_a_share_marked_damaged_when_the_node_stopped_is_repaired_after_it_starts_again(make_config,
                                                                                            node_factory) -> None:
    # What a kill -9 leaves between a damage report and its repair: the mark on disk, the queue gone with the
    # process.  Audits pass over a marked share, so only the restart can queue its repair.
    from xsc.node.appkeys import NODE
    from tests.support.nodes import close_node, serve

    sections = {"storage": {"segment_size": 4096}, "audit": {"scrub_rate": 0}}
    first = await serve(make_config("gateway", **sections))
    try:
        data = os.urandom(20_000)  # 5 segments
        resp = await first.post("/v1/store/files", data=data, headers={"Content-Type": "application/octet-stream"})
        assert resp.status == 201, await resp.text()
        cap = (await resp.json())["capability"]
        si = Capability.parse(cap).storage_index
        store = first.app[NODE].store
        block = bytearray(store.get_block(si, 4, 3))
        block[0] ^= 0x80
        store.blocks.put(keys.block(si, 4, 3), bytes(block))
        store.mark_damaged(si, 4, "bad or missing blocks in segments [3]")  # as the scrubber marks it
        store.mark_damaged(si, 1, "bad or missing blocks in segments [0]")  # marked, yet intact
    finally:
        await close_node(first)

    again = await node_factory("gateway", **sections)

    async def repaired() -> dict | None:  # the share rewritten, then the repair recorded
        check = await (await again.get(f"/v1/store/files/{cap}/check")).json()
        return check if check["healthy"] and again.app[NODE].audits.status()["recent_repairs"] else None

    await eventually_async(repaired, "the damaged share repaired after the restart", 30)
    assert again.app[NODE].store.damaged(si) == {}
    assert [r["repaired"] for r in again.app[NODE].audits.status()["recent_repairs"]] == [[4]]
    verify = await (await again.post(f"/v1/store/files/{cap}/verify")).json()
    assert verify["healthy"], verify
    assert await (await again.get(f"/v1/store/files/{cap}")).read() == data


# --- seven node processes ---------------------------------------------------------------------
@pytest.fixture
def network(tmp_path: Path):
    """network(gateway_env, holder_env) -> (nodes, ids): a gateway and six nodes that joined it, all probed up."""
    started: list[NodeProcess] = []

    def start(gateway_env: dict, holder_env: dict) -> tuple[list[NodeProcess], list[str]]:
        nodes, ids = start_star(tmp_path, 7, gateway_env, holder_env, started)
        wait_for_storage_offers(nodes[0], 7)
        return nodes, ids

    yield start
    kill_all(started)


def _put(gateway: NodeProcess, tmp_path: Path, size: int) -> tuple[bytes, dict]:
    data = os.urandom(size)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    put = gateway.xsc("store", "put", str(src), "--json")
    assert put.returncode == 0, put.stderr
    return data, json.loads(put.stdout)


def _check(gateway: NodeProcess, cap: str) -> dict:
    status, body = api(gateway, "GET", f"/v1/store/files/{cap}/check")  # what `xsc store check` shows
    assert status == 200, body
    return body


def _victim(nodes: list[NodeProcess], ids: list[str], placement: list[str]) -> tuple[int, NodeProcess, str]:
    """A share on a node other than the gateway, that node and its id."""
    share = next(s for s, node in enumerate(placement) if node != ids[0])
    return share, nodes[ids.index(placement[share])], placement[share]


def _repaired_elsewhere(gateway: NodeProcess, cap: str, share: int, victim_id: str):
    def done() -> dict | None:
        check = _check(gateway, cap)
        return check if check["healthy"] and check["shares"][share]["node"] != victim_id else None

    return done


def _status(node: NodeProcess) -> dict:
    status, body = api(node, "GET", "/v1/node/status")
    assert status == 200, body
    return body


@pytest.mark.slow
def test_a_corrupt_block_fails_its_audit_and_the_share_is_rebuilt_on_another_node(network, tmp_path: Path) -> None:
    nodes, ids = network({**FAST_AUDITS, **PATIENT, **NO_SCRUB, **SMALL_SEGMENTS}, NO_SCRUB)
    gateway = nodes[0]
    data, put = _put(gateway, tmp_path, 200_000)  # 4 segments of 64 KiB
    cap, placement = put["capability"], put["placement"]
    si = Capability.parse(cap).storage_index
    share, victim, victim_id = _victim(nodes, ids, placement)

    corrupt_block(victim, si, share, segment=2)

    check = eventually(_repaired_elsewhere(gateway, cap, share, victim_id), "the share to be rebuilt elsewhere",
                       timeout=60)
    new_node = check["shares"][share]["node"]
    assert new_node in ids and new_node != victim_id
    assert [s["node"] for i, s in enumerate(check["shares"]) if i != share] == \
        [n for i, n in enumerate(placement) if i != share]  # the other shares did not move
    audit = peer_health(gateway, victim_id)["last_audit"]
    assert audit["ok"] is False and f"block 2 of share {share}" in audit["detail"], audit
    assert gateway.xsc("store", "get", cap).stdout == data

    audits = _status(gateway)["audits"]
    assert audits["audits_failed"] >= 1 and audits["repairs"] >= 1
    moved = [r for r in audits["recent_repairs"] if r["ok"] and str(share) in r["moved"]]
    assert moved and moved[0]["moved"][str(share)] == [victim_id, new_node]
    health = json.loads(gateway.xsc("health", "status", "--json").stdout)
    assert next(p for p in health["peers"] if p["id"] == victim_id)["last_audit"]["ok"] is False


@pytest.mark.slow
def test_the_scrubber_reports_a_corrupt_block_to_its_uploader_which_repairs_it(network, tmp_path: Path) -> None:
    nodes, ids = network({**NO_AUDITS, **PATIENT, **SMALL_SEGMENTS}, {"XSC_AUDIT_INTERVAL": "0.3"})
    gateway = nodes[0]
    data, put = _put(gateway, tmp_path, 200_000)
    cap, placement = put["capability"], put["placement"]
    si = Capability.parse(cap).storage_index.hex()
    share, victim, victim_id = _victim(nodes, ids, placement)

    # Only a share's holder may report it damaged; a report about a block the share lacks is refused.
    other = next(s for s, node in enumerate(placement) if node not in (ids[0], victim_id))
    liar = Identity.load_or_create(nodes[ids.index(placement[other])].data_dir / NODE_KEY_FILE)

    def report(identity: Identity, body: dict) -> tuple[int, dict]:
        raw = json.dumps(body).encode()
        headers = sign_request(identity, "POST", "/v1/peer/damage", raw, receiver=ids[0])
        return http(gateway.url, "POST", "/v1/peer/damage", raw, {**headers, "Content-Type": "application/json"})

    status, body = report(liar, {"si": si, "share": share, "segments": [0]})
    assert (status, body["code"]) == (403, "forbidden"), body
    status, body = report(Identity.generate(), {"si": si, "share": share, "segments": [0]})
    assert status == 403, body
    status, body = report(liar, {"si": si, "share": other, "segments": [4]})
    assert (status, body["code"]) == (400, "invalid-argument"), body
    status, body = report(liar, {"si": "00" * 32, "share": other, "segments": [0]})
    assert status == 404, body
    status, body = http(gateway.url, "POST", "/v1/peer/damage", json.dumps({"si": si, "share": share,
                                                                            "segments": [0]}).encode())
    assert status == 401, body
    assert _check(gateway, cap)["healthy"]  # nothing was marked by the refused reports

    corrupt_block(victim, bytes.fromhex(si), share, segment=1)

    check = eventually(_repaired_elsewhere(gateway, cap, share, victim_id), "the share to be rebuilt elsewhere",
                       timeout=60)
    assert check["shares"][share]["node"] != victim_id
    assert gateway.xsc("store", "get", cap).stdout == data
    scrubber = _status(victim)["scrubber"]
    assert scrubber["damaged"] >= 1 and scrubber["reports"] >= 1, scrubber
    audits = _status(gateway)["audits"]
    assert audits["damage_reports"] >= 1 and audits["audits_ok"] == audits["audits_failed"] == 0


@pytest.mark.slow
def test_a_holder_killed_past_the_threshold_has_its_share_rebuilt_on_another_node(network, tmp_path: Path) -> None:
    nodes, ids = network({"XSC_AUDIT_REPAIR_AFTER_FAILURES": "3"}, {})
    gateway = nodes[0]
    data, put = _put(gateway, tmp_path, 300_000)
    cap, placement = put["capability"], put["placement"]
    share, victim, victim_id = _victim(nodes, ids, placement)

    victim.kill()

    check = eventually(_repaired_elsewhere(gateway, cap, share, victim_id), "the share to be rebuilt elsewhere",
                       timeout=60)
    rebuilt_on = check["shares"][share]
    # On the spare node, or on the gateway itself when the spare is the gateway (placement chose six others).
    assert rebuilt_on["node"] in ids and (rebuilt_on["node"] == ids[0] or rebuilt_on["node_up"] is True)
    assert peer_health(gateway, victim_id)["consecutive_failures"] >= 3
    assert gateway.xsc("store", "get", cap).stdout == data


async def test_a_holder_of_one_share_among_thousands_is_audited_in_the_next_round(tmp_path: Path) -> None:
    """A holder's pay waits for an audit of it, and it drops a share left unpaid for days: picked among all the
    shares alike, the one holder of one share among 5,000 on another would wait weeks for its audit."""
    from concurrent.futures import ThreadPoolExecutor

    from xsc.config import AuditSection
    from xsc.storage.audits import AuditService

    class Store:
        def files(self):
            yield {"storage_index": "00" * 32, "placement": ["c"] + ["me"] * 5}
            for n in range(1, 1000):
                yield {"storage_index": f"{n:064x}", "placement": ["b"] * 5 + ["me"]}

        def damaged(self, si: bytes) -> dict:
            return {}

    class Both(_Peers):
        directory = {"b": object(), "c": object()}

    audited: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        audits = AuditService(config=AuditSection(blocks_per_round=4), probe_interval=10.0, me="me",
                              gateway=SimpleNamespace(store=Store()), pool=pool, peers=Both(), holder_for=None,
                              on_audit=None, repair=None)

        async def audit_share(record: dict, share: int, node: str) -> bool:
            audited.append(node)
            return True

        audits.audit_share = audit_share
        await audits.audit_round()
    assert sorted(set(audited)) == ["b", "c"] and len(audited) == 4


async def test_a_file_under_repair_is_not_queued_again_by_the_marks_that_repair_clears(tmp_path: Path) -> None:
    """The watch passes over the damage marks of a file whose repair is under way (or ended while they were read):
    the repair clears them, and a second one right after it would find nothing to do but a holder restarting."""
    async with _one_share_on_a_holder(tmp_path) as (gateway, audits, _, _, si):
        gateway.store.mark_damaged(si, 0, "bad blocks in segments [1]", "b")  # as a get that found them marks it
        release, repaired = asyncio.Event(), []

        async def repair(cap):
            await release.wait()
            gateway.store.clear_damage(si, 0)
            repaired.append(cap.storage_index)
            return {"repaired": [0]}

        audits.repair = repair
        repairs = asyncio.ensure_future(audits.loops()["repairs"]())  # takes up the marked file at once
        try:
            await eventually_async(lambda: audits.status()["repairing"] == si.hex(), "the repair under way")
            await audits.watch()  # the mark is still there: the repair has not cleared it yet
            assert audits.status()["repair_queue"] == 0
            release.set()
            await eventually_async(lambda: repaired and audits.status()["repairing"] is None, "the repair ended")
            await audits.watch()
            assert audits.status()["repair_queue"] == 0 and repaired == [si]
            gateway.store.mark_damaged(si, 0, "bad blocks in segments [2]", "b")  # found after that repair
            await audits.watch()
            assert audits.status()["repair_queue"] == 1
        finally:
            repairs.cancel()


async def test_a_share_whose_lease_ended_is_neither_audited_nor_repaired(tmp_path: Path) -> None:
    """Once a file's lease ended its holders drop its shares (after a grace of their own choosing): an audit of one
    would find it gone and blame an honest holder, and a repair would place again what nobody renewed."""
    from concurrent.futures import ThreadPoolExecutor

    from xsc.config import AuditSection
    from xsc.storage.audits import AuditService

    now = int(time.time())
    ended = {"storage_index": "00" * 32, "capability": "unused", "placement": ["b"] * 6, "leases": [now - 60] * 6}
    live = {"storage_index": "11" * 32, "capability": "unused", "placement": ["b"] * 6,
            "leases": [now - 60] * 3 + [now + 86400] * 3}  # shares 3 to 5 renewed, 0 to 2 not

    class Store:
        def files(self):
            return iter([ended, live])

        def file_record(self, si: bytes) -> dict:
            return ended if si == bytes(32) else live

        def damaged(self, si: bytes) -> dict:
            return {}

    audited: list[tuple[str, int]] = []
    repaired: list[object] = []
    with ThreadPoolExecutor(1) as pool:
        async def repair(cap):
            repaired.append(cap)
            return {}

        audits = AuditService(config=AuditSection(blocks_per_round=6), probe_interval=10.0, me="me",
                              gateway=SimpleNamespace(store=Store()), pool=pool, peers=_Peers(), holder_for=None,
                              on_audit=None, repair=repair)

        async def audit_share(record: dict, share: int, node: str) -> bool:
            audited.append((record["storage_index"], share))
            return True

        audits.audit_share = audit_share
        await audits.audit_round()
        assert sorted(audited) == [("11" * 32, s) for s in (3, 4, 5)]
        assert await audits.repair_one(bytes(32)) is None and repaired == []


async def test_the_watch_keeps_nothing_of_the_nodes_that_left_the_directory() -> None:
    """Nodes pass through the directory (a stranger's fake nodes, each message's pushing out the one before, never
    answering a probe): each outage is acted on once, and the watch keeps what it knows only of the nodes there now."""
    from concurrent.futures import ThreadPoolExecutor

    from xsc.config import AuditSection
    from xsc.storage.audits import AuditService

    class Store:
        def files(self):
            return iter([])

        def damaged_files(self) -> list:
            return []

    class Passing:
        now: list[str] = []

        def peers(self) -> list:
            return [SimpleNamespace(id=node) for node in self.now]

        def availability(self, node: str):
            return SimpleNamespace(up=False, last_audit={"ok": False, "time": 1, "detail": "gone"},
                                   consecutive_failures=5, last_probe=int(time.time() * 1000) + 60_000, last_ok=None)

    passing = Passing()
    with ThreadPoolExecutor(1) as pool:
        audits = AuditService(config=AuditSection(repair_after_failures=3), probe_interval=10.0, me="me",
                              gateway=SimpleNamespace(store=Store()), pool=pool, peers=passing, holder_for=None,
                              on_audit=None, repair=None)
        for cycle in range(200):
            passing.now = [f"fake-{cycle}-{i}" for i in range(16)]
            await audits.watch()
        assert audits.status()["watched"] == 16
