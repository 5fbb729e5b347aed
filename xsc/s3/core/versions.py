"""Object versions, as S3 has them in a bucket whose versioning was never enabled.  Pure.

Such a bucket holds one version of each object, whose id is `null`: S3 takes `versionId=null` (GetObject, HeadObject,
DeleteObject, a copy's `x-amz-copy-source`, a DeleteObjects' `VersionId`) as naming the object itself.  No bucket
here is ever versioned, so every other id names a version there is none of, and is refused as S3 refuses one: an id
of the shape S3 gives its versions is `404 NoSuchVersion` (a DeleteObject of it deletes nothing, and succeeds, as
S3's does), any other `400 InvalidArgument`.  A request is judged on its access to the bucket before its version, so
that a caller who may not read a bucket learns nothing of it from the version it names.
"""

from __future__ import annotations

import re

from ...errors import S3Error

NULL = "null"  # the one version of an object in a bucket never versioned
# The ids S3 gives versions: 32 characters, URL-safe (what it checks beyond their shape is its own)
_ISSUED = re.compile(r"[A-Za-z0-9._-]{32}")
_SHOWN = 1024  # the longest id echoed in an error (S3's ids are "at most 1,024 bytes")


def is_object(version: str | None) -> bool:
    """Whether a request naming `version` (None: none named) acts on the object itself."""
    return version is None or version == NULL


def well_formed(version: str) -> bool:
    """Whether `version` has the shape of an id S3 gives: refused as one that does not exist, not as a malformed one."""
    return _ISSUED.fullmatch(version) is not None


def malformed(version: str) -> S3Error:
    """S3's refusal of a version id that could be no version's (400 InvalidArgument)."""
    if not version:
        return S3Error("Version id cannot be the empty string", s3_code="InvalidArgument", status=400,
                       ArgumentName="versionId", ArgumentValue="")
    return S3Error("Invalid version id specified (no bucket here is versioned: an object's one version is null)",
                   s3_code="InvalidArgument", status=400, ArgumentName="versionId", ArgumentValue=version[:_SHOWN])


def absent(key: str, version: str) -> S3Error:
    """The refusal of a version of `key` other than null: NoSuchVersion (404), or InvalidArgument for a malformed id."""
    if not well_formed(version):
        return malformed(version)
    return S3Error("The specified version does not exist. (no bucket here is versioned: an object's one version is "
                   "null)", s3_code="NoSuchVersion", status=404, Key=key, VersionId=version)
