"""The files a DeleteObjects leaves garbage removed together, through either link of the front (the node's own
process, `xsc s3 serve`'s user API): a garbage mark that is not a capability (a record a client of the node's API
wrote with any string for its part) holds none of the others back, and stays marked."""

from __future__ import annotations

import pytest

from xsc.buckets.core.names import DEFAULT_USER
from xsc.buckets.marks import FileMarks
from xsc.client.aio import NodeApi
from xsc.node.appkeys import NODE, TOKEN
from xsc.s3.access import KeyRing
from xsc.s3.remote import RemoteNode
from xsc.s3.server import S3Front


async def _body(data: bytes):
    yield data


def _record(parts: list[tuple[str, int]]) -> dict:
    return {"content_type": "", "metadata": {}, "headers": {}, "etag": "e", "modified": 0.0,
            "parts": [{"cap": cap, "size": size} for cap, size in parts]}


@pytest.mark.parametrize("through", ["node", "user-api"])
async def test_a_garbage_mark_that_is_no_capability_holds_none_of_the_others_back(node, tmp_path, through) -> None:
    local = node.app[NODE].s3_link
    link = local
    if through == "user-api":
        api = NodeApi(str(node.make_url("")), node.app[TOKEN])
        await api.start()
        link = RemoteNode(api)
    try:
        marks = FileMarks(b"s" * 32)
        front = S3Front(link, KeyRing(tmp_path / "keys"), marks)
        await link.create_bucket("held", DEFAULT_USER)
        stored = []
        for n in range(5):
            cap = (await link.put_file(_body(b"x" * (10 + n)), 10 + n, marks.name(f"held/{n}")))["capability"]
            await link.record("held", str(n), DEFAULT_USER, _record([(cap, 10 + n)]))
            stored.append(cap)
        # Whatever a record names is its part: a capability mangled, one with the spaces a copy picks up, anything.
        hostile = ["not a capability", "xsc:chk:abc", stored[0][:-2] + ":3:2:10", "", "x" * 4096]
        await link.record("held", "hostile", DEFAULT_USER, _record([(text, 1) for text in hostile]))
        await link.record("held", "spaced", DEFAULT_USER, _record([(f" {stored[4]}\n", 14)]))
        garbage = await link.delete_objects("held", [*map(str, range(5)), "hostile", "spaced"], DEFAULT_USER)
        assert sorted(garbage) == sorted([*stored, *hostile, f" {stored[4]}\n"])
        await front.writes.collect(garbage)
        assert {f["capability"] for f in await link.files()}.isdisjoint(stored)
        left = await link.garbage()
        assert sorted(left) == sorted(hostile), left
    finally:
        if link is not local:
            await link.close()
