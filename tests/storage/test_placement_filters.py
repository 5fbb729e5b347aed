"""A put's placement filters (`--avoid`, `--prefer`, `--min-availability`) outlive the put: its file record keeps
them, and the repairs that rebuild its shares on other nodes place them within them, or fail saying so."""

from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from xsc.errors import IntegrityError, InvalidArgument, PeerRefused
from xsc.storage import quotes
from xsc.storage.placing import SharePlacing

from tests.support.peers import FAST, api, joined_at_once, known_ids, node_id, peer_health, wait_for_storage_offers
from tests.support.waiting import eventually


def _node_ids(n: int) -> list[str]:
    from xsc.identity import Identity

    return [Identity.generate().id for _ in range(n)]


def test_a_put_s_filters_are_kept_as_its_record_holds_them_and_read_back_checked() -> None:
    avoid, prefer = _node_ids(2), _node_ids(1)
    wanted = quotes.parse_filters({"avoid": ",".join(avoid), "prefer": prefer[0], "min_availability": "0.9",
                                   "spread": "1"})
    kept = quotes.recorded_filters(wanted)
    assert kept == {"avoid": avoid, "prefer": prefer, "min_availability": "0.9", "spread": True}
    assert quotes.filters_of({"filters": json.loads(json.dumps(kept))}) == wanted
    assert quotes.filters_of({"placement": ["x"] * 6}) == {}  # a record written without them: no filters
    assert quotes.recorded_filters(quotes.parse_filters({})) == {}
    for bad in ({"avoid": "nope"}, {"avoid": ["not a node id"]}, {"min_availability": 2}, {"spread": "yes"},
                {"avoid": _node_ids(1) * 65}, {"other": 1}, []):
        with pytest.raises(IntegrityError, match="placement filters this node cannot read"):
            quotes.filters_of({"filters": bad})


def test_a_filter_naming_no_node_id_says_where_the_ids_are() -> None:
    for name in ("avoid", "prefer"):
        with pytest.raises(InvalidArgument) as refused:
            quotes.parse_filters({name: f"{_node_ids(1)[0]},nobody"})
        assert refused.value.with_hint == f"--{name} takes a node's whole id, not 'nobody' (the ids of the nodes " \
            "this one knows: xsc peers ls)"


def test_a_put_names_at_most_64_nodes_in_avoid_and_in_prefer() -> None:
    many = ",".join(_node_ids(65))
    for name in ("avoid", "prefer"):
        with pytest.raises(InvalidArgument, match=f"{name} names 65 nodes, and a put takes at most 64"):
            quotes.parse_filters({name: many})


class _Dealing:
    """A market that places every share on `provider`, keeping the needs it was asked to match."""

    def __init__(self, provider: str) -> None:
        self.provider, self.asked = provider, []
        self.market = SimpleNamespace(config=SimpleNamespace(storage_bid=1000))

    def need(self, need_id: str, kind: str, quantity: int, seconds: int, bid: int, **wanted):
        self.asked.append(wanted)
        return SimpleNamespace(slot=SimpleNamespace(id=need_id))

    async def deal(self, needs, failed):
        return {n.slot.id: SimpleNamespace(provider=self.provider, price=7) for n in needs}

    def remember(self) -> None:
        pass

    def failed(self, node: str) -> None:
        pass


async def test_a_share_placed_again_during_the_put_is_placed_within_the_put_s_filters() -> None:
    """A holder that cannot take its share as the put begins is replaced by one the market offers within the put's
    --avoid, --prefer and --min-availability, as its repairs are."""
    avoided, preferred, held, other = _node_ids(4)
    wanted = quotes.parse_filters({"avoid": avoided, "prefer": preferred, "min_availability": "0.9"})
    dealing = _Dealing(other)
    placing = SharePlacing(gateway=None, deals=None, dealing=dealing, terms=None, peers=None,
                           holder=lambda node, price: (node, price), pool=None, me="me", lease_duration=60)
    quote = quotes.PutQuote(100, 60, [held] * 6, {s: 7 for s in range(6)}, filters=wanted)
    assert await placing.replacer(quote, 1000)(2, {held: RuntimeError("down")}) == (other, (other, 7))
    asked = dealing.asked[0]
    assert avoided in asked["avoid"] and held in asked["avoid"]
    assert asked["prefer"] == (preferred,) and asked["min_availability"] == Decimal("0.9")


class _Ranked(_Dealing):
    """A market that places a share on the first of `ranked` a need does not avoid."""

    def __init__(self, ranked: list[str]) -> None:
        super().__init__(ranked[0])
        self.ranked = ranked

    async def deal(self, needs, failed):
        avoid = set(self.asked[-1]["avoid"])
        return {n.slot.id: SimpleNamespace(provider=next(p for p in self.ranked if p not in avoid), price=7)
                for n in needs}


async def test_a_share_placed_again_during_the_put_goes_to_a_provider_holding_none_while_there_is_one() -> None:
    """This node, cheapest, is never a replacement (its room was counted as the put began): the share goes to the
    provider the put does not use yet, not to one holding a share already (six shares then on five nodes)."""
    used, failed, spare = _node_ids(5), _node_ids(1)[0], _node_ids(1)[0]
    placing = SharePlacing(gateway=None, deals=None, dealing=_Ranked(["me", *used, spare]), terms=None, peers=None,
                           holder=lambda node, price: (node, price), pool=None, me="me", lease_duration=60)
    quote = quotes.PutQuote(100, 60, [*used, failed], {s: 7 for s in range(6)}, filters={"spread": True})
    assert await placing.replacer(quote, 1000)(5, {failed: RuntimeError("down")}) == (spare, (spare, 7))
    assert len(set(quote.nodes)) == 6


