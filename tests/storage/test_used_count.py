"""The count of used bytes a data dir keeps beside its share records is made again from them as the store opens: a
count left higher than its shares hold (a node that counted wrong) would refuse puts the store has room for."""

from __future__ import annotations

import logging
import os

from xsc import keys
from xsc.node.datadir import open_db

from tests.support.nodes import close_node, node_config, serve

CAPACITY = 4 * 1024**2


async def _used(node) -> int:
    answer = await node.get("/v1/node/status")
    assert answer.status == 200, await answer.text()
    return (await answer.json())["storage"]["used"]


async def test_a_used_count_higher_than_the_shares_hold_is_counted_again_as_the_node_starts(tmp_path, caplog) -> None:
    config = node_config(tmp_path, storage={"capacity": CAPACITY})
    node = await serve(config)
    try:
        put = await node.post("/v1/store/files", params={"name": "a"}, data=os.urandom(500_000))
        assert put.status == 201, await put.text()
        held = await _used(node)
        assert 0 < held < CAPACITY // 2
    finally:
        await close_node(node)
    records = open_db(config.data_dir)
    try:  # the count says the store is full: a put of 1 MB would be refused storage-full
        records.put(keys.STORAGE_USED, CAPACITY.to_bytes(8, "big"), sync=True)
    finally:
        records.close()

    with caplog.at_level(logging.WARNING, logger="xsc.storage.share_store"):
        node = await serve(config)
    try:
        assert await _used(node) == held
        assert f"count of used bytes said {CAPACITY:,}, its 6 shares hold {held:,}" in caplog.text
        put = await node.post("/v1/store/files", params={"name": "b"}, data=os.urandom(1_000_000))
        assert put.status == 201, await put.text()
        held = await _used(node)
    finally:
        await close_node(node)
    records = open_db(config.data_dir)
    try:  # the count kept is the shares' own again
        assert int.from_bytes(records.get(keys.STORAGE_USED), "big") == held
    finally:
        records.close()


async def test_a_count_that_agrees_with_the_shares_is_left_as_it_is(tmp_path, caplog) -> None:
    config = node_config(tmp_path)
    node = await serve(config)
    try:
        put = await node.post("/v1/store/files", data=os.urandom(300_000))
        assert put.status == 201, await put.text()
        held = await _used(node)
    finally:
        await close_node(node)
    with caplog.at_level(logging.WARNING, logger="xsc.storage.share_store"):
        node = await serve(config)
    try:
        assert await _used(node) == held and "count of used bytes" not in caplog.text
    finally:
        await close_node(node)
