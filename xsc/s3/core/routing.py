"""Which S3 operation a request is, decided in one table, and the headers the front refuses.  Pure.

An operation is found from the method, the path's shape (the service, a bucket, an object), the
subresources named in the query (S3's `?acl`, `?uploads`, ...) and the one header that changes the
operation (`x-amz-copy-source`).  A request whose shape is not in `TABLE` is NotImplemented (501), never
another operation: `PUT /BUCKET?versioning` is not a CreateBucket.  Query parameters that are not
subresources (prefix, max-keys, response-*, the presigned X-Amz-*, ...) do not choose the operation.

Headers that ask for something the front does not do are refused the same way (`check_headers`): SSE-C and
SSE-KMS, ACL grants, tagging, object lock, website redirects, storage classes other than STANDARD.  SSE-S3
(`x-amz-server-side-encryption: AES256`) is accepted and echoed: every object is stored encrypted.
"""

from __future__ import annotations

from typing import Mapping

from ...errors import S3Error

# Every subresource of the S3 REST API (a query parameter that names what a request acts on).
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "location", "logging", "metadataConfiguration", "metadataTable",
    "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
    "renameObject", "replication", "requestPayment", "restore", "retention", "select", "session", "tagging",
    "torrent", "uploadId", "uploads", "versioning", "versions", "versionId", "website",
})
COPY_SOURCE = "x-amz-copy-source"
COPY_SOURCE_RANGE = "x-amz-copy-source-range"  # UploadPartCopy's own
_NONE: frozenset[str] = frozenset()

# (method, target, subresources, copy source given) -> operation (an S3Front method name)
TABLE: dict[tuple[str, str, frozenset[str], bool], str] = {
    ("GET", "service", _NONE, False): "list_buckets",
    ("PUT", "bucket", _NONE, False): "create_bucket",
    ("HEAD", "bucket", _NONE, False): "head_bucket",
    ("DELETE", "bucket", _NONE, False): "delete_bucket",
    ("GET", "bucket", _NONE, False): "list_objects",
    ("GET", "bucket", frozenset({"location"}), False): "get_location",
    ("GET", "bucket", frozenset({"versioning"}), False): "get_versioning",
    ("GET", "bucket", frozenset({"uploads"}), False): "list_uploads",
    ("POST", "bucket", frozenset({"delete"}), False): "delete_objects",
    ("PUT", "object", _NONE, False): "put_object",
    ("PUT", "object", _NONE, True): "copy_object",
    ("GET", "object", _NONE, False): "get_object",
    ("HEAD", "object", _NONE, False): "get_object",
    ("DELETE", "object", _NONE, False): "delete_object",
    # a version of the object: its access judged before the version (core/versions.py)
    ("GET", "object", frozenset({"versionId"}), False): "get_object",
    ("HEAD", "object", frozenset({"versionId"}), False): "get_object",
    ("DELETE", "object", frozenset({"versionId"}), False): "delete_object",
    ("POST", "object", frozenset({"uploads"}), False): "create_upload",
    ("PUT", "object", frozenset({"uploadId"}), False): "upload_part",
    ("PUT", "object", frozenset({"uploadId"}), True): "upload_part_copy",
    ("POST", "object", frozenset({"uploadId"}), False): "complete_upload",
    ("DELETE", "object", frozenset({"uploadId"}), False): "abort_upload",
    ("GET", "object", frozenset({"uploadId"}), False): "list_parts",
}
WRITES = frozenset({"put_object", "copy_object", "create_upload"})  # the operations that store an object's headers

# Headers asking for what the front does not do: 501 wherever they appear.
NOT_IMPLEMENTED_HEADERS = (
    "x-amz-server-side-encryption-customer-algorithm", "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5", "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5", "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context", "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp", "x-amz-grant-write-acp",
    "x-amz-grant-full-control", "x-amz-tagging", "x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold", "x-amz-website-redirect-location", "x-amz-mfa", "x-amz-expected-bucket-owner",
    "x-amz-source-expected-bucket-owner", "x-amz-write-offset-bytes", "x-amz-copy-source-range",
    "x-amz-meta-snowball-auto-extract",  # MinIO's: a tar to unpack into objects (here it would be stored whole)
)
# Headers accepted with these values only (what is true of every object here); any other value: 501.
ONLY = {"x-amz-acl": ("private",), "x-amz-storage-class": ("STANDARD",), "x-amz-tagging-directive": ("COPY",),
        "x-amz-bucket-object-lock-enabled": ("false",), "x-amz-object-ownership": ("BucketOwnerEnforced",)}
