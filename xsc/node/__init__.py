"""The node: aiohttp app factory, lifecycle, auth, problem mapping, routes."""

from .app import create_app, serve
from .context import CLIENT_IDENTITY, CONFIG, CPU_POOL, DB, IDENTITY, METRICS, TOKEN

__all__ = ["create_app", "serve", "CLIENT_IDENTITY", "CONFIG", "CPU_POOL", "DB", "IDENTITY", "METRICS", "TOKEN"]
