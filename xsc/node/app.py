"""The aiohttp application factory and the node's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..config import NodeConfig, parse_listen
from ..errors import ConfigError
from . import auth, datadir, problems, status
from .context import CLIENT_IDENTITY, CONFIG, CPU_POOL, DB, IDENTITY, METRICS, STARTED, TOKEN
from .metrics import Metrics

log = logging.getLogger(__name__)


class InFlight:
    """Counts requests being handled, so shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        self.count += 1
        self.idle.clear()
        try:
            return await handler(request)
        finally:
            self.count -= 1
            if self.count == 0:
                self.idle.set()


IN_FLIGHT = web.AppKey("in_flight", InFlight)
SHUTDOWN_TIMEOUT = 30.0


@web.middleware
async def _count_requests(request: web.Request, handler):
    response = await handler(request)
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, str(response.status)).inc()
    if response.status >= 400:
        metrics.errors.labels(str(response.status)).inc()
    return response


async def _node_resources(app: web.Application):
    """Lock the data dir, load keys and token, open the database; close all on shutdown."""
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = datadir.DataDirLock(config.data_dir)
    lock.acquire()
    try:
        identity, client, token = datadir.prepare(config)
        app[IDENTITY], app[CLIENT_IDENTITY], app[TOKEN] = identity, client, token
        app[DB] = datadir.open_db(config.data_dir)
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


def create_app(config: NodeConfig) -> web.Application:
    """Build a node's aiohttp app; its resources open on startup and close on cleanup."""
    from . import (audit, compute_routes, health_routes, lease_gc, ledger_routes, market_routes, peer_auth, peers,
                   receipt_routes, remote_compute, scrubber, share_routes, storage_routes)

    in_flight = InFlight()
    app = web.Application(
        middlewares=[in_flight.middleware, _count_requests, problems.problem_middleware, auth.token_middleware,
                     peer_auth.signature_middleware],
        client_max_size=1024**2,
    )
    app[IN_FLIGHT] = in_flight
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[status.STATUS_PARTS] = {}
    status.install_health_checks(app)
    app.cleanup_ctx.append(_node_resources)
    app.add_routes(status.routes)
    # Each feature adds its routes and its own cleanup context (opened after the node's resources).
    # The ledger comes first: it opens before and closes after the features that settle through it.
    # Peers and their health probes come last: they read the storage status for the node's descriptor.
    # Audits, repair and the scrubber come after health: they read probe results and record audits there.
    # Receipts (payments between nodes) come right after peers: they send signed requests through them;
    # the market after both: it gossips through peers and pays storage deals by receipt.
    for feature in (ledger_routes, storage_routes, compute_routes, peers, receipt_routes, market_routes,
                    remote_compute, share_routes, health_routes, audit, scrubber, lease_gc):
        feature.setup(app)
    return app


async def serve(config: NodeConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down gracefully."""
    host, port = parse_listen(config.node.listen)
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="pick another address with --listen HOST:PORT",
            ) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("listening on http://%s:%d", host, port)
        print(f"xsc node {app[IDENTITY].id} listening on http://{host}:{port} (data dir {config.data_dir})", flush=True)
        if ready:
            ready.set()
        await stop.wait()
        # Stop listening, then give requests in flight (an upload, say) time to finish before
        # aiohttp's own shutdown, which stops reading request bodies, and before the database closes.
        await site.stop()
        log.info("shutting down: waiting for %d request(s) in flight", app[IN_FLIGHT].count)
        try:
            await asyncio.wait_for(app[IN_FLIGHT].idle.wait(), SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("requests still in flight after %.0f s: cancelling them", SHUTDOWN_TIMEOUT)
    finally:
        await runner.cleanup()
        log.info("stopped")
