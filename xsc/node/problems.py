"""The one place where XSC errors become HTTP problem responses (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import codec, db
from .. import errors as e
from ..serve.direct import Stalled
from ..storage.core.capability import cut_capabilities

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

# First match along the exception's MRO wins.
STATUS = {
    e.PayloadTooLarge: 413,
    e.BodyTimeout: 408,
    e.RangeNotSatisfiable: 416,
    e.PreconditionFailed: 412,
    e.BadRequest: 400,
    e.Unauthorized: 401,
    e.NodeCreditExhausted: 503,
    e.InsufficientCredit: 402,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.ExportNotFound: 404,
    e.Conflict: 409,
    e.InvalidModule: 422,
    e.ImportsNotAllowed: 422,
    e.Trap: 422,
    e.FunctionTimedOut: 504,
    e.FunctionFailed: 502,
    e.ComputeBusy: 503,
    e.FunctionUnavailable: 503,
    e.InvalidEntry: 422,
    e.AuthorizationReplayed: 409,
    e.AuthorizationNotPending: 409,
    e.ChainConflict: 409,
    e.VerificationFailed: 409,
    e.LedgerError: 400,
    e.ComputeError: 422,
    e.PeerError: 502,
    e.InvalidDescriptor: 422,
    e.ReplayCacheFull: 503,
    e.QuotaExceeded: 429,
    e.AllocationError: 400,
    e.MarketError: 400,
    e.NotEnoughShares: 503,
    e.TooFewProviders: 503,
    e.IntegrityError: 500,
    e.StorageFull: 507,
    e.StorageBusy: 503,
    e.NodeStopping: 503,
    e.NodeFailed: 503,
    e.ConfigError: 500,
}


def status_of(error: e.XscError) -> int:
    if isinstance(error, (e.S3Error, e.PeerUnavailable)):  # its own: S3's (a bad continuation token: 400), a peer's
        return error.status
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


PROBLEM_CODE = web.ResponseKey("xsc_problem_code", str)
# The status an answer ended with, its head's long sent (a problem after lines of progress: http/common.py)
ENDED_WITH = web.ResponseKey("xsc_ended_with", int)


def problem(status: int, code: str, detail: str, *, hint: str | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": f"urn:xsc:problem:{code}", "code": code, "status": status, "detail": detail}
    if hint:
        body["hint"] = hint
    body.update(extra)
    response = web.Response(status=status, text=codec.dumps(body, default=str).decode(), content_type=PROBLEM_TYPE)
    response[PROBLEM_CODE] = code  # for the request counter (middlewares.py)
    return response


def problem_from_error(error: e.XscError) -> web.Response:
    response = problem(status_of(error), error.code, error.message, hint=error.hint, **error.details)
    if "retry_after" in error.details:
        response.headers["Retry-After"] = str(max(1, int(error.details["retry_after"])))
    if isinstance(error, e.RangeNotSatisfiable) and "size" in error.details:  # RFC 9110 15.5.17: what there is
        response.headers["Content-Range"] = f"bytes */{error.details['size']}"
    return response


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - every error answered as its problem (problem_for)
        return problem_for(request, exc)


def problem_for(request: web.Request, exc: Exception) -> web.Response:
    """The problem answering `exc`, raised while `request` was handled (before its answer began, or in a stream of
    lines: http/common.py, progress_answer); an HTTP redirect is raised on."""
    try:
        raise exc
    except e.XscError as err:
        return problem_from_error(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "-")
        return problem(exc.status, code, f"{exc.reason}: {request.method} {request.path}")
    except db.Error as exc:  # the database: a full disk (OSError too), or one LevelDB will not write to
        log.error("database error in %s %s: %s", request.method, cut_capabilities(request.path), exc)
        if db.disk_full(exc):
            return problem_from_error(e.DiskFull(
                "the data dir's disk is full: the node could not write to its database", hint="free disk space, then try again: the node writes again once there is room"))
        return problem(500, "database-error", "the node's database failed; see its log")
    except ConnectionError as exc:
        # The client went away mid-stream: said once here.  Re-raising would make aiohttp log it
        # again as an ERROR with a traceback; the answer below is dropped quietly on the closed connection.
        if isinstance(exc, Stalled):
            log.info("client cut during %s %s: %s", request.method, cut_capabilities(request.path), exc)
        else:
            log.info("client disconnected during %s %s (%s)", request.method, cut_capabilities(request.path), e.connection_reason(exc))
        return problem(499, "client-closed-request", "the client closed the connection")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, cut_capabilities(request.path))
        return problem(500, "internal-error", "the node hit an unexpected error; see its log")
