"""Authenticated requests from peers: every path under /v1/peer/ comes from a node that proved its key.

On a TLS connection whose client presented its node certificate (xsc/net/tls.py) the handshake proved it,
once: requests name that node and carry no signature, nonce or digest (TLS authenticates and orders every
byte; on another connection a request speaks for that connection's node).  Any other request carries a
fresh, unreplayed signature over its method, path and body digest (identity.verify_peer_request).

The verified sender's id is put on the request (`peer_id(request)`); which sender may do what is
each handler's business.  Before the body is read, the route's own refusal runs (`before_body`) and the
route's price (node/peer_routes.py, from the declared length) is charged to the sender's work quota.  A handler
that streams a large body marks itself with `@streams_body` and checks the body against `signed(request).digest`
as it reads (unless `signed(request).channel`); any other handler gets a body already checked against it.  A request
refused before its sender is proven and admitted counts against its address (auth.guarded, in a count of its own)."""

from __future__ import annotations

import hmac
import time

from aiohttp import web

from ..config import is_loopback_host
from ..errors import (BadRequestSignature, Forbidden, ForgedRecord, NotAdmitted, PayloadTooLarge, QuotaExceeded,
                      TlsRequired, Unauthorized)
from ..identity import SignedRequest, body_digest, verify_peer_request
from ..net.tls import connection_node
from .appkeys import CONFIG, IDENTITY, NODE, PEER_AUTH_FAILURES, PEER_LIMITS, PEER_WORK, REPLAY_GUARD
from .auth import PEER_PREFIX, guarded
from .limits import read_body
from .peer_routes import BULK_BYTES, JSON_BYTES, Price, price_of

SIGNED = web.RequestKey("xsc_signed_request", SignedRequest)


def streams_body(handler):
    """Mark a peer handler that reads its (large) body itself and checks it against the signed digest."""
    handler.streams_peer_body = True
    return handler


def before_body(check):
    """Mark a peer handler with `check(request, sender, size)`, run once the sender's signature is verified and
    before its body is read (`size`: the declared length, else the most a body may be): a quota that refuses it
    then spares the node reading, hashing and parsing a flood's bodies.  It may only read state, never spend."""

    def mark(handler):
        handler.before_peer_body = check
        return handler

    return mark


def _price(request: web.Request) -> Price:
    """The route's price (node/peer_routes.py); a peer route the table does not name is refused."""
    price = price_of(request.method, request.match_info.route.resource.canonical)
    if price is None:
        raise Forbidden("this node takes no such peer request")
    return price


def signed(request: web.Request) -> SignedRequest:
    return request[SIGNED]


def peer_id(request: web.Request) -> str:
    """The id of the node that signed this request."""
    return request[SIGNED].sender


def charge_answer(request: web.Request, size: int, bulk: bool = False) -> None:
    """Charge an answer of `size` bytes to the sender's work quota (429 past it), beyond what its request paid:
    a small request for a large answer pays as the answer (JSON_BYTES a unit; `bulk` bytes BULK_BYTES, as sent)."""
    if units := size // (BULK_BYTES if bulk else JSON_BYTES):
        sender = request[SIGNED].sender
        request.app[PEER_WORK].check(sender, time.monotonic(), f"peer {sender}", units)


def require_tls(request: web.Request) -> None:
    """Peer requests come over TLS; plaintext only from this machine (loopback), if `peers.loopback_plaintext`."""
    if request.transport is not None and request.transport.get_extra_info("sslcontext") is not None:
        return
    if request.app[CONFIG].peers.loopback_plaintext and is_loopback_host(request.remote or ""):
        return
    raise TlsRequired("peer requests must come over TLS",
                      hint="send them to the node's https:// URL (the same host and port)")


@web.middleware
async def signature_middleware(request: web.Request, handler):
    if not request.path.startswith(PEER_PREFIX):
        return await handler(request)
    # Past its failures an address is refused before its signature is checked: nobody has signatures verified for
    # free.  A quarantined peer is not counted: its key is proven, and refusing it costs what serving it would.
    with guarded(request, PEER_AUTH_FAILURES, (Unauthorized, TlsRequired, NotAdmitted)):
        require_tls(request)  # before anything is read or checked: a plaintext request is refused whole
        now = int(time.time() * 1000)
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        verified = verify_peer_request(request.headers, request.method, request.raw_path,
                                       receiver=request.app[IDENTITY].id, channel=connection_node(ssl_object), now_ms=now)
        # Admission (proof of work, grid secret, quarantine) before anything of the sender's is read or remembered.
        admission = request.app[NODE].admission
        admission.check_request(verified, request.headers)
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route: 404 or 405, and nothing of the body is read
    price = _price(request)
    size = request.content_length if request.content_length is not None else price.max_body
    check = getattr(request.match_info.handler, "before_peer_body", None)
    if check is not None:
        check(request, verified.sender, size)
    if size > price.max_body:
        raise PayloadTooLarge(f"the body is {size} bytes; at most {price.max_body} are taken here",
                              limit=price.max_body)
    # Its price, charged to the sender on its headers: a stranger's largest request is paid for before it is read.
    request.app[PEER_WORK].check(verified.sender, time.monotonic(), f"peer {verified.sender}", price.units(size))
    if not verified.channel and not getattr(request.match_info.handler, "streams_peer_body", False):
        body = await read_body(request)  # cached on the request: the handler reads the same bytes
        if not hmac.compare_digest(body_digest(body), verified.digest):
            with guarded(request, PEER_AUTH_FAILURES, (BadRequestSignature,)):  # a body its signer did not sign
                raise BadRequestSignature("the request body does not match its signed digest",
                                          hint="sign the exact bytes sent")
    # Only after the signature and body check out: nobody can use up another node's nonces or its rate.
    try:
        request.app[PEER_LIMITS].check(verified.sender, time.monotonic(), f"peer {verified.sender}")
        if not verified.channel:
            request.app[REPLAY_GUARD].check(verified.sender, verified.nonce, verified.timestamp, now)
    except QuotaExceeded:
        if admission.quarantine is not None:  # a flood: one strike a minute at most (a burst is not a habit)
            admission.quarantine.strike(verified.sender, "flooded this node past its quotas", kind="flood",
                                        every=60.0)
        raise
    request[SIGNED] = verified
    request.app[NODE].health.heard_from(verified.sender)  # a peer counted as down is probed again at once
    try:
        return await handler(request)
    except ForgedRecord as err:
        if admission.quarantine is not None:
            admission.quarantine.strike(verified.sender, err.message, kind="forged-record")
        raise
