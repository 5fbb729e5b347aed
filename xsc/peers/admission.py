"""Admission and quarantine: which peers this node deals with at all (docs/security.md).

A peer is admitted when
- its node id carries at least `peers.min_difficulty` bits of proof of work (`identity.id_difficulty`, as
  Storj's node ids do): a stranger cannot make thousands of ids to flood directories, books and quotas;
- on a closed network (`peers.grid_secret`), it proves it knows the grid secret: an HMAC of every signed
  request (`X-Xsc-Grid`) and of every descriptor it signs (`grid`);
- it is not quarantined;
- its descriptor's URL does not name this machine (loopback, localhost, 0.0.0.0), unless this node's own URL does
  (a devnet): a stranger cannot point the node's requests at services of its own machine.

The first three are checked on every signed request (node/peer_auth.py, before its body is read or any nonce or
rate is counted), and all four on every descriptor (PeerService.accept, before it is stored).

`Quarantine` (Storj's containment): a peer that misbehaves `strikes` times within an hour (failed audits,
receipts that fail their signature or were refused, quota floods, answers that prove it misbehaved:
net/peer_client.py) is refused (403 `quarantined`) for
`duration` seconds, its commitments are dropped from the book and it is never matched.  Kept in LevelDB
(`keys.peer_quarantine`), at most CAPACITY peers (the one whose quarantine ends soonest makes room: found in a heap
of the quarantines' ends, not by a look at each of them).  The strikes of the last hour are kept there too
(`keys.peer_strikes`, written with each strike, with when each kind counted at most once a minute last counted), so
a restart of this node forgets none and counts no more of them: at most STRIKERS peers, those struck longest ago
forgotten first, and a peer's strikes older than the hour dropped as it starts.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping


from ..config import names_this_machine
from ..db import Database
from ..errors import NotAdmitted, PeerNotFound, Quarantined
from ..identity import HEADER_GRID, SignedRequest, check_grid_proof, id_difficulty, parse_public_id, public_id
from .core.descriptors import NodeDescriptor, signed_bytes
from .store import PeerStore, PeerWrites

log = logging.getLogger(__name__)

CAPACITY = 10_000  # quarantined peers remembered at most
STRIKE_WINDOW = 3600.0  # seconds within which `strikes` misbehaviours quarantine a peer
STRIKERS = 10_000  # peers whose recent misbehaviours are counted at most (least recently struck forgotten)


class Quarantine:
    def __init__(self, db: Database, *, strikes: int, duration: int, clock: Callable[[], float] = time.time,
                 capacity: int = CAPACITY) -> None:
        self._store = PeerStore(db)
        self.strikes = strikes
        self.duration = duration
        self._clock = clock
        self.capacity = capacity
        self.on_quarantined: list[Callable[[str], None]] = []  # told of every peer put in quarantine (the market)
        self._entries: dict[str, dict] = {}
        # (until, node) of every quarantine in `_entries`, and of some since lifted or put again (passed over
        # when they come to the top, and dropped whenever they are as many as the quarantines in force)
        self._ends: list[tuple[float, str]] = []
        self._struck: OrderedDict[str, deque[float]] = OrderedDict()
        # Of peers in `_struck`: when each kind counted at most once per `every` was last counted (kept with the
        # strikes, so a restart does not count one more).
        self._last: dict[str, dict[str, float]] = {}
        now = clock()
        with self._store.batch() as batch:  # compacted on start: ended quarantines are dropped
            for node_key, entry in self._store.quarantines():
                try:
                    node = public_id(node_key)
                    ends = float(entry["until"])
                except (ValueError, TypeError, KeyError):
                    batch.lift(node_key)
                    continue
                if ends <= now:
                    batch.lift(node_key)
                else:
                    self._entries[node] = entry
            self._struck, self._last = self._read_strikes(batch, now)
        self._ends = [(float(e["until"]), node) for node, e in self._entries.items()]
        heapq.heapify(self._ends)

    def _read_strikes(self, batch: PeerWrites,
                      now: float) -> tuple[OrderedDict[str, deque[float]], dict[str, dict[str, float]]]:
        """The strikes kept of the last hour, least recently struck first, and when their peers' limited kinds were
        last counted; the rest dropped in `batch`."""
        kept: list[tuple[float, str, deque[float], dict[str, float]]] = []
        for node_key, record in self._store.all_strikes():
            try:
                node = public_id(node_key)
                times, last = (record, {}) if isinstance(record, list) else (record["at"], record["last"])
                recent = deque(sorted(float(t) for t in times if now - STRIKE_WINDOW <= float(t) <= now))
                last = {str(kind): float(t) for kind, t in last.items() if float(t) <= now}
            except (ValueError, TypeError, KeyError, AttributeError):
                batch.forget_strikes(node_key)
                continue
            if not recent or node in self._entries:  # aged out, or counted by a quarantine already
                batch.forget_strikes(node_key)
            else:
                kept.append((recent[-1], node, recent, last))
        kept.sort(key=lambda k: k[:2])
        for _, node, _, _ in kept[:-STRIKERS]:
            batch.forget_strikes(parse_public_id(node))
        kept = kept[-STRIKERS:]
        return (OrderedDict((node, recent) for _, node, recent, _ in kept),
                {node: last for _, node, _, last in kept if last})

    def __len__(self) -> int:
        return len(self._entries)

    def active(self, node_id: str) -> dict | None:
        """The quarantine of `node_id` if it is in force, else None (an ended one is forgotten)."""
        entry = self._entries.get(node_id)
        if entry is None:
            return None
        if entry["until"] <= self._clock():
            self.lift(node_id)
            return None
        return entry

    def check(self, node_id: str) -> None:
        entry = self.active(node_id)
        if entry is not None:
            left = max(1, int(entry["until"] - self._clock()))
            raise Quarantined(f"node {node_id} is quarantined here for {left} s more: {entry['reason']}",
                              hint="the operator of this node can lift it: xsc peers quarantine rm NODE_ID",
                              node=node_id, until=int(entry["until"]))

    def strike(self, node_id: str, reason: str, *, kind: str = "", every: float = 0.0) -> bool:
        """Note one misbehaviour of `node_id`; quarantine it at the `strikes`-th within an hour (misbehaviours of
        one `kind` count at most once per `every` seconds, at most the hour).  Whether it is (now) quarantined."""
        if self.active(node_id) is not None:
            return True
        now = self._clock()
        last = dict(self._last.get(node_id, {}))
        if every:
            if kind in last and now - last[kind] < every:
                return False
            last[kind] = now
        struck = self._struck.pop(node_id, None) or deque()
        struck.append(now)
        while struck and struck[0] < now - STRIKE_WINDOW:
            struck.popleft()
        if len(struck) < self.strikes:
            self._struck[node_id] = struck
            if last:
                self._last[node_id] = last
            # Written with the strike (not synced: a kill -9 of this process loses none, a crash of the machine
            # at most the last), so a restart does not wipe a misbehaving peer's slate.
            with self._store.batch() as batch:
                batch.strikes(parse_public_id(node_id), list(struck), last)
                while len(self._struck) > STRIKERS:
                    forgotten = self._struck.popitem(last=False)[0]
                    self._last.pop(forgotten, None)
                    batch.forget_strikes(parse_public_id(forgotten))
            return False
        self.put(node_id, f"{len(struck)} times within an hour: {reason}")
        return True

    def put(self, node_id: str, reason: str, duration: float | None = None) -> dict:
        key = parse_public_id(node_id)
        now = self._clock()
        entry = {"node": node_id, "reason": reason[:300], "since": now,
                 "until": now + (self.duration if duration is None else duration)}
        with self._store.batch() as batch:
            while len(self._entries) >= self.capacity and node_id not in self._entries:
                soonest = self._soonest()
                batch.lift(parse_public_id(soonest))
                del self._entries[soonest]
            batch.quarantine(key, entry)
            batch.forget_strikes(key)
        self._entries[node_id] = entry
        heapq.heappush(self._ends, (entry["until"], node_id))
        if len(self._ends) > 2 * len(self._entries) + 64:
            self._ends = [(e["until"], node) for node, e in self._entries.items()]
            heapq.heapify(self._ends)
        self._struck.pop(node_id, None)
        self._last.pop(node_id, None)
        log.warning("quarantined node %s until %s: %s", node_id, time.strftime("%Y-%m-%d %H:%M:%S",
                    time.gmtime(entry["until"])), entry["reason"])
        for hook in self.on_quarantined:
            hook(node_id)
        return entry

    def _soonest(self) -> str:
        """The node whose quarantine in force ends soonest (taken off the heap: its caller removes it)."""
        while True:
            until, node = heapq.heappop(self._ends)
            entry = self._entries.get(node)
            if entry is not None and entry["until"] == until:
                return node

    def lift(self, node_id: str) -> bool:
        """End the quarantine of `node_id` (the operator's `xsc peers quarantine rm`); whether there was one."""
        key = parse_public_id(node_id)
        if self._entries.pop(node_id, None) is None:
            return False
        with self._store.batch() as batch:
            batch.lift(key)
            batch.forget_strikes(key)
        self._struck.pop(node_id, None)
        self._last.pop(node_id, None)
        return True

    def remove(self, node_id: str) -> dict:
        if not self.lift(node_id):
            raise PeerNotFound(f"node {node_id} is not quarantined here",
                               hint="xsc peers quarantine ls lists the quarantined nodes")
        return {"lifted": node_id}

    def list(self) -> list[dict]:
        now = self._clock()
        return [{**e, "left": max(0, int(e["until"] - now))} for e in sorted(self._entries.values(),
                                                                             key=lambda e: e["until"])
                if e["until"] > now]


class Admission:
    """Whether a peer's requests and descriptors are taken here (see the module docstring)."""

    def __init__(self, *, min_difficulty: int, grid_secret: str, quarantine: Quarantine | None = None,
                 on_this_machine: bool = True) -> None:
        self.min_difficulty = min_difficulty
        self.grid_secret = grid_secret
        self.quarantine = quarantine
        # Whether this node's own URL names this machine (a devnet on loopback): only then can a peer be at such a
        # URL.  Elsewhere a descriptor naming one points this node's requests at its own machine's services.
        self.on_this_machine = on_this_machine

    def check_request(self, signed: SignedRequest, headers: Mapping[str, str]) -> None:
        """Raise NotAdmitted or Quarantined for a verified request this node does not take from its sender."""
        self.check_id(signed.sender, signed.sender_key)
        if self.grid_secret and not check_grid_proof(self.grid_secret, signed.message(), headers.get(HEADER_GRID)):
            raise NotAdmitted(f"node {signed.sender} did not prove it belongs to this node's grid",
                              hint=f"closed network: set the same peers.grid_secret on every node (it signs an "
                                   f"HMAC of each request in {HEADER_GRID})", node=signed.sender)
        if self.quarantine is not None:
            self.quarantine.check(signed.sender)

    def check_id(self, node_id: str, key: bytes) -> None:
        bits = id_difficulty(key)
        if bits < self.min_difficulty:
            raise NotAdmitted(f"node {node_id} has {bits} bits of proof of work in its id; this node admits "
                              f"peers with at least {self.min_difficulty}",
                              hint="a node mints its id on its first start with its peers.min_difficulty bits: "
                                   "start it on a new data dir with peers.min_difficulty at least as high",
                              node=node_id, difficulty=bits, required=self.min_difficulty)

    def refusal_hint(self, descriptor: NodeDescriptor) -> str:
        """What this node's operator can do about `refusal(descriptor)`: the setting that would admit it."""
        bits = id_difficulty(descriptor.key)
        if bits < self.min_difficulty:
            return (f"to admit ids with {bits} bits (a devnet's have 0): xsc config set peers.min_difficulty {bits}, "
                    "then restart this node")
        if self.grid_secret or descriptor.grid:
            return "closed network: set the same peers.grid_secret on every node"
        return "docs/security.md says which peers a node admits"

    def refusal(self, descriptor: NodeDescriptor, *, quarantine: bool = True) -> str | None:
        """Why a (valid) descriptor is not taken here, or None (`quarantine`: counting quarantines)."""
        bits = id_difficulty(descriptor.key)
        if bits < self.min_difficulty:
            return f"{bits} bits of proof of work in its id, fewer than {self.min_difficulty}"
        if self.grid_secret and not check_grid_proof(self.grid_secret, signed_bytes(descriptor.to_json()),
                                                     descriptor.grid):
            return "no proof that it knows this grid's secret"
        if not self.grid_secret and descriptor.grid:  # no grid's node sent it here: a field added on its way
            return "a grid proof, which no node of an open network signs (its signature does not cover it)"
        if quarantine and self.quarantine is not None and self.quarantine.active(descriptor.id) is not None:
            return "quarantined"
        if not self.on_this_machine and names_this_machine(descriptor.url):
            return f"its URL {descriptor.url} names this machine, where no peer of a node reached elsewhere can be"
        return None


__all__ = ["Admission", "CAPACITY", "Quarantine"]
