"""The composition root: the aiohttp app, every service built with its collaborators, the node's lifecycle.

The node's services are put together in one place, `xsc/node/services.py:Node.open`: read it top to bottom to
see what depends on what.  They are started in that order under one supervisor and closed in the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from aiohttp import web

from ..config import NodeConfig, https_url, parse_listen
from ..errors import ConfigError
from ..identity import ReplayGuard
from ..net.tls import server_context, share_read_buffers
from ..ui.core.session import Sessions
from ..serve import connections
from . import auth, datadir, peer_auth, problems
from .appkeys import (AUTH_FAILURES, CLIENT_IDENTITY, CONFIG, CPU_POOL, CUT_SHORT, DB, HANDOFF, HEALTH_CHECKS,
                      IDENTITY, IN_FLIGHT, LEAVE, LISTENERS, METRICS, NODE, PEER_AUTH_FAILURES, PEER_LIMITS, PEER_WORK,
                      REPLAY_GUARD, STARTED, STATUS_PARTS, TLS_CONTEXT, TLS_SERVED, TOKEN, UI_SESSIONS, USER_LIMITS)
from .http import ROUTES
from .http.node import node_checks
from .limits import RateLimiter
from ..heap import set_malloc_thresholds
from .collector import Collector
from ..paths import SOCKET_FILE
from ..serve.handoff import HandOff
from ..serve.listener import GuardedNodeRunner, NodeSite, TlsOnlySite
from ..serve.stop import SHUTDOWN_TIMEOUT, InFlight, on_signals
from .metrics import Metrics
from .middlewares import request_counter
from .peer_routes import WORK_BURST
from .http.functions import web_app
from ..s3.access import KeyRing, key_file
from ..s3.server import S3Front, listen as s3_listen
from .services import Node

log = logging.getLogger(__name__)

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
    """The node's services (xsc/node/services.py: built in dependency order, started under one supervisor, closed
    in reverse)."""
    node = await Node.open(peer_url=peer_url(app), config=app[CONFIG], db=app[DB], pool=app[CPU_POOL],
                           metrics=app[METRICS], identity=app[IDENTITY], payer=app[CLIENT_IDENTITY])
    app[NODE], app[LEAVE], app[CUT_SHORT] = node, node.leave, node.cut_short  # (serve/stop.py)
    app[STATUS_PARTS].update(node.status_parts())
    app[HEALTH_CHECKS].update(node.health_checks())
    listeners = []
    try:
        node.start()
        app[HANDOFF] = HandOff(app[CONFIG].data_dir / SOCKET_FILE)
        node.supervisor.add("handoff", app[HANDOFF])
        app[STATUS_PARTS]["handoff"] = app[HANDOFF].status
        listeners = [r for r in (await _web_listener(app[CONFIG], node), await _s3_listener(app, node)) if r]
        app[LISTENERS] = listeners  # drained by the node's stop with its own port (serve/stop.py)
        yield
    finally:
        for runner in listeners:
            await runner.cleanup()
        await node.close()


async def _web_listener(config, node: Node) -> web.AppRunner | None:
    """The web functions' own listener (node.web_listen), or None."""
    if not config.node.web_listen:
        return None
    runner = connections.open_runner(web_app(node, config.node.web_rate_limit, config.node.idle_timeout),
                                     max_connections=config.node.max_connections,
                                     max_per_ip=config.node.max_connections_per_ip,
                                     idle_timeout=config.node.idle_timeout, beside_node=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, *parse_listen(config.node.web_listen)).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.node.web_listen}: {exc.strerror or exc}",
                          hint="pick another address with node.web_listen HOST:PORT") from exc
    return runner


