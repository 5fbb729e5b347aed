"""Share transfer, client side: one share holder as the uploading (or reading, or auditing) node sees it.

Every call is a signed request addressed to the holder's node id (the protocol: storage/core/wire.py; the
holder's side: storage/holder.py behind node/http/shares.py).  Errors are the peer service's: PeerUnreachable (no answer, a cut answer) and PeerRefused (the
holder said no; `details["peer_status"]` and `details["peer_code"]` carry its status and problem code),
including answers that are not what the protocol says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import MAX_CODE, PeerRefused, shown
from .core.manifest import Manifest
from .core.wire import (HOLDER_ANSWER, MAX_BLOCKS_PER_GET, MAX_BODIES_PER_SENDER, MAX_PUT_BYTES, META_ANSWER_MOST,
                        WHOLE_ANSWER, WHOLE_MAX_BLOCK, WHOLE_MAX_SHARES, WHOLE_PATH, WholeShare, audit_answer_bound,
                        meta_answer_bound, meta_answer_most, share_path, whole_shares_body)
from ..net.peer_client import MAX_RETRY_AFTER, EncodedJson, PeerClient, PeerResponse, dumps
from ..tasks import GroupSend


WHOLE_FLIGHTS = 1  # requests of whole shares under way to one holder at once
MOST_HOLDERS = 1024  # holders whose lanes (SenderLanes) are kept at most


def _hex(response: PeerResponse, value: Any, what: str, url: str, *, length: int | None = None) -> bytes:
    """`value` of `response`'s answer, hex of `length` bytes; else the answer is not of its shape (struck)."""
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise response.shapeless(f"peer {url} sent {what} that is not hex", url=url) from None
    if length is not None and len(raw) != length:
        raise response.shapeless(f"peer {url} sent {what} of {len(raw)} bytes, not {length}", url=url)
    return raw


class SenderLanes:
    """The segment bodies this node has in flight to each holder, at most what a holder takes from one sender
    at once (wire.MAX_BODIES_PER_SENDER): the shares of a put that all go to one holder wait their turn
    rather than trip its quota; and the whole shares on their way to each holder (`whole_to`).  The holders met
    are whoever the matching, a file's placement or a stranger's records name: at most MOST_HOLDERS lanes are
    kept, the least recently used idle ones dropped first, never one with a body in flight or awaited, nor whole
    shares queued or under way (a holder met again starts afresh, as nothing of it was in flight)."""

    def __init__(self, width: int = MAX_BODIES_PER_SENDER) -> None:
        self.width = width
        self._lanes: OrderedDict[str, _HolderLane] = OrderedDict()  # the least recently used first

    @contextlib.asynccontextmanager
    async def to(self, node_id: str):
        """One body in flight to `node_id` (waiting its turn while `width` are)."""
        lane = self._lane(node_id)
        lane.users += 1
        try:
            async with lane.bodies:
                yield
        finally:
            lane.users -= 1

    def whole_to(self, node_id: str) -> GroupSend[tuple[RemoteHolder, WholeShare]]:
        return self._lane(node_id).whole

    def __len__(self) -> int:
        """Holders whose lanes are kept (status, tests)."""
        return len(self._lanes)

    def _lane(self, node_id: str) -> _HolderLane:
        lane = self._lanes.get(node_id)
        if lane is not None:
            self._lanes.move_to_end(node_id)
            return lane
        passed = 0  # lanes in use moved to the newest end: each passed once
        while len(self._lanes) >= MOST_HOLDERS and passed < len(self._lanes):  # (room for one more)
            oldest, kept = next(iter(self._lanes.items()))
            if kept.users or not kept.whole.idle:
                self._lanes.move_to_end(oldest)
                passed += 1
                continue
            del self._lanes[oldest]
        lane = self._lanes[node_id] = _HolderLane(asyncio.Semaphore(self.width), whole_shares())
        return lane


@dataclass(eq=False)
class _HolderLane:
    bodies: asyncio.Semaphore
    whole: GroupSend[tuple[RemoteHolder, WholeShare]]
    users: int = 0  # bodies in flight or waiting their turn


