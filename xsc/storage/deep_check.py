"""Every file this node's user stores, verified, or verified and repaired where damaged, in one run (Tahoe's
`deep-check --repair`): `xsc store verify --all` and `repair --all`, the dashboard's Check all and Repair damaged.

Each file is the one-file verify and repair (StorageService.verify, .repair), so a repair is as crash-safe as a
single one: a run cut short leaves every file as its own repair left it.  The run goes on past a file that fails; a
file removed while the run goes is passed over.  It starts no file once `going_on()` says its client went away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import NotEnoughShares, XscError
from .core.capability import Capability
from .gateway_repair import Progress

VERIFIED_AT_ONCE = 4  # files read at once: a small file's verify waits on round trips, not on the disk
# Repairs go one at a time: each may move shares between nodes, and the automatic repairs go so too (audits.py).

HEALTHY = ("healthy", "repaired", "removed")  # the states a run that is all well ends with


def _state(report: dict) -> str:
    return "healthy" if report["healthy"] else "damaged" if report["recoverable"] else "not recoverable"


def _why(report: dict) -> str:
    """What a verify found wrong, share by share (a share whose node is down reads as missing: say so, so that a
    file damaged by a node away is told from one whose blocks are bad)."""
    return "; ".join(f"share {s['share']} {s['status']}"
                     + (f": {s['detail']}" if s.get("detail") not in ("", s["status"]) else "")
                     for s in report.get("shares", ()) if s["status"] != "ok")


async def deep_check(storage, *, repair: bool, progress: Progress | None = None,
                     going_on: Callable[[], bool] = lambda: True) -> dict[str, Any]:
    """Verify every file `storage` (a StorageService) lists, and with `repair` repair each one found damaged.
    `progress` is told {"files_done", "files_total", "bytes_done", "bytes_total"}: at the start; with the "file"
    (capability) and "name" a step of its verify or repair is at and that step's own progress line
    ("stage", "done", "total", ...); and with the file's "state" once it is done (and its "at_risk", why, where the
    file is whole with every share on one node).  The answer: each file's outcome ("state": healthy, damaged,
    repaired, not recoverable, removed, failed), in the listing's order, and "healthy"."""
    files = (await storage.files_view())["files"]
    count = {"files_done": 0, "files_total": len(files), "bytes_done": 0, "bytes_total": sum(f["size"] for f in files)}
    tell = progress or (lambda event: None)
    tell(dict(count))
    outcomes: list[dict | None] = [None] * len(files)
    waiting = iter(enumerate(files))
    repairing = asyncio.Lock()

    async def one(record: dict) -> dict:
        cap = Capability.parse(record["capability"])
        about = {"file": record["capability"], "name": record.get("name")}

        def told(event: dict) -> None:
            tell({**count, **about, **event})

        outcome = {"capability": record["capability"], "name": record.get("name"), "size": record["size"]}
        try:
            if not await storage.stored(cap):
                return {**outcome, "state": "removed"}
            report = await storage.verify(cap, told)
            state = _state(report)
            if repair and state != "healthy":
                async with repairing:
                    report = await storage.repair(cap, told)
                state = "repaired" if report["healthy"] else _state(report)
                outcome["repaired"] = report.get("repaired", [])
                if report.get("warning"):
                    outcome["detail"] = report["warning"]
            outcome.update(state=state, intact=report["intact"])
            if report.get("at_risk") and state in ("healthy", "repaired"):  # whole, but one node's loss loses it
                outcome["at_risk"] = report["at_risk"]
            if state not in HEALTHY and "detail" not in outcome and _why(report):
                outcome["detail"] = _why(report)
            if state not in HEALTHY and report.get("repair_problem"):  # (StorageService.unplaced)
                said = f"its last repair failed: {report['repair_problem']}"
                outcome["detail"] = f"{outcome['detail']}; {said}" if outcome.get("detail") else said
        except NotEnoughShares as err:
            outcome.update(state="not recoverable", detail=err.with_hint)
        except XscError as err:
            outcome.update(state="failed", detail=err.with_hint)
        if outcome["state"] not in HEALTHY and not await storage.stored(cap):
            return {**outcome, "state": "removed"}  # its shares went with it: what was found of them says nothing
        return outcome

    async def worker() -> None:
        for i, record in waiting:
            if not going_on():
                return
            outcomes[i] = await one(record)
            count["files_done"] += 1
            count["bytes_done"] += record["size"]
            tell({**count, "file": record["capability"], "name": record.get("name"), "state": outcomes[i]["state"],
                  **({"at_risk": outcomes[i]["at_risk"]} if "at_risk" in outcomes[i] else {})})

    await asyncio.gather(*(worker() for _ in range(VERIFIED_AT_ONCE)))
    done = [o for o in outcomes if o is not None]
    return {"files": done, "healthy": len(done) == len(files) and all(o["state"] in HEALTHY for o in done),
            "stopped": len(done) < len(files)}
