"""Middlewares of the node app that are not about who may call what (auth.py, peer_auth.py), errors (problems.py)
or its stop (the requests in flight: serve/stop.py): request counting for /metrics."""

from __future__ import annotations

from aiohttp import web

from .metrics import Metrics
from .problems import ENDED_WITH, PROBLEM_CODE


def request_counter(metrics: Metrics, peer_prefix: str):
    """The middleware that counts answers by method and status (a stream of lines that ended with a problem: by
    the problem's), and refused peer requests (paths under `peer_prefix`) by problem code."""

    @web.middleware
    async def count_requests(request: web.Request, handler):
        response = await handler(request)
        status = str(ended_with := response.get(ENDED_WITH, response.status))
        metrics.child(metrics.requests, request.method, status).inc()
        if ended_with >= 400:
            metrics.child(metrics.errors, status).inc()
            if request.path.startswith(peer_prefix):
                metrics.child(metrics.peer_refusals, response.get(PROBLEM_CODE, status)).inc()
        return response

    return count_requests
