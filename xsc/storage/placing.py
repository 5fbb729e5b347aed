"""Where a share goes when it is placed again: a put's share whose matched holder could not take it, and a repaired
share.  Both follow one rule (`left_out`): a provider that failed the share is not asked again for it, and one that
refuses this node outright (`ProviderTerms.shut_out`: it quarantined this node, or does not admit it) is not asked at
all while its refusal stands, each ask being a round trip refused again.  Both stay within the put's own filters
(`--avoid`, `--prefer`, `--min-availability`: the quote's, or those its file record keeps)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from ..errors import MarketNoDeal, PeerError
from ..market.dealing import Dealing
from ..tasks import in_pool
from . import quotes
from .core import layout
from .core.capability import Capability
from .deals import StorageDeal, StorageDeals
from .gateway import Gateway
from .strangers import ProviderTerms

log = logging.getLogger(__name__)


class SharePlacing:
    def __init__(self, *, gateway: Gateway, deals: StorageDeals, dealing: Dealing, terms: ProviderTerms | None,
                 peers: Any | None, holder: Callable[..., Any], pool: Executor, me: str, lease_duration: int) -> None:
        self.gateway = gateway
        self.deals = deals
        self.dealing = dealing
        self.terms = terms
        self.peers = peers  # xsc.peers.PeerService, or None for a node on its own
        self.holder = holder  # (node id, price) -> the holder of a share placed there
        self.pool = pool
        self.me = me
        self.lease_duration = lease_duration

    def left_out(self, failed: Mapping[str, BaseException]) -> set[str]:
        """The providers a share placed again is not offered to: those that failed it (`failed`: node -> how), and
        those refusing this node outright, found as their terms were asked or as they refused a share now.  A
        provider that refused the share because it holds another node's share of the file's storage index (a
        stranger's squat: `share-exists`) did no wrong: the allocation goes on counting it (`Dealing.failed`)."""
        for node, err in failed.items():
            if self.terms is not None:
                self.terms.forget(node)  # its terms are asked again before the next put
                self.terms.refused(node, err)
            if not isinstance(err, PeerError) or (err.details or {}).get("peer_code") != "share-exists":
                self.dealing.failed(node)
        return set(failed) | (set(self.terms.shut_out()) if self.terms is not None else set())

    def replacer(self, quote: quotes.PutQuote, bid: int):
        """Another provider for a share whose matched holder cannot take it (down, or refusing): the next one
        the market offers at the put's bid, one the file does not use yet if there is one."""

        async def replace(share: int, failed: Mapping[str, BaseException]):
            out = self.left_out(failed) | {self.me}  # its room was counted as the put began: it takes no more now
            # A provider the file does not use yet, else one it does (several shares on one node rather than none).
            for avoid in (set(quote.nodes) | out, out):
                try:
                    node, price = await quotes.relocation(self.dealing, quote.share_bytes, quote.seconds, avoid=avoid,
                                                          bid=bid, failed=frozenset(failed), wanted=quote.filters)
                except MarketNoDeal as err:
                    log.info("share %d: no provider avoiding %s: %s", share, sorted(avoid), err)
                    continue
                quote.nodes[share], quote.prices[share] = node, price
                return node, self.holder(node, price)
            log.warning("no other provider for share %d of this put", share)
            return None

        return replace

    def relocator(self, cap: Capability, moved: dict[int, tuple[str, int]], fetched: bytes | None = None,
                  wanted: Mapping | None = None):
        """Where a repaired share goes: a peer that is up and holds no share of the file, matched on the market
        for the rest of the share's lease (the new deal is noted in `moved`: share -> (node, price)), within the
        put's filters (`wanted`: those its file record keeps, `quotes.filters_of`).
        `fetched`: the manifest as a holder sent it, for a file another node placed."""

        async def relocate(share: int, used: set[str], failed: Mapping[str, BaseException]):
            if self.peers is None:
                return None
            manifest = await in_pool(self.pool, self.gateway.manifest, cap, fetched)
            share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
            not_up = {d.id for d in self.peers.peers() if not self.peers.availability(d.id).up}
            placed: dict[int, StorageDeal] = {d.share: d for d in self.deals.of_file(cap.storage_index)}
            deal = placed.get(share)
            seconds = max(60, deal.end - int(time.time())) if deal else self.lease_duration
            try:
                node, price = await quotes.relocation(self.dealing, share_bytes, seconds,
                                                      avoid=used | not_up | self.left_out(failed),
                                                      failed=frozenset(failed), wanted=wanted)
            except MarketNoDeal as err:
                log.warning("no provider for share %d of %s: %s", share, cap.storage_index.hex(), err)
                return None
            moved[share] = (node, price)
            if node == self.me:
                return None  # the market chose this node: the share is rebuilt here
            return node, self.holder(node, price)

        return relocate


__all__ = ["SharePlacing"]
