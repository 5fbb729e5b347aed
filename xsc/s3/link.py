"""What the S3 front asks of its node: the bucket index acting for an S3 user, small objects stored and recorded
whole, files put, read and removed.  Two ends implement it: `remote.RemoteNode` over the node's user API (`xsc s3
serve`, a process of its own, on this host or another) and `local.LocalNode` over the node's services in its own
process (`node.s3_listen`).  Every method that names a `user` has the index check that user's access to the bucket
first (read, write or owner), as the node's /v1/s3 routes do; each raises the node's own XscError."""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol

from ..buckets.objects import SmallPut
from ..errors import XscError

# Files one call of `reconcile` judges: the index's lock is held for one call's (over the user API, a body of about
# 240 KB of JSON), so writes go on between them however many files the front stored
RECONCILE_AT_ONCE = 2000


class Body(Protocol):
    """A file's bytes on a connection of their own, passed on by splice(2) (xsc.client.sync.NodeBody)."""

    head: bytes

    def splice_to(self, out: int, stop: Any) -> None: ...

    def close(self) -> None: ...


class FileBytes(Protocol):
    """A file's bytes as the node gives them, for xsc.serve.direct.send_body: iterated, or, in the node's own
    process, passed on by threads of the node's (its `ThreadedBody`: a get of shares all held here); closed however
    it ends."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class NodeLink(Protocol):
    relays: bool  # whether `open_body` can hand a large body to splice(2)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    # --- buckets and objects, for `user` ---------------------------------------------
    async def buckets(self, user: str) -> list[dict]: ...

    async def create_bucket(self, bucket: str, user: str) -> bool:
        """Whether the bucket was made now (False: it was the user's already)."""
        ...

    async def bucket(self, bucket: str, user: str, need: str = "read") -> dict: ...

    async def delete_bucket(self, bucket: str, user: str) -> None: ...

    async def list_objects(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_keys: int,
                           start: bytes) -> dict: ...

    async def object(self, bucket: str, key: str, user: str) -> dict: ...

    async def record(self, bucket: str, key: str, user: str, record: dict) -> list[str]:
        """The object's record written (its files stored already): the capabilities now garbage."""
        ...

    async def delete_object(self, bucket: str, key: str, user: str) -> list[str]: ...

    async def delete_objects(self, bucket: str, keys: list[str], user: str) -> list[str]: ...

    # --- small objects: stored, paid for and recorded at once (xsc.buckets.objects) ----
    async def put_small(self, put: SmallPut) -> dict:
        """{"capability", "garbage"}, or the error that refused it."""
        ...

    async def put_small_group(self, puts: list[SmallPut]) -> list[dict | XscError]:
        """Each object's answer, or the error that refused it alone, in order."""
        ...

    # --- multipart uploads --------------------------------------------------------------
    async def create_upload(self, bucket: str, key: str, user: str, content_type: str, metadata: dict,
                            headers: dict, checksum: dict | None = None) -> str:
        """`checksum`: the one the upload's object is to get ({"algorithm", "type", "default"})."""
        ...

    async def upload(self, upload_id: str, user: str, need: str = "write") -> dict:
        """The upload's record with its "parts", once `user` may `need` it: write (to upload a part or complete it),
        or initiator (to list its parts: the bucket's owner, or the user who began it)."""
        ...

    async def uploads(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_uploads: int,
                      key_marker: str, id_marker: str) -> dict:
        """A page of ListMultipartUploads (`buckets.index.upload_page`), read no further than it holds."""
        ...

    async def put_part(self, upload_id: str, number: int, user: str, cap: str, size: int, etag: str,
                       checksums: dict | None = None) -> list[str]:
        """`checksums`: the part's, {algorithm: base64}."""
        ...

    async def complete(self, upload_id: str, user: str, parts: list[tuple[int, str]], bucket: str,
                       key: str, condition: dict | None = None, checksum: dict | None = None) -> tuple[dict, list[str]]:
        """`checksum`: the object's, made of the parts' ({"value", "parts"}: S3Index.complete)."""
        ...

    async def abort(self, upload_id: str, user: str) -> list[str]:
        """Abort the upload, if `user` began it or owns its bucket."""
        ...

    # --- files ---------------------------------------------------------------------------
    async def check_room(self, size: int) -> None:
        """Refuse (StorageFull, DiskFull) a file of `size` bytes the node has no room for, before its body is sent:
        where the node can say so without it."""
        ...

    async def put_file(self, chunks: AsyncIterator[bytes], size: int | None, name: str) -> dict:
        """A stream stored as one XSC file (a `store put`): {"capability", "cost", ...}."""
        ...

    async def open_file(self, cap: str, first: int | None = None, last: int | None = None) -> FileBytes:
        """The file's bytes (first..last, inclusive); the node is asked before this returns."""
        ...

    def open_body(self, cap: str, first: int | None = None, last: int | None = None) -> Body:
        """Blocking (run it in a thread); a link has it only where `relays` is True."""
        ...

    async def delete_file(self, cap: str) -> None:
        """The file removed from the store (its deals end); one already gone is fine."""
        ...

    async def delete_files(self, caps: list[str]) -> list[str]:
        """`delete_file` of each of `caps`, REMOVED_AT_ONCE together at most: those removed, gone already, or taken out
        of the listing for the node to finish removing; one that could not be is left out, for the next reconciliation
        to remove, and so is one that is no capability."""
        ...

    async def files(self) -> list[dict]:
        """The store's files: {"name", "capability", ...} each."""
        ...

    async def charge(self, user: str, cap: str, amount: int) -> None:
        """The user's account pays the node's for the file it stored (InsufficientCredit: nothing paid)."""
        ...

    # --- housekeeping ----------------------------------------------------------------------
    async def garbage(self) -> list[str]: ...

    async def forget_garbage(self, caps: list[str]) -> None: ...

    async def reconcile(self, caps: list[str]) -> list[str]:
        """Of `caps` (files the front stored), those no object or part refers to, marked garbage for the front to
        remove."""
        ...

    async def expire_uploads(self) -> list[str]:
        """The uploads left unfinished past the node's `node.s3_upload_expiry` aborted: their parts' capabilities,
        marked garbage for the front to remove."""
        ...


__all__ = ["Body", "FileBytes", "NodeLink"]
