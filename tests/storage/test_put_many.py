"""Small files stored together under one market quote (`StorageService.put_many`, what a group of small S3 objects
is stored with): each file placed where the quote says, its deals its own and its cost what it would be alone at
the quote's prices; a group the market or the credit refuses is put file by file, each answered alone."""

from __future__ import annotations

import pytest

from xsc.errors import InsufficientCredit, MarketNoDeal
from xsc.ledger.core.pricing import price_storage
from xsc.node.appkeys import CONFIG, NODE
from xsc.storage import Capability, quotes
from xsc.storage.core import layout
from xsc.storage.files import Whole

SIZES = (0, 10, 5000, 100_000)  # shares of different sizes


def _terms(node) -> tuple[int, int]:
    return node.app[NODE].storage.lease_duration, node.app[CONFIG].market.storage_bid


def _counted(monkeypatch) -> list[dict]:
    """Every market quote asked for, by its keyword arguments."""
    asked: list[dict] = []
    quote = quotes.quote

    async def counting(*args, **kwargs):
        asked.append(kwargs)
        return await quote(*args, **kwargs)

    monkeypatch.setattr(quotes, "quote", counting)
    return asked


async def test_a_group_is_quoted_once_and_each_file_costs_what_its_own_shares_cost(node, monkeypatch) -> None:
    storage = node.app[NODE].storage
    seconds, bid = _terms(node)
    asked = _counted(monkeypatch)
    datas = [bytes([n]) * size for n, size in enumerate(SIZES)]
    answers = await storage.put_many([Whole(d, f"f{n}") for n, d in enumerate(datas)], seconds, bid)
    shares = [layout.share_bytes(size, storage.segment_size) for size in SIZES]
    assert len(asked) == 1 and asked[0]["share_bytes"] == sum(shares)  # one quote, holding every share
    for data, share_bytes, answer in zip(datas, shares, answers):
        assert set(answer) == {"capability", "cost"}
        cap = Capability.parse(answer["capability"])
        deals = storage.deals.of_file(cap.storage_index)
        assert [d.bytes for d in deals] == [share_bytes] * 6  # the file's own shares, not the group's
        assert answer["cost"] == sum(price_storage(share_bytes, seconds, d.price) for d in deals)
        assert answer["cost"] == sum(d.cost(d.end - d.start) for d in deals)
        size, chunks = await storage.open(cap)
        assert size == len(data) and b"".join([c async for c in chunks]) == data
    assert sorted(f["name"] for f in await storage.files()) == [f"f{n}" for n in range(len(SIZES))]
    assert storage.dealing.needs.open_ids() == set()  # the group's needs withdrawn


@pytest.mark.parametrize("refusal", [InsufficientCredit("not for all of them at once"),
                                     RuntimeError("the group's quote failed")])
async def test_a_group_the_credit_refuses_or_whose_quote_fails_is_put_file_by_file(node, monkeypatch,
                                                                                   refusal) -> None:
    storage = node.app[NODE].storage
    seconds, bid = _terms(node)
    quote = storage.quote

    async def no_credit_for_groups(*args, shares=None, **kwargs):
        if shares is not None and len(shares) > 1:
            raise refusal
        return await quote(*args, shares=shares, **kwargs)

    monkeypatch.setattr(storage, "quote", no_credit_for_groups)
    answers = await storage.put_many([Whole(b"a" * 100, "a"), Whole(b"b" * 200, "b")], seconds, bid)
    assert all(set(a) == {"capability", "cost"} for a in answers), answers  # each quoted, paid and stored alone
    assert sorted(f["name"] for f in await storage.files()) == ["a", "b"]
    assert storage.dealing.needs.open_ids() == set()


async def test_a_group_the_market_refuses_is_refused_file_by_file_and_stores_nothing(node, monkeypatch) -> None:
    storage = node.app[NODE].storage
    seconds, _ = _terms(node)
    asked = _counted(monkeypatch)
    answers = await storage.put_many([Whole(b"a" * 100), Whole(b"b" * 200), Whole(b"c")], seconds, 0)  # bid 0
    assert all(isinstance(a, MarketNoDeal) for a in answers), answers
    assert len({str(a) for a in answers}) == 3  # each names its own needs: each file was refused alone
    assert len(asked) == 4  # the group's quote, then each file's own
    assert await storage.files() == [] and storage.dealing.needs.open_ids() == set()


async def test_a_lone_file_refused_is_quoted_once(node, monkeypatch) -> None:
    storage = node.app[NODE].storage
    seconds, _ = _terms(node)
    asked = _counted(monkeypatch)
    (answer,) = await storage.put_many([Whole(b"a" * 100)], seconds, 0)
    assert isinstance(answer, MarketNoDeal) and len(asked) == 1
    assert await storage.files() == []
