"""Every peer route and its price: the one table a signed request is looked up in before its body is read.

A route's price is in work units charged to the sender's work quota (`peers.work_rate` units a second per
sender, bursts of WORK_BURST seconds of it) on its headers alone, from the body's declared length (or the most
the route takes when none is declared), so a stranger's largest request is paid for, or refused with 429 or
413, before a byte of its body is read, parsed or verified.  A unit is about one Ed25519 check of the node's
loop CPU: routes of signed records (allocation, market, descriptors) charge a unit per RECORD_BYTES, bulk bytes
(share segments, modules) a unit per BULK_BYTES, any other JSON a unit per JSON_BYTES.  A route missing from
the table is refused (403): `tests/node/test_peer_routes.py` walks the node's router and fails on one.
Routes that refuse a stranger outright do it earlier still (`peer_auth.before_body`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..compute.pushes import MAX_PUSHED_BYTES
from ..ledger.receipts import RECEIPTS_PATH
from ..net.functions import FUNCTION_PATH, FUNCTIONS_PATH
from ..net.compute import INVOKE_PATH, INVOKES_PATH, MAX_BATCH_BYTES, MODULES_PATH, PROVENANCE_PATH, TAB_CLOSE_PATH
from ..net.jobs import CANCEL_PATH, CHUNK, DATA_PATH, JOB_PATH, JOBS_PATH, OUTPUT_PATH, RUN_PATH
from ..storage.locate import LOCATE_PATH
from ..storage.strangers import TERMS_PATH
from ..storage.core.wire import DAMAGE_PATH, MAX_SEGMENT_SIZE, WHOLE_MAX_BODY, WHOLE_PATH

RECORD_BYTES = 512  # a signed record (an allocation state or receipt, a commitment, a descriptor): ~300-700 bytes
JSON_BYTES = 4096
BULK_BYTES = 64 * 1024
WORK_BURST = 8.0  # seconds of a sender's work rate it may spend at once
SMALL = 8 * 1024  # a request of a few fields (an authorization, a nonce, a lease)
JSON_MAX = 1024**2  # the app's client_max_size


@dataclass(frozen=True)
class Price:
    max_body: int  # bytes: a longer declared body is refused (413) before it is read
    bytes_per_unit: int

    def units(self, size: int) -> int:
        return 1 + size // self.bytes_per_unit


RECORDS = Price(JSON_MAX, RECORD_BYTES)
JSON = Price(JSON_MAX, JSON_BYTES)
FEW_FIELDS = Price(SMALL, JSON_BYTES)
NO_BODY = Price(SMALL, JSON_BYTES)

PEER_ROUTES: dict[tuple[str, str], Price] = {
    ("POST", "/v1/peer/allocation"): RECORDS,
    ("POST", "/v1/peer/allocation/fork"): FEW_FIELDS,
    ("POST", "/v1/peer/allocation/subscribe"): RECORDS,
    ("POST", "/v1/peer/allocation/digest"): JSON,
    ("POST", "/v1/peer/market"): RECORDS,
    ("POST", "/v1/peer/market/digest"): JSON,
    ("POST", "/v1/peer/descriptors"): RECORDS,
    ("POST", "/v1/peer/challenge"): FEW_FIELDS,
    ("PUT", MODULES_PATH): Price(MAX_PUSHED_BYTES, BULK_BYTES),
    ("POST", INVOKE_PATH): JSON,
    ("POST", INVOKES_PATH): Price(MAX_BATCH_BYTES, JSON_BYTES),
    ("POST", TAB_CLOSE_PATH): FEW_FIELDS,
    ("GET", PROVENANCE_PATH): NO_BODY,  # a run's signed record, to the node that paid for it
    # A job's terms are checked and its budget reserved before its data is taken (compute/hosted_jobs.py); its
    # outputs are read only by the node that paid for its run, at most CHUNK a request.
    ("POST", JOBS_PATH): JSON,
    ("PUT", DATA_PATH): Price(CHUNK, BULK_BYTES),
    ("POST", RUN_PATH): NO_BODY,
    ("GET", OUTPUT_PATH): NO_BODY,
    ("DELETE", JOB_PATH): NO_BODY,
    ("POST", CANCEL_PATH): NO_BODY,  # by its sender alone
    # A placement's terms and tab are checked before its module or files are looked at (placed_functions.py);
    # the files it mounts are read by this node, within their own bounds, as any read of a capability.
    ("POST", FUNCTIONS_PATH): JSON,
    ("GET", FUNCTION_PATH): NO_BODY,
    ("DELETE", FUNCTION_PATH): NO_BODY,
    ("POST", RECEIPTS_PATH): FEW_FIELDS,
    ("GET", RECEIPTS_PATH + "/{authorization}"): NO_BODY,
    ("POST", "/v1/peer/shares/{si}/{share}/uploads"): FEW_FIELDS,
    ("PUT", WHOLE_PATH): Price(WHOLE_MAX_BODY, BULK_BYTES),
    # Bounded again by the handler from the upload (storage/core/wire.py: put_limit, commit_limit).
    ("PUT", "/v1/peer/uploads/{upload}/segments/{first}"): Price(MAX_SEGMENT_SIZE, BULK_BYTES),
    ("POST", "/v1/peer/uploads/{upload}/commit"): Price(MAX_SEGMENT_SIZE, 16 * 1024),  # hex hashes: cheap to parse
    ("POST", "/v1/peer/uploads/{upload}/touch"): NO_BODY,
    ("DELETE", "/v1/peer/uploads/{upload}"): NO_BODY,
    ("GET", "/v1/peer/shares/{si}/{share}"): NO_BODY,  # and its answer by its size (peer_auth.charge_answer)
    ("GET", "/v1/peer/shares/{si}/{share}/blocks"): NO_BODY,
    ("DELETE", "/v1/peer/shares/{si}/{share}"): NO_BODY,
    ("POST", "/v1/peer/shares/{si}/{share}/renew"): FEW_FIELDS,
    ("POST", "/v1/peer/shares/{si}/{share}/audit"): FEW_FIELDS,
    ("POST", DAMAGE_PATH): JSON,
    ("POST", LOCATE_PATH): FEW_FIELDS,
    ("GET", TERMS_PATH): NO_BODY,
}


def price_of(method: str, path: str) -> Price | None:
    """The price of a peer route (its method and path template), None for a route the table does not name."""
    return PEER_ROUTES.get((method, path))


__all__ = ["PEER_ROUTES", "Price", "WORK_BURST", "price_of"]
