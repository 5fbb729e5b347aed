"""Forks of an ITC id asked under a name, pure: what both ends keep so that an answer lost on the way is given again.

A fork moves half of the giver's id to the asker for good: an answer that never arrives leaves that half with nobody
(the ids of the network no longer add up to the whole), and an asker that then went on with its stored id while the
giver had joined it into its own (`retire`) would share it.  So the asker names each request (`name`, random) and keeps
it before asking; the giver keeps what it gave for the peer's latest name and answers the same again to that name.
The asker asks again under the same name until an answer comes, whatever happens in between (other peers, restarts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ... import codec
from ...errors import InvalidArgument
from ...itc import Stamp

NAME_HEX = 32  # hex digits of a fork's name: 128 random bits
_NAME = re.compile(rf"[0-9a-f]{{{NAME_HEX}}}")


@dataclass
class Asked:
    """A fork this node asked `peer` for under `name` and has no answer to, giving back `retire` (hex) in it.
    `reached`: the peer may have it (a request written to it; or asked before this run, whatever came of it)."""

    peer: str
    name: str
    retire: str | None = None
    reached: bool = True

    def body(self) -> dict:
        return {"name": self.name} if self.retire is None else {"name": self.name, "retire": self.retire}


def encode_asked(asked: list[Asked]) -> bytes:
    return codec.dumps([{"peer": a.peer, "name": a.name, "retire": a.retire} for a in asked])


def decode_asked(raw: bytes | None) -> list[Asked]:
    return [Asked(a["peer"], a["name"], a["retire"]) for a in codec.loads(raw)] if raw else []


def fork_name(body: Any) -> str | None:
    """The name a peer's fork request goes by (None: unnamed, nothing remembered of it)."""
    name = body.get("name") if isinstance(body, dict) else None
    if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise InvalidArgument(f"name must be {NAME_HEX} lower-case hex digits", hint="name each fork asked at random")
    return name


def given_record(name: str, answer: dict, at: int) -> bytes:
    """What a giver keeps of the fork it gave a peer's request `name` (`at`: the order of forks given)."""
    return codec.dumps({"name": name, "at": at, **answer})


def given_answer(raw: bytes) -> tuple[str, int, dict]:
    """(name, at, answer) of a kept fork."""
    kept = codec.loads(raw)
    return kept["name"], kept["at"], {"stamp": kept["stamp"], "retired": kept["retired"]}


def taken(own: Stamp | None, give: Stamp, asked: Asked, retiring: Stamp | None, retiring_asked: bool) -> Stamp:
    """This node's id once `give` answered `asked`: the half joined into what it holds (`own`), after the events of the
    id it gave back in that request (that id is the giver's now, or nobody's when the giver would not take it back).
    A node yet to rejoin (`retiring`: its stored stamp) keeps that stored id too when no request of its gives it back
    (`retiring_asked`: one does, to a peer that may have taken it)."""
    stamp = give if own is None else own.join(give)
    if asked.retire is not None:
        stamp = stamp.join(Stamp.decode(bytes.fromhex(asked.retire)).peek())
    if retiring is not None:
        stamp = stamp.join(retiring.peek() if retiring_asked else retiring)
    return stamp
