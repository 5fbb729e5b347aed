"""The node: the composition root (app.py builds every service), its HTTP routes (http/), auth,
the mapping of errors to problem responses, and the data dir."""

from .app import create_app, serve
from .appkeys import CLIENT_IDENTITY, CONFIG, CPU_POOL, DB, IDENTITY, METRICS, TOKEN

__all__ = ["create_app", "serve", "CLIENT_IDENTITY", "CONFIG", "CPU_POOL", "DB", "IDENTITY", "METRICS", "TOKEN"]
