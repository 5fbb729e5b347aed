"""AWS Signature Version 4 as S3 checks it: the header form, the presigned-query form, and signed chunks.

Pure: nothing here does I/O or reads the clock (callers pass `now`).  The server rebuilds the canonical
request from what the client sent, derives the signing key from the secret of the access key named in
the credential, and compares signatures in constant time.  Refusals raise `S3Error` with the code and
status S3 itself answers (AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, ...).

References: "Authenticating Requests (AWS Signature Version 4)" and "Signature Calculations for the
Authorization Header: Transferring Payload in Multiple Chunks" in the Amazon S3 API reference.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping
from urllib.parse import quote, unquote, unquote_plus, unquote_to_bytes

from ...errors import S3Error
from .headers import text_of

ALGORITHM = "AWS4-HMAC-SHA256"
# What mends an unknown or missing access key is the operator's to do: said in the front's log, never to the client
# (anyone: a stranger guessing keys, an anonymous request).
UNKNOWN_KEY_HINT = "create one with `xsc s3 keys create`"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 15 * 60  # seconds a signed request's date may differ from the server's clock
MAX_PRESIGNED_EXPIRY = 7 * 24 * 3600
AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z", re.ASCII)  # AMZ_DATE's layout

SecretOf = Callable[[str], "str | None"]


@dataclass(frozen=True)
class SignedRequest:
    """What was signed: the method, the raw path and query string as sent, and the headers (any case)."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]

    @functools.cached_property
    def _by_name(self) -> dict[str, list[str]]:
        """Every header's values under its lower-case name, in the order sent: the headers are walked once."""
        found: dict[str, list[str]] = {}
        for key, value in self.headers.items():
            found.setdefault(key.lower(), []).append(value)
        return found

    def header(self, name: str) -> str | None:
        values = self._by_name.get(name.lower())
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Every value of a header (`name` in lower case), in the order sent."""
        return self._by_name.get(name, [])

    def names(self) -> set[str]:
        """The headers sent, by their lower-case names."""
        return set(self._by_name)


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out."""

    access_key: str
    payload_hash: str  # a hex SHA-256 the body must match, or UNSIGNED_PAYLOAD, or a STREAMING_* mode
    signing_key: bytes
    amz_date: str
    scope: str
    signature: str  # the seed signature of a chunked upload
    presigned: bool = False

    @property
    def region(self) -> str:
        """The region the request was signed for (its credential's scope: DATE/REGION/s3/aws4_request)."""
        return self.scope.split("/")[1]


