"""The composition root: the aiohttp app, every service built with its collaborators, the node's lifecycle.

`_services` below is the one place where the node is put together: read it top to bottom to see what
depends on what.  Services are started in that order and closed in the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

from ..compute.jobs import JobService
from ..compute.paid import PaidCompute
from ..compute.remote_tabs import GatewayTabs, ProviderTabs
from ..compute.service import ComputeService
from ..config import NodeConfig, https_url, parse_listen
from ..errors import ConfigError
from ..identity import ReplayGuard
from ..ledger.service import LedgerService
from ..ledger.settlement import Payments
from ..ledger.tabs import Tabs
from ..allocation.service import FORK_BURST, FORK_RATE, AllocationService
from ..market.needs import NeedRegistry
from ..market.service import MAX_COMMITMENTS, MarketService
from ..net import PeerClient
from ..net.tls import server_context
from ..ledger.trust import TrustLines
from ..peers import HealthService, PeerService
from ..peers.admission import Admission, Quarantine
from ..peers.service import NEW_NODE_BURST
from ..buckets.index import S3Index
from ..storage import Gateway, ShareStore
from ..storage.audits import AuditService
from ..storage.deals import HolderTerms, StorageDeals
from ..storage.files import StorageService
from ..storage.holder import ShareHolder
from ..storage.holder_client import RemoteHolder
from ..storage.lease_gc import LeaseCollector
from ..storage.scrubber import Scrubber
from ..storage.locate import Locator
from ..storage.strangers import ProviderTerms
from ..storage.wire import DAMAGE_PATH
from ..ui.session import Sessions
from ..tasks import in_pool, woken
from . import auth, connections, datadir, peer_auth, problems
from .peer_routes import WORK_BURST
from .appkeys import (ADMISSION, ALLOCATION, AUDITS, CLIENT_IDENTITY, COMPUTE, CONFIG, CPU_POOL, DB, DEALS, GATEWAY, JOBS,
                      HEALTH, HEALTH_CHECKS, IDENTITY, IN_FLIGHT, LEASE_GC, LEDGER, MARKET, METRICS, PAID_COMPUTE,
                      PAYMENTS, PEER_LIMITS, PEER_WORK, PEERS, REPLAY_GUARD, S3_INDEX, SCRUBBER, SHARE_HOLDER, STARTED,
                      STATUS_PARTS, STORAGE, TABS, TERMS, TLS_CONTEXT, TLS_SERVED, TOKEN, TRUST, UI_SESSIONS,
                      USER_LIMITS)
from .http import ROUTES
from .http.node import node_checks
from .limits import RateLimiter
from .collector import Collector
from .listener import GuardedNodeRunner, NodeSite, TlsOnlySite
from .metrics import Metrics
from .middlewares import InFlight, request_counter

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 30.0
# How long a thread may keep the GIL once another thread asks for it (CPython's default: 5 ms).  The event loop gives
# the GIL up at every socket and epoll call; a CPU-pool thread running Python (a deal's matching, a market clearing,
# a large body's parse) then kept it a whole interval each time, so one request needing a dozen such calls waited
# that many intervals.  In two runs of the attack bench the loop stood 10-28 ms at a time without the CPU, 33 times a
# run; in twelve at 1 ms, 0-11 times (docs/security.md).
GIL_SWITCH_INTERVAL = 0.001


async def _node_resources(app: web.Application):
    """Lock the data dir, load keys and token, open the database; close all on shutdown."""
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = datadir.DataDirLock(config.data_dir)
    lock.acquire()
    try:
        identity, client, token = datadir.prepare(config)
        app[IDENTITY], app[CLIENT_IDENTITY], app[TOKEN] = identity, client, token
        app[UI_SESSIONS] = Sessions(token, port=parse_listen(config.node.listen)[1])  # the dashboard's logins
        app[DB] = datadir.open_db(config.data_dir)
        app[TLS_CONTEXT] = server_context(identity, config.data_dir)  # peers' TLS: the node key is the certificate
        app[CPU_POOL] = ThreadPoolExecutor(max_workers=max(2, config.compute.threads), thread_name_prefix="xsc-cpu")
        app[STARTED] = time.monotonic()
        log.info("node %s serving data dir %s", identity.id, config.data_dir)
        try:
            yield
        finally:
            app[CPU_POOL].shutdown(wait=True)
            app[DB].close()
    finally:
        lock.release()


async def _services(app: web.Application):
    """Build every service with explicit collaborators, in dependency order; start them; close in reverse."""
    config, db, pool, metrics = app[CONFIG], app[DB], app[CPU_POOL], app[METRICS]
    identity, payer = app[IDENTITY], app[CLIENT_IDENTITY]
    me = identity.id

    ledger = LedgerService(db, config.ledger.credit_limit, node=identity, client=payer,
                           threads=config.compute.threads, low_balance=config.ledger.low_balance)

    store = ShareStore(db, config.storage.capacity)
    interrupted = await in_pool(pool, store.recover)
    if interrupted:
        log.warning("removed what %d interrupted upload(s) had staged", interrupted)
    gateway = Gateway(store, pool, segment_size=config.storage.segment_size,
                      lease_duration=config.storage.lease_duration, node_key=identity.public_key,
                      depth=2 * max(2, config.compute.threads) + 2, remote_timeout=config.storage.remote_timeout)
    metrics.bytes_stored.set_function(lambda: store.used)
    metrics.shares_held.set_function(lambda: store.shares_held)

    compute = ComputeService(db=db, identity=identity, data_dir=config.data_dir, config=config.compute)

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, limit_per_host=32))
    client = PeerClient(identity, session, config.peers.request_timeout, tls=config.peers.tls,
                        grid_secret=config.peers.grid_secret)
    quarantine = Quarantine(db, strikes=config.peers.quarantine_strikes, duration=config.peers.quarantine_for)
    admission = Admission(min_difficulty=config.peers.min_difficulty, grid_secret=config.peers.grid_secret,
                          quarantine=quarantine)
    peers = PeerService(identity=identity, db=db, config=config, client=client, url=peer_url(app),
                        storage=lambda: {"capacity": store.capacity, "free": store.free}, admission=admission,
                        new_nodes=RateLimiter(config.peers.new_node_rate, NEW_NODE_BURST, "new nodes"))
    if "://0.0.0.0:" in peers.url or "://[::]:" in peers.url:
        log.warning("peers cannot reach %s: set peers.public_url (XSC_PEERS_PUBLIC_URL)", peers.url)
    health = HealthService(db=db, peers=peers, config=config.health)
    peers.health = health  # availability() asks the probes

    needs = NeedRegistry(db=db, me=me, config=config.market)  # the one writer of this node's need slots
    market = MarketService(config=config.market, identity=identity, db=db, peers=peers, needs=needs,
                           storage_usage=lambda: (store.capacity - store.free, store.capacity),
                           compute_threads=config.compute.threads, gossip_interval=config.peers.gossip_interval,
                           pool=pool, limiter=RateLimiter(config.market.commitment_rate, 2 * MAX_COMMITMENTS,
                                                          "commitments to check"))
    peers.on_removed.append(market.forget)
    allocation = AllocationService(config=config.market, identity=identity, db=db, market=market, needs=needs,
                                   peers=peers, gossip_interval=config.peers.gossip_interval, joins=bool(config.peers.urls),
                                   forks=RateLimiter(FORK_RATE, FORK_BURST, "ITC forks"))
    peers.on_removed.append(allocation.forget)
    market.on_change.append(allocation.touch)
    market.allocated = allocation.allocated
    market.audience, market.interest = allocation.commitment_audience, allocation.commitment_interest  # subscriptions
    # A quarantined peer's commitments leave the book and the allocation; peers.known() is False for it.
    quarantine.on_quarantined.extend((market.forget, allocation.forget))
    # Credit only along recognition: the peers the user recognises get a credit line, strangers prepay.
    trust = TrustLines(db, stranger_credit=config.ledger.stranger_credit, peer_credit=config.ledger.peer_credit,
                       recognised=lambda peer: market.user_weights.get(peer, 0) > 0)
    market.credit_lines = trust  # `xsc market recognize PEER W --credit C`

    def strike(peer: str, why: str) -> None:
        if peer != me:
            quarantine.strike(peer, why)

    payments = Payments(ledger=ledger, payer=payer, node=identity, peers=peers, client=client,
                        retry_interval=config.ledger.settle_retry_interval,
                        on_paid=lambda peer, amount, by_them: market.note_paid(peer, amount, by_them=by_them),
                        on_countersigned=trust.paid, on_strike=strike, on_owed=trust.owe,
                        collectable=trust.collectable)
    payments.add_check("prepay", payments.check_prepayment)

    terms = HolderTerms(db=db, store=store, ask=lambda: market.honoured_ask("storage"))
    payments.add_check("store", terms.check_receipt)
    deals = StorageDeals(db=db, me=me, store=store, pool=pool, pay=payments.pay, paid_for=payments.paid_for,
                         audits_on=config.audit.blocks_per_round > 0, payment_interval=config.market.payment_interval)

    def holder_for(node: str, url: str, price: int | None = None) -> RemoteHolder:
        return RemoteHolder(client, node, url, price, payer.id)  # holders check receipts by the payer named

    provider_terms = ProviderTerms(db=db, peers=peers, prepay=payments.prepay, budget=config.ledger)
    locator = Locator(me=me, store=store, pool=pool, peers=peers)
    storage = StorageService(gateway=gateway, deals=deals, market=market, ledger=ledger, payer=payer, me=me,
                             peers=peers, holder_for=holder_for, pool=pool, terms=provider_terms, locator=locator,
                             segment_size=config.storage.segment_size, lease_duration=config.storage.lease_duration)
    share_holder = ShareHolder(store, pool, terms, trust=trust)

    def on_audit(node: str, ok: bool, detail: str) -> None:
        health.record_audit(node, ok, detail)
        deals.note_audit(node, ok)  # a holder is paid only for periods it passed its audits
        if not ok:
            strike(node, f"failed an audit: {detail}")

    audits = AuditService(config=config.audit, probe_interval=config.health.probe_interval, me=me, gateway=gateway,
                          pool=pool, peers=peers, holder_for=holder_for, on_audit=on_audit, repair=storage.repair)

    async def report_damage(uploader: str, si: bytes, share: int, segments: list[int]) -> None:
        if uploader == me:
            await audits.damage_reported(si, share, segments, me)
        else:
            await peers.request(peers.peer(uploader).url, "POST", DAMAGE_PATH,
                                json={"si": si.hex(), "share": share, "segments": segments}, to=uploader)

    scrubber = Scrubber(config=config.audit, store=store, pool=pool, report_damage=report_damage)
    lease_gc = LeaseCollector(config=config.storage, store=store, pool=pool, terms=terms,
                              repairing=storage.repairing, registry=metrics.registry)
    tabs = Tabs(ledger=ledger, identities=[payer, identity], interval=config.ledger.tab_interval,
                threshold=config.ledger.tab_threshold, max_refs=config.ledger.tab_max_refs)
    gateway_tabs = GatewayTabs(payments=payments, client=client, peers=peers)
    provider_tabs = ProviderTabs(db=db, ledger=ledger, node=identity)
    paid = PaidCompute(compute=compute, market=market, ledger=ledger, payments=payments, tabs=tabs,
                       gateway_tabs=gateway_tabs, provider_tabs=provider_tabs, payer=payer, node=identity,
                       peers=peers, client=client, default_bid=config.market.compute_bid,
                       on_invoked=lambda label: metrics.child(metrics.invocations, label).inc(), trust=trust)

    app[LEDGER], app[GATEWAY], app[COMPUTE], app[PEERS], app[HEALTH] = ledger, gateway, compute, peers, health
    app[MARKET], app[PAYMENTS], app[TERMS], app[DEALS], app[STORAGE] = market, payments, terms, deals, storage
    app[SHARE_HOLDER], app[AUDITS], app[SCRUBBER], app[LEASE_GC] = share_holder, audits, scrubber, lease_gc
    app[PAID_COMPUTE], app[TABS] = paid, tabs
    app[S3_INDEX] = s3_index = S3Index(db)  # the user's bucket index: the S3 front (its own process) records objects there
    app[JOBS] = jobs = JobService(compute=compute, storage=storage, ledger=ledger, tabs=tabs, payer=payer, node=identity,
                                  db=db, work_dir=config.data_dir / "jobs", bids=(config.market.compute_bid, config.market.storage_bid),
                                  objects=lambda bucket, key: [p["cap"] for p in s3_index.get(bucket, key)["parts"]])
    app[ALLOCATION] = allocation
    app[ADMISSION], app[TRUST] = admission, trust

    app[STATUS_PARTS].update({
        "ledger": lambda: ledger.status(payer.public_key, identity.public_key),
        "storage": storage.status,
        "compute": compute.status,
        "peers": peers.status,
        "payments": payments.status,
        "remote_compute": paid.batcher.status,
        "tabs": tabs.open,
        "market": lambda: {k: v for k, v in market.status().items() if k in ("digest", "participants", "converged")},
        "share_uploads": lambda: {"in_progress": len(share_holder)},
        "audits": audits.status,
        "scrubber": scrubber.status,
        "lease_gc": lease_gc.status,
    })
    app[HEALTH_CHECKS].update({
        "compute:epoch-ticker": compute.check_ticker,
        "ledger:balance": payments.check_balance,
        "peers:reachable": health.check_reachable,
    })

    started = []
    try:
        for service in (tabs, compute, paid, peers, health, market, allocation, payments, deals, storage, share_holder,
                        audits, scrubber, lease_gc, jobs):
            service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            result = service.close()
            if asyncio.iscoroutine(result):
                await result
        peers.health = None
        client.close()
        await session.close()
        await ledger.close()


def peer_url(app: web.Application) -> str:
    """The URL this node gives its peers: https:// when its listener answers TLS (NodeRunner) and peers.tls is on."""
    config = app[CONFIG]
    if config.peers.public_url:
        url = config.peers.public_url
    elif config.node.peer_listen:
        host, port = parse_listen(config.node.peer_listen)
        url = f"https://{host}:{port}"
    else:
        url = config.url
    return https_url(url) if config.peers.tls and app.get(TLS_SERVED, False) else url


