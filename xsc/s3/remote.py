"""The S3 front's node over its user API (`xsc s3 serve`, a process of its own): each call one request of the
node's /v1/s3 or /v1/store routes, with the node's token (xsc/client/aio.py); the node's refusals come back as its
own XscErrors.  A group of small objects is one `POST /v1/s3/objects`; a large body is relayed from the node's
socket by splice(2) where the system has it.  Given the front's marks, it starts only if their key is its node's, and
a check the node could not answer as it started is made again before a file is stored."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import shlex
from typing import AsyncIterator
from urllib.parse import quote, urlsplit

from .. import codec
from ..buckets.marks import CHALLENGE_HEX, FileMarks
from ..buckets.core import listing
from ..buckets.core.names import SMALL_OBJECT
from ..buckets.objects import SmallPut, group_body
from ..client.aio import FileStream, NodeApi
from ..client.sync import SPLICE, NodeBody, error_from_problem
from ..errors import ConfigError, InvalidArgument, InvalidCapability, NotFound, XscError
from ..storage.core.capability import REMOVED_AT_ONCE, Capability
from ..units import counted
from .link import RECONCILE_AT_ONCE

log = logging.getLogger(__name__)
JOINED = 1024 * 1024  # a body goes on to the node in writes of at least this much, not one per socket read
# A node that does not answer the key's check in this time is not checked: the front starts.  Short: the check is a
# trivial request, and a front beside a node that is busy or stopped would otherwise wait that long to reconcile.
KEY_CHECK_SECONDS = 5.0
FORGOTTEN_AT_ONCE = 10_000  # garbage marks dropped in one request at most (the node's bound: node/http/s3.py)


class RemoteNode:
    relays = SPLICE

    def __init__(self, api: NodeApi, marks: FileMarks | None = None) -> None:
        self.api = api
        self.marks = marks  # the front's: checked against the node's key as it starts (None: not checked)
        self._unchecked = marks is not None  # until the node has answered the check
        self._refusal: ConfigError | None = None  # the key found not the node's after the start: every store refused
        self._checking = asyncio.Lock()
        self._room_asked = True  # the node answers GET /v1/store/room (False once it answered 404)

    async def start(self) -> None:
        await self.api.start()
        if self.marks is not None:
            await self._check_key(self.marks)

    async def _checked(self) -> None:
        """Before a file is stored: the key's check, if the node could not answer it yet (a node that was not up as
        the front started, or was busy), made now; a key that is not the node's refuses the store, in the front's
        error line, as it would have refused the start."""
        if self._unchecked and self.marks is not None:
            async with self._checking:
                if self._unchecked:
                    try:
                        await self._check_key(self.marks)
                    except ConfigError as err:
                        log.error("%s", err.with_hint)
                        self._refusal = err
        if self._refusal is not None:
            raise self._refusal

    async def _check_key(self, marks: FileMarks) -> None:
        """Refuse to start with a key of the front's file names that is not the node's: the node would refuse
        (403) every charge of a user's file the front stores.  The node proves its key on a fresh challenge
        (`FileMarks.proof`).  A node that cannot answer the check now (one that does not answer yet) is not checked:
        the front starts, says so, and checks before it stores a file (`_checked`); one that never can (an xsc
        without the check, 404) is not checked again."""
        challenge = secrets.token_hex(CHALLENGE_HEX // 2)
        try:
            async with asyncio.timeout(KEY_CHECK_SECONDS):
                answer = await self.api.call("POST", "/v1/s3/marks/proof", body={"challenge": challenge})
        except (XscError, TimeoutError) as err:
            self._unchecked = not isinstance(err, NotFound)
            log.warning("could not check this front's s3-files.key against the node's%s: %s",
                        ", it is checked before a file is stored" if self._unchecked else "",
                        str(err) or f"no answer in {KEY_CHECK_SECONDS:.0f} s")
            return
        self._unchecked = False
        proof = answer.get("proof") if isinstance(answer, dict) else None
        if isinstance(proof, str) and hmac.compare_digest(proof.encode(), marks.proof(challenge).encode()):
            return
        here = str(marks.path or "this front's s3-files.key")
        raise ConfigError(f"{here} is not the key of the node at {self.api.url}: the node would refuse (403) to charge "
                          "a user for any file this front stores",
                          hint=f"copy the node's key here: scp {urlsplit(self.api.url).hostname}:NODE_DATA_DIR/"
                               f"s3-files.key {shlex.quote(here)}, then start xsc s3 serve again")

    async def close(self) -> None:
        await self.api.close()

    async def _for(self, user: str, method: str, path: str, *, params: dict | None = None, body=None):
        """A call to the node's bucket index on behalf of `user` (the index checks its access)."""
        return await self.api.call(method, path, params={**(params or {}), "user": user}, body=body)

    # --- buckets and objects ------------------------------------------------------------------
    async def buckets(self, user: str) -> list[dict]:
        return (await self._for(user, "GET", "/v1/s3/buckets"))["buckets"]

    async def create_bucket(self, bucket: str, user: str) -> bool:
        return (await self._for(user, "PUT", _bucket(bucket))).get("new") is not False

    async def bucket(self, bucket: str, user: str, need: str = "read") -> dict:
        return await self._for(user, "GET", _bucket(bucket), params={"need": need})

    async def delete_bucket(self, bucket: str, user: str) -> None:
        await self._for(user, "DELETE", _bucket(bucket))

    async def list_objects(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_keys: int,
                           start: bytes) -> dict:
        """The node's page from `start`, its `next` the position it resumes from: the node's tokens are bound to the
        listing under the data dir's key (node/http/s3.py), which this front holds too."""
        if self.marks is None:
            raise ConfigError("this front lists a bucket only with its data dir's key", hint="start it with --data-dir")
        tokens, listed = listing.Tokens(self.marks.listing_key()), ("objects", bucket, prefix, delimiter)
        page = await self._for(user, "GET", f"{_bucket(bucket)}/objects", params={
            "prefix": prefix, "delimiter": delimiter, "max_keys": str(min(max_keys, listing.MAX_KEYS)),
            **({"start": tokens.token(start, *listed)} if start else {})})
        if page.get("truncated"):
            page["next"] = listing.encode_token(tokens.position(page["next"], *listed))
        return page

    async def object(self, bucket: str, key: str, user: str) -> dict:
        return await self._for(user, "GET", f"{_bucket(bucket)}/object", params={"key": key})

    async def record(self, bucket: str, key: str, user: str, record: dict) -> list[str]:
        return (await self._for(user, "PUT", f"{_bucket(bucket)}/object", params={"key": key}, body=record))["garbage"]

    async def delete_object(self, bucket: str, key: str, user: str) -> list[str]:
        return (await self._for(user, "DELETE", f"{_bucket(bucket)}/object", params={"key": key}))["garbage"]

    async def delete_objects(self, bucket: str, keys: list[str], user: str) -> list[str]:
        return (await self._for(user, "POST", f"{_bucket(bucket)}/delete", body={"keys": keys}))["garbage"]

    # --- small objects -------------------------------------------------------------------------
    async def put_small(self, put: SmallPut) -> dict:
        await self._checked()
        return await self.api.post_bytes(f"{_bucket(put.bucket)}/objects", codec.framed(put.record, put.data),
                                         {k: v for k, v in (("key", put.key), ("name", put.name), ("user", put.user))
                                          if v is not None})

    async def put_small_group(self, puts: list[SmallPut]) -> list[dict | XscError]:
        await self._checked()
        answer = await self.api.post_bytes("/v1/s3/objects", group_body(puts))
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(puts) or not all(isinstance(r, dict) for r in results):
            raise XscError(f"the node answered a group of {len(puts)} objects without {len(puts)} results")
        return [r.get("answer") if r.get("status") == 201 else
                error_from_problem(r.get("status") or 500, codec.dumps(r.get("problem"))) for r in results]

    # --- multipart uploads ------------------------------------------------------------------------
    async def create_upload(self, bucket: str, key: str, user: str, content_type: str, metadata: dict,
                            headers: dict, checksum: dict | None = None) -> str:
        return (await self._for(user, "POST", f"{_bucket(bucket)}/uploads", body={
            "key": key, "content_type": content_type, "metadata": metadata, "headers": headers,
            **({"checksum": checksum} if checksum is not None else {})}))["upload_id"]

    async def upload(self, upload_id: str, user: str, need: str = "write") -> dict:
        return await self._for(user, "GET", _upload(upload_id), params={"need": need})

    async def uploads(self, bucket: str, user: str, *, prefix: str, delimiter: str, max_uploads: int,
                      key_marker: str, id_marker: str) -> dict:
        return await self._for(user, "GET", f"{_bucket(bucket)}/uploads", params={
            "prefix": prefix, "delimiter": delimiter, "max_uploads": str(min(max_uploads, listing.MAX_KEYS)),
            "key_marker": key_marker, "id_marker": id_marker})

    async def put_part(self, upload_id: str, number: int, user: str, cap: str, size: int, etag: str,
                       checksums: dict | None = None) -> list[str]:
        return (await self._for(user, "PUT", f"{_upload(upload_id)}/parts/{_segment(number)}",
                                 body={"cap": cap, "size": size, "etag": etag,
                                       **({"checksums": checksums} if checksums else {})}))["garbage"]

    async def complete(self, upload_id: str, user: str, parts: list[tuple[int, str]], bucket: str,
                       key: str, condition: dict | None = None, checksum: dict | None = None) -> tuple[dict, list[str]]:
        result = await self._for(user, "POST", f"{_upload(upload_id)}/complete",
                                 body={"parts": [[n, e] for n, e in parts], "bucket": bucket, "key": key,
                                       **({"condition": condition} if condition is not None else {}),
                                       **({"checksum": checksum} if checksum is not None else {})})
        return result["object"], result["garbage"]

    async def abort(self, upload_id: str, user: str) -> list[str]:
        return (await self._for(user, "DELETE", _upload(upload_id)))["garbage"]

    # --- files -------------------------------------------------------------------------------------
    async def check_room(self, size: int) -> None:
        """The node asked (`GET /v1/store/room`) before the front tells its client to send the body: a put the node has
        no room for, on its disk or in its capacity, is refused then, its body never sent to the front.  Not a small
        object's (SMALL_OBJECT at most, which boto3 sends with `Expect: 100-continue` too): it is one request of the
        node's, whose refusal comes as soon as its few bytes came, and asking first would make every one two.  An xsc
        without the route (404) is not asked again: its put refuses as the front passes it on."""
        if not self._room_asked or size <= SMALL_OBJECT:
            return
        try:
            await self.api.call("GET", "/v1/store/room", params={"size": str(size)})
        except NotFound:
            self._room_asked = False

    async def put_file(self, chunks: AsyncIterator[bytes], size: int | None, name: str) -> dict:
        await self._checked()
        return await self.api.put_file(_joined(chunks), size, name)

    async def open_file(self, cap: str, first: int | None = None, last: int | None = None) -> FileStream:
        return await self.api.read_file(cap, first, last)

    def open_body(self, cap: str, first: int | None = None, last: int | None = None) -> NodeBody:
        return self.api.open_body(cap, first, last)

    async def delete_file(self, cap: str) -> None:
        await self.api.delete_file(cap)

    async def delete_files(self, caps: list[str]) -> list[str]:
        # Removed together, REMOVED_AT_ONCE a request (POST /v1/store/remove): their synced writes per batch, not per
        # file.  One that is no capability holds none of the others back (the node would refuse the whole request for
        # it): it names no file.
        parsed: dict[str, list[str]] = {}  # each capability as the node names it: the marks that name it
        for cap in caps:
            with contextlib.suppress(InvalidCapability):
                parsed.setdefault(str(Capability.parse(cap)), []).append(cap)
        named, done = list(parsed), []
        for i in range(0, len(named), REMOVED_AT_ONCE):
            batch = named[i:i + REMOVED_AT_ONCE]
            try:
                answer = await self.api.call("POST", "/v1/store/remove", body={"caps": batch})
            except XscError as err:
                log.warning("could not remove %s from the store yet: %s", counted(len(batch), "file"), err)
                continue
            _said_unfinished(answer)
            # Removed, gone already (not held), or taken out of the listing for the node to finish: done with here.
            done += [mark for cap in batch for mark in parsed[cap]]
        return done

    async def files(self) -> list[dict]:
        return await self.api.files()

    async def charge(self, user: str, cap: str, amount: int) -> None:
        await self.api.call("POST", f"/v1/s3/accounts/{_segment(user)}/charge",
                            body={"capability": cap, "amount": amount})

    # --- housekeeping --------------------------------------------------------------------------------
    async def garbage(self) -> list[str]:
        return (await self.api.call("GET", "/v1/s3/garbage"))["garbage"]

    async def forget_garbage(self, caps: list[str]) -> None:
        for i in range(0, len(caps), FORGOTTEN_AT_ONCE):  # each a body within the node's bound on one
            await self.api.call("POST", "/v1/s3/garbage/forget", body={"caps": caps[i:i + FORGOTTEN_AT_ONCE]})

    async def expire_uploads(self) -> list[str]:
        return (await self.api.call("POST", "/v1/s3/expire", body={}))["garbage"]

    async def reconcile(self, caps: list[str]) -> list[str]:
        orphans: list[str] = []
        for i in range(0, len(caps), RECONCILE_AT_ONCE):  # each a body well within the node's bound on one
            orphans += (await self.api.call("POST", "/v1/s3/reconcile",
                                            body={"caps": caps[i:i + RECONCILE_AT_ONCE]}))["orphans"]
        return orphans