def whole_shares() -> GroupSend[tuple[RemoteHolder, WholeShare]]:
    """The whole shares (storage/core/wire.py) going to one holder, WHOLE_FLIGHTS requests under way at a time: those
    given meanwhile go together in the next, so small files put at once cost each holder one request, one TLS
    exchange and one pass through its middlewares for several shares rather than one each.  Alone, a share goes at
    once."""

    async def send_all(shares: list[tuple[RemoteHolder, WholeShare]]) -> list[dict | PeerRefused]:
        holder = shares[-1][0]  # the newest: its URL is the node's as last known (they all go to one node)
        return await holder.place_shares([share for _, share in shares])

    return GroupSend(send_all, max_items=WHOLE_MAX_SHARES, max_bytes=WHOLE_MAX_BLOCK, flights=WHOLE_FLIGHTS)


def _retry_after(answer: dict) -> dict[str, int]:
    """A whole share's refusal's `retry_after` as a refused request's Retry-After is kept (`peer_retry_after`: seconds,
    a whole number, at most MAX_RETRY_AFTER), for remote.busy_wait."""
    wait = answer.get("retry_after")
    return {"peer_retry_after": min(wait, MAX_RETRY_AFTER)} if type(wait) is int and wait > 0 else {}


class RemoteHolder:
    def __init__(self, client: PeerClient, node_id: str, url: str, price: int | None = None,
                 payer: str | None = None, lanes: SenderLanes | None = None, round_trip: float | None = None) -> None:
        self.client = client
        self.round_trip = round_trip  # seconds: the probes' average round trip to the node (None: not known)
        # segment bodies in flight to each holder, whole shares on their way (an empty SenderLanes is falsy: no `or`)
        self._lanes = lanes if lanes is not None else SenderLanes()
        self.payer = payer  # the account that pays for the shares placed here (the holder checks receipts by it)
        self.node_id = node_id
        self.url = url.rstrip("/")
        self.price = price  # the deal price (micro-credits per GiB-hour) a new share is placed at

    def __repr__(self) -> str:
        return f"RemoteHolder({self.node_id} at {self.url})"

    @property
    def whole(self) -> GroupSend[tuple[RemoteHolder, WholeShare]]:
        """The whole shares on their way to this holder (status, tests)."""
        return self._lanes.whole_to(self.node_id)

    async def _call(self, method: str, path: str, *, max_size: int, **kwargs: Any):
        """A request whose answer is read no further than `max_size` bytes (wire.py: what an honest holder says)."""
        return await self.client.request(self.url, method, path, to=self.node_id, max_size=max_size, **kwargs)

    def _object(self, response: PeerResponse, what: str, fields: tuple[str, ...]) -> dict:
        """The answer, an object with `fields`; else it is not of its shape (struck against the holder)."""
        body = response.json()
        if not isinstance(body, dict) or any(f not in body for f in fields):
            raise response.shapeless(f"peer {self.url} answered {what} without {', '.join(fields)}", url=self.url)
        return body

    # --- uploading -----------------------------------------------------------------------
    async def begin(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int) -> str:
        """Reserve room for one share of a file of `size` bytes; returns the upload id."""
        terms = {"size": size, "segment_size": segment_size, "lease_expiry": lease_expiry, "price": self.price}
        if self.payer is not None:
            terms["payer"] = self.payer
        response = await self._call("POST", share_path(si, share) + "/uploads", json=terms,
                                    max_size=HOLDER_ANSWER)
        upload = self._object(response, "an upload", ("upload",))["upload"]
        if not isinstance(upload, str) or not upload.isalnum():
            raise response.shapeless(f"peer {self.url} answered with a malformed upload id", url=self.url)
        return upload

    async def place_whole(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int,
                          block: bytes, block_hash: bytes, manifest: bytes) -> None:
        """Place a share of one segment at once: begin's terms, its block and commit's hash and manifest, in one
        request with the other whole shares on their way to this holder (`whole_shares`)."""
        terms = {"size": size, "segment_size": segment_size, "lease_expiry": lease_expiry, "price": self.price,
                 "block_hash": block_hash.hex(), "manifest": manifest.hex()}
        if self.payer is not None:
            terms["payer"] = self.payer
        await self.whole.send((self, WholeShare(si, share, terms, block)), len(block))

    async def place_shares(self, shares: list[WholeShare]) -> list[dict | PeerRefused]:
        """Whole shares in one request: per share, in order, what the holder placed or its refusal, with the
        Retry-After the holder gave it (`peer_retry_after`).  A holder busy or rate limiting, for the request or for a
        share, has each share sent once more by its writer (remote.RemoteShareWriter.place_whole)."""
        async with self._lanes.to(self.node_id):
            response = await self._call("PUT", WHOLE_PATH, data=whole_shares_body(shares), max_size=WHOLE_ANSWER)
        answers = self._object(response, "whole shares", ("shares",))["shares"]
        if not isinstance(answers, list) or len(answers) != len(shares) or \
                not all(isinstance(a, dict) and ("share" in a or "code" in a) for a in answers):
            raise response.shapeless(f"peer {self.url} answered {len(shares)} whole shares with something else than "
                                     "an answer for each", url=self.url)
        return [answer if "share" in answer else
                PeerRefused(f"peer {self.url} refused share {share.share} of {share.si.hex()}: "
                            f"{shown(str(answer.get('detail')))}", url=self.url, peer_status=answer.get("status"),
                            peer_code=shown(str(answer["code"]), MAX_CODE), **_retry_after(answer))
                for share, answer in zip(shares, answers)]

    async def put_segments(self, upload: str, first: int, blocks: list[bytes], *,
                           timeout: float | None = None) -> None:
        """Send this share's blocks of segments first, first+1, ... (several requests if they are many)."""
        index = 0
        while index < len(blocks):
            # As many blocks as fit in one request, and always at least one.
            end, size = index + 1, len(blocks[index])
            while end < len(blocks) and size + len(blocks[end]) <= MAX_PUT_BYTES:
                size += len(blocks[end])
                end += 1
            async with self._lanes.to(self.node_id):  # the blocks go as they are, one body, never joined
                await self._call("PUT", f"/v1/peer/uploads/{upload}/segments/{first + index}",
                                 data=blocks[index:end], timeout=timeout, max_size=HOLDER_ANSWER)
            index = end

    async def commit(self, upload: str, block_hashes: list[bytes], manifest: bytes, *, first: int = 0,
                     blocks: list[bytes] | None = None) -> None:
        """Publish the share: the holder checks the hashes and their root against the manifest.  `blocks`: the
        share's last blocks (segments first.. to its last), sent with the commit in one request (wire.py), so the
        commit costs no round trip of its own; those past one request's MAX_PUT_BYTES go first, on their own."""
        commit = dumps({"block_hashes": [h.hex() for h in block_hashes], "manifest": manifest.hex()})
        if not blocks:
            async with self._lanes.to(self.node_id):  # a commit's body counts among the bodies in flight there
                await self._call("POST", f"/v1/peer/uploads/{upload}/commit", json=EncodedJson(commit),
                                 max_size=HOLDER_ANSWER)
            return
        start, size = len(blocks) - 1, len(blocks[-1])  # the last request: as many blocks as fit, at least one
        while start > 0 and size + len(blocks[start - 1]) <= MAX_PUT_BYTES:
            start -= 1
            size += len(blocks[start])
        if start:
            await self.put_segments(upload, first, blocks[:start])
        async with self._lanes.to(self.node_id):
            await self._call("PUT", f"/v1/peer/uploads/{upload}/segments/{first + start}?commit",
                             data=[*blocks[start:], commit], max_size=HOLDER_ANSWER)

    async def touch(self, upload: str) -> None:
        """Keep an upload in progress that nothing was sent to for a while from counting as idle (holder.ROOM_IDLE)."""
        await self._call("POST", f"/v1/peer/uploads/{upload}/touch", max_size=HOLDER_ANSWER)

    async def abort(self, upload: str) -> None:
        await self._call("DELETE", f"/v1/peer/uploads/{upload}", max_size=HOLDER_ANSWER)

    # --- reading, auditing, deleting -----------------------------------------------------
    async def meta(self, si: bytes, share: int, segment_count: int | None = None, *, size: int | None = None) -> dict:
        """The holder's record of a share; hashes and manifest as bytes (the manifest is None if it has none).
        `segment_count`: the share's, when the caller knows the file: an answer longer than an honest one is refused
        unread, and one of another count refused.  `size`: the file's, when only that is known (a capability): an
        answer longer than the file's smallest segments make is refused unread."""
        bound = meta_answer_bound(segment_count) if segment_count is not None else \
            META_ANSWER_MOST if size is None else meta_answer_most(size)
        response = await self._call("GET", share_path(si, share), max_size=bound)
        body = self._object(response, "a share's metadata",
                            ("segment_count", "stored_bytes", "lease_expiry", "uploader", "block_hashes", "manifest"))
        hashes = body["block_hashes"]
        if not isinstance(hashes, list) or len(hashes) != body["segment_count"] \
                or segment_count not in (None, len(hashes)):
            raise response.shapeless(f"peer {self.url} sent a share's metadata whose hashes are not one per segment",
                                     url=self.url)
        manifest = body["manifest"]
        return {**body, "block_hashes": [_hex(response, h, "a block hash", self.url, length=32) for h in hashes],
                "manifest": None if manifest is None else _hex(response, manifest, "a manifest", self.url)}

    async def blocks(self, si: bytes, share: int, first: int, count: int, lengths: list[int], *,
                     timeout: float | None = None) -> list[bytearray]:
        """Blocks first..first+count-1 of a share, each of the length given (the caller knows them from the
        manifest), each read straight into a buffer of its own (PeerClient.read_into); not checked against their
        hashes: that is the caller's job.  An answer of another length than the blocks make is refused."""
        if len(lengths) != count:
            raise ValueError(f"{count} blocks asked but {len(lengths)} lengths given")
        blocks: list[bytearray] = []
        for start in range(0, count, MAX_BLOCKS_PER_GET):
            n = min(MAX_BLOCKS_PER_GET, count - start)
            path = f"{share_path(si, share)}/blocks?from={first + start}&count={n}"
            blocks.extend(await self.client.read_into(self.url, path, lengths[start:start + n], to=self.node_id,
                                                      timeout=timeout))
        return blocks

    async def delete(self, si: bytes, share: int) -> None:
        await self._call("DELETE", share_path(si, share), max_size=HOLDER_ANSWER)

    async def renew(self, si: bytes, share: int, lease_expiry: int) -> dict:
        """Extend the share's lease to `lease_expiry` (the holder never shortens one; uploader only).
        Returns {"lease_expiry": the lease now, "previous": the lease before}."""
        response = await self._call("POST", share_path(si, share) + "/renew",
                                    json={"lease_expiry": lease_expiry}, max_size=HOLDER_ANSWER)
        body = self._object(response, "a renewal", ("lease_expiry", "previous"))
        if any(type(body[f]) is not int or body[f] < 0 for f in ("lease_expiry", "previous")):
            raise response.shapeless(f"peer {self.url} answered a renewal with leases that are not unix seconds",
                                     url=self.url)
        return {"lease_expiry": body["lease_expiry"], "previous": body["previous"]}

    async def audit(self, si: bytes, share: int, segment: int, manifest: Manifest
                    ) -> tuple[bytes, list[tuple[bool, bytes]]]:
        """One block and its Merkle path; check them with `check_audit` against the manifest's share root.  An answer
        longer than an honest one of that block is refused unread (`audit_answer_bound`)."""
        response = await self._call("POST", share_path(si, share) + "/audit", json={"segment": segment},
                                    max_size=audit_answer_bound(manifest, segment))
        body = self._object(response, "an audit", ("block", "proof"))
        steps = body["proof"]
        if not isinstance(steps, list) or not all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], bool)
                                                  for s in steps):
            raise response.shapeless(f"peer {self.url} sent a malformed Merkle path", url=self.url)
        path = [(left, _hex(response, h, "a Merkle path hash", self.url, length=32)) for left, h in steps]
        return _hex(response, body["block"], "a block", self.url), path


__all__ = ["RemoteHolder"]
