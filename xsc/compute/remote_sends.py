"""A call run on another node, from its send to its end, whether its caller waits for it or not.

A call is its provider's from the moment it goes into a request (`net.compute.Sending.sent`): it may run from
then on, and a caller that goes away after that (its client hung up, its task was cancelled) cannot take it back:
its provider is not told, and runs it to its end.  It is paid for what it ran, as a Cloudflare Worker's request or a
Bacalhau job is billed for what ran before its client went away.  So the gateway accounts for it alike in every book:

- cancelled before it was sent (queued for a batch, or waiting for its module's push): it never runs.  Its budget is
  given back on its tab at once, the tab counts nothing for it, and what it held of the allocation is free;
- cancelled once sent: its answer is still awaited here and taken as its caller would have taken it: the tab owes
  what the answer charged (or, the answer lost, holds its budget until the tab is paid), and the call holds its part
  of the allocation until then, when the fuel it ran is spent of it (`CallEnd`).  Its answer is sampled for a spot
  check as any other (a `verify` call's is checked in the background): a provider cannot tell that its caller went
  away, and must not learn that such answers go unchecked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from ..errors import PeerRefused, PeerUnreachable
from .remote_tabs import GatewayTabs, OpenTab

log = logging.getLogger(__name__)


class CallEnd:
    """What a call placed by the market gives back once it is over (`Dealing.invoked`, once): what it held of the
    allocation, and the fuel it ran counted against the provider's part.  `later`: its caller went away once it was
    sent, so it is over when its answer comes (`over`), not when its caller is."""

    def __init__(self, dealing: Any, assignment: Any, limit: int) -> None:
        self.dealing, self.assignment, self.limit = dealing, assignment, limit
        self.later = False
        self._over = False

    def __call__(self, fuel: Any = None) -> None:
        """Its caller is done with the call, which ran `fuel` by its provider's answer (None: not known to have run)."""
        if not self.later:
            self.over(fuel)

    def over(self, fuel: Any = None) -> None:
        """The call is over, having run `fuel` (at most its limit)."""
        if not self._over:
            self._over = True
            used = min(fuel, self.limit) if type(fuel) is int and fuel > 0 else 0
            self.dealing.invoked(self.assignment, used)


class CallSends:
    """Calls sent through `batcher` on tabs of `tabs`, each accounted on its tab as it ends (module docstring).  A
    call is the batcher's future, resolved by its request: none starts a task of its own, nor does a call whose caller
    goes away (the batcher tells its answer to `Sending.late`)."""

    def __init__(self, batcher: Any, tabs: GatewayTabs) -> None:
        self.batcher, self.tabs = batcher, tabs
        self._going_on: dict[Any, Callable[[Any], None]] = {}  # calls sent whose callers went away: each one's `late`

    async def send(self, url: str, provider: str, body: dict, wasm: Callable[[], bytes], wasi: bool, tab: OpenTab,
                   budget: int, taken: Callable[[dict[str, Any]], Any], end: CallEnd | None = None) -> dict[str, Any]:
        """`provider`'s answer to the call `body`, reserved on `tab` for `budget`.  What it raises is accounted on the
        tab already (refused, or unreachable before it was sent: nothing owed; lost: its budget held until the tab is
        paid); an answer is the caller's to account, as `taken` does it: for a caller gone, `taken(answer)` then
        accounts it (raising once it accounted it lost) and returns the fuel it ran.  Cancelled: see the module
        docstring."""
        sending = self.batcher.send(url, provider, body, wasm, wasi,
                                    functools.partial(self.tabs.compile_on, tab, str(body["call"]["module"])))
        try:
            return await sending.future  # (cancelled with its caller: the batcher takes back a call not sent)
        except asyncio.CancelledError:
            if not sending.sent:  # queued, or waiting for its module's push
                if not sending.future.cancel() and not sending.future.cancelled():
                    sending.future.exception()  # (failed unsent as its caller went away: read, never raised)
                self.tabs.answered(tab, budget, None)
                raise
            if end is not None:
                end.later = True

            def late(answer: Any) -> None:
                if self._going_on.pop(sending, None) is not None:
                    self._answered_late(answer, provider, tab, budget, taken, end)

            self._going_on[sending] = late
            if sending.future.cancelled():
                sending.late = late
            else:  # answered as its caller went away
                late(sending.future.exception() or sending.future.result())
            raise
        except BaseException as err:
            self.failed(provider, tab, budget, err)
            raise

    def failed(self, provider: str, tab: OpenTab, budget: int, err: BaseException) -> None:
        """A call on `tab` got no answer but `err`: refused before it ran, or never sent, it owes nothing; else it may
        have run, and its budget stays held until the tab is paid."""
        if isinstance(err, PeerRefused) or (isinstance(err, PeerUnreachable) and err.details.get("sent") is False):
            self.tabs.answered(tab, budget, None)
        else:
            self.tabs.lost(tab, budget)
            log.warning("invoke on %s: no answer; if it ran, the tab's receipt covers it", provider)

    def _answered_late(self, answer: Any, provider: str, tab: OpenTab, budget: int,
                       taken: Callable[[dict[str, Any]], Any], end: CallEnd | None) -> None:
        """The `answer` of a call whose caller went away once it was sent (what its request raised; None: the node
        stops, and it may have run), taken as the caller would have taken it (`taken`)."""
        fuel = None
        if answer is None:
            self.tabs.lost(tab, budget)
        elif isinstance(answer, BaseException):
            self.failed(provider, tab, budget, answer)
        else:
            try:
                fuel = taken(answer)
            except PeerRefused as err:  # a charge past its budget: taken as a lost answer
                log.warning("invoke on %s, its caller gone: %s", provider, err)
        if end is not None:
            end.over(fuel)

    async def close(self) -> None:
        """The node stops: calls still awaited for a caller that went away count as lost (they may have run).  (The
        batcher, closed first, has told those in flight or waiting for a push already.)"""
        for sending, late in list(self._going_on.items()):
            sending.late = None
            late(None)