def check_region(verified: Verified, expected: str) -> None:
    """Refuse a signature made for another region than the server's, as S3 does, naming the one it expects (also as
    <Region>, which SDKs read to sign again for it)."""
    if verified.region == expected:
        return
    if verified.presigned:
        raise S3Error(f"Error parsing the X-Amz-Credential parameter; the region {verified.region!r} is wrong; "
                      f"expecting {expected!r}", s3_code="AuthorizationQueryParametersError", status=400,
                      hint=f"presign the URL for the region {expected}", Region=expected)
    raise S3Error(f"The authorization header is malformed; the region {verified.region!r} is wrong; "
                  f"expecting {expected!r}", s3_code="AuthorizationHeaderMalformed", status=400,
                  hint=f"set the client's region to {expected}", Region=expected)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)  # a key signs every request of its day (as the SDKs keep it): derived once
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def uri_encode(text: str | bytes, *, keep_slash: bool = False) -> str:
    """RFC 3986 encoding as SigV4 spells it: unreserved characters kept, the rest %XX (upper case)."""
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def decoded(text: str, *, plus: bool = False) -> str:
    """`text` percent-decoded ('+' a space too if `plus`), its bytes UTF-8 (InvalidURI otherwise, as S3 answers).
    Read as U+FFFD, names that differ in such a byte (a Latin-1 file name's) would be one name."""
    try:
        return (unquote_plus if plus else unquote)(text, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("Couldn't parse the specified URI: it names a key, bucket or value that is not UTF-8 once "
                      "percent-decoded (encode names as UTF-8, then percent-encode them)",
                      s3_code="InvalidURI", status=400) from None


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, percent-decoded ('+' is a space, as S3 reads it; a plus is %2B)."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((decoded(name, plus=True), decoded(value, plus=True)))
    return pairs


def canonical_query(pairs: Iterable[tuple[bytes, bytes]], *, drop: str | None = None) -> str:
    dropped = drop.encode() if drop is not None else None
    encoded = sorted((uri_encode(n), uri_encode(v)) for n, v in pairs if n != dropped)
    return "&".join(f"{n}={v}" for n, v in encoded)


def canonical_headers(request: SignedRequest, signed: list[str]) -> str:
    lines = []
    for name in signed:
        values = [" ".join(text_of(v).split()) for v in request.values(name)]
        if not values:
            raise S3Error(f"the signed header {name!r} is not in the request", s3_code="SignatureDoesNotMatch")
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(request: SignedRequest, signed: list[str], payload_hash: str,
                      *, drop_query: str | None = None) -> str:
    # Over the bytes sent, as a client signs them: a name that is not UTF-8 is refused as such (InvalidURI), not as a
    # signature that does not match.
    path = uri_encode(unquote_to_bytes(request.raw_path) or b"/", keep_slash=True)
    pairs = [(unquote_to_bytes(n.replace("+", " ")), unquote_to_bytes(v.replace("+", " ")))
             for n, _, v in (part.partition("=") for part in request.raw_query.split("&") if part)]
    return "\n".join([request.method.upper(), path, canonical_query(pairs, drop=drop_query),
                      canonical_headers(request, signed), ";".join(signed), payload_hash])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _parse_time(amz_date: str) -> datetime:
    try:  # the fixed layout of AMZ_DATE, read by hand: strptime costs a request ~15 us
        if not _AMZ_DATE.fullmatch(amz_date):
            raise ValueError(amz_date)
        d = amz_date
        return datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]), int(d[13:15]),
                        tzinfo=timezone.utc)
    except ValueError:
        raise S3Error(f"X-Amz-Date {amz_date!r} is not a date like 20240101T000000Z",
                      s3_code="AccessDenied") from None


def _credential(value: str) -> tuple[str, str, str, str]:
    """access key, date, region, service of `AK/20240101/us-east-1/s3/aws4_request`."""
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise S3Error(f"malformed credential {value!r}: expected ACCESS_KEY/DATE/REGION/s3/aws4_request",
                      s3_code="AuthorizationHeaderMalformed", status=400)
    if parts[3] != "s3":
        raise S3Error(f"the credential is for service {parts[3]!r}, not s3",
                      s3_code="AuthorizationHeaderMalformed", status=400)
    return parts[0], parts[1], parts[2], parts[3]


def _secret(secret_of: SecretOf, access_key: str) -> str:
    secret = secret_of(access_key)
    if secret is None:
        raise S3Error("the access key does not exist here", s3_code="InvalidAccessKeyId",
                      operator_hint=UNKNOWN_KEY_HINT)
    return secret


def parse_authorization(header: str) -> tuple[str, list[str], str]:
    """credential, signed headers, signature of an `AWS4-HMAC-SHA256 Credential=..., ...` header."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(f"unsupported authorization {algorithm!r}: sign with AWS Signature Version 4",
                      s3_code="InvalidRequest" if algorithm == "AWS" else "AuthorizationHeaderMalformed", status=400)
    fields = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    try:
        return fields["Credential"], [h for h in fields["SignedHeaders"].split(";") if h], fields["Signature"]
    except KeyError as missing:
        raise S3Error(f"the Authorization header has no {missing.args[0]}",
                      s3_code="AuthorizationHeaderMalformed", status=400) from None


def verify(request: SignedRequest, secret_of: SecretOf, now: float) -> Verified:
    """Check a request's signature (header or presigned query form); return what it proves."""
    header = request.header("authorization")
    query = dict(parse_query(request.raw_query))
    if header is not None:
        if "X-Amz-Algorithm" in query or "X-Amz-Signature" in query or "X-Amz-Credential" in query:
            raise S3Error("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                          "string parameter or the Authorization header should be specified",
                          s3_code="InvalidArgument", status=400)
        return _verify_header(request, header, secret_of, now)
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query:
        return _verify_presigned(request, query, secret_of, now)
    if "Signature" in query and "AWSAccessKeyId" in query:
        raise S3Error("signature version 2 is not supported: sign with AWS Signature Version 4",
                      s3_code="AccessDenied")
    raise S3Error("anonymous access is not allowed: sign the request with an access key",
                  s3_code="AccessDenied", operator_hint=UNKNOWN_KEY_HINT)


