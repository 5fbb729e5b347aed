"""The files this node's user stores: put, get, remove (removals.py), check, verify, repair, renew, across nodes.

This is the user's side of storage (the gateway node, Tahoe's model): the Gateway does the bytes
(segments, encryption, erasure coding, verification) against Holder objects; this service decides
where shares go and what they cost.  A put is matched on the market (storage/quotes.py), its cost
checked against the user's credit before a byte is stored, its shares placed on the providers the
market chose, and a storage deal recorded per share (storage/deals.py).  Repairs rebuild lost shares
on a provider matched for the rest of the lease; the deal follows the share.  Routes:
node/http/storage.py.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, replace
from typing import Any


from .. import db
from ..errors import (BadRequest, DeepCheckRunning, DiskFull, IntegrityError, InvalidCapability, MarketNoDeal,
                      NotEnoughShares, NotFound, PeerNotFound, PeerUnreachable, XscError)
from ..identity import Identity
from ..ledger.service import LedgerService
from ..market.dealing import Dealing
from ..market.service import MarketService
from ..tasks import Locks, at_most, in_pool, periodic
from ..units import format_size
from . import quotes
from .core import layout, leases
from .core.capability import Capability
from .core.manifest import manifest_hash, unsettled
from .core.erasure import K, M
from .deals import StorageDeal, StorageDeals
from . import deep_check, gateway_repair, share_store
from .gateway import Gateway
from .gateway_get import Plaintext
from .gateway_put import Riding
from .core.placement import NONE_FOUND, single_points
from .locate import Locator
from .placing import SharePlacing
from .remote import KEEP_ALIVE
from .removals import Removals
from .strangers import ProviderTerms

log = logging.getLogger(__name__)

LOCAL = "this node"  # how a file record put without peers names this node
ReadFn = Callable[[int], Awaitable[bytes]]


class UnknownNode:
    """A holder this node no longer knows (removed with `xsc peers rm`), or none at all (a share no node was
    found holding): its share is unreadable, and the file is read or repaired from the others."""

    round_trip = None  # not known

    def __init__(self, node_id: str | None, down: Sequence[str] = ()) -> None:
        self.node_id = node_id
        self.down = down  # with no node_id: the known nodes not up, which were not asked and may hold the share

    def __getattr__(self, name: str):
        async def refuse(*args, **kwargs):
            if self.node_id is None and self.down:
                more = f" and {len(self.down) - 1} more" if len(self.down) > 1 else ""
                raise PeerUnreachable(f"no node this one could ask holds it; node {self.down[0]}{more}, which it "
                                      "knows, is not up", hint="retry once it is up (`xsc health status` shows it)")
            if self.node_id is None:
                raise PeerUnreachable("no node this one knows holds it", hint="retry when more nodes are up")
            raise PeerUnreachable(f"node {self.node_id} is not a known peer any more",
                                  hint="add it back with `xsc peers add URL`, or repair the file")
        return refuse


@dataclass(frozen=True)
class Whole:
    """A small file of `put_many`, its bytes all here: its name, and records of another's written with it
    (`put`'s `riding`)."""

    data: bytes
    name: str | None = None
    riding: Riding | None = None


def reader(data: bytes) -> ReadFn:
    """A put's `read` over bytes already in memory."""
    view, offset = memoryview(data), 0

    async def read(n: int) -> bytes:
        nonlocal offset
        chunk = bytes(view[offset:offset + n])
        offset += len(chunk)
        return chunk

    return read


class Unplaced:
    """The files whose last repair found no node to take a share where it may go (storage index -> what that repair
    said), told by `check` and `verify` until a repair of the file succeeds or it is removed.  In memory, the newest
    MAX: after a restart the repair loop finds it again."""

    MAX = 1024

    def __init__(self) -> None:
        self._said: OrderedDict[bytes, str] = OrderedDict()

    def note(self, si: bytes, said: str) -> None:
        self._said.pop(si, None)
        self._said[si] = said
        while len(self._said) > self.MAX:
            self._said.popitem(last=False)

    def drop(self, si: bytes) -> None:
        self._said.pop(si, None)

    def of(self, si: bytes) -> str | None:
        return self._said.get(si)


async def _outcome(put: Awaitable[dict[str, Any]]) -> dict[str, Any] | Exception:
    try:
        return await put
    except Exception as err:  # noqa: BLE001 - this file's own outcome; the others of its group go on
        return err


class _Found(Exception):
    def __init__(self, manifest: bytes) -> None:
        self.manifest = manifest


async def _manifest_from(holders: dict[int, Any], names: list[str], cap: Capability, silent: list[str]) -> bytes | None:
    """A file's manifest as the first holder that answers sends it; the nodes that could not be reached to `silent`.
    Each node is asked at once, its shares one after another until one answers or the node cannot be reached: a
    node that hangs costs one request's timeout, not one for each share it holds (the first answer ends the rest).
    A manifest whose hash is not the capability's (another file's, or made up) ends no search: it is the answer only
    when no node sent the capability's own, so that a wrong capability is still said to be the caller's error."""
    si = cap.storage_index
    by_node: dict[str, list[int]] = {}
    for s in holders:
        by_node.setdefault(names[s] or f"share {s}", []).append(s)
    strays: list[bytes] = []

    async def ask(node: str, shares: list[int]) -> None:
        for s in shares:
            try:
                manifest = (await holders[s].meta(si, s, size=cap.size))["manifest"]
            except XscError as err:
                log.info("share %d of %s not read from node %s: %s", s, si.hex(), names[s], err)
                if isinstance(err, PeerUnreachable) and not isinstance(holders[s], UnknownNode):
                    silent.append(node)
                    return
                continue
            if manifest is not None and manifest_hash(manifest) == cap.manifest_hash:
                raise _Found(manifest)
            log.info("node %s sent a manifest of share %d of %s that is not the capability's", node, s, si.hex())
            if manifest is not None:
                strays.append(manifest)
            return

    try:
        await at_most(len(by_node), [ask(node, shares) for node, shares in by_node.items()])
    except _Found as found:
        return found.manifest
    return strays[0] if strays else None


def _down(peers: Any, unreached: list[str]) -> list[str]:
    """The nodes a search could not ask: those it could not reach first, then the known nodes not up."""
    return list(dict.fromkeys([*unreached, *(d.id for d in peers.peers() if not peers.up(d.id))]
                              if peers is not None else unreached))


def _not_located(peers: Any, unreached: list[str], action: str) -> NotFound:
    """No node this one could ask holds a share of a file: said with the known nodes that are not up, if any (the
    shares may well be on one: a node not up is not asked), those this search could not reach first, and the command
    (`action`: get, check, verify or repair) to run again once it is up."""
    down = _down(peers, unreached)
    if not down:
        return NotFound("this node holds no file with that capability, and no node it knows holds a share of it",
                        hint="check the capability; `xsc peers ls` shows the nodes this one knows")
    more = f" and {len(down) - 1} more" if len(down) > 1 else ""
    return NotFound(f"this node holds no file with that capability, and no node it could ask holds a share of it; "
                    f"node {down[0]}{more}, which it knows, is not up",
                    hint=f"{'get it' if action == 'get' else f'run xsc store {action}'} again once that node is up "
                         "(`xsc health status` shows it), or check the capability")


SEARCHES_AGAIN = 3  # searches made again past the nodes that named a file's shares and sent no manifest of it


async def _searched(service: StorageService, locator: Locator, cap: Capability, search: bool, action: str,
                    passed_over: frozenset[str]) -> tuple[dict, list[str], bytes]:
    """StorageService.located of a file this node did not place: its shares where the locator finds them (shares
    nobody was found holding count as missing), with the manifest as a holder sent it when this node has none
    (checked against the capability by the gateway).  When no node that said it holds a share sent this file's
    manifest, one may have lied to shadow the holders: the search is made again with their word heard last, at most
    SEARCHES_AGAIN times (many colluding liars could name a new batch each time), then refused as any search that
    finds no manifest."""
    si = cap.storage_index
    own = await in_pool(service.pool, service.store.manifest, si)
    for again in range(SEARCHES_AGAIN + 1):
        found = await locator.locate(si, search, passed_over)
        names = [found.get(s, "") for s in range(6)]
        unasked = _down(service.peers, []) if "" in names else []
        holders = {s: service.holder(node) if node else UnknownNode(None, unasked) for s, node in enumerate(names)
                   if node != service.me}
        silent: list[str] = []
        manifest = own or await _manifest_from(holders, names, cap, silent)
        said = {node for node in names if node and node != service.me} - set(silent) - passed_over
        if own or not search or not said or manifest is not None and manifest_hash(manifest) == cap.manifest_hash:
            break
        if again == SEARCHES_AGAIN:
            log.warning("node(s) %s sent no manifest of %s, nor did those passed over before them (%s): no more "
                        "searches", ", ".join(sorted(said)), si.hex(), ", ".join(sorted(passed_over)))
            break
        log.info("node(s) %s sent no manifest of %s: searching again without their word", ", ".join(sorted(said)),
                 si.hex())
        locator.forget(si)
        passed_over |= said
    if manifest is None:
        raise _not_located(service.peers, [*locator.forget(si), *silent], action)
    if manifest_hash(manifest) != cap.manifest_hash:
        raise await _not_the_capabilitys(service, cap, holders)
    return holders, [node or NONE_FOUND for node in names], manifest


async def _not_the_capabilitys(service: StorageService, cap: Capability, holders: dict[int, Any]) -> XscError:
    """The refusal of a capability whose manifest hash is not that of the manifest stored under its storage index.
    Every copy of that manifest is asked for (this node's, each holder's) with its shares' block hashes: when they
    settle it (core.manifest.unsettled), the capability names another file, the caller's error (400); when the
    copies differ, or the manifest fails its own checks, it is damaged, the node's (500), never blamed on the user."""
    si = cap.storage_index
    own = await in_pool(service.pool, service.store.manifest, si)
    copies = [] if own is None else [own]
    shares = {} if own is None else {m.share: (m.block_hashes, m.stored_bytes)
                                     for m in await in_pool(service.pool, service.store.share_metas, si)}

    async def ask(share: int, holder: Any) -> None:
        try:
            meta = await holder.meta(si, share, size=cap.size)
        except XscError as err:  # a holder that cannot say is left out: the others settle it, or too few do
            log.info("share %d of %s not read from its holder: %s", share, si.hex(), err)
            return
        if meta["manifest"] is not None:
            copies.append(meta["manifest"])
            shares[share] = (meta["block_hashes"], meta["stored_bytes"])

    await at_most(len(holders), [ask(s, h) for s, h in holders.items() if not isinstance(h, UnknownNode)])
    why = unsettled(copies, shares, cap.size)
    if why is None:
        return _another_files(f"the {len(copies)} copies of the stored file's manifest agree")
    log.warning("the manifest of %s is not the capability's, and %s", si.hex(), why)
    return IntegrityError(f"the stored manifest does not match the capability's manifest hash, and {why}",
                          hint="check the capability was copied whole; if it is the one `xsc store put` printed, the "
                               "file's manifest is damaged")


class StorageService:
    def __init__(self, *, gateway: Gateway, deals: StorageDeals, market: MarketService, dealing: Dealing,
                 ledger: LedgerService, payer: Identity, me: str, peers: Any | None, holder_for: Callable[..., Any],
                 pool: Executor, segment_size: int, lease_duration: int, terms: ProviderTerms | None = None,
                 locator: Locator | None = None, strays_interval: float = 600.0,
                 shares_lost: asyncio.Event | None = None) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self.deals = deals
        self.market = market
        self.dealing = dealing  # the market's deals for this node's needs
        self.ledger = ledger
        self.payer = payer  # the local user's account
        self.me = me
        self.peers = peers  # xsc.peers.PeerService, or None for a node on its own
        self._holder_for = holder_for  # (node id, url, price, round trip) -> a Holder on that node (net.RemoteHolder)
        self.pool = pool
        self.segment_size = segment_size
        self.lease_duration = lease_duration
        self.terms = terms  # each provider's terms for this node, and prepayment within ledger.auto_prepay
        self.locator = locator  # where the shares of a file this node did not place are (None: only here)
        self.shares_lost = shares_lost  # set once a put lost shares: the audits start their repair (AuditService)
        self.repair_locks: Locks[bytes] = Locks()  # storage index -> one repair (or removal) of the file at a time
        self.unplaced = Unplaced()  # files whose last repair found nowhere to put a share
        self._deep_check: tuple[str, float] | None = None  # the run over every file going on: its action, its start
        self._view: tuple[int, list[dict], dict[str, int]] | None = None  # files_view's reading, see there
        self.removals = Removals(gateway=gateway, deals=deals, peers=peers, pool=pool, holder=self.holder,
                                 holders_of=self.holders_of, repair_locks=self.repair_locks,
                                 forget_unplaced=self.unplaced.drop, strays_interval=strays_interval)
        self.placing = SharePlacing(gateway=gateway, deals=deals, dealing=dealing, terms=terms, peers=peers,
                                    holder=self.holder, pool=pool, me=me, lease_duration=lease_duration)

    # --- where shares are --------------------------------------------------------------------
    def holder(self, node_id: str, price: int | None = None):
        """The share holder on another node, as the gateway uses it (`price`: the deal a new share is placed at)."""
        if self.peers is None:
            return UnknownNode(node_id)
        try:
            url = self.peers.peer(node_id).url
        except PeerNotFound:
            return UnknownNode(node_id)
        latency = self.peers.availability(node_id).latency_ms  # how much a put keeps in flight to it
        return self._holder_for(node_id, url, price, None if latency is None else latency / 1000)

    def holders_of(self, record: dict | None) -> tuple[dict, list[str] | None]:
        """The holders of a file's shares on other nodes, from the gateway's record of where it put them."""
        nodes = (record or {}).get("placement")
        if not nodes:
            return {}, None
        return {s: self.holder(node) for s, node in enumerate(nodes) if node not in (self.me, LOCAL)}, nodes

    async def placed(self, cap: Capability) -> tuple[dict, list[str] | None]:
        """The holders (on other nodes) and node names of a file's shares, from this gateway's record of it."""
        return self.holders_of(await in_pool(self.pool, self.store.file_record, cap.storage_index))

    async def located(self, cap: Capability, search: bool = True, action: str = "get",
                      passed_over: frozenset[str] = frozenset()) -> tuple[dict, list[str] | None, bytes | None]:
        """(holders, names, manifest) of a file's shares: from this node's record if it placed the file, else as
        the locator finds them (`_searched`).  `action`: what the user asked for, named in the refusal of a file
        found nowhere.  `passed_over`: as in Locator.locate."""
        record = await in_pool(self.pool, self.store.file_record, cap.storage_index)
        _not_mangled(cap, record)  # this node placed the file: its record says which capability is the file's
        if record is not None or self.locator is None:
            return (*self.holders_of(record), None)
        return await _searched(self, self.locator, cap, search, action, passed_over)

    def has_peers(self) -> bool:
        return self.peers is not None and bool(self.peers.peers())

    def latency_rank(self, names: list[str] | None) -> dict[int, float]:
        """Lower is better: this node 0, peers by their latency average (unknown: a second)."""
        if not names or self.peers is None:
            return {}
        return {s: 0.0 if node == self.me else (self.peers.availability(node).latency_ms or 1000.0)
                for s, node in enumerate(names)}

    def summary(self, reports, names: list[str] | None = None) -> dict:
        """Share reports, each with its share's node (this node's id for a share here: a file kept whole on this
        node has a place too) and, for another node, that node's health."""
        shares = [asdict(r) for r in reports]
        for share in shares:
            node = names[share["share"]] if names else self.me
            share["node"] = self.me if node == LOCAL else node
            if share["node"] in (self.me, NONE_FOUND) or self.peers is None:
                continue
            if not self.peers.known(share["node"]):
                share["node_up"] = None  # a holder this node does not know: never probed (not this node)
                share["node_known"] = False  # (removed with `xsc peers rm`): not a peer waiting for its first probe
                continue
            availability = self.peers.availability(share["node"])
            share["node_up"], share["node_ratio_1h"] = availability.up, availability.ratio_1h
            if "unreachable" in share["detail"]:
                share["node_up"] = False  # this check found it down, whatever its last probe said
        intact = sum(r.status == "ok" for r in reports)
        summary = {"shares": shares, "intact": intact, "recoverable": intact >= 4, "healthy": intact == len(reports)}
        at_risk = _on_one_node(shares, self.peers, self.me)
        if at_risk:
            summary["at_risk"] = at_risk
        return summary

    def lease_seconds(self, text: str | None) -> int:
        """`?duration=SECONDS` of a put (default: storage.lease_duration), within the lease bounds."""
        return leases.parse_duration_param(text, self.lease_duration)

    # --- put -----------------------------------------------------------------------------------
    async def quote(self, size: int | None, seconds: int, bid: int, dry: bool = False, *,
                    shares: list[int] | None = None, **wanted) -> quotes.PutQuote:
        """The put's market quote, once the user's credit is known to cover the whole lease (else
        InsufficientCredit).  Its needs stay published until `withdraw`.  `shares`: the share sizes of a group of
        files quoted together (`put_many`), whose needs hold them all and whose credit covers each one's cost."""
        # A provider for each share, for as long as the last matching again after strangers were asked their terms
        # may come.
        await self.market.fill_book(kind="storage", wanted=K + M, needed=quotes.TERMS_SECONDS)
        result = await quotes.quote(self.dealing, self.segment_size, size, seconds, bid, terms=self.terms, dry=dry,
                                    share_bytes=None if shares is None else sum(shares), **wanted)
        try:
            # A stream of unknown size is paid in arrears for what it turns out to hold.  The leases of earlier
            # puts are promised credit too: a put is refused if the credit cannot cover them all.
            cost = result.cost if shares is None else sum(result.file(s).cost for s in shares)
            await self.ledger.ensure_credit(self.payer, cost, promised=await self.promised())
        except BaseException:
            self.withdraw(result)
            raise
        return result

    async def promised(self) -> int:
        """What the leases of earlier puts will still cost the user (micro-credits): the credit a put and a renewal keep
        aside, and the `promised` of the user's balance (LedgerService.balance)."""
        promised = self.deals.recent_outstanding()
        return promised if promised is not None else await in_pool(self.pool, self.deals.outstanding)

    def withdraw(self, quote: quotes.PutQuote, unsent: dict[str, int] | None = None) -> None:
        quotes.withdraw_needs(self.dealing, quote.needs)
        quote.give_back(self.terms, unsent)

    def check_room(self, size: int, capacity: bool = True) -> None:
        """Refuse a put of `size` bytes, before its body is read, that this node has no room for on its disk (DiskFull)
        or, `capacity`, in its capacity (StorageFull); with peers, room for one share (each holder checks its own)."""
        seg = self.segment_size
        needed = layout.share_bytes(size, seg) if self.has_peers() else layout.stored_bytes(size, seg)
        (self.store.check_fits if capacity else self.store.check_disk)(needed)

    async def precheck(self, size: int | None, seconds: int, bid: int, **wanted) -> None:
        """`Expect: 100-continue`: refuse a put that will fail before its body is sent."""
        if size is None:
            return
        self.check_room(size)
        # The market's answer and the credit check, before the body is sent (the put asks again).
        self.withdraw(await self.quote(size, seconds, bid, dry=True, **wanted))

    async def put(self, read: ReadFn, size: int | None, name: str | None, seconds: int, bid: int, *,
                  riding: Riding | None = None, **wanted) -> dict[str, Any]:
        """Store a file: matched, credit-checked, placed, its deals recorded; the put's answer.  `riding(capability)`:
        records of another's written with the file's (`share_store.Rider`)."""
        if size is not None and size < 0:
            raise BadRequest("a put's size cannot be negative")
        if size is not None:  # the disk's room first: the market's refusal would say only that no provider has room
            self.check_room(size, capacity=False)
        quote = await self.quote(size, seconds, bid, **wanted)
        try:
            result = await self._put(read, size, name, seconds, bid, quote, riding)
            quote.drawn.clear()  # stored: its providers keep what it drew from their terms
        finally:
            self.withdraw(quote)
        self.dealing.spent("storage", quote.assignments)  # what the allocation gave is now used
        return await self._after_put(result, size, seconds, quote)

    async def put_many(self, files: list[Whole], seconds: int, bid: int,
                       **wanted) -> list[dict[str, Any] | BaseException]:
        """`put` each of `files` (small files whose bytes are all here), all at once, under one market quote: the
        group's needs hold all their shares, and each file is placed where the quote says and costs what it would
        alone at its prices.  Each one's {"capability", "cost"} (not `put`'s whole answer, which nobody reads here),
        or the exception that failed it, in order.  A group the market or the user's credit refuses is put file by
        file, so that each hears its own answer."""
        shares = [layout.share_bytes(len(f.data), self.segment_size) for f in files]
        try:
            quote = await self.quote(sum(len(f.data) for f in files), seconds, bid, shares=shares, **wanted)
        except Exception as err:  # noqa: BLE001 - each file then hears its own answer
            if len(files) == 1:
                return [err]
            return list(await asyncio.gather(*(_outcome(self._alone(f, seconds, bid, wanted)) for f in files)))

        async def one(f: Whole, own: quotes.PutQuote) -> dict[str, Any]:
            result = await self._put(reader(f.data), len(f.data), f.name, seconds, bid, own, f.riding)
            await self._settled(result, len(f.data), seconds, own)
            return {"capability": str(result.capability), "cost": own.cost}

        owns = [quote.file(s) for s in shares]  # a file stored wrote its deals (`own.deals`): it keeps its part drawn
        try:
            results = await asyncio.gather(*(_outcome(one(f, own)) for f, own in zip(files, owns)))
        finally:
            self.withdraw(quote, quote.costs(self.me, [s for s, own in zip(shares, owns) if not own.deals]))
        stored = sum(s for s, r in zip(shares, results) if not isinstance(r, BaseException))
        if stored:  # what the allocation gave is used by the files stored, and only by them
            self.dealing.spent("storage", [replace(a, quantity=stored) for a in quote.assignments])
        return list(results)

    async def _alone(self, f: Whole, seconds: int, bid: int, wanted: dict) -> dict[str, Any]:
        answer = await self.put(reader(f.data), len(f.data), f.name, seconds, bid, riding=f.riding, **wanted)
        return {"capability": answer["capability"], "cost": answer["cost"]}

    async def _put(self, read: ReadFn, size: int | None, name: str | None, seconds: int, bid: int,
                   quote: quotes.PutQuote, riding: Riding | None = None):
        # A file of known size is paid for before it is stored: its deals are written with it, in one synced write.
        records = None if size is None else self._deal_records(quote, seconds)
        try:
            return await self.gateway.put(read, size, name, place=self._placer(quote), lease_duration=seconds,
                                          replace=self.placing.replacer(quote, bid), me=self.me, records=records,
                                          riding=riding, keep_home=quote.home_offers, rebuild_away=quote.away,
                                          filters=quotes.recorded_filters(quote.filters))
        except db.Error as err:
            if not db.disk_full(err):
                raise
            # The node goes on serving reads; its database reopens itself once there is room (xsc/db.py).
            raise DiskFull("the data dir's disk is full: nothing of this file was stored",
                           hint="free disk space, then put it again: the node needs no restart") from err

    async def _after_put(self, result, size: int | None, seconds: int, quote: quotes.PutQuote) -> dict[str, Any]:
        deals = await self._settled(result, size, seconds, quote)
        return {**result.to_json(), **quote.to_json(), "deals": [d.to_json() for d in deals]}

    async def _settled(self, result, size: int | None, seconds: int, quote: quotes.PutQuote) -> list[StorageDeal]:
        """A stored file's deals counted (or recorded, when they were not written with it) and its placement kept."""
        cap = result.capability
        quote.share_bytes = result.stored_bytes // len(result.placement)
        if size is None:  # a stream's cost is known only now: unpaid, it is not kept
            try:
                await self.ledger.ensure_credit(self.payer, quote.cost, promised=await self.promised())
            except XscError:
                await self.removals.delete_everywhere(cap)
                raise
        if quote.deals:
            deals = quote.deals
            self.deals.written(deals)
        else:
            deals = await in_pool(self.pool, self.deals.record, cap.storage_index, result.placement, quote.share_bytes,
                                  quote.prices, result.lease_expiry - seconds, result.lease_expiry)
        if self.locator is not None:
            self.locator.placed(cap.storage_index, list(result.placement))
        if result.lost and self.shares_lost is not None:  # its repair starts now, not at the next watch
            self.shares_lost.set()
        return deals

    def _deal_records(self, quote: quotes.PutQuote, seconds: int):
        """The put's deals as records to write with the file (kept in `quote.deals`), made from where its shares
        went and at what price once every share is placed."""

        def records(si: bytes, placement: list[str], lease_expiry: int) -> dict[bytes, bytes]:
            quote.deals = self.deals.make(si, placement, quote.share_bytes, quote.prices, lease_expiry - seconds,
                                          lease_expiry)
            return self.deals.entries(si, quote.deals)

        return records

    def _placer(self, quote: quotes.PutQuote):
        """Where a put's shares go: the providers the market matched to its needs, each told its deal price."""

        def place(si: bytes, share_bytes: int) -> tuple[list[str], dict]:
            nodes = list(quote.nodes)
            return nodes, {s: self.holder(node, quote.prices[s]) for s, node in enumerate(nodes) if node != self.me}

        return place

    # --- get, list ---------------------------------------------------------------------------
    async def open(self, cap: Capability, byte_range: tuple[int, int] | None = None
                   ) -> tuple[int, Plaintext]:
        """The file's size and its plaintext (only bytes first..last of `byte_range`: only the segments
        covering them are read)."""
        return await _open(self, cap, byte_range)

    async def files(self) -> list[dict]:
        return await in_pool(self.pool, lambda: sorted(self.store.files(), key=lambda f: f["created"]))

    async def files_view(self, limit: int | None = None) -> dict[str, Any]:
        """The files, oldest first (`limit`: the newest that many only), how many there are, and the shares of
        all of them counted by the node that holds them (the dashboard's map of who holds what)."""
        writes = self.store.file_writes  # the reading is kept while no file record is written (the dashboard polls)
        if self._view is None or self._view[0] != writes:
            files = await self.files()
            held: dict[str, int] = {}
            for f in files:
                for node in f.get("placement") or [self.me] * 6:
                    node = self.me if node == LOCAL else node
                    held[node] = held.get(node, 0) + 1
            self._view = (writes, files, held)
        _, files, held = self._view
        shown = files[-limit:] if limit else files
        return {"files": [dict(f) for f in shown], "count": len(files), "shares_per_node": dict(held)}

    async def stored(self, cap: Capability) -> bool:
        """Whether this node's user has the file `cap` names (it was put here and not removed)."""
        record = await in_pool(self.pool, self.store.file_record, cap.storage_index)
        return record is not None and record["capability"] == str(cap)

    def start(self) -> None:
        """Finish the removals a crash cut short, and delete the copies of shares on other nodes that no placement
        holds (gateway_repair.release_strays), in the background (removals.py)."""
        self.removals.start()
        if (disk := disk_free(self.store)) is not None and disk < self.store.free:
            log.warning("storage.capacity leaves %s free, but the data dir's disk has %s free: puts and other nodes' "
                        "shares will find the disk full first (set storage.capacity to what the disk can hold: xsc "
                        "config set storage.capacity SIZE)", format_size(self.store.free), format_size(disk))

    def loops(self) -> dict[str, Any]:
        return {**self.removals.loops(),
                "upload-keepalive": periodic("upload-keepalive", KEEP_ALIVE / 2, self.gateway.keep_alive)}

    async def close(self) -> None:
        await self.removals.close()

    # --- check, verify, repair, renew ------------------------------------------------------------
    async def check(self, cap: Capability) -> dict:
        _, names, _, reports = await _checked(self, cap, "check", reports=True)
        return self._told(cap, self.summary(reports, names))

    async def verify(self, cap: Capability, progress: gateway_repair.Progress | None = None) -> dict:
        holders, names, manifest, _ = await _checked(self, cap, "verify")
        return self._told(cap, self.summary(await self.gateway.verify(cap, holders, names, manifest, progress), names))

    def _told(self, cap: Capability, summary: dict) -> dict:
        """A check's or verify's summary with why the file's last repair left a share where it is
        (`repair_problem`), while the file is not healthy."""
        said = self.unplaced.of(cap.storage_index)
        if said is not None and not summary["healthy"]:
            summary["repair_problem"] = said
        return summary

    async def where(self, si: bytes) -> dict:
        """What this node tells a peer about a storage index (`POST /v1/peer/locate`)."""
        if self.locator is None:
            return {"shares": [], "holders": {}}
        return await in_pool(self.pool, self.locator.answer, si)

    async def deep_check(self, repair: bool, progress: gateway_repair.Progress | None = None,
                         going_on: Callable[[], bool] = lambda: True) -> dict:
        """Every file verified, and with `repair` each damaged one repaired, the run going on past any one's failure
        (storage/deep_check.py).  One run at a time, wherever it was asked for (the CLI, the dashboard): a second
        would only read every block again, and its repairs wait on the first's."""
        if self._deep_check is not None:
            action, since = self._deep_check
            ago = time.time() - since
            raise DeepCheckRunning(f"a {action} of every file is running already (started "
                                   f"{f'{ago:.0f} s ago' if ago >= 1 else 'just now'})",
                                   hint="wait for it to end, then start this run again", running=action, since=since)
        self._deep_check = ("repair" if repair else "verify", time.time())
        try:
            return await deep_check.deep_check(self, repair=repair, progress=progress, going_on=going_on)
        finally:
            self._deep_check = None

    def repairing(self, si: bytes) -> bool:
        return self.repair_locks.locked(si)

    async def repair(self, cap: Capability, progress: gateway_repair.Progress | None = None) -> dict:
        """Rebuild a file's missing or corrupt shares: local ones here, remote ones on another healthy node.

        A file another node placed (this node was handed its capability) is found as `get` finds it, and
        repaired at this node's expense: the shares it rebuilds are placed under deals of its own.
        One repair of a file at a time (an on-demand one and an automatic one must not both move a share):
        a second waits for the first, then finds what is left to do.  `progress`: told how it goes (gateway_repair)."""
        _not_mangled(cap, await in_pool(self.pool, self.store.file_record, cap.storage_index))
        mine = await self.stored(cap)
        async with self.repair_locks.one(cap.storage_index):
            # A removal may have begun without this lock (`Removals.begin`): its file is not repaired, as another's.
            if not await self.stored(cap) and (mine or await in_pool(self.pool, self.store.known_file,
                                                                      cap.storage_index)):
                raise NotFound("the file was removed while its repair waited",
                               hint="`xsc store ls` lists the files this node uploaded")
            # Copies an earlier repair of this file committed and never placed (it failed, or a crash cut it short).
            await gateway_repair.release_strays(self.gateway, self.holder, cap.storage_index)
            holders, names, fetched, _ = await _checked(self, cap, "repair")
            record = await in_pool(self.pool, self.store.file_record, cap.storage_index) if fetched is None else None
            wanted = quotes.filters_of(record)  # the put's own: the shares rebuilt go where it would have put them
            moved: dict[int, tuple[str, int]] = {}
            relocate = self.placing.relocator(cap, moved, fetched, wanted)
            # The shares lost during a put that kept none here go where that put would have placed them, and no share
            # of a file whose put named this node in --avoid is rebuilt here.
            away, not_here = set((record or {}).get("away", ())), ""
            if self.me in wanted.get("avoid", ()):
                away, not_here = set(range(K + M)), "the put named this node in --avoid"
            try:
                result = await self.gateway.repair(cap, holders, names, relocate=relocate, me=self.me, fetched=fetched,
                                                   progress=progress, away=away, not_here=not_here,
                                                   placed=_deals_follow(self, cap, moved) if fetched is None
                                                   else _adopting(self, cap, fetched, moved))
            except MarketNoDeal as err:
                err = _within(err, quotes.describe_filters(wanted, self.me))
                self.unplaced.note(cap.storage_index, err.with_hint)
                raise err from None
            except Exception:
                self.unplaced.drop(cap.storage_index)  # what `check` and `verify` tell is the last repair's
                raise
            self.unplaced.drop(cap.storage_index)
            if result["repaired"] and self.locator is not None:
                self.locator.placed(cap.storage_index, list(result["placement"]))
            if fetched is not None:  # where another node's file's shares are now: asked again, not remembered
                self.locator.forget(cap.storage_index)
            # Checked before the lock goes: a removal waiting for this repair would else unlist the file first, and
            # the repair that succeeded would answer that no node holds it.
            answer = {**result, **await self.check(cap)}
        warning = single_points(result["placement"] or [], self.me)
        if warning:
            answer["warning"] = warning
        return answer

    async def renew(self, cap: Capability, body: Mapping[str, Any]) -> dict:
        """Extend every share's lease to now + duration, here and on each holder (body {"duration": seconds}).

        `extended` lists, per share renewed, the bytes held and the seconds added: what the renewal is paid
        for (the payment settles these entries)."""
        if type(body.get("duration", 0)) is not int:
            raise BadRequest('send {"duration": <seconds>} (or {} for the node\'s storage.lease_duration)',
                             hint=leases.DURATION_HINT)
        duration = leases.check_duration(body.get("duration", self.lease_duration))
        # The extension is paid like the lease: at each share's deal price, in arrears, for what is held;
        # the user's credit must cover all of it before any lease is extended.
        deals = [d for d in await in_pool(self.pool, self.deals.of_file, cap.storage_index) if not d.ended]
        target = int(time.time()) + duration
        cost = sum(d.cost(target - d.end) for d in deals if d.end < target)
        await self.ledger.ensure_credit(self.payer, cost, promised=await self.promised())
        holders, names = await self.placed(cap)
        result = await self.gateway.renew(cap, duration, holders, names, me=self.me)
        renewed = {e["share"] for e in result.get("renewed", [])}
        await in_pool(self.pool, self.deals.extended, cap.storage_index, result["requested"], renewed)
        return {**result, "cost": cost}

    def status(self) -> dict:
        store = self.store
        return {"capacity": store.capacity, "used": store.used, "reserved": store.reserved, "free": store.free,
                "disk_free": disk_free(store),
                "shares": store.shares_held, "compaction": store.compactor.status() if store.compactor else None,
                "gets": {"open": self.gateway.gets_open, "passed_on": self.gateway.passing_on,
                         "tag_failures": self.gateway.tag_failures}}


async def _open(service: StorageService, cap: Capability, byte_range: tuple[int, int] | None
                ) -> tuple[int, Plaintext]:
    """StorageService.open: a file found by a search whose nodes did not give the shares they said they hold (too
    few intact) is searched for once more with their word heard last (Locator.locate's `passed_over`), and read
    from the other nodes that say they hold those shares, if any."""
    passed_over: frozenset[str] = frozenset()
    failure: NotEnoughShares | None = None
    names: list[str] | None = None
    while True:
        located = await service.located(cap, passed_over=passed_over)
        if failure is not None and located[1] == names:
            raise failure  # no other node says it holds what those did not give
        holders, names, manifest = located
        try:
            return await service.gateway.open(cap, holders, names, service.latency_rank(names),
                                              byte_range=byte_range, manifest=manifest)
        except NotEnoughShares as err:
            if manifest is None or service.locator is None:
                raise
            service.locator.forget(cap.storage_index)  # the hint fell short: search again next time
            failed = _not_given(service, names, err.details.get("missing_shares", ())) - passed_over
            if not failed or passed_over:
                raise
            log.warning("node(s) %s did not give shares of %s they said they hold: searching again without their "
                        "word", ", ".join(sorted(failed)), cap.storage_index.hex())
            passed_over, failure = frozenset(failed), err


async def _checked(service: StorageService, cap: Capability, action: str, reports: bool = False
                   ) -> tuple[dict, list[str] | None, bytes | None, list]:
    """(holders, names, manifest) as `located` finds them, and the check of their shares.  For a file found by a
    search, when a node that said it holds shares does not have them intact, the search is made once more with its
    word heard last (Locator.locate's `passed_over`), and taken if it names other nodes: a repair does not rebuild, at
    this node's expense, shares another node holds intact.  A file this node placed is checked only if `reports`."""
    holders, names, manifest = await service.located(cap, action=action)
    if manifest is None and not reports:
        return holders, names, manifest, []
    checked = await service.gateway.check(cap, holders, names, manifest)
    failed = set() if manifest is None else _not_given(service, names, [r.share for r in checked if r.status != "ok"])
    if failed:
        again = await service.located(cap, action=action, passed_over=frozenset(failed))
        if again[1] != names:
            log.warning("node(s) %s do not hold intact the shares of %s they said they hold: taken from others",
                        ", ".join(sorted(failed)), cap.storage_index.hex())
            holders, names, manifest = again
            checked = await service.gateway.check(cap, holders, names, manifest)
    return holders, names, manifest, checked


def _not_given(service: StorageService, names: list[str] | None, shares: Iterable[int]) -> set[str]:
    """The other nodes a search named (`names`) as holding `shares` of a file, which did not give them intact."""
    return {names[s] for s in shares if s < len(names)} - {service.me, NONE_FOUND} if names else set()


def _within(err: MarketNoDeal, filters: str) -> MarketNoDeal:
    """A repair's "no other node takes share s of this file" naming the put's filters (`filters`: as the user gave
    them, "" for none) that left no node to take it."""
    if not filters:
        return err
    said = err.message.replace(" of this file, ", f" of this file within its put's filters ({filters}), ", 1)
    return MarketNoDeal(said,
                        hint=(err.hint or "").replace("offer storage", "offer storage and meet those filters") or None,
                        **err.details)


def _not_mangled(cap: Capability, record: dict | None) -> None:
    """InvalidCapability, the caller's error, when `cap` has the storage index of a file this node placed (`record`)
    and is not its capability: mangled on its way here (the storage index comes from the key, which is the file's)."""
    if record is None or record.get("capability") == str(cap):
        return
    size = Capability.parse(record["capability"]).size
    if size != cap.size:
        raise InvalidCapability(f"the file is {size} bytes, the capability says {cap.size}",
                                hint="check the capability: copy it whole, as `xsc store put` printed it")
    raise _another_files("this node put the file there, under another capability")


def _another_files(why: str) -> InvalidCapability:
    """A capability whose storage index holds a file whose manifest hash is not the capability's (`why`: how that is
    known): the capability names another file, or was mangled; the caller's error."""
    return InvalidCapability(f"the capability does not match the file stored under its storage index: its manifest "
                             f"hash is another file's ({why})",
                             hint="check the capability was copied whole, and is the one `xsc store put` printed "
                                  "for this file")


def _adopting(service: StorageService, cap: Capability, fetched: bytes, moved: dict[int, tuple[str, int]]):
    """How a repair of another node's file writes where its shares are now: with deals of this node's for the
    shares it placed on providers (`moved`: share -> (node, price) the relocator chose), in one synced write.  A
    crash between the two would leave those copies held under no deal, and dropped from the note of copies to
    delete (`note_strays`) by the placement: unpaid and never given back."""

    def placed(si: bytes, before: list[str], after: list[str], lease_expiry: int) -> None:
        manifest = service.gateway.manifest(cap, fetched)
        share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
        prices = {s: price for s, (node, price) in moved.items() if node != service.me and after[s] == node}
        deals = service.deals.make(si, after, share_bytes, prices, int(time.time()), lease_expiry, set(prices))
        with share_store.placing(service.store, si, None), \
                service.store.db.write_batch(sync=True, transaction=True) as batch:
            for key, value in service.deals.entries(si, deals).items():
                batch.put(key, value)
            service.store.set_placement(si, after, batch)
        service.deals.written(deals)

    return placed


def _deals_follow(service: StorageService, cap: Capability, moved: dict[int, tuple[str, int]]):
    """How a repair of this node's own file writes its new placement: with the deals of the shares that moved,
    in one synced write (a crash between the two would leave a share's deal, and its pay, with its old holder), and
    only while the file is listed (`share_store.placing`: else the repair fails, its copies taken back or noted to
    delete).  `moved`: share -> (node, price) the relocator chose; a share rebuilt elsewhere keeps its deal's price."""

    def placed(si: bytes, before: list[str], after: list[str], lease_expiry: int) -> None:
        moves = {}
        for share, node in enumerate(after):
            if before[share] != node:
                chosen, price = moved.get(share, (node, None))
                moves[share] = (node, price if chosen == node else None)
        # A holder a share moved off may still hold its copy (it was down, or its copy corrupt): noted to delete there
        # in the write that moves it, so the next strays round, repair or removal deletes it once the holder answers.
        left_behind = {s: before[s] for s in moves if before[s] not in (service.me, LOCAL, "")}
        with share_store.placing(service.store, si, str(cap)):
            service.deals.moved(si, moves, int(time.time()), also=lambda batch: service.gateway.store.set_placement(
                si, after, batch, left_behind, lease_expiry))

    return placed


def _on_one_node(shares: list[dict], peers: Any, me: str) -> str:
    """Why a file whose every share is on one node is at risk while another node is up to hold some ("": it is
    not): present or not, its shares survive the loss of shares, not of that node."""
    nodes = {s["node"] for s in shares if s["status"] == "ok"}
    if len(nodes) != 1 or peers is None:
        return ""
    (node,) = nodes
    others = sum(d.id != node for d in peers.up_peers()) + (node != me)  # this node is up, too
    if not others:  # (a node on its own can do no better)
        return ""
    where = "this node" if node == me else f"node {node}"
    return (f"all {len(shares)} shares are on {where}: the file does not survive its loss, while "
            f"{others} other node{'s are' if others > 1 else ' is'} up")


def disk_free(store: share_store.ShareStore) -> int | None:
    """Bytes free on the disk the store's blocks are on (a data dir's disk may hold less than storage.capacity), or
    None where it cannot be read."""
    try:
        return shutil.disk_usage(store.blocks.path).free
    except (AttributeError, OSError):
        return None


__all__ = ["LOCAL", "StorageService", "UnknownNode", "Unplaced"]
