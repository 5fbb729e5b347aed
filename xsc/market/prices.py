"""The clearing prices this node saw, kept in LevelDB for `xsc market prices` (`keys.MARKET_PRICES`): each new
price or volume of a (kind, bucket) market, the newest PRICE_HISTORY of each kind."""

from __future__ import annotations

from typing import Any

from .. import codec, keys

PRICE_HISTORY = 1000  # clearing prices kept per kind
MARKETS_REMEMBERED = 64  # (kind, bucket) markets whose newest price is kept in memory


class Prices:
    def __init__(self, db: Any, bucket_seconds: int) -> None:
        self.db = db
        self.bucket_seconds = bucket_seconds
        self._written = 0  # prices written since the history was last pruned
        # (kind, bucket) -> the newest (price, traded) kept: every matching asks, and a put may run one each.
        self._newest: dict[tuple[str, int], tuple[int, int]] = {}

    def record(self, clearings: dict, at: int) -> None:
        """Keep each new clearing price (a price or volume that changed) for `xsc market prices`."""
        written = 0
        kept: dict[tuple[str, int], tuple[int, int]] = {}
        with self.db.write_batch() as batch:
            for (kind, bucket), c in clearings.items():
                if c.price is None:
                    continue
                newest = self._newest.get((kind, bucket))
                if newest is None and (last := self.last(kind, bucket)) is not None:
                    newest = self._newest[(kind, bucket)] = (last["price"], last["traded"])  # as kept
                if newest == (c.price, c.traded):
                    continue
                batch.put(keys.market_price(kind, bucket, at),
                          codec.dumps({"price": c.price, "low": c.low, "high": c.high, "traded": c.traded}))
                kept[(kind, bucket)] = (c.price, c.traded)
                written += 1
        if len(self._newest) + len(kept) > MARKETS_REMEMBERED:
            self._newest.clear()  # old buckets' markets: read again if ever asked
        self._newest.update(kept)  # once written
        self._written += written
        if self._written > PRICE_HISTORY // 10:
            self._written = 0
            self._prune()

    def _prune(self) -> None:
        """Keep the newest PRICE_HISTORY clearing prices of each kind."""
        for kind in ("storage", "compute"):
            with self.db.iterator(prefix=keys.market_prices_of(kind), reverse=True, include_value=False) as it:
                old = [key for n, key in enumerate(it) if n >= PRICE_HISTORY]
            if old:
                with self.db.write_batch() as batch:
                    for key in old:
                        batch.delete(key)

    def last(self, kind: str, bucket: int) -> dict | None:
        prefix = keys.market_prices_of(kind) + bucket.to_bytes(8, "big")
        with self.db.iterator(prefix=prefix, reverse=True) as it:
            for _, value in it:
                return codec.loads(value)
        return None

    def history(self, kind: str | None, limit: int) -> list[dict]:
        """The newest `limit` clearing prices, newest first whatever their kind and bucket: the keys order them by
        kind and bucket, so every key is read (at most PRICE_HISTORY of each kind, and what a prune lets past it)."""
        found = []
        prefix = keys.MARKET_PRICES if kind is None else keys.market_prices_of(kind)
        with self.db.iterator(prefix=prefix) as it:
            for key, value in it:
                k, bucket, at = keys.split_market_price(key)
                found.append((at, k, bucket, value))
        found.sort(reverse=True)
        rows = []
        shown: set[tuple[str, int, int]] = set()
        for at, k, bucket, value in found:
            if (k, bucket, at // 1000) in shown:
                continue  # one price per market and second: the newest (a put's own matching may clear twice)
            shown.add((k, bucket, at // 1000))
            rows.append({"kind": k, "bucket": bucket, "bucket_start": bucket * self.bucket_seconds,
                         "time_ms": at, **codec.loads(value)})
            if len(rows) >= limit:
                break
        return rows
