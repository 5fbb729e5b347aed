"""A small object's way to the node: stored, paid and recorded in one call of the node's, or, while others are on
their way, in one call with them (`NodeLink.put_small_group`: over HTTP one `POST /v1/s3/objects`, in the node's
process one `ObjectWriter.put_group`; xsc/buckets/objects.py), each still answered as if it had come alone.  A group
shares one market quote and its synced writes; over HTTP it also saves the node and the front a request each.
Under load most small objects go in groups; alone, an object waits for nothing (tasks.GroupSend)."""

from __future__ import annotations

from typing import Awaitable, Callable

from .. import codec
from ..buckets.objects import MAX_GROUP_BYTES, MAX_GROUP_OBJECTS, SmallPut
from ..tasks import GroupSend, to_its_end
from .link import NodeLink

GROUPED_UP_TO = 64 * 1024  # bytes of an object (with its record and names) that may share a request with others
ITEM_BYTES = 512  # a grouped object's other fields in the group's head (its bucket, user, the JSON around them)
# Groups on their way to the node at once.  With one, a group's round trip is only its own put, and the next gathers
# what came meanwhile: larger groups, each costing the node a request, a quote and its synced writes.  The price: a
# group held up (a put waiting for a far holder) holds back the objects that came after it (docs/s3.md).
FLIGHTS = 1


class SmallObjects:
    def __init__(self, node: NodeLink) -> None:
        self.node = node
        self.groups: GroupSend[SmallPut] = GroupSend(node.put_small_group, max_items=MAX_GROUP_OBJECTS,
                                                     max_bytes=MAX_GROUP_BYTES - ITEM_BYTES, flights=FLIGHTS)

    def submit(self, put: SmallPut, ended: Callable[[], None]) -> Awaitable[dict]:
        """The object stored, paid from its user's account and recorded: {"capability", "garbage"}, awaited.  It is
        on its way already, and goes on whether or not its answer is awaited; `ended()` once it is stored or
        refused.  In a group, its answer wakes its caller straight from the group's outcome, with no shield between:
        a loop turn more there cost the node's small PutObjects about a tenth of their rate."""
        # what it adds to a group's body, at most (a key's quotes and backslashes are escaped in JSON)
        names = f"{put.key}{put.name or ''}".encode()
        weight = len(put.data) + len(codec.dumps(put.record)) + 2 * len(names) + ITEM_BYTES
        if weight <= GROUPED_UP_TO:
            return self.groups.submit(put, weight, ended)
        return to_its_end(self.node.put_small(put), ended)

    async def close(self) -> None:
        await self.groups.close()


__all__ = ["SmallObjects"]
