"""Where the shares of a file are, for a node handed a capability it did not store (Tahoe-LAFS's model: the
storage index locates the shares).

A node that placed a file knows its placement (its file record), and says it in the hash table (xsc.dht: a
holders record signed by the placer, `placed`).  Any other node looks there first (`Table.find_holders`), then asks:
the holders the table named, then the peers it knows (at most FANOUT of them, those up), then the nodes their answers name (the node that
placed the file, and the holders it names), at most FANOUT more: a bounded search of two rounds.  Each answer
(`POST /v1/peer/locate {"si"}`, `answer` below) says which shares the node holds and which nodes it knows hold
the others; one of another shape is not read, and is struck against the node that gave it.  Nothing in an answer
is trusted: it only says where to ask, and every share found is checked against the manifest (whose hash the
capability holds) as any share is.  What a search learned is kept as a hint (bounded, in memory) for the next read
of that file, and searched again when the hint falls short.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any, Protocol

from ..errors import InvalidArgument, PeerUnreachable, XscError, shown
from ..identity import parse_public_id, public_id
from ..tasks import in_pool
from .core import erasure
from .share_store import ShareStore
from .core.wire import parse_storage_index

log = logging.getLogger(__name__)

LOCATE_PATH = "/v1/peer/locate"
FANOUT = 16  # nodes asked at once, per round
ROUNDS = 2  # the peers this node knows, then the nodes they name
ASK_TIMEOUT = 3.0  # seconds a node has to answer
HINTS = 4096  # files whose share locations are kept
MAX_NAMED = erasure.N + 1  # nodes one answer may name (the holders of the shares, and the uploader)
# Bytes of an answer read at most: the shares held, and MAX_NAMED node ids (52 characters) with the shares of each.
LOCATE_ANSWER = 4 * 1024

class Table(Protocol):
    """The hash table (xsc.dht.DhtService), as the locator uses it."""

    def announce(self, si: bytes, placement: list[str]) -> None: ...
    async def find_holders(self, si: bytes) -> list[str] | None: ...


class Peers(Protocol):
    def peer(self, node_id: str) -> Any: ...
    def up_peers(self) -> list: ...
    def known(self, node_id: str) -> bool: ...
    def up(self, node_id: str) -> bool: ...
    async def request(self, peer_url: str, method: str, path: str, **kwargs: Any) -> Any: ...


def parse_locate(body: Any) -> bytes:
    """The storage index of a locate request (`{"si": <64 hex digits>}`)."""
    if not isinstance(body, dict) or set(body) != {"si"} or not isinstance(body["si"], str):
        raise InvalidArgument('send {"si": <the storage index, 64 hex digits>}')
    return parse_storage_index(body["si"])


def _shares(value: Any) -> list[int] | None:
    """A list of share numbers as an answer says them, sorted and each once; None if it is not one."""
    if not isinstance(value, list) or not all(type(s) is int and 0 <= s < erasure.N for s in value):
        return None
    return sorted(set(value))


def read_answer(answer: Any) -> tuple[list[int], dict[str, list[int]]]:
    """(the shares the node says it holds, node -> shares it says that node holds), as `answer` names them:
    ValueError (saying why) for an answer of another shape, or holding more than an answer may (`Locator.answer`
    names at most erasure.N shares and MAX_NAMED nodes, by their ids)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("holders"), dict):
        raise ValueError('not {"shares": [...], "holders": {...}}')
    held, holders = _shares(answer.get("shares")), answer["holders"]
    if held is None or len(answer["shares"]) > erasure.N:
        raise ValueError(f"shares that are not at most {erasure.N} share numbers")
    if len(holders) > MAX_NAMED:
        raise ValueError(f"{len(holders)} nodes named, past the {MAX_NAMED} an answer names")
    named: dict[str, list[int]] = {}
    for node, theirs in holders.items():
        try:
            parse_public_id(node)
        except (XscError, ValueError, TypeError):
            raise ValueError(f"a holder that is not a node id: {shown(node, 60)!r}") from None
        shares = _shares(theirs)
        if shares is None:
            raise ValueError(f"node {node} named with shares that are not share numbers")
        named[node] = shares
    return held, named


