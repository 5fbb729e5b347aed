"""The turns deals take (`DealTurns`): one at a time, so that two never spend one allocation's room, and those asked
for while one ran dealt together when their turn comes (the needs of several puts cleared together: one clearing,
not one each).  A caller that goes away while its batch is dealt takes no part in the matchings still to be made
(`gone`), and one under way as it went is made again without it (`Dealing._deal`).  What a deal is, is `Dealing`'s
(`xsc/market/dealing.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import MarketNoDeal
from .core.models import Bid


@dataclass
class _Waiting:
    """A deal asked for while another ran: its needs, the providers it leaves out, and its answer."""

    bids: list[Bid]
    exclude: frozenset[str]
    answer: asyncio.Future


class DealTurns:
    """Deals run in turn by `run` (needs, providers left out -> need id -> assignment); `ended`: told of each need a
    deal placed whose caller is gone, so that what it would hold is free again."""

    def __init__(self, run: Callable[[list[Bid], frozenset[str]], Awaitable[dict[str, Any]]],
                 ended: Callable[[str], None]) -> None:
        self.run, self.ended = run, ended
        self.lock = asyncio.Lock()  # held by the deal under way
        self._waiting: list[_Waiting] = []  # deals asked for while another ran: dealt together next
        self._dealt: list[_Waiting] = []  # the batch under way

    def waiting(self) -> int:
        """Deals waiting for their turn (status, tests)."""
        return len(self._waiting)

    def gone(self) -> frozenset[str]:
        """The needs of the batch under way whose callers went away (cancelled): `run` leaves them out of every
        matching it has yet to make, so that they set no price, take no room and hold nothing of it."""
        return frozenset(b.slot.id for w in self._dealt if w.answer.cancelled() for b in w.bids)

    async def deal(self, bids: list[Bid], exclude: frozenset[str]) -> dict[str, Any]:
        """`run` of `bids`, in its turn: with the others of the same `exclude` that waited for it, if any."""
        waiting = _Waiting(bids, exclude, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        try:
            async with self.lock:
                if not waiting.answer.done():  # not answered with an earlier batch: this one's batch is dealt now
                    batch = [w for w in self._waiting if w.exclude == exclude]
                    self._waiting = [w for w in self._waiting if w.exclude != exclude]
                    await self._deal_batch(batch)
        except BaseException:
            # Its caller is gone (cancelled): a later batch leaves it out, and one dealing it now ends what it would
            # hold at once (`_answer`); what it was answered already its caller ends as it goes (`_invoke_deal`).
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            waiting.answer.cancel()
            raise
        return waiting.answer.result()

    def _answer(self, waiting: _Waiting, answer: dict[str, Any] | None = None,
                error: BaseException | None = None) -> None:
        """Tell `waiting` its deal's `answer` (or `error`); if its caller is gone, the calls it was placed for
        never run: what they hold of the allocation is free again."""
        if waiting.answer.cancelled():
            for need_id in answer or ():
                self.ended(need_id)
        elif error is not None:
            waiting.answer.set_exception(error)
        else:
            waiting.answer.set_result(answer)

    async def _deal_batch(self, batch: list[_Waiting]) -> None:
        """The deals that waited while another ran, dealt as one matching; if any of them gets nothing, each is dealt
        alone again, so that every caller hears about its own needs only (those whose callers went away meanwhile are
        left out).  Its dealer cancelled, those it had not answered wait for the next turn: the cancellation is its
        caller's, not theirs."""
        self._dealt = batch
        try:
            await self._deal_each(batch)
        except asyncio.CancelledError:
            self._waiting[:0] = [w for w in batch if not w.answer.done()]
            raise
        finally:
            self._dealt = []

    async def _deal_each(self, batch: list[_Waiting]) -> None:
        if len(batch) > 1:
            try:
                together = await self.run([b for w in batch for b in w.bids], batch[0].exclude)
            except MarketNoDeal:
                pass
            except asyncio.CancelledError:
                raise
            except BaseException as err:
                for w in batch:
                    self._answer(w, error=err)
                return
            else:  # (those whose callers went away before it was matched have nothing in it)
                for w in batch:
                    self._answer(w, {b.slot.id: together[b.slot.id] for b in w.bids if b.slot.id in together})
                return
        for w in batch:
            if w.answer.done():  # its caller went away while the batch was dealt: nobody would take its answer
                continue
            try:
                answer = await self.run(w.bids, w.exclude)
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # its caller raises it
                self._answer(w, error=err)
            else:
                self._answer(w, answer)


__all__ = ["DealTurns"]