def _checked_payload(payload: str) -> str:
    """The x-amz-content-sha256 of a request, one S3 knows: a body's SHA-256 or a mode of sending it.  Any other value
    would leave the body unchecked, so it is refused as S3 refuses it; the ECDSA (SigV4a) modes are not done here."""
    if payload == UNSIGNED_PAYLOAD or payload in STREAMING_MODES or _SHA256_HEX.fullmatch(payload):
        return payload
    if payload.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise S3Error("Signature Version 4A (STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD) is not implemented by this "
                      "gateway: sign with AWS4-HMAC-SHA256", s3_code="NotImplemented", status=501)
    raise S3Error(f"x-amz-content-sha256 must be {UNSIGNED_PAYLOAD}, {', '.join(STREAMING_MODES)} or a SHA-256 in hex, "
                  f"not {payload[:80]!r}", s3_code="InvalidArgument", status=400)


def _check_signed(request: SignedRequest, signed: list[str]) -> None:
    """Every x-amz-* header sent is one the signature covers, as S3 holds it: an x-amz-copy-source, metadata or
    checksum added to a presigned PUT by whoever holds the URL would otherwise make it a copy of what the signer may
    read, or store what the signer never said."""
    unsigned = sorted({name for name in request.names() if name.startswith("x-amz-")} - set(signed))
    if unsigned:
        raise S3Error(f"There were headers present in the request which were not signed: {', '.join(unsigned)[:200]}",
                      s3_code="AccessDenied", HeadersNotSigned=", ".join(unsigned)[:200])


def _verify_header(request: SignedRequest, header: str, secret_of: SecretOf, now: float) -> Verified:
    credential, signed, signature = parse_authorization(header)
    access_key, date, region, service = _credential(credential)
    amz_date = request.header("x-amz-date")
    if amz_date is None:
        raise S3Error("a signed request needs an X-Amz-Date header", s3_code="AccessDenied")
    when = _parse_time(amz_date)
    if not amz_date.startswith(date):
        raise S3Error("the credential's date is not the request's date", s3_code="SignatureDoesNotMatch")
    if abs(when.timestamp() - now) > MAX_SKEW:
        raise S3Error("the difference between the request time and the server's time is too large",
                      s3_code="RequestTimeTooSkewed")
    if "host" not in signed:
        raise S3Error("the Host header must be signed", s3_code="SignatureDoesNotMatch")
    _check_signed(request, signed)
    payload = request.header("x-amz-content-sha256")
    if payload is None:
        raise S3Error("a signed request needs an x-amz-content-sha256 header", s3_code="InvalidRequest", status=400)
    _checked_payload(payload)
    secret = _secret(secret_of, access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    expected = sign(key, string_to_sign(amz_date, scope, canonical_request(request, signed, payload)))
    if not hmac.compare_digest(expected, signature):
        raise S3Error("the request signature we calculated does not match the signature you provided; "
                      "check your key and signing method", s3_code="SignatureDoesNotMatch")
    return Verified(access_key, payload, key, amz_date, scope, signature)


def _verify_presigned(request: SignedRequest, query: dict[str, str], secret_of: SecretOf, now: float) -> Verified:
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                 "X-Amz-Signature"):
        if name not in query:
            raise S3Error(f"the presigned URL has no {name}", s3_code="AuthorizationQueryParametersError",
                          status=400)
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(f"unsupported X-Amz-Algorithm {query['X-Amz-Algorithm']!r}",
                      s3_code="AuthorizationQueryParametersError", status=400)
    access_key, date, region, service = _credential(query["X-Amz-Credential"])
    amz_date = query["X-Amz-Date"]
    when = _parse_time(amz_date).timestamp()
    try:
        expires = int(query["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 1 <= expires <= MAX_PRESIGNED_EXPIRY:
        raise S3Error(f"X-Amz-Expires must be 1 to {MAX_PRESIGNED_EXPIRY} seconds",
                      s3_code="AuthorizationQueryParametersError", status=400)
    if now > when + expires:
        raise S3Error("request has expired", s3_code="AccessDenied", hint="presign the URL again")
    if when - now > MAX_SKEW:
        raise S3Error("request is not valid yet", s3_code="AccessDenied")
    signed = [h for h in query["X-Amz-SignedHeaders"].split(";") if h]
    if "host" not in signed:
        raise S3Error("the Host header must be signed", s3_code="SignatureDoesNotMatch")
    _check_signed(request, signed)
    secret = _secret(secret_of, access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    payload = _checked_payload(query.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD))
    canonical = canonical_request(request, signed, payload, drop_query="X-Amz-Signature")
    expected = sign(key, string_to_sign(amz_date, scope, canonical))
    if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
        raise S3Error("the request signature we calculated does not match the signature you provided; "
                      "check your key and signing method", s3_code="SignatureDoesNotMatch")
    return Verified(access_key, payload, key, amz_date, scope, query["X-Amz-Signature"], presigned=True)


def chunk_signature(verified: Verified, previous: str, chunk_sha256: str) -> str:
    text = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", verified.amz_date, verified.scope, previous, EMPTY_SHA256,
                      chunk_sha256])
    return sign(verified.signing_key, text)


