"""Finding the shares of a storage index on other nodes (xsc/storage/locate.py) and the peer route that answers it."""

from __future__ import annotations

import os

import aiohttp
import pytest

from xsc.errors import PeerRefused
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.node.appkeys import NODE
from xsc.storage import Capability
from xsc.storage.locate import LOCATE_ANSWER, LOCATE_PATH, MAX_NAMED, read_answer


def test_an_answer_is_read_only_as_far_as_it_may_go() -> None:
    node = Identity.generate().id
    held, named = read_answer({"shares": [0, 1, 9, -1, "2", 1] + list(range(100)),
                               "holders": {node: [2, 3, 77], "not an id": [4], **{Identity.generate().id: [5]
                                                                                   for _ in range(20)}}})
    assert held == [0, 1] and named[node] == [2, 3] and len(named) <= MAX_NAMED and "not an id" not in named
    assert read_answer(None) == ([], {}) and read_answer({"shares": "all", "holders": []}) == ([], {})


async def test_the_locate_route_refuses_what_is_not_a_storage_index_and_answers_any_signed_peer(node) -> None:
    url, me = node.app[NODE].peers.url, node.app[NODE].peers.identity.id
    cap = Capability.parse((await (await node.post("/v1/store/files", data=os.urandom(9000))).json())["capability"])
    si = cap.storage_index.hex()
    assert (await node.post(LOCATE_PATH, json={"si": si})).status == 401  # unsigned
    async with aiohttp.ClientSession() as session:
        stranger = PeerClient(Identity.generate(), session, 30.0)
        for body in ({"si": "zz"}, {"si": si, "more": 1}, {"si": 5}, ["si"]):
            with pytest.raises(PeerRefused) as err:
                await stranger.request(url, "POST", LOCATE_PATH, json=body, to=me, max_size=LOCATE_ANSWER)
            assert err.value.details["peer_status"] == 400, (body, err.value)
        answer = await stranger.request(url, "POST", LOCATE_PATH, json={"si": si}, to=me, max_size=LOCATE_ANSWER)
        assert answer.status == 200 and answer.json() == {"shares": [0, 1, 2, 3, 4, 5], "holders": {}}
        unknown = await stranger.request(url, "POST", LOCATE_PATH, json={"si": "ab" * 32}, to=me,
                                         max_size=LOCATE_ANSWER)
        assert unknown.json() == {"shares": [], "holders": {}}
