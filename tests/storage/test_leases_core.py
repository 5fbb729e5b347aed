"""Leases on one node: the pure rules, put with a duration, garbage collection of expired shares."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xsc import keys
from xsc.errors import InvalidArgument
from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage.core import layout, leases

STORAGE = {"segment_size": 4096}
lease_times = st.integers(min_value=0, max_value=2**40)


@given(lease_times, lease_times)
def test_a_renewal_never_shortens_a_lease(current: int, target: int) -> None:
    new = leases.renewed(current, target)
    assert new >= current and new >= target and new in (current, target)


@given(lease_times, lease_times, lease_times)
def test_an_extension_counts_only_the_time_added_from_now(previous: int, target: int, now: int) -> None:
    new = leases.renewed(previous, target)
    seconds = leases.extension_seconds(previous, new, now)
    assert seconds >= 0
    assert seconds == max(0, new - max(previous, now))
    if new == previous:
        assert seconds == 0  # nothing added, nothing to pay


@given(st.lists(lease_times, min_size=6, max_size=6), st.dictionaries(st.integers(0, 5), lease_times))
def test_a_file_record_keeps_the_latest_known_lease_of_each_share(before: list[int], answers: dict) -> None:
    after = leases.file_leases(before, answers, 6)
    assert all(a >= b for a, b in zip(after, before))
    assert all(after[s] == max(before[s], answers.get(s, 0)) for s in range(6))
    assert leases.file_expired({"leases": after}, max(after) + 1)
    assert not leases.file_expired({"leases": after}, max(after))


def test_durations_out_of_bounds_are_refused_with_a_hint() -> None:
    assert leases.parse_duration_param(None, 3600) == 3600
    assert leases.parse_duration_param("60", 3600) == 60
    for bad in ("59", "0", "-5", "1.5", "30d", "", str(leases.MAX_DURATION + 1)):
        with pytest.raises(InvalidArgument) as err:
            leases.parse_duration_param(bad, 3600)
        assert err.value.hint == leases.DURATION_HINT


def _expired(store) -> int:
    return len(store.expired_shares(2**62))


def _nothing_left(store, si: bytes) -> bool:
    db = store.db
    return (store.manifest(si) is None and store.file_record(si) is None
            and not list(db.iterator(prefix=keys.blocks_of(si), include_value=False))
            and not list(db.iterator(prefix=keys.shares_of(si), include_value=False)))


async def _put(node, data: bytes, duration: str | None = None) -> dict:
    params = {"name": "f"} | ({"duration": duration} if duration else {})
    response = await node.post("/v1/store/files", params=params, data=data)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_a_put_with_a_duration_leases_every_share_that_long(node_factory) -> None:
    node = await node_factory(storage=STORAGE)
    store = node.app[NODE].gateway.store
    start = int(time.time())
    result = await _put(node, os.urandom(10_000), "7200")
    assert start + 7200 <= result["lease_expiry"] <= int(time.time()) + 7200
    si = Capability.parse(result["capability"]).storage_index
    assert {m.lease_expiry for m in store.share_metas(si)} == {result["lease_expiry"]}
    record = store.file_record(si)
    assert record["leases"] == [result["lease_expiry"]] * 6 and record["lease_expiry"] == result["lease_expiry"]
    listed = await (await node.get("/v1/store/files")).json()
    assert listed["files"][0]["lease_expiry"] == result["lease_expiry"]

    default = await _put(node, b"x" * 100)  # no duration: the node's storage.lease_duration
    assert default["lease_expiry"] >= start + node.app[NODE].gateway.lease_duration

    for bad in ("59", "abc", str(leases.MAX_DURATION + 1)):
        response = await node.post("/v1/store/files", params={"duration": bad}, data=b"y" * 100)
        assert response.status == 400
        problem = await response.json()
        assert problem["code"] == "invalid-argument" and "whole seconds from 60 to 315360000" in problem["hint"]
    assert len(store.held_shares()) == 12  # the refused puts stored nothing


async def test_gc_deletes_expired_shares_and_forgets_the_file_but_never_a_live_lease(node_factory) -> None:
    node = await node_factory(storage={**STORAGE, "gc_grace": 0})
    store = node.app[NODE].gateway.store
    collector = node.app[NODE].lease_gc
    short = await _put(node, os.urandom(20_000), "60")
    long = await _put(node, os.urandom(30_000), "7200")
    short_si = Capability.parse(short["capability"]).storage_index
    long_si = Capability.parse(long["capability"]).storage_index
    long_bytes = layout.stored_bytes(30_000, 4096)
    assert store.used == layout.stored_bytes(20_000, 4096) + long_bytes

    # Nothing has expired yet: a round now collects nothing.
    assert (await collector.collect())["shares"] == 0

    # Two minutes on, the 60 s lease has ended: its shares and its file go, the other file stays whole.
    later = time.time() + 120
    round_ = await collector.collect(now=later)
    assert (round_["shares"], round_["files"], round_["bytes"]) == (6, 1, layout.stored_bytes(20_000, 4096))
    assert store.used == long_bytes and store.shares_held == 6
    assert _nothing_left(store, short_si)
    assert len(store.share_metas(long_si)) == 6 and store.file_record(long_si) is not None
    response = await node.get(f"/v1/store/files/{long['capability']}")
    assert response.status == 200
    metrics = (await (await node.get("/metrics")).text())
    assert "xsc_storage_gc_shares_total 6.0" in metrics

    # The grace keeps an expired share a while: with a day's grace nothing more goes two hours after expiry.
    collector.config = collector.config.model_copy(update={"gc_grace": 86400})
    assert (await collector.collect(now=time.time() + 7200 + 7200))["shares"] == 0
    assert store.used == long_bytes


async def test_a_share_renewed_after_it_was_listed_is_kept(node_factory) -> None:
    node = await node_factory(storage=STORAGE)
    store = node.app[NODE].gateway.store
    result = await _put(node, os.urandom(5000), "60")
    si = Capability.parse(result["capability"]).storage_index
    before = int(time.time()) + 120
    listed = store.expired_shares(before)
    assert len(listed) == 6
    store.renew(si, before + 3600)  # a renewal arrives between the listing and the deletion
    assert all(store.collect_share(s, share, before) is None for s, share in listed)
    assert store.collect_file(si, before) is None
    assert len(store.share_metas(si)) == 6 and store.used == layout.stored_bytes(5000, 4096)
    renewed = store.renew(si, 1)  # an earlier lease changes nothing
    assert all(new == previous == before + 3600 for previous, new in renewed.values())
