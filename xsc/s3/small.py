"""A small object's way to the node: stored, paid and recorded in one request of the node's, or, while others are
on their way, in one request with them (`POST /v1/s3/objects`, xsc/buckets/objects.py), each still answered as if
it had come alone.  Grouping saves the node and the front a request each: under load most small objects go in
groups; alone, an object waits for nothing (tasks.GroupSend)."""

from __future__ import annotations

from urllib.parse import quote

from .. import codec
from ..buckets.objects import MAX_GROUP_BYTES, MAX_GROUP_OBJECTS, SmallPut, group_body
from ..client.aio import NodeApi
from ..client.sync import error_from_problem
from ..errors import XscError
from ..tasks import GroupSend

GROUPED_UP_TO = 64 * 1024  # bytes of an object (with its record and names) that may share a request with others
ITEM_BYTES = 512  # a grouped object's other fields in the group's head (its bucket, user, the JSON around them)


class SmallObjects:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.groups: GroupSend[SmallPut] = GroupSend(self._put_group, max_items=MAX_GROUP_OBJECTS,
                                                     max_bytes=MAX_GROUP_BYTES - ITEM_BYTES)

    async def put(self, put: SmallPut) -> dict:
        """The object stored, paid from its user's account and recorded: {"capability", "garbage"}."""
        # what it adds to a group's body, at most (a key's quotes and backslashes are escaped in JSON)
        names = f"{put.key}{put.name or ''}".encode()
        weight = len(put.data) + len(codec.dumps(put.record)) + 2 * len(names) + ITEM_BYTES
        if weight <= GROUPED_UP_TO:
            return await self.groups.send(put, weight)
        return await self.node.call("POST", f"/v1/s3/buckets/{quote(put.bucket, safe='')}/objects",
                                    params={k: v for k, v in (("key", put.key), ("name", put.name), ("user", put.user))
                                            if v is not None},
                                    raw=codec.framed(put.record, put.data))

    async def _put_group(self, puts: list[SmallPut]) -> list[dict | XscError]:
        """Objects in one request of the node's: each one's answer, or the error that refused it."""
        answer = await self.node.call("POST", "/v1/s3/objects", raw=group_body(puts))
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(puts) or not all(isinstance(r, dict) for r in results):
            raise XscError(f"the node answered a group of {len(puts)} objects without {len(puts)} results")
        return [r.get("answer") if r.get("status") == 201 else
                error_from_problem(r.get("status") or 500, codec.dumps(r.get("problem"))) for r in results]

    async def close(self) -> None:
        await self.groups.close()


__all__ = ["SmallObjects"]
