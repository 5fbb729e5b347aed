"""Every typed key of what the app holds: the node's resources and its services (built in app.py).

Route modules read these; services never do (they get their collaborators in their constructors)."""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from ..allocation.service import AllocationService
from ..compute.jobs import JobService
from ..compute.paid import PaidCompute
from ..compute.service import ComputeService
from ..config import NodeConfig
from ..db import Database
from ..identity import Identity, ReplayGuard
from ..ledger.service import LedgerService
from ..ledger.settlement import Payments
from ..ledger.tabs import Tabs
from ..market.service import MarketService
from ..ledger.trust import TrustLines
from ..peers import HealthService, PeerService
from ..peers.admission import Admission
from ..buckets.index import S3Index
from ..storage.audits import AuditService
from ..storage.deals import HolderTerms, StorageDeals
from ..storage.files import StorageService
from ..storage.gateway import Gateway
from ..storage.holder import ShareHolder
from ..storage.lease_gc import LeaseCollector
from ..storage.scrubber import Scrubber
from ..ui.session import Sessions
from .limits import RateLimiter
from .metrics import Metrics
from .middlewares import InFlight

# --- resources (opened first, closed last) ----------------------------------------------------
CONFIG = web.AppKey("config", NodeConfig)
DB = web.AppKey("db", Database)
IDENTITY = web.AppKey("identity", Identity)  # the node's key: provider account, signs provenance and peer requests
CLIENT_IDENTITY = web.AppKey("client_identity", Identity)  # the local user's key: payer account
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", Metrics)
CPU_POOL = web.AppKey("cpu_pool", ThreadPoolExecutor)  # hashing, crypto, erasure coding, LevelDB I/O
STARTED = web.AppKey("started", float)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
REPLAY_GUARD = web.AppKey("replay_guard", ReplayGuard)
PEER_LIMITS = web.AppKey("peer_limits", RateLimiter)  # signed requests per peer key
PEER_WORK = web.AppKey("peer_work", RateLimiter)  # work units per peer key, charged before a body is read
USER_LIMITS = web.AppKey("user_limits", RateLimiter)  # user API requests with the token (or a dashboard session)
TLS_CONTEXT = web.AppKey("tls_context", ssl.SSLContext)  # the peer listener's TLS: the node key's certificate
TLS_SERVED = web.AppKey("tls_served", bool)  # set by listener.NodeRunner: its port answers TLS, so peers get https://
ADMISSION = web.AppKey("admission", Admission)  # which peers are taken at all (proof of work, grid, quarantine)
TRUST = web.AppKey("trust", TrustLines)  # credit only along recognition: each peer's trust line
# name -> async () -> a /health check dict;  name -> () -> a JSON-able part of /v1/node/status
HEALTH_CHECKS = web.AppKey("health_checks", dict)
STATUS_PARTS = web.AppKey("status_parts", dict)
UI_SESSIONS = web.AppKey("ui_sessions", Sessions)  # the dashboard's logins (xsc.ui.session, node/http/ui.py)

# --- services, in the order app.py builds them ---------------------------------------------------
LEDGER = web.AppKey("ledger", LedgerService)
GATEWAY = web.AppKey("gateway", Gateway)
COMPUTE = web.AppKey("compute", ComputeService)
PEERS = web.AppKey("peers", PeerService)
HEALTH = web.AppKey("health", HealthService)
MARKET = web.AppKey("market", MarketService)
ALLOCATION = web.AppKey("allocation", AllocationService)  # live allocation rounds (xsc.allocation.service)
PAYMENTS = web.AppKey("payments", Payments)
TERMS = web.AppKey("holder_terms", HolderTerms)
DEALS = web.AppKey("deals", StorageDeals)
STORAGE = web.AppKey("storage", StorageService)
SHARE_HOLDER = web.AppKey("share_holder", ShareHolder)
AUDITS = web.AppKey("audits", AuditService)
SCRUBBER = web.AppKey("scrubber", Scrubber)
LEASE_GC = web.AppKey("lease_gc", LeaseCollector)
PAID_COMPUTE = web.AppKey("paid_compute", PaidCompute)
JOBS = web.AppKey("jobs", JobService)  # WASI programs over stored files (compute/jobs.py)
S3_INDEX = web.AppKey("s3_index", S3Index)  # the S3 gateway's bucket index (xsc s3 serve records objects there)
TABS = web.AppKey("tabs", Tabs)  # aggregated settlement of paid invokes (ledger/tabs.py)
