"""Group commit of publishes: the uploads that finish while one synced write is under way are published together
in the next (`ShareStore.publish_all`, through `tasks.GroupCommit`), so a node storing many small files pays one
fsync for a group of them, not one each, and holds one pool thread for it.

A publish waits for its group's write; one cancelled while it waits is never published (`GroupCommit`).
"""

from __future__ import annotations

from concurrent.futures import Executor

from ..tasks import GroupCommit
from .share_store import Publication, Rider, ShareStore, ShareMeta, Upload

MAX_GROUP = 256  # publishes written in one batch at most


class Publisher:
    def __init__(self, store: ShareStore, pool: Executor | None) -> None:
        self.store = store
        self.pool = pool
        self.commits: GroupCommit[Publication] = GroupCommit(store.publish_all, pool, MAX_GROUP)

    @property
    def groups(self) -> int:
        """Group writes so far (tests, status)."""
        return self.commits.groups

    async def publish(self, upload: Upload, metas: list[ShareMeta], manifest: bytes | None = None,
                      file_record: dict | None = None, also: dict[bytes, bytes] | None = None,
                      rider: Rider | None = None) -> None:
        """`ShareStore.publish` (with `rider`'s records, `Rider`), in the next group write."""
        await self.commits.add(Publication(upload, metas, manifest, file_record, also, rider))


__all__ = ["Publisher"]
