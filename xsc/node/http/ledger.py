"""HTTP routes of the signed ledger (xsc.ledger.LedgerService).

    GET  /v1/ledger/accounts                     every account this node holds a chain or key of
    GET  /v1/ledger/accounts/{id}                balance, head, credit; the client account's also what its
                                                 puts' leases still promise (id: public id, a unique prefix
                                                 of >= 4 characters of a known one, `client` or `node`)
    GET  /v1/ledger/accounts/{id}/chain?from=SEQ&limit=N   the chain, oldest first (peers sync from here)
    GET  /v1/ledger/accounts/{id}/history?limit=N&expand=1 the newest entries first, each with its balance_after
                                                 (expand: the provenance ids each aggregated transfer covers;
                                                 encoded=false: without the signed bytes; fields=a,b:
                                                 only those fields of each entry, and seq and balance_after)
    GET  /v1/ledger/entries/{id}                 one entry (id or a unique prefix of >= 8 hex digits)
    POST /v1/ledger/entries                      {"entries": ["<hex>", ...]}: countersigned entries from
                                                 a counterparty, stored only after full validation
    GET  /v1/ledger/verify                       audit of every chain
    GET  /v1/ledger/export                       every entry as JSON lines
    POST /v1/ledger/prepay                       {"node", "amount"}: pay a node ahead of work (it does not
                                                 recognise this one: it takes on work only within what was prepaid)
    GET  /v1/ledger/trust                        each peer's trust line here: paid, used, credit, available
    GET  /v1/ledger/payments                     payments to other nodes pending, and those dropped unpaid (why)

    GET  /v1/peer/terms                          (signed) the sender's own terms: {"available", "credit", "recognised"}
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ...errors import InvalidArgument, quoted_id
from ...ledger.core.model import ENTRY_FIELDS
from .. import peer_auth
from ...storage.strangers import TERMS_PATH
from ..appkeys import NODE
from .common import json_body, json_response, query_flag, query_int

routes = web.RouteTableDef()

MAX_CHAIN_PAGE = 1000
MAX_HISTORY = 10_000
MAX_POST_ENTRIES = 500  # ~1.3 KB of hex each: stays under the 1 MiB request body limit
EXPORT_BATCH = 500


@routes.post("/v1/ledger/prepay")
async def prepay(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"node": NODE_ID, "amount": MICRO_CREDITS}')
    return json_response(await request.app[NODE].payments.prepay(body.get("node"), body.get("amount")), status=201)


@routes.get("/v1/ledger/trust")
async def trust_lines(request: web.Request) -> web.Response:
    return json_response({"lines": request.app[NODE].trust.lines()})


@routes.get("/v1/ledger/payments")
async def payments(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].payments.view())


@routes.get(TERMS_PATH)
async def peer_terms(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].trust.terms_for(peer_auth.peer_id(request)))


@routes.get("/v1/ledger/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    return json_response({"accounts": await request.app[NODE].s3_accounts.ledger_accounts()})  # S3 users' named too


@routes.get("/v1/ledger/accounts/{account}")
async def account(request: web.Request) -> web.Response:
    node = request.app[NODE]
    key = node.ledger.account_key(request.match_info["account"])
    return json_response(await node.s3_accounts.ledger_account(key))  # an S3 user's named, as in the list


@routes.get("/v1/ledger/accounts/{account}/chain")
async def chain(request: web.Request) -> web.Response:
    service = request.app[NODE].ledger
    key = service.account_key(request.match_info["account"])
    start = query_int(request.query, "from", 1, 1, 2**63 - 1)
    limit = query_int(request.query, "limit", MAX_CHAIN_PAGE, 1, MAX_CHAIN_PAGE)
    view = service.account_view(key)
    entries = await service.history.chain(key, start, limit)
    last = entries[-1]["seq"] if entries else start - 1
    return json_response({
        "account": view["account"], "head": view["seq"], "from": start, "entries": entries,
        "next": last + 1 if last < view["seq"] else None,
    })


@routes.get("/v1/ledger/accounts/{account}/history")
async def history(request: web.Request) -> web.Response:
    service = request.app[NODE].ledger
    key = service.account_key(request.match_info["account"])
    limit = query_int(request.query, "limit", 20, 1, MAX_HISTORY)
    expand = query_flag(request.query, "expand")
    encoded = request.query.get("encoded", "true") != "false"  # the dashboard leaves out the signed bytes
    fields = None
    if "fields" in request.query:
        fields = frozenset(f for f in request.query["fields"].split(",") if f)
        unknown = sorted(fields - set(ENTRY_FIELDS))
        if unknown or not fields:
            raise InvalidArgument(f"no entry field {quoted_id(unknown[0])}" if unknown else "fields names none",
                                  hint="fields=NAME,NAME,... of: " + ", ".join(ENTRY_FIELDS))
    view = await service.history.view(key, limit, expand=expand, encoded=encoded, fields=fields)
    return json_response(view)


@routes.get("/v1/ledger/entries/{entry}")
async def show(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].ledger.history.entry(request.match_info["entry"]))


@routes.post("/v1/ledger/entries")
async def post_entries(request: web.Request) -> web.Response:
    body = await json_body(request, 'send {"entries": ["<hex>", ...]}')
    items = body.get("entries")
    if "entry" in body and items is None:
        items = [body["entry"]]
    if not isinstance(items, list) or not items:
        raise InvalidArgument("no entries given", hint='send {"entries": ["<hex>", ...]} in chain order')
    if len(items) > MAX_POST_ENTRIES:
        raise InvalidArgument(f"at most {MAX_POST_ENTRIES} entries per request", hint="send the chain in pages")
    encoded = []
    for n, item in enumerate(items):
        text = item.get("encoded") if isinstance(item, dict) else item
        try:
            encoded.append(bytes.fromhex(text))
        except (TypeError, ValueError):
            raise InvalidArgument(f"entry #{n + 1} is not hex", hint="send each entry's `encoded` field") from None
    results = await request.app[NODE].ledger.accept(encoded)
    status = 201 if any(r["status"] == "stored" for r in results) else 200
    return json_response({"results": results}, status=status)


@routes.get("/v1/ledger/verify")
async def verify(request: web.Request) -> web.Response:
    return json_response(await request.app[NODE].ledger.verify())


@routes.get("/v1/ledger/export")
async def export(request: web.Request) -> web.StreamResponse:
    service = request.app[NODE].ledger
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    lines = service.history.export_lines()
    loop = asyncio.get_running_loop()

    def next_batch() -> list[bytes]:
        return [line for _, line in zip(range(EXPORT_BATCH), lines)]

    try:
        while batch := await loop.run_in_executor(None, next_batch):
            await response.write(b"".join(batch))
    finally:
        await loop.run_in_executor(None, lines.close)
    await response.write_eof()
    return response


