"""Routes about the node itself: /health, /metrics, /v1/node/status."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime, timezone

from aiohttp import web

from .. import __version__, keys
from .context import CONFIG, DB, IDENTITY, METRICS, STARTED

routes = web.RouteTableDef()

DISK_WARN_BYTES = 1024**3
DISK_FAIL_BYTES = 100 * 1024**2
# Other features add checks here: name -> async callable(app) -> dict with at least "status".
HEALTH_CHECKS = web.AppKey("health_checks", dict)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def install_health_checks(app: web.Application) -> None:
    app[HEALTH_CHECKS] = {"database:responsive": _check_db, "disk:free": _check_disk}


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    app = request.app
    checks = {}
    for name, check in app[HEALTH_CHECKS].items():
        checks[name] = [await check(app)]
    statuses = {c[0]["status"] for c in checks.values()}
    status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    body = {
        "status": status,
        "version": __version__,
        "serviceId": app[IDENTITY].id,
        "description": "XSC node",
        "checks": checks,
    }
    return web.json_response(body, status=503 if status == "fail" else 200, content_type="application/health+json")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": "text/plain; version=0.0.4"})


# Other features add fields to the status: name -> callable(app) -> JSON-able value.
STATUS_PARTS = web.AppKey("status_parts", dict)


@routes.get("/v1/node/status")
async def node_status(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    body = {
        "id": app[IDENTITY].id,
        "version": __version__,
        "uptime": round(time.monotonic() - app[STARTED], 3),
        "listen": config.node.listen,
        "data_dir": str(config.data_dir),
    }
    for name, part in app[STATUS_PARTS].items():
        body[name] = part(app)
    return web.json_response(body)