async def test_a_provider_that_refused_a_share_a_stranger_squatted_on_is_not_counted_as_failing() -> None:
    """A share refused as its holder holds another node's share of the file's storage index (share-exists: a stranger
    that learnt the index squatted on it) goes to another provider, and the allocation goes on counting the holder,
    which did no wrong; one that was down is counted as failing work placed on it."""
    squatted, down, spare = _node_ids(3)
    failing = []
    dealing = _Dealing(spare)
    dealing.failed = failing.append
    placing = SharePlacing(gateway=None, deals=None, dealing=dealing, terms=None, peers=None,
                           holder=lambda node, price: (node, price), pool=None, me="me", lease_duration=60)
    quote = quotes.PutQuote(100, 60, [squatted] * 3 + [down] * 3, {s: 7 for s in range(6)})
    exists = PeerRefused("share-exists", url="b", peer_status=409, peer_code="share-exists")
    assert await placing.replacer(quote, 1000)(2, {squatted: exists}) == (spare, (spare, 7))
    assert await placing.replacer(quote, 1000)(5, {down: RuntimeError("down")}) == (spare, (spare, 7))
    assert failing == [down]


def _placement(gateway, cap: str) -> list[str]:
    return next(f for f in api(gateway, "GET", "/v1/store/files")[1]["files"] if f["capability"] == cap)["placement"]


def _storage_offers(gateway) -> int:
    return api(gateway, "GET", "/v1/market/status")[1]["providers"]["storage"]


def _up(gateway, node: str) -> bool | None:
    return (peer_health(gateway, node) or {}).get("up")


@pytest.mark.slow
def test_repairs_place_the_shares_they_rebuild_within_the_put_s_avoid_or_fail_saying_so(node_process,
                                                                                       tmp_path: Path) -> None:
    """A put with the gateway and one other node in --avoid, on three holders (two shares each), one of them
    killed: with no node but the avoided ones offering storage, its repair fails naming the filters (and verify says
    so), rather than rebuild the shares on the gateway or the avoided node; once a node that may take them joins,
    the repair places them there, still on neither."""
    gateway = node_process("g", env=FAST)
    holders = joined_at_once(node_process, gateway, list("abcx"), FAST)
    ids = [node_id(n) for n in holders]
    me, avoided = node_id(gateway), ids[3]
    eventually(lambda: known_ids(gateway) >= set(ids), "the gateway to know the others")
    wait_for_storage_offers(gateway, 5)
    data = os.urandom(3 * 1024 * 1024 + 5)
    src = tmp_path / "kept-off.bin"
    src.write_bytes(data)
    put = gateway.xsc("store", "put", str(src), "--avoid", me, "--avoid", avoided, "--json")
    assert put.returncode == 0, put.stderr
    result = json.loads(put.stdout)
    cap, held = result["capability"], Counter(result["placement"])
    assert set(held) == set(ids[:3]) and max(held.values()) == 2, result["placement"]
    record = next(f for f in api(gateway, "GET", "/v1/store/files")[1]["files"] if f["capability"] == cap)
    assert record["filters"] == {"avoid": [me, avoided]}

    lost, others = holders[0], holders[1:3]
    lost.kill()
    eventually(lambda: _up(gateway, ids[0]) is False, "the gateway to see the holder down")
    # The holders left keep their shares but offer no more storage: only the avoided nodes offer it.
    for node in others:
        node.stop()
        node.env["XSC_MARKET_OFFER_STORAGE"] = "false"
        node.start()
    eventually(lambda: _storage_offers(gateway) == 2 and all(_up(gateway, i) for i in ids[1:3]),
               "the holders left back up, offering no storage")

    failed = gateway.xsc("store", "repair", cap)
    assert failed.returncode == 1
    said = failed.stderr.decode()
    assert f"within its put's filters (--avoid this node --avoid {avoided})" in said, said
    assert "not rebuilt here: the put named this node in --avoid; nothing was changed" in said, said
    assert _placement(gateway, cap) == result["placement"]
    verify = gateway.xsc("store", "verify", cap, "--json")
    assert verify.returncode == 1
    assert "within its put's filters" in json.loads(verify.stdout)["repair_problem"]
    told = gateway.xsc("store", "verify", cap).stderr.decode()
    assert "warning: its last repair failed: no other node takes share" in told, told
    every = json.loads(gateway.xsc("store", "verify", "--all", "--json").stdout)["files"]
    assert "its last repair failed: no other node takes share" in every[0]["detail"], every

    joined = node_process("d", extra_args=["--peer", gateway.url], env=FAST)
    new = node_id(joined)
    wait_for_storage_offers(gateway, 3)
    eventually(lambda: _up(gateway, new), "the gateway to see the new node up")
    repaired = gateway.xsc("store", "repair", cap, "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    moved = [s for s, node in enumerate(result["placement"]) if node == ids[0]]
    assert report["repaired"] == moved and report["healthy"] and "repair_problem" not in report
    assert [report["placement"][s] for s in moved] == [new, new]
    assert not {me, avoided} & set(_placement(gateway, cap))
    assert gateway.xsc("store", "get", cap).stdout == data
