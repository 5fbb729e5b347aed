"""Routes about the node itself: /health, /metrics, /v1/node/status (the services add their parts in app.py)."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime, timezone

from aiohttp import web

from ... import __version__, keys
from ...errors import Forbidden, QuotaExceeded, Unauthorized
from ..appkeys import CONFIG, DB, HEALTH_CHECKS, IDENTITY, METRICS, STARTED, STATUS_PARTS
from ..auth import check_token, guarded, session_cookie
from ..metrics import resident_memory
from .common import json_response

routes = web.RouteTableDef()

DISK_WARN_BYTES = 1024**3
DISK_FAIL_BYTES = 100 * 1024**2


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def node_checks(app: web.Application) -> dict:
    """The node's own /health checks (services add theirs in app.py): name -> async () -> check."""
    return {"database:responsive": lambda: _check_db(app), "disk:free": lambda: _check_disk(app)}


async def _check_db(app: web.Application) -> dict:
    try:
        await asyncio.get_running_loop().run_in_executor(None, app[DB].get, keys.SCHEMA_VERSION)
    except Exception as exc:  # a closed or broken LevelDB
        return {"componentType": "datastore", "status": "fail", "output": str(exc), "time": _now()}
    return {"componentType": "datastore", "status": "pass", "time": _now()}


async def _check_disk(app: web.Application) -> dict:
    free = shutil.disk_usage(app[CONFIG].data_dir).free
    status = "fail" if free < DISK_FAIL_BYTES else "warn" if free < DISK_WARN_BYTES else "pass"
    return {"componentType": "system", "observedValue": free, "observedUnit": "bytes", "status": status,
            "time": _now()}


# What anyone may read of a check without the token: whether it passes, not the figures behind it
# (available credit, free disk, peer counts say what the user has and does).
PUBLIC_CHECK_FIELDS = frozenset({"componentType", "status", "time"})


def _token_holder(request: web.Request) -> bool:
    if not request.headers.get("Authorization") and session_cookie(request) is None:
        return False  # anyone's poll: no guess to count
    try:
        with guarded(request):  # a guess here counts as on the API: no free way to test tokens
            check_token(request)
    except (Unauthorized, Forbidden, QuotaExceeded):  # a session's without its CSRF key: anyone's answer
        return False
    return True


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    full = _token_holder(request)
    checks = {}
    for name, check in app[HEALTH_CHECKS].items():
        result = await check()
        checks[name] = [result if full else {k: v for k, v in result.items() if k in PUBLIC_CHECK_FIELDS}]
    statuses = {c[0]["status"] for c in checks.values()}
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    body = {
        "status": status,
        "version": __version__,
        "serviceId": app[IDENTITY].id,
        "description": "XSC node",
        "checks": checks,
    }
    return json_response(body, status=503 if status == "fail" else 200, content_type="application/health+json")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    # Anyone may scrape how the node serves; what the user stores and runs only with the token.
    body = request.app[METRICS].render(public=not _token_holder(request))
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@routes.get("/v1/node/status")
async def node_status(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    body = {
        "id": app[IDENTITY].id,
        "version": __version__,
        "uptime": round(time.monotonic() - app[STARTED], 3),
        "memory": resident_memory(),
        "listen": config.node.listen,
        "data_dir": str(config.data_dir),
    }
    for name, part in app[STATUS_PARTS].items():
        body[name] = part()
    return json_response(body)