def _said_unfinished(answer: object) -> None:
    """The removals the node took on and could not finish now (`to_finish`: it finishes them itself, every
    storage.gc_interval), said in the front's log with the node's reasons, each once."""
    unfinished = answer.get("to_finish") if isinstance(answer, dict) else None
    if not isinstance(unfinished, list) or not unfinished:
        return
    reasons = {str(item.get("reason"))[:200] for item in unfinished if isinstance(item, dict)}
    log.warning("the node took %s out of its listing and finishes removing them later: %s",
                counted(len(unfinished), "file"), "; ".join(sorted(reasons)[:3]))


async def _joined(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks joined into JOINED bytes or more each (the last may be fewer): a few large writes to the node
    rather than many socket-sized ones."""
    parts, size = [], 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= JOINED:
            joined, parts, size = parts[0] if len(parts) == 1 else b"".join(parts), [], 0
            yield joined
    if parts:
        yield b"".join(parts)


def _segment(value: object) -> str:
    """A value put into a path of the node's API, percent-encoded whole: it stays one segment, whatever it holds.
    An empty or dot segment is refused: the HTTP client's URL would resolve it into another path (callers check
    names before this; it is the last guard)."""
    text = str(value)
    if text in ("", ".", ".."):
        raise InvalidArgument(f"{text!r} cannot be a segment of a path of the node's API")
    return quote(text, safe="")


def _bucket(bucket: str) -> str:
    return f"/v1/s3/buckets/{_segment(bucket)}"


def _upload(upload_id: str) -> str:
    return f"/v1/s3/uploads/{_segment(upload_id)}"


__all__ = ["RemoteNode"]
