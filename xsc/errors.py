"""The one exception hierarchy of XSC.

Every error a user can cause or meet is an `XscError` subclass.  Each carries a
stable machine-readable `code`, a one-line `message` saying what went wrong and,
where there is one, a `hint` saying how to fix it, plus optional structured
`details`.  The HTTP layer (xsc.node.problems) maps classes to status codes and
the CLI (xsc.cli.output) maps them to exit codes, each in one place.
"""

from __future__ import annotations

from typing import Any


class XscError(Exception):
    code = "internal-error"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return self.message

    @property
    def with_hint(self) -> str:
        """The message and its hint as one line: `message (hint)`."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- input and configuration -------------------------------------------------
class BadRequest(XscError):
    code = "bad-request"


class MalformedHeader(BadRequest):
    """A request header that is not in its format at all (a timestamp in other digits than ASCII)."""

    code = "malformed-header"


class ConfigError(XscError):
    code = "config-error"


class InvalidCapability(BadRequest):
    code = "invalid-capability"


class InvalidArgument(BadRequest):
    code = "invalid-argument"


class DuplicateJsonKey(InvalidArgument):
    """A JSON body whose object names one key twice (`key`): readers differ on which one counts, so none does."""

    code = "duplicate-key"

    @classmethod
    def within(cls, what: str, key: str, hint: str | None = None) -> DuplicateJsonKey:
        """The refusal of `what` (the request body, a job's first line ...) for its `key` given twice."""
        return cls(f"{what} gives the key {quoted_id(key)} twice in one object", hint=hint, key=shown(key, 200))


class PayloadTooLarge(BadRequest):
    code = "payload-too-large"


# --- access -------------------------------------------------------------------
class BodyTimeout(BadRequest):
    """A request body that did not arrive within its deadline."""

    code = "body-timeout"


class Unauthorized(XscError):
    code = "unauthorized"


class Forbidden(XscError):
    code = "forbidden"


# --- state --------------------------------------------------------------------
class NotFound(XscError):
    code = "not-found"


class Conflict(XscError):
    code = "conflict"


class PrepaymentRefused(Conflict):
    """A node that answered a prepayment and refused it, for its own reason (`node`, `peer_code`): a 409 naming both,
    where a node that cannot be reached or answers garbage is a PeerError (502)."""

    code = "prepayment-refused"


class NodeAlreadyRunning(Conflict):
    code = "node-already-running"


class DeepCheckRunning(Conflict):
    """A verify or repair of every file asked for while one runs: two would read (and move) the same shares twice."""

    code = "deep-check-running"


class JobRunning(Conflict):
    """A job asked to run again while a run of it is under way: it would only wait for that run to end."""

    code = "job-running"


class JobCancelled(Conflict):
    """A job's run its user cancelled (`xsc compute cancel`): what its caller waiting for the run is told."""

    code = "job-cancelled"


class JobNotRunning(Conflict):
    """A cancel of a job that is not running (ended, or storing what its run left): nothing is left to cancel."""

    code = "job-not-running"


class NodeNotRunning(XscError):
    code = "node-not-running"


class NodeStopping(XscError):
    """Work refused, or a job cut short, because the node stops (its storage, its compute): nothing of it is taken,
    recorded or charged (503), and it may go elsewhere, or here once the node is back."""

    code = "node-stopping"


class NodeFailed(XscError):
    """Work the node itself failed (an error of its disk, a fault of its own), not refused for anything the caller
    did: what it had done of the work is settled (a job's record says so, nothing of its run charged), and it may be
    asked again (503)."""

    code = "node-failed"


class NotANode(XscError):
    """An answer no node gives (unreadable, past its bounds, not JSON, of another media type): something else
    answers at the node's address."""

    code = "not-a-node"


# --- storage ------------------------------------------------------------------
class StorageFull(XscError):
    code = "storage-full"


class StorageBusy(XscError):
    """A holder had no room in memory for another body within its wait (503, with Retry-After): nothing of the upload
    is lost, the body may be sent again, or the share placed on another node."""

    code = "storage-busy"


class DiskFull(StorageFull):
    """The data dir's disk is full, or has no room for what an upload said it will write (refused before any of it is
    read): nothing was published; reads go on."""

    code = "disk-full"


class NotEnoughShares(XscError):
    """Fewer than k intact shares: the file cannot be rebuilt (nothing wrong is ever returned)."""

    code = "not-enough-shares"


class IntegrityError(XscError):
    code = "integrity-error"


class ShareNotFound(NotFound):
    code = "share-not-found"


class UploadNotFound(NotFound):
    """No upload in progress with that id (never begun, committed, aborted, expired, or lost in a restart)."""

    code = "upload-not-found"


class ShareExists(Conflict):
    """A holder already holds (or is receiving) that share, or shares of that storage index from another node."""

    code = "share-exists"


class SegmentOutOfOrder(Conflict):
    code = "segment-out-of-order"


class UploadIncomplete(Conflict):
    code = "upload-incomplete"


class ShareMismatch(Conflict):
    """A committed share whose block hashes or root are not what the holder received and computed."""

    code = "share-mismatch"


class RangeNotSatisfiable(BadRequest):
    code = "range-not-satisfiable"


# --- compute ------------------------------------------------------------------
class ComputeError(XscError):
    code = "compute-error"


class FunctionTimedOut(ComputeError):
    """A web function ran past its deadline: it was stopped (504)."""

    code = "function-timeout"


class FunctionFailed(ComputeError):
    """A web function trapped, ran out of fuel, or answered something that is not a CGI response (502)."""

    code = "function-failed"


class ComputeBusy(ComputeError):
    """Too many calls are running or waiting: refused at once rather than queued without bound."""

    code = "compute-busy"


class FunctionUnavailable(ComputeError):
    """A web function served on the market has no provider that can run its request now."""

    code = "function-unavailable"


class InvalidModule(ComputeError):
    code = "invalid-module"


class CompileTimeout(InvalidModule):
    code = "compile-timeout"


class ImportsNotAllowed(ComputeError):
    code = "imports-not-allowed"


class ExportNotFound(ComputeError):
    code = "export-not-found"


class Trap(ComputeError):
    """A wasm call that stopped abnormally; `code` names the kind (out-of-fuel, deadline, ...)."""

    code = "trap"

    def __init__(self, message: str, *, kind: str, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint, kind=kind, **details)
        self.kind = kind


class ModuleNotFound(NotFound):
    code = "module-not-found"


class ModuleDisabled(Conflict):
    code = "module-disabled"


class ModuleTooLarge(PayloadTooLarge):
    code = "module-too-large"


class NotAFunction(ComputeError):
    """The export exists but is a memory, global or table."""

    code = "export-not-a-function"


class UnsupportedSignature(ComputeError):
    """The export takes or returns values a caller cannot write (v128, references)."""

    code = "unsupported-signature"


class WrongArgumentCount(InvalidArgument):
    code = "wrong-argument-count"


class BadArgument(InvalidArgument):
    """An argument that is not a number of its parameter's type."""

    code = "bad-argument"


class ArgumentOutOfRange(InvalidArgument):
    code = "argument-out-of-range"


class LimitTooHigh(InvalidArgument):
    """A request asked for more fuel, memory or time than the node allows per call."""

    code = "limit-too-high"


class ProvenanceNotFound(NotFound):
    code = "provenance-not-found"


class JobNotFound(NotFound):
    code = "job-not-found"


class MapNotFound(NotFound):
    code = "map-not-found"


class OverCap(PayloadTooLarge):
    """A job's input, stdin, stdout or outputs over the cap it set: nothing of its outputs is stored."""

    code = "over-cap"


class BadProvenanceSignature(IntegrityError):
    code = "bad-provenance-signature"


# --- ledger -------------------------------------------------------------------
class LedgerError(XscError):
    code = "ledger-error"


class InsufficientCredit(LedgerError):
    code = "insufficient-credit"


class NodeCreditExhausted(InsufficientCredit):
    """The node's own account cannot pay for what an S3 user asks (a put's deals, or funding a user past what puts
    need): no user can act on it, the node's operator must (S3: AccountProblem 403, as S3 answers an account that
    cannot be served; the node's API: 503)."""

    code = "node-credit-exhausted"

    @classmethod
    def of(cls, err: InsufficientCredit) -> NodeCreditExhausted:
        """A put refused for the node's own account's credit, told as what the operator must do of it."""
        if isinstance(err, cls):
            return err
        return cls(f"this node's own account cannot pay to store objects now ({err.message}): its operator must give "
                   "it credit (xsc config set ledger.credit_limit MICRO_CREDITS, then restart the node; or earn it by "
                   "providing storage) and fund S3 users only with what puts can spare (xsc s3 users)", **err.details)


class SpendCapReached(InsufficientCredit):
    """A web function's owner capped what it spends an hour, and that is spent: callers get 402."""

    code = "spend-cap-reached"


class PrepaymentRequired(InsufficientCredit):
    """A payer this node extends no (more) credit to asked for work: it must prepay first (402)."""

    code = "prepayment-required"


class InvalidEntry(LedgerError):
    code = "invalid-entry"


class BalanceOutOfRange(InvalidEntry):
    """An entry would take a balance past what its account record can hold (signed 64-bit)."""

    code = "balance-out-of-range"


class AuthorizationExpired(InvalidEntry):
    code = "authorization-expired"


class AuthorizationReplayed(LedgerError):
    """An authorization settles at most once."""

    code = "authorization-replayed"


class ChainConflict(LedgerError):
    """An entry that does not extend its account's chain (a gap, or a seq already taken)."""

    code = "chain-conflict"


class ForkDetected(ChainConflict):
    """Two validly signed entries for one (account, seq): the proof is kept, the account marked."""

    code = "fork-detected"


class EntryNotFound(NotFound):
    code = "entry-not-found"


class NothingOwed(NotFound):
    """A tab closed where nothing ran under it: no receipt is signed (it would stay on the payee's chain for good,
    for nothing), and its payer drops the authorization."""

    code = "nothing-owed"


class VerificationFailed(LedgerError):
    code = "ledger-verification-failed"


class WrongPayee(InvalidEntry):
    """An authorization sent to a node whose account is not its payee."""

    code = "wrong-payee"


class ReceiptMismatch(AuthorizationReplayed):
    """An authorization already countersigned, asked again with another amount or usage."""

    code = "receipt-mismatch"


class AuthorizationNotPending(LedgerError):
    """A receipt for an authorization this node did not issue, or abandoned."""

    code = "authorization-not-pending"


class ClaimRefused(Forbidden):
    """A payee's check says the claim is not for work it did (or the job kind is unknown)."""

    code = "claim-refused"


class PeriodPaidAlready(ClaimRefused):
    """A claim for a storage period its payee counts as paid, with no receipt for that authorization: it will never
    be countersigned (its payer drops it), and it is no misbehaviour.  A payee killed between counting a period as
    paid and writing its receipt leaves an honest payer asking so, once a retry, again and again."""


class PrepaymentNotCollectable(ClaimRefused):
    """A prepayment larger than what its payee can collect from the sender: refused, and no misbehaviour (the sender
    cannot know that figure: the payee's ledger and its user's recognition make it)."""


# --- peers --------------------------------------------------------------------
class PeerError(XscError):
    """A peer could not be reached or did not do what was asked (the fault is not the caller's)."""

    code = "peer-error"


class PeerUnreachable(PeerError):
    code = "peer-unreachable"


class PeerIdentityMismatch(PeerUnreachable):
    """The node at a URL proved (TLS) that it holds another key than the node id expected there: nothing was sent."""

    code = "peer-identity-mismatch"


class TlsRequired(Forbidden):
    """A peer request without TLS from an address that is not loopback (or with `peers.loopback_plaintext` off)."""

    code = "tls-required"


class PeerRefused(PeerError):
    """A peer answered a signed request with an error status."""

    code = "peer-refused"


class PeerMisbehaved(PeerRefused):
    """A peer's answer that proves it misbehaved: a body that is not JSON or not of the shape asked for, more than the
    bounds this node set for it.  Struck against the node the TLS handshake proved gave it (net/peer_client.py:
    `PeerResponse.shapeless`); refused as any other refusal."""

    code = "peer-refused"  # a refusal as any other, to this node's caller
    struck = False  # whether it was struck (its node proven): a check it fails as well is not struck again


class PeerUnavailable(PeerRefused):
    """A provider's 503 to work it refused before running any of it (busy, out of credit): nothing of it is owed,
    and it may be asked again in a moment (or of another provider); relayed to this node's caller as a 503."""

    code = "peer-refused"  # a refusal as any other, answered with the provider's status
    status = 503


class ForgedResult(PeerError):
    """A provider's answer to a job does not match what it signed (its record, its outputs' hashes): it is not
    paid, and struck."""

    code = "forged-result"


class ReplicasDisagree(PeerError):
    """Too few of a replicated job's providers answered the same outputs and fuel: nothing of it is paid or kept."""

    code = "replicas-disagree"


class ReplicasLost(PeerError):
    """Too few of a replicated job's providers answered the same outputs and fuel because some of them never
    answered (gone, refused, timed out) and no other provider could take their place: nothing is paid or kept."""

    code = "replicas-lost"


class ChallengeFailed(PeerError):
    """A peer's answer to a challenge was not signed by the key the peer claims."""

    code = "challenge-failed"


class PeerNotFound(NotFound):
    code = "peer-not-found"


class InvalidDescriptor(BadRequest):
    """A node descriptor that is malformed or not signed by the key its id names."""

    code = "invalid-descriptor"


class NotAdmitted(Forbidden):
    """A peer this node does not admit: its id lacks the proof of work asked here, or it does not prove
    it knows this network's grid secret (403)."""

    code = "not-admitted"


class ForgedRecord(Forbidden):
    """A peer's message carried a record whose signature does not verify (403): the message ends there, and
    the sender gets a strike (peers/admission.py)."""

    code = "forged-record"


class UnknownPeer(Forbidden):
    """A peer request (a subscription, a digest) from a node this one does not know (403): refused before
    anything of it is parsed or its signatures checked."""

    code = "unknown-peer"


class ForkNotGiven(InvalidArgument):
    """A peer's fork request this node cannot give (400: it has no ITC id yet, or its id cannot be split further),
    under a name it gave none to: the asker knows nothing was given under that name and asks another peer."""

    code = "fork-not-given"


class Quarantined(Forbidden):
    """A peer that misbehaved here is refused until its quarantine ends or the operator lifts it (403)."""

    code = "quarantined"


class UnsignedRequest(Unauthorized):
    code = "unsigned-request"


class BadRequestSignature(Unauthorized):
    """A signature that does not verify, or a body that does not match its signed digest."""

    code = "bad-signature"


class StaleRequest(Unauthorized):
    code = "stale-request"


class ReplayedRequest(Unauthorized):
    code = "replayed-request"


class MisaddressedRequest(Unauthorized):
    """A signed request addressed to another node (replayed from one node to another)."""

    code = "misaddressed-request"


class DevnetError(XscError):
    """A local devnet node that would not start or answer."""

    code = "devnet-error"


class ReplayCacheFull(XscError):
    """More fresh signed requests than the replay cache may remember: refuse rather than forget nonces."""

    code = "replay-cache-full"


class QuotaExceeded(XscError):
    """A peer (or the user) is past its share of something this node spends: open uploads, reserved
    bytes, requests in flight.  `retry_after` (seconds) says when to try again."""

    code = "quota-exceeded"


# --- allocation ---------------------------------------------------------------
# Errors of the pure cores are named for what went wrong, not for HTTP: node/problems.py maps them.
class AllocationError(XscError):
    code = "allocation-error"


class InvalidCommitment(AllocationError):
    """A commitment or network snapshot that breaks a rule of the allocator (duplicate ids, foreign slots)."""

    code = "invalid-commitment"


class InvalidAllocationRecord(InvalidCommitment):
    """An allocation state or receipt from a peer that is malformed, out of bounds, or not signed by its publisher."""

    code = "invalid-allocation-record"


class PlotUnavailable(AllocationError):
    code = "plot-unavailable"


# --- market -------------------------------------------------------------------
class MarketError(XscError):
    """Bad input to the market's pure core (an unknown kind, a bad policy, conflicting slot ids)."""

    code = "market-error"


class InvalidMarketCommitment(InvalidCommitment):
    """A market commitment that is malformed, breaks a rule of the book, or is not signed by its participant."""

    code = "invalid-market-commitment"


class NeedNotFound(NotFound):
    code = "need-not-found"


class AmbiguousNeed(MarketError):
    """A bare need id that several recipients use: name it as OWNER/ID."""

    code = "ambiguous-need"


# --- market, node side ----------------------------------------------------------
class MarketNoDeal(Conflict):
    """The market matched no provider to a need (`needs` maps each unmatched need to the reason code)."""

    code = "no-deal"


class TooFewProviders(XscError):
    """The market offers fewer providers than a piece of work needs at once (a replicated job's replicas, each on a
    provider of its own): none of it ran, and it may run once more providers are offered (503)."""

    code = "too-few-providers"


class DealRefused(Forbidden):
    """A provider refused a deal it was offered: the price is under its ask, or it no longer has room."""

    code = "deal-refused"


# --- a stranger's words, as this node quotes them -----------------------------------
MAX_DETAIL = 300  # characters of a peer's refusal quoted in an error (its code: MAX_CODE)
MAX_CODE = 100
MAX_ID_SHOWN = 80  # characters of an id or a name the user gave that an error quotes back (one short line)


def shown(text: str, most: int = MAX_DETAIL) -> str:
    """A stranger's text as an error or a log line of this node quotes it: on one line, without control or format
    characters (a terminal escape, a newline faking a line of this node's own), at most `most` characters."""
    import unicodedata

    text = " ".join("".join(" " if ch.isspace() else ch for ch in text
                            if ch.isspace() or not unicodedata.category(ch).startswith("C")).split())
    return text if len(text) <= most else text[:most - 1] + "…"


def quoted_id(text: str) -> str:
    """An id or a name the user gave, as an error quotes it back: in quotes, on one line, at most MAX_ID_SHOWN
    characters of it."""
    return repr(shown(text, MAX_ID_SHOWN))


def quoted(value: Any) -> str:
    """A value a caller sent where a number, a kind or a name was wanted, as an error quotes it back: a string as
    quoted_id quotes it, a whole number too long to read by its count of digits, anything else (a float, a list, an
    object) in its repr, each on one short line: a 4,000-digit amount or a 5,000-character kind is not sent back
    whole in the refusal."""
    if isinstance(value, str):
        return quoted_id(value)
    if type(value) is int:
        digits = str(abs(value))
        return str(value) if len(digits) <= 24 else f"a figure of {len(digits):,} digits"
    return shown(str(value) if type(value).__name__ == "Decimal" else repr(value), MAX_ID_SHOWN)


# --- connection failures, in the user's words ------------------------------------
def connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few plain words ("connection refused", "timed out"), whatever
    library raised it (aiohttp's connector errors wrap the OSError as `os_error`)."""
    import errno
    import socket

    inner = getattr(exc, "os_error", None) or exc
    if isinstance(inner, (TimeoutError, socket.timeout)) or type(inner).__name__ in ("TimeoutError",
                                                                                      "ServerTimeoutError"):
        return "timed out"
    if isinstance(inner, socket.gaierror):
        return "unknown host"
    words = {
        errno.ECONNREFUSED: "connection refused",
        errno.ECONNRESET: "connection reset",
        errno.EPIPE: "connection closed",
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
        errno.ETIMEDOUT: "timed out",
        errno.ECONNABORTED: "connection aborted",
    }
    if isinstance(inner, OSError) and inner.errno in words:
        return words[inner.errno]
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, (ConnectionResetError, BrokenPipeError)):
        return "connection closed"
    name = type(inner).__name__
    if name in ("ServerDisconnectedError", "RemoteDisconnected", "ClientPayloadError", "IncompleteRead",
                "IncompleteBody"):
        return "the connection closed before the answer was complete"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    if isinstance(inner, OSError) and inner.errno is None and len(inner.args) == 1 and isinstance(inner.args[0], str):
        return inner.args[0]  # raised with its own words ("the node's answer has no Content-Length")
    return name


# --- S3 gateway (xsc/s3) ----------------------------------------------------------
# The bucket index of the node (xsc/buckets/index.py) raises these; the S3 front answers each with the
# S3 error code of the same meaning (xsc/s3/core/xml.py: S3_CODES).
class NoSuchBucket(NotFound):
    code = "no-such-bucket"


class NoSuchKey(NotFound):
    code = "no-such-key"


class NoSuchUpload(NotFound):
    code = "no-such-upload"


class BucketNotEmpty(Conflict):
    code = "bucket-not-empty"


class BucketExists(Conflict):
    code = "bucket-exists"


class BucketTaken(Conflict):
    code = "bucket-taken"


class TooManyBuckets(BadRequest):
    """A user owns as many buckets as one may (node.s3_max_buckets)."""
    code = "too-many-buckets"


class TooManyGrants(BadRequest):
    """A bucket holds as many grants as one may (buckets/core/names.py: MAX_GRANTS, MAX_GRANTS_BYTES)."""
    code = "too-many-grants"


class TooManyUploads(Forbidden):
    """A user has as many multipart uploads in progress as one may (node.s3_max_uploads)."""
    code = "too-many-uploads"


class ConditionalConflict(Conflict):
    """A conditional write (If-None-Match: *, If-Match: ETAG) whose condition no longer held as its record was to be
    written: another write of the key came first.  Nothing of it is kept; S3 answers this 409 and SDKs retry it."""
    code = "conditional-conflict"


class PreconditionFailed(Conflict):
    """A request's condition does not hold (412): a CompleteMultipartUpload's (If-None-Match: *, If-Match: ETAG) of
    the object there, the upload staying as it was, to be completed without it or aborted; a GET's `If-Match` or
    `If-Unmodified-Since` of a web function's answer (compute/web_answers.py)."""
    code = "precondition-failed"


class S3ServedByNode(Conflict):
    """A front's write of a file's record (or its housekeeping) through the user API while the node answers S3
    itself: one front a node, since each front's reconciliation removes the files it finds no record of, the other's
    among them between put and record.  Writes of records alone, which store no file, are not refused."""
    code = "s3-served-by-node"


class InvalidBucketName(BadRequest):
    code = "invalid-bucket-name"


class InvalidPart(BadRequest):
    code = "invalid-part"


class InvalidPartOrder(BadRequest):
    code = "invalid-part-order"


class EntityTooSmall(BadRequest):
    code = "entity-too-small"


class S3Error(XscError):
    """A refusal of the S3 front itself, with the S3 error code and HTTP status S3 answers it with
    (AccessDenied 403, SignatureDoesNotMatch 403, InvalidRange 416, NotImplemented 501, ...)."""

    code = "s3-error"

    def __init__(self, message: str, *, s3_code: str, status: int = 403, hint: str | None = None,
                 **details) -> None:
        super().__init__(message, hint=hint, **details)
        self.s3_code = s3_code
        self.status = status


def from_validation(exc: Any, error: type[XscError], title: str, *, where: str = "", hint: str | None = None,
                    more: bool = False) -> XscError:
    """The one translation of a pydantic ValidationError into the XscError tree: `error` saying
    "TITLE WHERE: MESSAGE", WHERE being the first problem's location (`where` if it has none), and with `more`
    how many problems follow it.  Raise it `from None` (or from `exc`, where the chain helps the reader)."""
    first = exc.errors()[0]
    # a location names the fields as given: a peer's record may name one with a newline and a terminal escape
    location = shown(".".join(str(p) for p in first["loc"]), 200) or where
    message = first["msg"].removeprefix("Value error, ")
    extra = f" (and {exc.error_count() - 1} more problems)" if more and exc.error_count() > 1 else ""
    return error(f"{title}{location}: {message}{extra}", hint=hint)
