"""The gateway: streaming put and get, check, verify, repair and lease renewal over a share store.

One entry point for the node; each family of operations is a module of its own over the core they share
(gateway_core): gateway_put, gateway_get, gateway_repair and gateway_leases.  Segments are processed in a
thread pool (AES-GCM, zfec and SHA-256 release the GIL, and so does LevelDB I/O), a bounded number at a time,
so both cores work and memory stays bounded whatever the file size: at most `depth` segments are in flight.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from . import gateway_get, gateway_leases, gateway_put, gateway_repair
from .core.capability import Capability
from .gateway_core import GatewayCore, Replacer
from .gateway_get import Plaintext
from .gateway_put import Placer, PutResult, ReadFn
from .gateway_repair import Relocator, ShareReport
from .remote import Holder

__all__ = ["Gateway", "Holder", "PutResult", "ShareReport"]


class Gateway(GatewayCore):
    async def put(self, read: ReadFn, size: int | None, name: str | None = None,
                  place: Placer | None = None, lease_duration: int | None = None,
                  replace: Replacer | None = None, me: str = "this node",
                  records: gateway_put.Records | None = None, riding: gateway_put.Riding | None = None,
                  keep_home: bool = False, rebuild_away: bool = False, filters: dict | None = None) -> PutResult:
        """Store a stream (see gateway_put.put)."""
        return await gateway_put.put(self, read, size, name, place, lease_duration, replace, me, records, riding,
                                     keep_home, rebuild_away, filters)

    async def open(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                   names: list[str] | None = None, rank: Mapping[int, float] | None = None,
                   byte_range: tuple[int, int] | None = None, manifest: bytes | None = None
                   ) -> tuple[int, Plaintext]:
        """The file's size and its plaintext, or a byte range of it (see gateway_get.open_file)."""
        return await gateway_get.open_file(self, cap, holders, names, rank, byte_range, manifest)

    async def check(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                    names: list[str] | None = None, manifest: bytes | None = None) -> list[ShareReport]:
        """Which shares are present and not known to be damaged (see gateway_repair.check)."""
        return await gateway_repair.check(self, cap, holders, names, manifest)

    async def verify(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                     names: list[str] | None = None, manifest: bytes | None = None,
                     progress: gateway_repair.Progress | None = None) -> list[ShareReport]:
        """Every block of every share read and hashed (see gateway_repair.verify)."""
        return await gateway_repair.verify(self, cap, holders, names, manifest, progress)

    async def repair(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                     names: list[str] | None = None, relocate: Relocator | None = None,
                     me: str = "this node", fetched: bytes | None = None,
                     placed: gateway_repair.Placed | None = None,
                     progress: gateway_repair.Progress | None = None, away: Collection[int] = (),
                     not_here: str = "") -> dict:
        """Missing and corrupt shares rebuilt from any K good ones (see gateway_repair.repair)."""
        return await gateway_repair.repair(self, cap, holders, names, relocate, me, fetched, placed, progress, away,
                                           not_here)

    async def renew(self, cap: Capability, duration: int, holders: Mapping[int, Holder] | None = None,
                    names: list[str] | None = None, me: str = "this node") -> dict[str, Any]:
        """Every share's lease extended to now + `duration` (see gateway_leases.renew)."""
        return await gateway_leases.renew(self, cap, duration, holders, names, me)
