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


def test_an_answer_is_read_as_the_locate_route_gives_it_and_one_of_another_shape_is_refused() -> None:
    node, other = Identity.generate().id, Identity.generate().id
    # A node named for a share twice (its placement and a search's hint) is read once.
    assert read_answer({"shares": [1, 0], "holders": {node: [2, 3, 3], other: []}}) == ([0, 1], {node: [2, 3],
                                                                                               other: []})
    for bad in (None, [], {"shares": [0]}, {"shares": "all", "holders": {}}, {"shares": [0, 9], "holders": {}},
                {"shares": [0, -1], "holders": {}}, {"shares": ["2"], "holders": {}}, {"shares": [True], "holders": {}},
                {"shares": [0] * 7, "holders": {}}, {"shares": [], "holders": []},
                {"shares": [], "holders": {"not an id": [4]}}, {"shares": [], "holders": {node: [77]}},
                {"shares": [], "holders": {node: "all"}},
                {"shares": [], "holders": {Identity.generate().id: [5] for _ in range(MAX_NAMED + 1)}}):
        with pytest.raises(ValueError):
            read_answer(bad)


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


async def test_a_search_made_again_past_nodes_that_sent_no_manifest_is_made_three_times_at_most(
        node, monkeypatch, caplog) -> None:
    """Nodes that say they hold a handed capability's shares and send no manifest of it are passed over by a search
    made again; colluding liars that name a new batch of themselves each time get three such searches, not one per
    batch, then the refusal of a file found nowhere, the log naming the nodes passed over."""
    liars: list[list[str]] = []

    async def lying(si: bytes, search: bool = True, passed_over: frozenset[str] = frozenset()) -> dict[int, str]:
        if len(liars) == 10:
            return {}  # the network's liars all named
        liars.append([Identity.generate().id for _ in range(6)])
        return dict(enumerate(liars[-1]))

    monkeypatch.setattr(node.app[NODE].storage.locator, "locate", lying)
    cap = Capability(os.urandom(32), os.urandom(32), 9000)
    with caplog.at_level("INFO", logger="xsc.storage.files"):
        response = await node.get(f"/v1/store/files/{cap}")
    assert response.status == 404 and (await response.json())["code"] == "not-found"
    assert len(liars) == 4, len(liars)
    last = next(r.getMessage() for r in caplog.records if "no more searches" in r.getMessage())
    assert all(liar in last for batch in liars for liar in batch), last
