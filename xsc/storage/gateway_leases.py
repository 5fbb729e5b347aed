"""Lease renewal: every share of a file this node stored held longer, here and on the holders of the others,
with what each renewal adds (what it is paid for)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from ..errors import IntegrityError, NotFound
from ..net.peer_client import their_words
from .core import erasure, layout, leases
from .core.capability import Capability
from .gateway_core import GatewayCore
from .remote import REMEDIES, Holder

log = logging.getLogger(__name__)


async def renew(gateway: GatewayCore, cap: Capability, duration: int, holders: Mapping[int, Holder] | None = None,
                names: list[str] | None = None, me: str = "this node") -> dict[str, Any]:
    """Extend every share's lease to now + `duration` (never shortening one): here, and on each holder in
    `holders` (the shares on other nodes; `names` their node ids).  A holder that does not answer, or
    answers wrong, keeps its share's lease as it was and is named in `not_renewed`.  `extended` says,
    per share renewed, how many bytes are held how many seconds longer (what a renewal is paid for)."""
    si = cap.storage_index
    record = await gateway.run(gateway.store.file_record, si)
    if record is None or record.get("capability") != str(cap):
        raise NotFound("this node uploaded no file with that capability",
                       hint="renew a file from the node that stored it; `xsc store ls` lists them")
    manifest = await gateway.run(gateway.manifest, cap)
    share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
    holders = dict(holders or {})
    names = list(names or [me] * erasure.N)
    now = int(time.time())
    target = now + leases.check_duration(duration)

    async def one(share: int, holder: Holder) -> dict:
        try:
            answer = await asyncio.wait_for(holder.renew(si, share, target), gateway.remote_timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer within {gateway.remote_timeout:g} s") from None
        if answer["lease_expiry"] < target:
            raise IntegrityError(f"it answered a lease ending at {answer['lease_expiry']}, before {target}")
        return answer

    results = await asyncio.gather(*(one(s, h) for s, h in holders.items()), return_exceptions=True)
    answers = {s: r for s, r in zip(holders, results) if not isinstance(r, BaseException)}
    refused = {s: r for s, r in zip(holders, results) if isinstance(r, BaseException)}
    # In the holder's words, without the request it refused (its path names the share): said once per reason.
    failures = {s: (_code(r), their_words(r)) for s, r in refused.items()}
    remedy = _remedy(refused, names)
    local = tuple(s for s in range(erasure.N) if s not in holders)
    done = await gateway.run(gateway.store.renew, si, target, local,
                           {s: a["lease_expiry"] for s, a in answers.items()})
    gone = "not held here any more (repair the file)"
    failures.update({s: (gone, gone) for s in local if s not in done})
    changes = {**{s: (a["previous"], a["lease_expiry"]) for s, a in answers.items()}, **done}
    for s, (_, why) in failures.items():
        log.warning("lease of share %d of %s not renewed on node %s: %s", s, si.hex(), names[s], why)
    record = await gateway.run(gateway.store.file_record, si) or record
    return {
        "capability": str(cap), "requested": target, "lease_expiry": record.get("lease_expiry"),
        "renewed": [{"share": s, "node": names[s], "lease_expiry": changes[s][1]} for s in sorted(changes)],
        "not_renewed": _grouped(failures, names), **({"hint": remedy} if remedy else {}),
        "extended": [{"share": s, "node": names[s], "bytes": share_bytes, "seconds": seconds}
                     for s in sorted(changes)
                     if (seconds := leases.extension_seconds(changes[s][0], changes[s][1], now)) > 0],
    }


def _code(err: BaseException) -> str:
    """What kind of refusal `err` is: the holder's problem code, else what went wrong here (no answer, a wrong one)."""
    return (getattr(err, "details", {}) or {}).get("peer_code") or getattr(err, "code", None) or type(err).__name__


def _grouped(failures: Mapping[int, tuple[str, str]], names: list[str]) -> dict[str, str]:
    """Each holder's refusals, one per reason with how many shares and which (`2 shares (4, 5): why`, `share 3: why`):
    a holder that refuses the shares it holds refuses them all alike, said once, not once per share."""
    groups: dict[tuple[str, str], list[int]] = {}
    said: dict[tuple[str, str], str] = {}
    for s in sorted(failures):
        key = (names[s], failures[s][0])
        groups.setdefault(key, []).append(s)
        said.setdefault(key, failures[s][1])  # the first share's words (a figure in them may differ by share)
    out: dict[str, str] = {}
    for (node, code), shares in groups.items():
        which = f"share {shares[0]}" if len(shares) == 1 else f"{len(shares)} shares ({', '.join(map(str, shares))})"
        out[node] = "; ".join(filter(None, (out.get(node), f"{which}: {said[node, code]}")))
    return out


def _remedy(refused: Mapping[int, BaseException], names: list[str]) -> str:
    """What the user can do about the first holder that refused the renewal for a standing reason of its own (its
    terms: a prepayment; its quarantine of this node), as a put's refusal says it (remote.REMEDIES); "" when none did
    (a holder that did not answer: retrying once it is back is all there is)."""
    for share, err in sorted(refused.items()):
        code = (getattr(err, "details", {}) or {}).get("peer_code")
        if code in REMEDIES:
            return REMEDIES[code].format(node=names[share])
    return ""