class ChunkDecoder:
    """Decodes an `aws-chunked` body (`size;chunk-signature=SIG\\r\\nDATA\\r\\n ... 0;...\\r\\n[trailers]\\r\\n`).

    Feed it bytes as they arrive; it returns the payload bytes decoded so far.  In a signed mode
    (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER) each chunk's signature is checked against the chain that starts at
    the seed signature; a bad one raises SignatureDoesNotMatch before its bytes are returned.  The trailers after the
    last chunk (`name:value` lines: a checksum, and in the signed mode `x-amz-trailer-signature`, which signs them) are
    read by `finish` once the body has ended.  Buffers at most one chunk header, the data of the chunk being read, and
    MAX_HEADER bytes of trailers."""

    MAX_HEADER = 4096
    MAX_CHUNK = 16 * 1024 * 1024  # a chunk's declared size, at most: its data is buffered until its signature checks

    def __init__(self, verified: Verified | None) -> None:
        signed = verified is not None and verified.payload_hash in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER)
        self.verified = verified if signed else None
        self.previous = verified.signature if verified is not None else ""
        self._buffer = bytearray()
        self._want = None  # bytes of data left in the current chunk, or None between chunks
        self._signature = ""
        self._hash = hashlib.sha256()
        self._data = bytearray()
        self.done = False  # the last (empty) chunk has come: what follows is trailers
        self.trailers: dict[str, str] = {}

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        if self.done:
            if len(self._buffer) > self.MAX_HEADER:
                raise S3Error("the aws-chunked body's trailers are too long", s3_code="InvalidRequest", status=400)
            return b""
        while not self.done:
            if self._want is None:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > self.MAX_HEADER:
                        raise S3Error("malformed aws-chunked body", s3_code="IncompleteBody", status=400)
                    break
                line = bytes(self._buffer[:end]).decode("latin-1")
                del self._buffer[:end + 2]
                size_text, _, extension = line.partition(";")
                try:
                    self._want = int(size_text, 16)
                except ValueError:
                    raise S3Error("malformed aws-chunked body", s3_code="IncompleteBody", status=400) from None
                if self._want > self.MAX_CHUNK:  # refused from its header, before any of its data is buffered
                    raise S3Error(f"an aws-chunked chunk of {self._want} bytes; at most {self.MAX_CHUNK} are taken",
                                  s3_code="InvalidArgument", status=400)
                self._signature = extension.partition("chunk-signature=")[2].strip()
                self._hash = hashlib.sha256()
                if self.verified is not None and not self._signature:
                    raise S3Error("a signed chunk has no signature", s3_code="SignatureDoesNotMatch")
                if self._want == 0:
                    self._check()
                    self.done = True  # trailers (if any) follow: `finish` reads them
                    if len(self._buffer) > self.MAX_HEADER:
                        raise S3Error("the aws-chunked body's trailers are too long", s3_code="InvalidRequest",
                                      status=400)
                    break
            take = min(self._want, len(self._buffer))
            if take == 0 and self._want > 0:
                break
            piece = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._want -= take
            if self.verified is not None:
                self._hash.update(piece)
                self._data += piece
            else:
                out += piece
            if self._want == 0:
                if len(self._buffer) < 2:
                    self._want = 0
                    # wait for the CRLF that ends the chunk
                    if not self._buffer:
                        break
                if self._buffer[:2] != b"\r\n":
                    if len(self._buffer) < 2:
                        break
                    raise S3Error("malformed aws-chunked body", s3_code="IncompleteBody", status=400)
                del self._buffer[:2]
                self._check()
                out += self._data
                self._data = bytearray()
                self._want = None
        return bytes(out)

    def finish(self) -> dict[str, str]:
        """The body's trailers ({lower-case name: value}), once the body has ended; in the signed-trailer mode their
        signature checked (SignatureDoesNotMatch)."""
        if not self.done:
            raise S3Error("the aws-chunked body ended early", s3_code="IncompleteBody", status=400)
        signature, canonical = None, []
        for line in bytes(self._buffer).decode("latin-1").split("\r\n"):
            if not line:
                continue
            name, colon, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if not colon or not name:
                raise S3Error("malformed aws-chunked trailer", s3_code="IncompleteBody", status=400)
            if name == "x-amz-trailer-signature":
                signature = value
            else:
                self.trailers[name] = value
                canonical.append(f"{name}:{value}\n")
        # A body of the signed-trailer mode with no trailer at all has nothing to sign; one a trailer was announced
        # for (x-amz-trailer, a signed header) and stripped of it fails its checksum's check.
        if self.verified is not None and self.verified.payload_hash == STREAMING_PAYLOAD_TRAILER \
                and (self.trailers or signature is not None):
            if signature is None:
                raise S3Error("the signed trailer has no x-amz-trailer-signature", s3_code="SignatureDoesNotMatch")
            text = "\n".join(["AWS4-HMAC-SHA256-TRAILER", self.verified.amz_date, self.verified.scope, self.previous,
                              hashlib.sha256("".join(canonical).encode("latin-1")).hexdigest()])
            if not hmac.compare_digest(sign(self.verified.signing_key, text), signature):
                raise S3Error("the trailer's signature does not match", s3_code="SignatureDoesNotMatch")
        return self.trailers

    def _check(self) -> None:
        if self.verified is None:
            return
        expected = chunk_signature(self.verified, self.previous, self._hash.hexdigest())
        if not hmac.compare_digest(expected, self._signature):
            raise S3Error("a chunk's signature does not match", s3_code="SignatureDoesNotMatch")
        self.previous = self._signature


def sign_headers(method: str, raw_path: str, raw_query: str, host: str, headers: Mapping[str, str],
                 access_key: str, secret: str, now: float, *, region: str = "us-east-1",
                 payload_hash: str = UNSIGNED_PAYLOAD) -> dict[str, str]:
    """The client side: `headers` plus Host, X-Amz-Date, x-amz-content-sha256 and an Authorization that
    signs them all (for tools and tests that speak raw HTTP, e.g. a streaming upload)."""
    when = datetime.fromtimestamp(now, timezone.utc)
    amz_date, date = when.strftime(AMZ_DATE), when.strftime("%Y%m%d")
    signed_headers = {**headers, "Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    names = sorted({h.lower() for h in signed_headers})
    scope = f"{date}/{region}/s3/aws4_request"
    canonical = canonical_request(SignedRequest(method, raw_path, raw_query, signed_headers), names, payload_hash)
    signature = sign(signing_key(secret, date, region), string_to_sign(amz_date, scope, canonical))
    signed_headers["Authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                                       f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return signed_headers
