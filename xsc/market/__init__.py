"""The market: a pure core (`core/`: asks and bids, the uniform-price call market, the ask policy, signed
commitments and the replicated book, matching needs to capacity; no I/O) and, in `service`, the
node's MarketService (its offer, clearing on change, matching puts and invokes, recognition; the book's
gossip in `replication`): `from xsc.market.service import MarketService`.  See docs/market.md.

```python
from xsc.market import (Ask, Bid, Book, PricingPolicy, ask_price, clear_book, match_needs,
                        parse_commitment, sign_commitment)

ask = Ask(slot=capacity_slot, price=ask_price(PricingPolicy(floor=1_000, ceiling=4_000, exponent=2),
                                              used_bytes, capacity_bytes))
mc = sign_commitment(identity, asks=[ask], bids=[], recognition={}, stamp=stamp, timestamp=now_ms)
book = Book(bucket_seconds=3600)
book.receive(parse_commitment(mc.to_json()))           # Outcome.NEW / STALE / MERGED
clearings = clear_book(book.orders())                  # {(kind, bucket): Clearing}
result = match_needs(book.asks(), book.bids(), recognition=book.recognition(),
                     availability={node: Decimal("0.99")}, bucket_seconds=3600, now_ms=now_ms)
result.assignments["OWNER/NEED"]; explain(result, "NEED")
```
"""

from .core.auction import Clearing, Fill, Order, bucket_of, clear_auction, clear_book
from .core.book import (DEFAULT_BUCKET_SECONDS, MAX_ORDERS, Book, MarketCommitment, parse_commitment, sign_commitment,
                        signed_bytes)
from .core.matching import CODES, Assignment, Explanation, MarketResult, explain, match_needs
from .core.models import PRICE_UNITS, Ask, Bid, ask_digest, bid_digest, need_key, order_digest, units_cost
from .core.orders import ask_buckets, bid_order, market_orders
from .core.pricing import PricingPolicy, ask_price
from .core.supply import cap_supply, spread_groups

__all__ = [
    "Assignment", "CODES", "explain", "Explanation", "MarketResult", "match_needs",
    "Ask", "ask_buckets", "ask_digest", "ask_price", "Bid", "bid_digest", "bid_order", "Book", "bucket_of",
    "clear_auction", "clear_book", "Clearing", "DEFAULT_BUCKET_SECONDS", "Fill", "market_orders",
    "MarketCommitment", "MAX_ORDERS", "need_key", "Order", "order_digest", "parse_commitment", "PRICE_UNITS",
    "PricingPolicy", "sign_commitment", "signed_bytes", "units_cost", "cap_supply", "spread_groups",
]
