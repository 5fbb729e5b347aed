"""The node's services as one typed object, built in dependency order and closed in reverse.

`Node.open` is the one place where the node is put together: one setup block per subsystem, read top to bottom
to see what depends on what (storage and the ledger, then the peers, the market and the allocation, payments and
storage deals, audits, compute).  Every service is then handed to the node's `Supervisor` (xsc/tasks.py) in that
order: it starts each one and runs and watches its background loops; `Node.close` stops them in reverse.  The
aiohttp app holds the node (`app[NODE]`); routes read its fields (`request.app[NODE].market`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import aiohttp

from ..allocation.itc_ids import FORK_BURST, FORK_RATE
from ..allocation.service import AllocationService
from ..allocation.core.subscriptions import Subscribers
from ..compute.functions import WebFunctions
from ..compute.placed_functions import PlacedFunctions, web_url
from ..compute.placements import Placements
from ..compute.hosted_jobs import HostedJobs
from ..compute.jobs import JobService
from ..compute.maps import Maps
from ..compute.paid import PaidCompute
from ..compute.provider_tabs import ProviderTabs
from ..compute.remote_tabs import GatewayTabs
from ..compute.sent_jobs import SentJobs
from ..compute.watches import Watches
from ..compute.service import ComputeService
from ..config import NodeConfig, dialable, names_this_machine
from ..db import Database
from ..dht import DhtService
from ..identity import Identity
from ..ledger.service import LedgerService
from ..ledger.settlement import Payments
from ..ledger.tabs import Tabs
from ..ledger.trust import TrustLines
from ..market.dealing import Dealing
from ..market.needs import NeedRegistry
from ..market.recognition import Recognition
from ..market.replication import MAX_COMMITMENTS
from ..market.service import MarketService
from ..net import PeerClient, peer_session, traffic
from ..net.dial import own_addresses
from ..peers import HealthService, PeerService
from ..peers.admission import Admission, Quarantine
from ..peers.service import NEW_NODE_BURST, PeerDirectory, challenge
from ..buckets.accounts import UserAccounts
from ..buckets.index import S3Index, funded, index_funded
from ..buckets.marks import FileMarks
from ..buckets.objects import ObjectWriter
from ..buckets.refunds import Refunds
from ..s3.local import LocalNode
from ..storage import Gateway, ShareStore
from ..storage.audits import AuditService
from ..storage.compactor import Compactor
from ..storage.deals import HolderTerms, StorageDeals
from ..storage.files import StorageService
from ..storage.holder import ShareHolder
from ..storage.holder_client import RemoteHolder, SenderLanes
from ..storage.lease_gc import LeaseCollector
from ..storage.locate import Locator
from ..storage.scrubber import Scrubber
from ..storage.strangers import ProviderTerms
from ..storage.core.wire import DAMAGE_ANSWER, DAMAGE_PATH
from ..heap import HeapTrim
from ..tasks import Supervisor, Workers, in_pool
from .datadir import open_blocks
from .limits import RateLimiter
from .metrics import Metrics

log = logging.getLogger(__name__)


class Node:
    """Every service of a running node, one typed field each, in the order they are built."""

    # resources, given
    config: NodeConfig
    db: Database
    pool: ThreadPoolExecutor
    metrics: Metrics
    identity: Identity  # the node's key: provider account, signs provenance and peer requests
    payer: Identity  # the local user's key: payer account
    supervisor: Supervisor
    # storage and the ledger
    ledger: LedgerService
    store: ShareStore
    compactor: Compactor  # the blocks' database compacted where large runs of blocks were removed
    gateway: Gateway
    compute: ComputeService
    # the peers
    session: aiohttp.ClientSession
    client: PeerClient
    lanes: SenderLanes  # segment bodies in flight to each holder
    quarantine: Quarantine
    admission: Admission
    peers: PeerService
    health: HealthService
    # the market and the allocation
    needs: NeedRegistry
    recognition: Recognition
    trust: TrustLines
    subscribers: Subscribers
    market: MarketService
    allocation: AllocationService
    dealing: Dealing
    # payments, storage deals, the user's files, shares held for others
    payments: Payments
    terms: HolderTerms
    deals: StorageDeals
    provider_terms: ProviderTerms  # what strangers' nodes ask of this one before they take a share
    dht: DhtService
    locator: Locator
    storage: StorageService
    share_holder: ShareHolder
    # audits and upkeep
    audits: AuditService
    scrubber: Scrubber
    lease_gc: LeaseCollector
    # compute
    tabs: Tabs
    gateway_tabs: GatewayTabs
    provider_tabs: ProviderTabs
    paid: PaidCompute
    hosted_jobs: HostedJobs  # jobs other nodes placed here
    jobs: JobService
    maps: Maps  # one job per input, with a record that a map cut short goes on from
    watches: Watches  # jobs kept run over an S3 prefix
    functions: WebFunctions  # WASI programs answering HTTP (node.web_listen)
    placements: Placements  # where the user's functions on the market are served
    placed_functions: PlacedFunctions  # functions other nodes placed here
    s3_index: S3Index  # the user's bucket index: the S3 front (its own process) records objects there
    s3_accounts: UserAccounts  # each S3 user's ledger account, which pays for its puts
    s3_objects: ObjectWriter  # small objects stored and recorded in one request of the S3 front
    s3_refunds: Refunds  # what S3 users paid for writes refused after their charge, paid back
    s3_link: LocalNode  # the S3 front's node when it answers S3 itself (node.s3_listen)

    def __init__(self, *, config: NodeConfig, db: Database, pool: ThreadPoolExecutor, metrics: Metrics,
                 identity: Identity, payer: Identity) -> None:
        self.config, self.db, self.pool, self.metrics = config, db, pool, metrics
        self.identity, self.payer, self.me, self.supervisor = identity, payer, identity.id, Supervisor()

    @classmethod
    async def open(cls, *, peer_url: str, **resources) -> Node:
        """Build every service in dependency order (nothing started yet: `start`)."""
        node = cls(**resources)
        await node._storage_and_ledger()
        node._peers(peer_url, None if names_this_machine(peer_url) else await own_addresses(peer_url))
        node._market()
        node._payments_and_files()
        node._upkeep()
        node._compute()
        return node

    def start(self) -> None:
        """Start every service in the order built, each one's loops under the supervisor."""
        for name in ("tabs", "compute", "paid", "peers", "health", "market", "allocation", "payments", "deals",
                     "dht", "storage", "share_holder", "audits", "scrubber", "lease_gc", "hosted_jobs", "jobs",
                     "watches", "functions", "placed_functions", "placements", "s3_refunds", "compactor"):
            self.supervisor.add(name, getattr(self, name))
        self.supervisor.add("heap", HeapTrim())

    async def leave(self) -> None:
        """The stop's first step (serve/stop.py): tell the peers the node leaves, and take no new work."""
        await self.market.leave()

    def cut_short(self) -> None:
        """A stop forced: what the services' close would still wait for (a job's run) stops now."""
        self.hosted_jobs.cut_short()

    async def close(self) -> None:
        """Stop the services in reverse, then close what they used."""
        await self.supervisor.close()
        self.block_writer.shutdown(wait=True)
        self.store.blocks.close()
        self.client.close()
        await self.session.close()
        await self.ledger.close()

    # --- setup, one block per subsystem ----------------------------------------------------------------
    async def _storage_and_ledger(self) -> None:
        config, db, pool, identity = self.config, self.db, self.pool, self.identity
        self.ledger = LedgerService(db, config.ledger.credit_limit, node=identity, client=self.payer,
                                    threads=config.compute.threads, low_balance=config.ledger.low_balance,
                                    retention=config.ledger.record_retention,
                                    promised=lambda: self.storage.promised())  # the storage service is built later
        self.compactor = Compactor(blocks := open_blocks(config.data_dir))
        self.store = store = ShareStore(db, config.storage.capacity, blocks=blocks, compactor=self.compactor)
        interrupted = await in_pool(pool, store.recover)
        if interrupted:
            log.warning("removed what interrupted uploads had staged (uploads: %d)", interrupted)
        self.block_writer = Workers(1, "xsc-block-writer")
        self.gateway = Gateway(store, pool, segment_size=config.storage.segment_size,
                               lease_duration=config.storage.lease_duration, node_key=identity.public_key,
                               depth=2 * max(2, config.compute.threads) + 2,
                               remote_timeout=config.storage.remote_timeout, writer=self.block_writer,
                               take_over=lambda si, shares: self.share_holder.take_over(si, shares))  # built later
        self.metrics.bytes_stored.set_function(lambda: store.used)
        self.metrics.shares_held.set_function(lambda: store.shares_held)
        self.compute = ComputeService(db=db, identity=identity, data_dir=config.data_dir, config=config.compute)

    def _peers(self, url: str, resolved: list[str] | None) -> None:
        config, store = self.config, self.store
        meter = traffic.Meter(self.metrics.peer_bytes)
        # a devnet on loopback dials anything; a node reached elsewhere nothing on its machine, nor its LAN if public
        reach = dialable(url, resolved)
        if resolved is None and not names_this_machine(url):
            log.warning("%s did not resolve: this node dials no private (LAN) address until it starts again", url)
        self.session = peer_session(config.peers.congestion, meter, reach)
        self.client = PeerClient(self.identity, self.session, config.peers.request_timeout, tls=config.peers.tls,
                                 grid_secret=config.peers.grid_secret, channel=config.peers.channel_auth, meter=meter,
                                 congestion=config.peers.congestion, dialable=reach, misbehaved=self.strike,
                                 unreached=lambda peer: self.health.unreached(peer))  # (built next)
        self.lanes, self.quarantine = SenderLanes(), Quarantine(self.db, strikes=config.peers.quarantine_strikes,
                                                                duration=config.peers.quarantine_for)
        self.admission = Admission(min_difficulty=config.peers.min_difficulty, grid_secret=config.peers.grid_secret,
                                   quarantine=self.quarantine, on_this_machine=names_this_machine(url))
        directory = PeerDirectory(self.db, lambda d: self.admission.refusal(d, quarantine=False) is None)
        self.health = HealthService(db=self.db, directory=directory, config=config.health,
                                    challenge=partial(challenge, self.client, self.identity),
                                    neighbours=lambda: self.recognition.weights().keys())
        self.peers = PeerService(identity=self.identity, db=self.db, config=config, client=self.client, url=url,
                                 storage=lambda: {"capacity": store.capacity, "free": store.room.offerable()},
                                 admission=self.admission, directory=directory, health=self.health,
                                 new_nodes=RateLimiter(config.peers.new_node_rate, NEW_NODE_BURST, "new nodes"))
        if "://0.0.0.0:" in url or "://[::]:" in url:
            log.warning("peers cannot reach %s: set peers.public_url (XSC_PEERS_PUBLIC_URL)", url)

    def _market(self) -> None:
        config, db, me, store = self.config, self.db, self.me, self.store
        self.needs = NeedRegistry(db=db, me=me, config=config.market)  # the one writer of this node's need slots
        self.recognition = Recognition(db=db, me=me, peers=self.peers, at_most=config.market.recognised_at_most,
                                       half_life=config.market.recognition_half_life)
        # Credit only along recognition: the peers the user recognises get a credit line, strangers prepay.
        self.trust = TrustLines(db, stranger_credit=config.ledger.stranger_credit,
                                peer_credit=config.ledger.peer_credit, recognised=self.recognition.recognised,
                                retention=config.ledger.record_retention, me=me)
        self.subscribers = Subscribers()  # who subscribed to its allocation records and market commitment
        self.market = market = MarketService(
            config=config.market, identity=self.identity, db=db, peers=self.peers, needs=self.needs,
            weights=self.recognition, subscribers=self.subscribers, web=bool(config.node.web_listen),
            storage_usage=store.room.usage, compute_threads=config.compute.threads,
            gossip_interval=config.peers.gossip_interval, pool=self.pool, credit_lines=self.trust,
            limiter=RateLimiter(config.market.commitment_rate, 2 * MAX_COMMITMENTS, "commitments to check"),
            find_providers=lambda *asked: self.dht.find_providers(*asked))  # the table starts later
        self.allocation = allocation = AllocationService(
            config=config.market, identity=self.identity, db=db, market=market, needs=self.needs,
            subscribers=self.subscribers, peers=self.peers, gossip_interval=config.peers.gossip_interval,
            joins=bool(config.peers.urls), forks=RateLimiter(FORK_RATE, FORK_BURST, "ITC forks"))
        self.dealing = Dealing(market=market, needs=self.needs, allocated=allocation.allocated,
                               defaulted=allocation.defaulted, pool=self.pool)
        # A removed or quarantined peer's commitments leave the book and the allocation.
        self.peers.on_removed.extend((market.forget, allocation.forget))
        self.quarantine.on_quarantined.extend((market.forget, allocation.forget))

    def strike(self, peer: str, why: str) -> None:
        if peer != self.me:
            self.quarantine.strike(peer, why)

    def holder_for(self, node: str, url: str, price: int | None = None, round_trip: float | None = None) -> RemoteHolder:
        # receipts: by the payer named
        return RemoteHolder(self.client, node, url, price, self.payer.id, self.lanes, round_trip)

    def _payments_and_files(self) -> None:
        config, db, pool, me, market, trust = self.config, self.db, self.pool, self.me, self.market, self.trust
        self.payments = payments = Payments(
            ledger=self.ledger, payer=self.payer, node=self.identity, peers=self.peers, client=self.client,
            retry_interval=config.ledger.settle_retry_interval,
            on_paid=lambda peer, amount, by_them: market.note_paid(peer, amount, by_them=by_them),
            on_countersigned=trust.paid, on_strike=self.strike, on_owed=trust.owe, collectable=trust.collectable,
            owe_counted=trust.owe_counted, counting=trust.counting)
        payments.add_check("prepay", payments.check_prepayment)
        self.terms = HolderTerms(db=db, store=self.store, ask=lambda: market.offer.honoured_ask("storage"))
        payments.add_check("store", self.terms.check_receipt)
        self.deals = StorageDeals(db=db, me=me, store=self.store, pool=pool, pay=payments.pay,
                                  paid_for=payments.paid_for, audits_on=config.audit.blocks_per_round > 0,
                                  payment_interval=config.market.payment_interval)
        self.provider_terms = ProviderTerms(db=db, peers=self.peers, prepay=payments.prepay, budget=config.ledger)
        self.dht = DhtService.configured(identity=self.identity, peers=self.peers, config=config,
                                         quota=RateLimiter(config.peers.dht_rate, 2 * config.peers.dht_rate),
                                         on_this_machine=self.admission.on_this_machine)
        self.locator = Locator(me=me, store=self.store, pool=pool, peers=self.peers, table=self.dht)
        self.shares_lost = asyncio.Event()  # set by a put that lost shares, for the audits' repairs to start them
        self.storage = StorageService(
            gateway=self.gateway, deals=self.deals, market=market, dealing=self.dealing, ledger=self.ledger,
            payer=self.payer, me=me, peers=self.peers, holder_for=self.holder_for, pool=pool,
            terms=self.provider_terms, locator=self.locator, segment_size=config.storage.segment_size,
            lease_duration=config.storage.lease_duration, strays_interval=config.storage.gc_interval,
            shares_lost=self.shares_lost)
        self.share_holder = ShareHolder(self.store, pool, self.terms, trust=trust, publisher=self.gateway.publisher)

    def _on_audit(self, node: str, ok: bool, detail: str, struck: bool) -> None:
        self.health.record_audit(node, ok, detail)
        self.deals.note_audit(node, ok)  # a holder is paid only for periods it passed its audits
        if not ok and not struck:  # `struck`: its answer was, as not of an audit's shape or over its bound
            self.strike(node, f"failed an audit: {detail}")

    async def _report_damage(self, uploader: str, si: bytes, share: int, segments: list[int]) -> None:
        if uploader == self.me:
            return await self.audits.damage_reported(si, share, segments, self.me)
        await self.peers.request(self.peers.peer(uploader).url, "POST", DAMAGE_PATH, to=uploader, max_size=DAMAGE_ANSWER,
                                 json={"si": si.hex(), "share": share, "segments": segments})

    def _upkeep(self) -> None:
        config, pool = self.config, self.pool
        self.audits = AuditService(config=config.audit, probe_interval=config.health.probe_interval, me=self.me,
                                   gateway=self.gateway, pool=pool, peers=self.peers, holder_for=self.holder_for,
                                   on_audit=self._on_audit, repair=self.storage.repair, shares_lost=self.shares_lost)
        self.scrubber = Scrubber(config=config.audit, store=self.store, pool=pool, report_damage=self._report_damage)
        self.lease_gc = LeaseCollector(config=config.storage, store=self.store, pool=pool, terms=self.terms,
                                       repairing=self.storage.repairing, registry=self.metrics.registry,
                                       trust=self.trust)

    def _compute(self) -> None:
        config, identity, payer, metrics = self.config, self.identity, self.payer, self.metrics
        self.tabs = Tabs(ledger=self.ledger, identities=[payer, identity], interval=config.ledger.tab_interval,
                         threshold=config.ledger.tab_threshold, max_refs=config.ledger.tab_max_refs)
        self.gateway_tabs = GatewayTabs(db=self.db, payments=self.payments, client=self.client, peers=self.peers)
        self.provider_tabs = ProviderTabs(db=self.db, ledger=self.ledger, node=identity)
        self.paid = PaidCompute(
            compute=self.compute, market=self.market, dealing=self.dealing, ledger=self.ledger, payments=self.payments,
            tabs=self.tabs, gateway_tabs=self.gateway_tabs, provider_tabs=self.provider_tabs, payer=payer,
            node=identity, peers=self.peers, client=self.client, default_bid=config.market.compute_bid,
            terms=self.provider_terms, on_invoked=lambda label: metrics.child(metrics.invocations, label).inc(),
            trust=self.trust, check_rate=config.compute.check_rate, on_strike=self.strike)
        self.s3_index = s3_index = S3Index(self.db, max_buckets=config.node.s3_max_buckets,
                                           max_uploads=config.node.s3_max_uploads,
                                           upload_expiry=config.node.s3_upload_expiry, store=self.store,
                                           marks=FileMarks.load(config.data_dir))
        self.s3_accounts = UserAccounts(self.ledger, payer, funded=lambda: funded(s3_index),
                                        charged=lambda caps: in_pool(self.pool, s3_index.charged, caps),
                                        chargeable=lambda *asked: in_pool(self.pool, s3_index.chargeable, *asked))
        index_funded(s3_index, self.s3_accounts.funded_in_ledger)  # once: the users funded before they were noted
        self.s3_refunds = Refunds(accounts=self.s3_accounts, index=s3_index)
        self.s3_objects = ObjectWriter(files=self.storage, index=s3_index, accounts=self.s3_accounts, pool=self.pool)
        self.s3_link = LocalNode(index=s3_index, objects=self.s3_objects, accounts=self.s3_accounts,
                                 storage=self.storage, pool=self.pool,
                                 seconds=config.storage.lease_duration, bid=config.market.storage_bid)
        self.hosted_jobs = HostedJobs(compute=self.compute, paid=self.paid, work_dir=config.data_dir / "hosted-jobs")
        self.jobs = JobService(compute=self.compute, storage=self.storage, ledger=self.ledger, tabs=self.tabs,
                               payer=payer, node=identity, db=self.db, work_dir=config.data_dir / "jobs",
                               bids=(config.market.compute_bid, config.market.storage_bid), dealing=self.dealing,
                               sent=SentJobs(paid=self.paid, on_strike=self.strike), terms=self.provider_terms,
                               retention=config.compute.record_retention,
                               objects=lambda bucket, key: [p["cap"] for p in s3_index.get(bucket, key)["parts"]])
        self.maps = Maps(jobs=self.jobs, store=self.compute.store)
        self.watches = Watches(jobs=self.jobs, index=s3_index, store=self.compute.store)
        s3_index.on_change.append(self.watches.wake)
        self.placements = Placements(paid=self.paid, store=self.compute.store, me=identity.id,
                                     bid=config.market.compute_bid, paying=lambda *paid: self.functions.paying(*paid),
                                     on_paid=lambda *paid: self.functions.paid_for(*paid),
                                     left_this_hour=lambda name: self.functions.left_this_hour(name),
                                     interval=config.node.placement_interval)
        def this_web_url() -> str | None:
            return web_url(config.node.web_listen, config.node.web_public_url, self.peers.url)
        self.functions = WebFunctions(compute=self.compute, storage=self.storage, ledger=self.ledger, tabs=self.tabs,
                                      payer=payer, node=identity, store=self.compute.store, web_url=this_web_url,
                                      work_dir=config.data_dir / "functions", bid=config.market.compute_bid,
                                      placements=self.placements, web_runners=config.compute.web_runners)
        self.placed_functions = PlacedFunctions(placed=self.functions.placed_here, paid=self.paid,
                                                store=self.compute.store, web_url=this_web_url,
                                                max_body=config.compute.placed_max_body,
                                                concurrency=config.compute.placed_concurrency)

    # --- what /v1/node/status and /health show of the services ------------------------------------------
    def status_parts(self) -> dict[str, Callable[[], object]]:
        market = self.market
        return {
            "ledger": lambda: self.ledger.status(self.payer.public_key, self.identity.public_key),
            "storage": self.storage.status,
            "compute": self.compute.status,
            "peers": self.peers.status,
            "dht": self.dht.status,
            "payments": self.payments.status,
            "remote_compute": lambda: {**self.paid.batcher.status(), "checks": self.paid.checks.status()},
            "hosted_jobs": self.hosted_jobs.status,
            "web_tries": self.functions.on_loop.status,
            "tabs": self.tabs.open,
            "market": lambda: {k: v for k, v in market.status().items()
                               if k in ("digest", "participants", "converged")},
            "share_uploads": self.share_holder.status,
            "audits": self.audits.status,
            "scrubber": self.scrubber.status,
            "lease_gc": self.lease_gc.status,
            "loops": self.supervisor.status,
            "listeners": lambda: {"web": self.functions.web_url(),
                                  "s3": web_url(self.config.node.s3_listen, "", self.peers.url)},
        }

    def health_checks(self) -> dict[str, Callable]:
        return {
            "compute:epoch-ticker": self.compute.check_ticker,
            "ledger:balance": self.payments.check_balance,
            "peers:reachable": self.health.check_reachable,
        }
