"""Every typed key of what the app holds: the node's resources, and the node (its services, xsc/node/services.py).

Route modules read these; services never do (they get their collaborators in their constructors)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..config import NodeConfig
from ..db import Database
from ..identity import Identity, ReplayGuard
from ..serve.handoff import HandOff
from ..serve.listener import TLS_CONTEXT, TLS_SERVED  # noqa: F401 (the node's app keys, defined with their runner)
from ..serve.stop import CUT_SHORT, IN_FLIGHT, LEAVE, LISTENERS  # noqa: F401 (... and with the stop)
from ..ui.core.session import Sessions
from .limits import RateLimiter
from .metrics import Metrics
from .services import Node

# --- resources (opened first, closed last) ----------------------------------------------------
CONFIG = web.AppKey("config", NodeConfig)
DB = web.AppKey("db", Database)
IDENTITY = web.AppKey("identity", Identity)  # the node's key: provider account, signs provenance and peer requests
CLIENT_IDENTITY = web.AppKey("client_identity", Identity)  # the local user's key: payer account
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", Metrics)
CPU_POOL = web.AppKey("cpu_pool", ThreadPoolExecutor)  # hashing, crypto, erasure coding, LevelDB I/O
STARTED = web.AppKey("started", float)
REPLAY_GUARD = web.AppKey("replay_guard", ReplayGuard)
PEER_LIMITS = web.AppKey("peer_limits", RateLimiter)  # signed requests per peer key
PEER_WORK = web.AppKey("peer_work", RateLimiter)  # work units per peer key, charged before a body is read
USER_LIMITS = web.AppKey("user_limits", RateLimiter)  # user API requests with the token (or a dashboard session)
AUTH_FAILURES = web.AppKey("auth_failures", RateLimiter)  # failed authentications per client address (auth.py)
PEER_AUTH_FAILURES = web.AppKey("peer_auth_failures", RateLimiter)  # the same, of peer requests (peer_auth.py)
# name -> async () -> a /health check dict;  name -> () -> a JSON-able part of /v1/node/status
HEALTH_CHECKS = web.AppKey("health_checks", dict)
STATUS_PARTS = web.AppKey("status_parts", dict)
UI_SESSIONS = web.AppKey("ui_sessions", Sessions)  # the dashboard's logins (xsc.ui.core.session, node/http/ui.py)
HANDOFF = web.AppKey("handoff", HandOff)  # files handed over the data dir's Unix socket, for their puts

# --- the node's services (xsc/node/services.py: one typed field each) -------------------------------
NODE = web.AppKey("node", Node)
