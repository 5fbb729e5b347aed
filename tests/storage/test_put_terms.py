"""A put's shares matched on providers whose terms take them (storage/quotes.py `_deal_on_terms`): the gateway's own
ProviderTerms over real LevelDB, the providers' terms answers and the market's matchings played by fakes, time by a
clock the test moves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from xsc.config import LedgerSection
from xsc.db import open_database
from xsc.identity import Identity
from xsc.ledger.core.pricing import price_storage
from xsc.storage import quotes
from xsc.storage.strangers import ProviderTerms

GIB_HOUR = (2**30, 3600)  # a share of a GiB for an hour: its price is its cost
PRICE = 80  # micro-credits per GiB-hour
PEER_CAP = 400  # what the gateway may prepay one provider by itself: at least a quarter of it goes at once


class _Providers:
    """The providers' terms for the gateway (micro-credits of work each takes on now), as the peers answer them."""

    def __init__(self, available: dict[str, int]) -> None:
        self.available = available

    def peer(self, node_id: str) -> SimpleNamespace:
        return SimpleNamespace(url=f"http://{node_id[:8]}.invalid")

    async def request(self, url: str, method: str, path: str, *, to: str, max_size: int) -> SimpleNamespace:
        return SimpleNamespace(json=lambda: {"available": self.available[to], "credit": 0, "recognised": False})


class _Market:
    """The book's matchings: each need, in turn, on the next provider not left out; and the book's fillings."""

    me = "gateway"

    def __init__(self, providers: list[str]) -> None:
        self.providers, self.market, self.fills, self.matched = providers, self, [], []

    async def deal_alike(self, need, needs: list[str], exclude: frozenset[str]) -> dict:
        free = [p for p in self.providers if p not in exclude]
        self.matched.append(free[:len(needs)])
        return {n: SimpleNamespace(provider=free[i % len(free)], price=PRICE) for i, n in enumerate(needs)}

    async def fill_book(self, **wanted) -> None:
        self.fills.append(wanted)


async def test_a_put_matched_again_draws_and_prepays_once_and_a_slow_round_fills_the_book_again(tmp_path: Path,
                                                                                                monkeypatch) -> None:
    """Round one: provider p wants prepayment and is prepaid (slowly: the ledger transfer takes a minute), q wants more
    than the budget.  Round two, without q, matches p again for the same share: what round one drew from p's terms is
    given back first, so p is drawn and prepaid once for it (drawn twice, it lacked room and was prepaid again); and
    since the round took longer than the book's offers were counted to last, the book is filled again before it."""
    cost = price_storage(*GIB_HOUR, PRICE)
    p, q, r = (Identity.generate().id for _ in range(3))
    clock = [1000.0]
    monkeypatch.setattr(quotes, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sent: list[tuple[str, int]] = []

    async def prepay(provider: str, amount: int) -> None:
        sent.append((provider, amount))
        clock[0] += 60.0  # the prepayment's ledger transfer is slow

    db = open_database(tmp_path / "db")
    try:
        terms = ProviderTerms(db=db, peers=_Providers({p: 0, q: -10**6, r: 10**6}), prepay=prepay,
                              budget=LedgerSection(auto_prepay=True, auto_prepay_peer=PEER_CAP))
        market = _Market([p, q, r])
        assignments, prepaid = await quotes._deal_on_terms(market, None, ["s0", "s1"], *GIB_HOUR, terms, False)
        assert market.matched == [[p, q], [p, r]]
        assert {n: a.provider for n, a in assignments.items()} == {"s0": p, "s1": r}
        assert sent == [(p, PEER_CAP // 4)] and prepaid == {p: PEER_CAP // 4} and terms.prepaid(p) == PEER_CAP // 4
        assert (await terms.terms(p)).available == PEER_CAP // 4 - cost  # drawn once, by the share it takes
        assert (await terms.terms(r)).available == 10**6 - cost
        assert market.fills == [{"kind": "storage", "wanted": 6, "needed": 2 * quotes.TERMS_TIMEOUT}]
    finally:
        db.close()
