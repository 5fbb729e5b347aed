"""The ledger's chains as they are read (the writes are LedgerService's): an account's entries newest first, each
aggregated transfer with the provenance ids it covers and each entry with the balance after it (`xsc ledger history`,
the dashboard's balance chart), an account's chain from a sequence number, one entry by its id, and every entry as a
JSON line (the export).  Each read runs on the ledger's reader thread."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from collections.abc import Awaitable, Callable
from typing import Any, Iterator

from .. import codec
from ..errors import EntryNotFound
from .core.model import decode_entry, entry_json
from .store import LedgerStore


@functools.lru_cache(maxsize=2048)
def _entry_view(data: bytes) -> dict:
    """An entry's readable view, by its stored bytes: entries never change, so the newest ones a page keeps asking
    for (the dashboard's history and balance chart) are decoded once, not on every poll.  Callers copy it."""
    return entry_json(decode_entry(data))


class LedgerHistory:
    def __init__(self, store: LedgerStore, reader: Executor,
                 balance: Callable[[bytes], Awaitable[dict[str, Any]]]) -> None:
        self.store, self._reader = store, reader
        self._balance = balance  # an account's view as its balance says it (LedgerService.balance)

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def chain(self, account: bytes, from_seq: int, limit: int) -> list[dict]:
        records = await self._read(self.store.chain, account, from_seq, limit)
        return [entry_json(decode_entry(data)) for data in records]

    async def entries(self, account: bytes, limit: int, *, expand: bool = False) -> list[dict]:
        """The newest entries first; with `expand`, each aggregated transfer lists the provenance ids it covers."""
        def read() -> list[dict]:
            return [dict(_entry_view(data)) for data in self.store.history_data(account, limit)]

        entries = await self._read(read)
        if expand:
            for entry in entries:
                if "covers" in entry:
                    try:
                        entry["covered"] = await self.covered(entry["covers"])
                    except EntryNotFound:  # its list was retired (ledger.record_retention); the transfer stays
                        entry["covered"] = None
        return entries

    async def covered(self, root_hex: str) -> list[str]:
        """The refs (provenance ids, hex) an aggregated transfer covers, by the Merkle root its job names."""
        try:
            root = bytes.fromhex(root_hex)
        except ValueError:
            root = b""
        data = await self._read(self.store.covers, root) if len(root) == 32 else None
        if data is None:
            raise EntryNotFound(f"no aggregated transfer covers Merkle root {root_hex!r} (or its list of provenance "
                                "ids was retired, ledger.record_retention after it was settled)",
                                hint="list them with: xsc ledger history --expand")
        return [data[i:i + 16].hex() for i in range(0, len(data), 16)]

    async def view(self, account: bytes, limit: int, *, expand: bool = False,
                   encoded: bool = True, fields: frozenset[str] | None = None) -> dict[str, Any]:
        """The account and its newest entries (see `entries`), each with its `balance_after` (the dashboard's
        balance chart); without the signed bytes unless `encoded`; only `fields` of each (and its seq and
        balance_after) when given (a page that charts hundreds of entries needs three fields of each)."""
        for _ in range(10):  # the view and the entries of one state: a settlement may land between the two reads
            view = await self._balance(account)  # the client's with its leases' promise kept aside, as everywhere
            entries = await self.entries(account, limit, expand=expand)
            if not entries or entries[0]["seq"] == view["seq"]:
                break
        balance = view["balance"]
        for entry in entries:  # newest first, from the head
            entry["balance_after"] = balance
            balance -= entry.get("delta") or 0
            if not encoded:
                entry.pop("encoded", None)
        if fields is not None:
            keep = fields | {"seq", "balance_after", "covered"}
            entries = [{k: v for k, v in e.items() if k in keep} for e in entries]
        return {"account": view, "entries": entries}

    async def entry(self, ref: str) -> dict:
        return entry_json(await self._read(self.store.entry, ref))

    def export_lines(self) -> Iterator[bytes]:
        """Every entry as one JSON line (blocking: iterate in a thread)."""
        for _, _, data in self.store.entries():
            yield codec.text(entry_json(decode_entry(data)), sort_keys=True).encode() + b"\n"


__all__ = ["LedgerHistory"]
