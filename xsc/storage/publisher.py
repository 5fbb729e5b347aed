"""Group commit of publishes: the uploads that finish while one synced write is under way are published together
in the next (`ShareStore.publish_all`), so a node storing many small files pays one fsync for a group of them,
not one each, and holds one pool thread for it.

A publish waits for its group's write.  One still waiting when its caller is cancelled leaves the queue (it is
never published, so the caller's clean-up may abort its upload); one whose group is being written is waited for
before the cancellation goes on, so that what follows sees whether it was published.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from .share_store import Publication, ShareStore, ShareMeta, Upload

MAX_GROUP = 256  # publishes written in one batch at most


@dataclass
class _Waiting:
    publication: Publication
    done: asyncio.Future


class Publisher:
    def __init__(self, store: ShareStore, pool: Executor | None) -> None:
        self.store = store
        self.pool = pool
        self._queue: list[_Waiting] = []
        self._writing = False
        self.groups = 0  # group writes (tests, status)

    async def publish(self, upload: Upload, metas: list[ShareMeta], manifest: bytes | None = None,
                      file_record: dict | None = None, also: dict[bytes, bytes] | None = None) -> None:
        """`ShareStore.publish`, in the next group write."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(Publication(upload, metas, manifest, file_record, also), loop.create_future())
        self._queue.append(waiting)
        if not self._writing:
            self._write_next(loop)
        try:
            await asyncio.shield(waiting.done)
        except asyncio.CancelledError:
            if waiting in self._queue:
                self._queue.remove(waiting)
            else:
                await asyncio.wait([waiting.done])
                if not waiting.done.cancelled():
                    waiting.done.exception()  # its outcome was seen: what follows reads it from the store
            raise

    def _write_next(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        self._writing = True
        self.groups += 1
        written = loop.run_in_executor(self.pool, self.store.publish_all, [w.publication for w in group])
        written.add_done_callback(lambda future: self._written(loop, group, future))

    def _written(self, loop: asyncio.AbstractEventLoop, group: list[_Waiting], future: asyncio.Future) -> None:
        self._writing = False
        failed = future.exception()
        errors = [failed] * len(group) if failed is not None else future.result()
        for waiting, error in zip(group, errors):
            if waiting.done.done():
                continue
            if error is None:
                waiting.done.set_result(None)
            else:
                waiting.done.set_exception(error)
        if self._queue:
            self._write_next(loop)


__all__ = ["Publisher"]