async def _s3_listener(app: web.Application, node: Node) -> web.AppRunner | None:
    """S3 answered by the node itself (node.s3_listen), or None: the front's app over the node's services, its
    reconciliation a loop of the node's, its failed authentications counted with the user API's (AUTH_FAILURES)."""
    config = app[CONFIG]
    if not config.node.s3_listen:
        return None
    front = S3Front(node.s3_link, KeyRing(key_file(config.data_dir)), node.s3_index.marks,
                    quota=RateLimiter(config.node.user_rate_limit, 2 * config.node.user_rate_limit),
                    idle_timeout=config.node.idle_timeout, region=config.node.s3_region, failures=app[AUTH_FAILURES])
    try:
        runner = await s3_listen(front, *parse_listen(config.node.s3_listen), config.node, beside_node=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.node.s3_listen}: {exc.strerror or exc}",
                          hint="pick another address with node.s3_listen HOST:PORT") from exc
    node.supervisor.add("s3", front)
    return runner


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
    # Stopping, its user's new requests are refused, its peers' served (the market refuses their work; a share is sent)
    in_flight, metrics = InFlight(refuse=lambda request, err: problems.problem_from_error(err),
                                  spared=lambda request: request.path.startswith(auth.PEER_PREFIX)), Metrics()
    app = web.Application(
        middlewares=[in_flight.middleware, request_counter(metrics, auth.PEER_PREFIX), problems.problem_middleware,
                     auth.token_middleware, peer_auth.signature_middleware], client_max_size=1024**2)
    app[IN_FLIGHT] = in_flight
    app[CONFIG] = config
    app[METRICS] = metrics
    app[REPLAY_GUARD] = ReplayGuard(capacity=config.peers.replay_capacity, per_sender=config.peers.replay_per_sender)
    app[PEER_LIMITS] = RateLimiter(config.peers.rate_limit, 2 * config.peers.rate_limit)
    app[PEER_WORK] = RateLimiter(config.peers.work_rate, WORK_BURST * config.peers.work_rate, "work units")
    app[USER_LIMITS] = RateLimiter(config.node.user_rate_limit, 2 * config.node.user_rate_limit)
    app[AUTH_FAILURES] = RateLimiter(config.node.auth_failure_limit, auth.FAILURE_BURST, "failed authentications")
    app[PEER_AUTH_FAILURES] = RateLimiter(config.node.auth_failure_limit, auth.FAILURE_BURST, "failed authentications")
    app[STATUS_PARTS] = {}
    app[HEALTH_CHECKS] = node_checks(app)
    app.cleanup_ctx.append(_node_resources)
    app.cleanup_ctx.append(_services)
    for routes in ROUTES:
        app.add_routes(routes)
    return app


async def serve(config: NodeConfig, *, listening: Callable[[], None] | None = None) -> None:
    """Run a node until SIGINT or SIGTERM, then stop gracefully (a second one: at once; serve/stop.py);
    `listening` is called once it listens."""
    host, port = parse_listen(config.node.listen)
    app = create_app(config)
    fd_limit = connections.raise_fd_limit()
    share_read_buffers()
    cap = connections.connection_cap(config.node.max_connections, fd_limit)
    if cap < config.node.max_connections:
        log.warning("at most %d open connections, not %d: the open-files limit is %d (raise it with ulimit -n)",
                    cap, config.node.max_connections, fd_limit)
    runner = GuardedNodeRunner(app, max_connections=cap, max_per_ip=min(cap, config.node.max_connections_per_ip),
                               keepalive_timeout=config.node.idle_timeout,
                               handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    set_malloc_thresholds()
    collector = Collector()  # full collections scan what came since the last one (~76,000 objects at start)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        # a burst of connects waits, within RESERVED_FDS
        sites = [NodeSite(runner, host, port, config.peers.congestion)]
        if config.node.peer_listen:
            sites.append(TlsOnlySite(runner, *parse_listen(config.node.peer_listen), config.peers.congestion))
        for site, flag in zip(sites, ("--listen", "node.peer_listen")):
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {site.name.split('://')[1]}: {exc.strerror or exc}",
                                  hint=f"pick another address with {flag} HOST:PORT") from exc
        stop = asyncio.Event()
        on_signals(stop, runner.force)
        collector.install()
        print(f"peers reach it at {app[NODE].peers.url}", flush=True)
        if config.node.s3_listen:
            print(f"S3 at http://{config.node.s3_listen} (keys: xsc s3 keys create)", flush=True)
        if config.node.web_listen:
            print(f"web functions at http://{config.node.web_listen}/fn/NAME/ (xsc compute serve)", flush=True)
        if listening:  # (it listens already: --listen is saved before anyone is told where it is)
            listening()
        # Whoever waits for the URL (devnet, tests) finds the lines above already written and --listen saved, and
        # whoever waits for the "listening on" line (a script, the docs' examples) finds the URL recorded.
        datadir.record_url(config.data_dir, f"http://{host}:{port}")
        print(f"xsc node {app[IDENTITY].id} listening on http://{host}:{port} (data dir {config.data_dir})", flush=True)
        await stop.wait()
    finally:
        collector.uninstall()
        sys.setswitchinterval(switch_interval)
        await runner.cleanup()
        log.info("stopped")
