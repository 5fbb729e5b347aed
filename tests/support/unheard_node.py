"""`python tests/support/unheard_node.py <xsc arguments>`: the real `xsc` CLI, whose node, as it stops, says it leaves
to peers that never answer and waits an hour for them (not the 2 s of `MarketService.leave`), so that a test can signal
it again while it waits.  It prints `leaving: the peers do not answer` as it begins to wait."""

from __future__ import annotations

import asyncio
import sys

from xsc.cli import main
from xsc.market.service import MarketService

_leave = MarketService.leave


async def _unheard(self: MarketService, timeout: float = 2.0) -> None:
    async def never_answered(everyone: bool = False) -> None:
        print("leaving: the peers do not answer", flush=True)
        await asyncio.Event().wait()

    self.replication.push_own = never_answered  # type: ignore[method-assign]
    await _leave(self, 3600.0)


MarketService.leave = _unheard  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv[0] = "xsc"
    main()
