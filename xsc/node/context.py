"""Typed keys for what the app holds (the resources opened in cleanup contexts)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import plyvel
from aiohttp import web

from ..config import NodeConfig
from ..identity import Identity
from .metrics import Metrics

CONFIG = web.AppKey("config", NodeConfig)
DB = web.AppKey("db", plyvel.DB)
IDENTITY = web.AppKey("identity", Identity)  # the node's key: provider account, signs provenance and peer requests
CLIENT_IDENTITY = web.AppKey("client_identity", Identity)  # the local user's key: payer account
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", Metrics)
CPU_POOL = web.AppKey("cpu_pool", ThreadPoolExecutor)  # hashing, crypto, erasure coding, LevelDB I/O
STARTED = web.AppKey("started", float)