SSE = "x-amz-server-side-encryption"
SSE_S3 = "AES256"


def target_of(bucket: str, key: str) -> str:
    return "object" if key else "bucket" if bucket else "service"


def operation(method: str, bucket: str, key: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The operation a request is (a name in TABLE), or S3Error NotImplemented (501)."""
    target = target_of(bucket, key)
    subresources = SUBRESOURCES.intersection(query)
    found = TABLE.get((method, target, frozenset(subresources), COPY_SOURCE in headers and target == "object"))
    if found is None:
        named = ([f"?{'&'.join(sorted(subresources))}"] if subresources else []) + (
            [COPY_SOURCE] if COPY_SOURCE in headers else [])
        what = f" with {' and '.join(named)}" if named else ""
        raise S3Error(f"{method} of {'an' if target == 'object' else 'a'} {target}{what} is not an operation this "
                      "gateway implements", s3_code="NotImplemented", status=501)
    if found in ("upload_part", "upload_part_copy") and "partNumber" not in query:
        raise S3Error("UploadPart needs ?partNumber=N", s3_code="InvalidArgument", status=400)
    check_headers(found, method, headers)
    return found


def refuse_form_upload(method: str, bucket: str, key: str, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
    """A browser-form upload (POST Object: `POST /BUCKET`, multipart/form-data, signed by a policy in the form, not by
    SigV4) is not an operation here: it is told so (501) before its missing signature is held against it."""
    content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if method == "POST" and target_of(bucket, key) == "bucket" and content_type == "multipart/form-data" \
            and not SUBRESOURCES.intersection(query):
        raise S3Error("POST Object (a browser-form upload signed by a policy) is not implemented by this gateway: "
                      "PUT the object, or presign a PUT URL", s3_code="NotImplemented", status=501)


def check_headers(found: str, method: str, headers: Mapping[str, str]) -> None:
    """Refuse the headers of a request that ask for what the front does not do (501) or make no sense (400)."""
    for name in NOT_IMPLEMENTED_HEADERS:
        if name in headers and not (name == COPY_SOURCE_RANGE and found == "upload_part_copy"):
            raise S3Error(f"the header {name} is not implemented by this gateway", s3_code="NotImplemented",
                          status=501, header=name)
    for name, allowed in ONLY.items():
        value = headers.get(name)
        if value is not None and value.strip() not in allowed:
            raise S3Error(f"{name}: {value} is not implemented by this gateway (only {', '.join(allowed)})",
                          s3_code="NotImplemented", status=501, header=name)
    sse = headers.get(SSE)
    if sse is not None:
        if found not in WRITES and found not in ("upload_part", "upload_part_copy"):
            raise S3Error(f"{SSE} is only for writes", s3_code="InvalidArgument", status=400, header=SSE)
        if sse.startswith("aws:kms"):
            raise S3Error("SSE-KMS is not implemented by this gateway (every object is encrypted: ask for AES256)",
                          s3_code="NotImplemented", status=501, header=SSE)
        if sse != SSE_S3:
            raise S3Error(f"{SSE} must be AES256 or aws:kms, not {sse!r}", s3_code="InvalidArgument", status=400,
                          header=SSE)
    directive = headers.get("x-amz-metadata-directive")
    if directive is not None and directive.upper() not in ("COPY", "REPLACE"):
        raise S3Error("x-amz-metadata-directive must be COPY or REPLACE", s3_code="InvalidArgument", status=400)
    if method in ("PUT", "POST", "DELETE") and ("If-Match" in headers or "If-None-Match" in headers):
        if found not in ("put_object", "complete_upload"):
            raise S3Error("conditional writes are implemented by this gateway for PutObject and "
                          "CompleteMultipartUpload only (If-None-Match: *, If-Match: ETAG)", s3_code="NotImplemented",
                          status=501)
        if headers.get("If-None-Match", "*").strip() != "*" or headers.get("If-Match", "").strip() == "*":
            raise S3Error("a write's If-None-Match is * (no object there yet), and its If-Match one ETag",
                          s3_code="NotImplemented", status=501)