def create_app(config: NodeConfig) -> web.Application:
    """Build a node's aiohttp app; its resources and services open on startup and close on cleanup."""
    in_flight, metrics = InFlight(), Metrics()
    app = web.Application(
        middlewares=[in_flight.middleware, request_counter(metrics), problems.problem_middleware,
                     auth.token_middleware, peer_auth.signature_middleware],
        client_max_size=1024**2,
    )
    app[IN_FLIGHT] = in_flight
    app[CONFIG] = config
    app[METRICS] = metrics
    app[REPLAY_GUARD] = ReplayGuard(capacity=config.peers.replay_capacity, per_sender=config.peers.replay_per_sender)
    app[PEER_LIMITS] = RateLimiter(config.peers.rate_limit, 2 * config.peers.rate_limit)
    app[PEER_WORK] = RateLimiter(config.peers.work_rate, WORK_BURST * config.peers.work_rate, "work units")
    app[USER_LIMITS] = RateLimiter(config.node.user_rate_limit, 2 * config.node.user_rate_limit)
    app[STATUS_PARTS] = {}
    app[HEALTH_CHECKS] = node_checks(app)
    app.cleanup_ctx.append(_node_resources)
    app.cleanup_ctx.append(_services)
    for routes in ROUTES:
        app.add_routes(routes)
    return app


