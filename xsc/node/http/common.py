"""What every route module shares: the one body reader (JSON or raw), the one query-parameter parsers, and the one
answer of a long operation as lines of its progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from itertools import accumulate
from typing import Any

from aiohttp import web

from ...errors import BodyTimeout, DuplicateJsonKey, InvalidArgument, PayloadTooLarge, XscError, quoted_id
from ...codec import JSON_STRING, DuplicateKey, dumps, loads  # noqa: F401 - the one JSON writer and reader
from ...tasks import in_pool
from ...storage import quotes
from ..appkeys import CONFIG, CPU_POOL, NODE
from ..limits import BODY_SECONDS, read_body  # noqa: F401 - the one body reader, for route modules
from ..problems import ENDED_WITH, PROBLEM_CODE, problem_for, problem_from_error, status_of

MAX_JSON_DEPTH = 32  # nesting deeper than any XSC body: refused before it costs the parser anything


def json_value(raw: bytes, hint: str) -> Any:
    """A request body that must be JSON (else a 400 with `hint`), no object naming a key twice (DuplicateJsonKey)."""
    if _too_deep(raw):
        raise InvalidArgument(f"the request body nests deeper than {MAX_JSON_DEPTH} levels", hint=hint)
    try:
        return loads(raw, unique_keys=True)
    except DuplicateKey as err:
        raise DuplicateJsonKey.within("the request body", err.key, f"send each key once: {hint}") from None
    except ValueError:
        raise InvalidArgument("the request body is not JSON", hint=hint) from None


def json_object(raw: bytes, hint: str) -> dict[str, Any]:
    """A request body that must be one JSON object (else a 400 with `hint`; `json_value`)."""
    if not isinstance(body := json_value(raw, hint), dict):
        raise InvalidArgument("the request body must be a JSON object", hint=hint)
    return body



def results_response(results: list[Any], status: int = 200) -> web.Response:
    """The answer to a request that carries several (a batch of calls, a group of objects): one result per item, in
    order, each {"status": status, "answer": ...} or the problem that refused it {"status": 4xx, "problem": ...}."""
    return json_response({"results": [{"status": status_of(r), "problem": loads(problem_from_error(r).body)}
                                      if isinstance(r, XscError) else {"status": status, "answer": r}
                                      for r in results]})


NDJSON = "application/x-ndjson"


async def progress_answer(request: web.Request, operation: Callable[[Callable[[dict], None] | None], Awaitable[Any]]
                          ) -> web.StreamResponse:
    """The answer of a long operation, `operation(progress)`: its result as JSON; or, to a client that accepts NDJSON,
    a line {"progress": {...}} each time the operation tells `progress` how far it is, then {"result": ...}, or
    {"problem": ...} if it failed once its lines began (a failure before any line is answered as any route's).
    The operation goes on to its end as it would for a JSON call: a client that goes away only stops the lines."""
    if NDJSON not in request.headers.get("Accept", ""):
        return json_response(await operation(None))
    lines: asyncio.Queue[dict | None] = asyncio.Queue()  # a few dozen a stage (storage/gateway_repair.py, Tally)
    response = web.StreamResponse(headers={"Content-Type": NDJSON})

    async def run() -> Any:
        try:
            return await operation(lambda event: lines.put_nowait({"progress": event}))
        finally:
            lines.put_nowait(None)

    async def relay() -> None:
        try:
            while (line := await lines.get()) is not None:
                await response.prepare(request)  # once: at the first line
                await response.write(dumps(line) + b"\n")
        except ConnectionError:  # the client went away: its lines are dropped
            while await lines.get() is not None:
                pass

    outcome, _ = await asyncio.gather(run(), relay(), return_exceptions=True)
    if isinstance(outcome, BaseException) and not (isinstance(outcome, Exception) and response.prepared):
        raise outcome
    problem = problem_for(request, outcome) if isinstance(outcome, Exception) else None
    last = {"result": outcome} if problem is None else {"problem": loads(problem.body)}
    if problem is not None:  # counted by its status (middlewares.py): the head said 200
        response[ENDED_WITH], response[PROBLEM_CODE] = problem.status, problem.get(PROBLEM_CODE, str(problem.status))
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write(dumps(last) + b"\n")
        await response.write_eof()
    return response


def json_response(value: Any, status: int = 200, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> web.Response:
    """Every JSON answer of the node's routes (`dumps`)."""
    return web.Response(body=dumps(value), status=status, content_type=content_type, headers=headers)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_DEPTH_STEP = [{0x5B: 1, 0x7B: 1, 0x5D: -1, 0x7D: -1}.get(b, 0) for b in range(256)]


def _too_deep(raw: bytes) -> bool:
    """Does `raw` nest deeper than MAX_JSON_DEPTH (brackets in strings not counted)?  Every step runs at C speed
    (a byte-by-byte walk of a 300 KB directory message was ~30 ms of Python, holding the GIL against the event
    loop): without escapes, the text is cut to its brackets and quotes first, then at its quotes (every other piece
    is in a string); with escapes the regex engine finds where each string ends."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # cannot nest deeper than it opens (C speed)
        return False
    if b"\\" in raw:
        brackets = JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)  # inside a string is no nesting
    else:  # every quote begins or ends a string
        brackets = b"".join(raw.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > MAX_JSON_DEPTH


IN_POOL_BYTES = 64 * 1024  # a JSON body at least this long is checked and parsed in the CPU pool, off the loop


async def _parsed(request: web.Request, raw: bytes, hint: str) -> dict[str, Any]:
    if len(raw) >= IN_POOL_BYTES:  # a full market or directory swap: ~1 MiB, some 60 ms of CPU at load 20
        return await in_pool(request.app[CPU_POOL], json_object, raw, hint)
    return json_object(raw, hint)


async def json_body(request: web.Request, hint: str) -> dict[str, Any]:
    return await _parsed(request, await read_body(request), hint)


async def large_json_body(request: web.Request, limit: int, min_rate: float, hint: str) -> dict[str, Any]:
    """A JSON object body of up to `limit` bytes, past the app's client_max_size (1 MiB): refused (413) once it is
    known to be longer, without reading the rest; 408 unless it comes at `min_rate` bytes a second."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"the body is {request.content_length:,} bytes; at most {limit:,} are taken here",
                              limit=limit, hint=hint)
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS + limit / min_rate):
            async for chunk in request.content.iter_chunked(256 * 1024):
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(f"the body is over {limit:,} bytes, the most taken here", limit=limit,
                                          hint=hint)
    except TimeoutError:
        raise BodyTimeout("the body did not arrive in time", hint="send it faster", received=len(body)) from None
    return await _parsed(request, bytes(body), hint)


