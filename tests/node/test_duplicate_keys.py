"""A JSON body that names one key twice in an object is refused, whoever sends it (codec.loads with unique_keys, read by
node/http/common.json_value): json would keep the last value, another reader the first, so neither counts.  The
user's request (400 duplicate-key, naming the key), a peer's request (the same, counted among peer refusals), a
framed body's head, a job's spec line and a peer's answer (shapeless, struck against the peer)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.shares import DEAL_PRICE, SHARE, EncodedFile, lease
from xsc import codec
from xsc.errors import PeerMisbehaved, PeerRefused
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.net.peer_client import PeerResponse
from xsc.node import IDENTITY
from xsc.node.appkeys import METRICS, NODE
from xsc.storage.core.wire import share_path
from xsc.storage.holder_client import HOLDER_ANSWER


def _oracle(text: bytes) -> str | None:
    """The key json's own reader finds given twice first, or None."""
    found: list[str] = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        found.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(pairs)
    json.loads(text, object_pairs_hook=hook)
    return found[0] if found else None


_keys = st.text(alphabet='ab:"\\\n\u00e9', max_size=3)
_values = st.recursive(st.none() | st.integers() | st.text(alphabet='a:"\\{}\n\u00e9', max_size=4),
                       lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_keys, inner), max_size=4),
                       max_leaves=25)


def _text(value, ascii_only: bool, colon: str) -> str:
    """JSON text of `value`, where a list of pairs is an object written pair by pair (so keys may repeat)."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_only)}{colon}{_text(v, ascii_only, colon)}"
                              for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(v, ascii_only, colon) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans(), st.sampled_from([":", ": "]))
def test_a_key_given_twice_is_found_exactly_when_json_finds_one(value, ascii_only: bool, colon: str) -> None:
    """Compact as a node writes it (the text orjson would write again) or spaced as a person does."""
    text = _text(value, ascii_only, colon).encode()
    twice = _oracle(text)
    if twice is None:
        assert codec.loads(text, unique_keys=True) == json.loads(text)
    else:
        with pytest.raises(codec.DuplicateKey) as refused:
            codec.loads(text, unique_keys=True)
        assert refused.value.key == twice
    assert codec.loads(text) == json.loads(text)  # the node's own records: read as json reads them


@pytest.mark.parametrize("text", [b'{"amount":1,"amount":2}', b'{"a":{"b":1,"b":2}}', b'[{"k":1},{"k":1,"k":1}]',
                                  b'{"q\\"":1,"q\\"":2}', b'{"n":123456789012345678901234,"n":1}',
                                  b'{"s":"x\\u003a","s":1}'])
def test_keys_given_twice_anywhere_are_refused(text: bytes) -> None:
    with pytest.raises(codec.DuplicateKey):
        codec.loads(text, unique_keys=True)


async def test_the_user_api_refuses_a_body_naming_a_key_twice(node) -> None:
    response = await node.post("/v1/ledger/prepay", data=b'{"node":"x","amount":1,"amount":2}',
                               headers={"Content-Type": "application/json"})
    problem = await response.json()
    assert response.status == 400 and problem["code"] == "duplicate-key" and problem["key"] == "amount", problem
    assert "'amount'" in problem["detail"]
    deep = b'{"module":"m","function":"f","args":[],"limits":{"fuel":1,"fuel":2}}'
    response = await node.post("/v1/compute/invoke", data=deep, headers={"Content-Type": "application/json"})
    problem = await response.json()
    assert response.status == 400 and problem["key"] == "fuel", problem
    response = await node.post("/v1/compute/jobs", data=b'{"module":"m","argv":[],"argv":["x"]}\nstdin',
                               headers={"Content-Type": "application/x-xsc-job"})
    problem = await response.json()  # a job's spec line
    assert response.status == 400 and problem["code"] == "duplicate-key" and problem["key"] == "argv", problem
    head = b'{"key":"k","key":"k2"}'
    response = await node.post("/v1/s3/buckets/b/objects?key=k&user=u", data=len(head).to_bytes(4, "big") + head + b"d")
    problem = await response.json()  # a small object's framed body: its record's head
    assert response.status == 400 and problem["code"] == "duplicate-key" and problem["key"] == "key", problem


async def test_a_peer_request_naming_a_key_twice_is_refused_and_counted(node) -> None:
    """Signed by a real peer client; the refusal counted as any refused peer request is, by its code."""
    f = EncodedFile(300)
    terms = (b'{"size":%d,"segment_size":%d,"lease_expiry":%d,"price":%d,"price":0}'
             % (f.size, f.segment_size, lease(), DEAL_PRICE))
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 30.0)
        with pytest.raises(PeerRefused) as refused:
            await client.request(node.app[NODE].peers.url, "POST", share_path(f.si, SHARE) + "/uploads", data=terms,
                                 to=node.app[IDENTITY].id, max_size=HOLDER_ANSWER)
        client.close()
    details = refused.value.details
    assert details["peer_status"] == 400 and details["peer_code"] == "duplicate-key", details
    assert 'xsc_peer_refusals_total{code="duplicate-key"} 1.0' in node.app[METRICS].render().decode()
    assert len(node.app[NODE].share_holder) == 0  # nothing reserved for it


def test_a_peer_answer_naming_a_key_twice_is_shapeless_and_struck() -> None:
    struck: list[tuple[str, str]] = []
    answer = PeerResponse(200, {}, b'{"upload":"a","upload":"b"}', node="peer",  # type: ignore[arg-type]
                          misbehaved=lambda node, why: struck.append((node, why)))
    with pytest.raises(PeerMisbehaved, match="'upload' twice"):
        answer.json()
    assert struck and struck[0][0] == "peer"