async def serve(config: NodeConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down gracefully."""
    host, port = parse_listen(config.node.listen)
    app = create_app(config)
    fd_limit = connections.raise_fd_limit()
    cap = connections.connection_cap(config.node.max_connections, fd_limit)
    if cap < config.node.max_connections:
        log.warning("at most %d open connections, not %d: the open-files limit is %d (raise it with ulimit -n)",
                    cap, config.node.max_connections, fd_limit)
    runner = GuardedNodeRunner(app, max_connections=cap, max_per_ip=min(cap, config.node.max_connections_per_ip),
                               keepalive_timeout=config.node.idle_timeout,
                               handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    collector = Collector()  # full collections scan what came since the last one (~76,000 objects at start)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        # a burst of connects waits, within RESERVED_FDS
        sites = [NodeSite(runner, host, port)]
        if config.node.peer_listen:
            sites.append(TlsOnlySite(runner, *parse_listen(config.node.peer_listen)))
        for site, flag in zip(sites, ("--listen", "node.peer_listen")):
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {site.name.split('://')[1]}: {exc.strerror or exc}",
                    hint=f"pick another address with {flag} HOST:PORT",
                ) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        collector.install()
        datadir.record_url(config.data_dir, f"http://{host}:{port}")
        print(f"xsc node {app[IDENTITY].id} listening on http://{host}:{port} (data dir {config.data_dir})", flush=True)
        print(f"peers reach it at {app[PEERS].url}", flush=True)
        if ready:
            ready.set()
        await stop.wait()
        # Stop listening, then give requests in flight (an upload, say) time to finish before
        # aiohttp's own shutdown, which stops reading request bodies, and before the database closes.
        for site in sites:
            await site.stop()
        log.info("shutting down: waiting for %d request(s) in flight", app[IN_FLIGHT].count)
        if not await woken(app[IN_FLIGHT].idle, SHUTDOWN_TIMEOUT):
            log.warning("requests still in flight after %.0f s: cancelling them", SHUTDOWN_TIMEOUT)
    finally:
        collector.uninstall()
        sys.setswitchinterval(switch_interval)
        await runner.cleanup()
        log.info("stopped")