async def optional_json_body(request: web.Request, hint: str) -> dict[str, Any]:
    """A JSON object body, or {} when the request has none."""
    raw = await read_body(request) if request.can_read_body else b""
    return await _parsed(request, raw, hint) if raw.strip() else {}


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """`?name=N`, a whole number from low to high (default when absent)."""
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise InvalidArgument(f"{name} must be a whole number from {low} to {high}, not {text[:20]!r}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return value


def query_flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise InvalidArgument(f"{name} must be true or false, not {value[:20]!r}")
    return value in ("1", "true", "yes")


def query_kind(query: Mapping[str, str]) -> str | None:
    kind = query.get("kind")
    if kind not in (None, "storage", "compute"):
        raise InvalidArgument(f"unknown kind {quoted_id(kind)}", hint="use storage or compute")
    return kind


def storage_index(text: str, name: str = "file") -> bytes:
    try:
        si = bytes.fromhex(text)
    except ValueError:
        si = b""
    if len(si) != 32:
        raise InvalidArgument(f"{name} must be a storage index (64 hex digits), not {text[:80]!r}",
                              hint="`xsc store ls --json` shows each file's storage_index")
    return si


def put_terms(request: web.Request) -> tuple[int, int, dict]:
    """(lease seconds, bid, filters) of a put, from its query."""
    query = request.query
    return (request.app[NODE].storage.lease_seconds(query.get("duration")),
            quotes.parse_max_price(query.get("max_price"), request.app[CONFIG].market.storage_bid),
            quotes.parse_filters(query))
