"""Run by test_ledger_crash: settle in bursts of concurrent tasks against a real LevelDB until killed.

Prints the running count of acknowledged settlements after each burst (flushed), so the test
knows what must have survived the SIGKILL it sends at a random moment."""

from __future__ import annotations

import asyncio
import sys

import plyvel

from xsc.identity import Identity
from xsc.ledger import LedgerService


async def main(path: str) -> None:
    db = plyvel.DB(path, create_if_missing=True)
    payer, payee, third = Identity.generate(), Identity.generate(), Identity.generate()
    service = LedgerService(db, 10**15, node=payee, client=payer)
    done = 0
    n = 0
    while True:
        pairs = [(payer, payee), (payee, third), (third, payer)]
        jobs = [service.settle(*pairs[(n + i) % 3], 1 + i % 7, {"fuel": i}, f"burst-{n}-{i}") for i in range(64)]
        results = await asyncio.gather(*jobs)
        done += len(results)
        n += 1
        print(done, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
