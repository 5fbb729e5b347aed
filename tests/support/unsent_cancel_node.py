"""`python tests/support/unsent_cancel_node.py <xsc arguments>`: the real `xsc` CLI, whose node writes a cancel's
intent in its job's record (`cancel_asked`) and never sends that cancel to the job's providers, nor gives up waiting
for them: the moment between the write and the send, where a kill -9 may come, held open."""

from __future__ import annotations

import asyncio
import sys

from xsc.cli import main
from xsc.compute import job_cancels, provider_stops


async def _unsent(paid, provider: str, hosted: str) -> bool:
    await asyncio.Event().wait()
    return False


provider_stops.ask_to_stop = _unsent  # type: ignore[assignment]
job_cancels.CANCEL_GRACE = 3600.0

if __name__ == "__main__":
    sys.argv[0] = "xsc"
    main()