class Locator:
    def __init__(self, *, me: str, store: ShareStore, pool: Executor, peers: Peers, table: Table | None = None) -> None:
        self.me = me
        self.table = table
        self.store = store
        self.pool = pool
        self.peers = peers
        self.hints: OrderedDict[bytes, dict[int, str]] = OrderedDict()
        # the nodes a file's last search could not reach: up by their last probe, maybe down since
        self.unreached: OrderedDict[bytes, list[str]] = OrderedDict()

    # --- the answering side -------------------------------------------------------------------
    def answer(self, si: bytes) -> dict[str, Any]:
        """What this node knows of a storage index: the shares it holds, and who holds the others (the placement,
        if it placed the file; the node that placed the shares it holds; what a search here learned)."""
        metas = self.store.share_metas(si)
        holders: dict[str, list[int]] = {}
        record = self.store.file_record(si)
        for s, node in enumerate((record or {}).get("placement") or []):
            if node not in (self.me, "this node"):
                holders.setdefault(node, []).append(s)
        for s, node in (self.hints.get(si) or {}).items():
            if node != self.me:
                holders.setdefault(node, []).append(s)
        for meta in metas:
            uploader = public_id(meta.uploader)
            if uploader != self.me:
                holders.setdefault(uploader, [])
        return {"shares": sorted(m.share for m in metas),
                "holders": dict(list(holders.items())[:MAX_NAMED])}

    # --- the searching side -------------------------------------------------------------------
    async def locate(self, si: bytes, search: bool = True, passed_over: frozenset[str] = frozenset()
                     ) -> dict[int, str]:
        """share -> the node holding it (this node's id for a share here), as far as it is known: the shares
        here, the hint of an earlier search, then (`search`) what a bounded search of the network finds.
        `passed_over`: nodes whose word failed a read of this file; a share one of them says it holds is taken
        from another node that says so too, if any."""
        found: dict[int, str] = {m.share: self.me for m in await in_pool(self.pool, self.store.share_metas, si)}
        firsthand = set(found)
        for s, node in (self.hints.get(si) or {}).items():
            if node not in passed_over:
                found.setdefault(s, node)
        if len(found) >= erasure.N or not search:
            return found
        asked: set[str] = {self.me}
        silent: list[str] = []
        named_by_table = await self._from_table(si, found)
        wave = [*named_by_table, *(d.id for d in self.peers.up_peers() if d.id not in named_by_table)]
        wave = [n for n in wave if n != self.me][:FANOUT]
        for _ in range(ROUNDS):
            if not wave:
                break
            asked.update(wave)
            answers = await asyncio.gather(*(self._ask(node, si, silent) for node in wave))
            named: list[str] = []
            # Two nodes may say they hold one share: the one whose word failed before is the one left out.
            for node, (held, _) in sorted(zip(wave, answers), key=lambda answered: answered[0] in passed_over):
                for s in held:
                    if s not in firsthand:  # a holder's own word beats another node's mention (a stale placement)
                        found[s] = node
                        firsthand.add(s)
            for node, (_, others) in zip(wave, answers):
                for other, theirs in others.items():
                    for s in theirs:
                        found.setdefault(s, other)
                    if other not in asked and other not in named and self.peers.known(other) \
                            and self.peers.up(other):
                        named.append(other)
            if len(found) >= erasure.N:
                break
            wave = named[:FANOUT]
        self.remember(si, found)
        self.note_unreached(si, silent)
        return found

    async def _from_table(self, si: bytes, found: dict[int, str]) -> list[str]:
        """The holders the hash table names (mentions, like a placement in an answer), those this node can ask."""
        placement = await self.table.find_holders(si) if self.table is not None else None
        for s, node in enumerate(placement or []):
            found.setdefault(s, node)
        return list(dict.fromkeys(n for n in placement or [] if n != self.me and self.peers.known(n)
                                  and self.peers.up(n)))

    def placed(self, si: bytes, placement: list[str]) -> None:
        """This node placed a file's shares: the table is told where they are (soon, not during the put)."""
        if self.table is not None and any(node != self.me for node in placement):
            self.table.announce(si, placement)

    async def _ask(self, node: str, si: bytes, silent: list[str]) -> tuple[list[int], dict[str, list[int]]]:
        try:
            answer = await asyncio.wait_for(self.peers.request(self.peers.peer(node).url, "POST", LOCATE_PATH,
                                                               json={"si": si.hex()}, to=node,
                                                               max_size=LOCATE_ANSWER), ASK_TIMEOUT)
            try:
                return read_answer(answer.json())
            except ValueError as err:  # nothing of it is taken, and its node is struck (net/peer_client.py)
                raise answer.shapeless(f"node {node} answered where the shares of {si.hex()} are with {err}") \
                    from None
        except (XscError, TimeoutError, OSError) as err:
            log.info("node %s did not say where the shares of %s are: %s", node, si.hex(), err)
            if isinstance(err, (PeerUnreachable, TimeoutError, OSError)):
                silent.append(node)
            return [], {}

    def note_unreached(self, si: bytes, nodes: list[str]) -> None:
        """Keep the nodes a file's search (or the read of its manifest) could not reach, said if nothing is found."""
        self.unreached.pop(si, None)
        if nodes:
            self.unreached[si] = list(dict.fromkeys(nodes))
            while len(self.unreached) > HINTS:
                self.unreached.popitem(last=False)

    def remember(self, si: bytes, found: dict[int, str]) -> None:
        """Keep where a file's shares were found (a hint, checked again at each read)."""
        elsewhere = {s: node for s, node in found.items() if node != self.me}
        if not elsewhere:
            return
        self.hints[si] = elsewhere
        self.hints.move_to_end(si)
        while len(self.hints) > HINTS:
            self.hints.popitem(last=False)

    def forget(self, si: bytes) -> list[str]:
        """Forget where a file's shares were thought to be; the nodes its last search could not reach."""
        self.hints.pop(si, None)
        return self.unreached.pop(si, [])


__all__ = ["FANOUT", "LOCATE_ANSWER", "LOCATE_PATH", "Locator", "ROUNDS", "parse_locate", "read_answer"]
