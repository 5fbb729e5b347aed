"""Hypothesis strategies and builders shared by the allocator tests."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from hypothesis import strategies as st

from xsc.allocation import CapacitySlot, Commitment, NeedSlot, SlotFilter, Stamp
from xsc.allocation import step as allocation_step
from xsc.allocation.itc_ids import FORK_PATH
from xsc.errors import PeerUnreachable
from xsc.identity import NODE_KEY_FILE, Identity, write_secret
from xsc.node import appkeys

PEERS = ("a", "b", "c", "d", "e")
KINDS = ("storage", "compute")
LOCATIONS = ("any", "eu", "us", ("eu", "us"), ("asia", "us"))


def stamps(n: int) -> list[Stamp]:
    out = [Stamp.seed()]
    while len(out) < n:
        out.extend(out.pop(0).fork())
    return out


_STAMPS = dict(zip(("p", *PEERS), stamps(1 + len(PEERS))))


def commitment(pid: str, caps=(), needs=(), recognition=None, damping="1", ts: int = 1_000) -> Commitment:
    return Commitment(participant=pid, capacity_slots=caps, need_slots=needs, recognition=recognition or {},
                      damping_factor=Decimal(damping), stamp=_STAMPS.get(pid, Stamp.seed()).event(), timestamp=ts)


def cap(owner, sid, q, start=0, end=10, kind="storage", location="any", **kw) -> CapacitySlot:
    return CapacitySlot(id=sid, owner=owner, kind=kind, quantity=q, start=start, end=end, location=location, **kw)


def need(owner, sid, q, start=0, end=10, kind="storage", location="any", **kw) -> NeedSlot:
    return NeedSlot(id=sid, owner=owner, kind=kind, quantity=q, start=start, end=end, location=location, **kw)


@st.composite
def slot_fields(draw, simple: bool = False) -> dict:
    if simple:
        return {"kind": "storage", "start": 0, "end": 10, "location": "any"}
    start = draw(st.integers(0, 6))
    return {
        "kind": draw(st.sampled_from(KINDS + ("storage",) * 2)),
        "start": start,
        "end": start + draw(st.integers(1, 4)),
        "location": draw(st.sampled_from(LOCATIONS + ("any",) * 3)),
        "tags": draw(st.sampled_from(((), ("ssd",)))),
    }


@st.composite
def filters(draw) -> SlotFilter:
    if draw(st.integers(0, 3)):
        return SlotFilter()
    return SlotFilter(
        allow=draw(st.none() | st.lists(st.sampled_from(("p", *PEERS)), max_size=3, unique=True).map(tuple)),
        deny=draw(st.lists(st.sampled_from(("p", *PEERS)), max_size=2, unique=True).map(tuple)),
        require_tags=draw(st.sampled_from(((), ("ssd",)))),
    )


weights = st.dictionaries(st.sampled_from(("p", *PEERS)), st.integers(0, 5).map(Decimal), max_size=5)


@st.composite
def networks(draw, simple: bool = False, max_caps: int = 3, max_needs: int = 3):
    """(provider, [commitments of the peers]) with random slots, recognition and damping."""
    n_caps = draw(st.integers(1, max_caps))
    caps = [cap("p", f"c{i}", draw(st.integers(0, 120)), filters=draw(filters()) if not simple else SlotFilter(),
                **draw(slot_fields(simple))) for i in range(n_caps)]
    present = draw(st.lists(st.sampled_from(PEERS), min_size=1, max_size=5, unique=True))
    # Mostly recognise the peers that are there (0 stays possible), sometimes absent ones too.
    recognition = {**draw(weights), **{pid: Decimal(draw(st.integers(0, 5))) for pid in present}}
    provider = commitment("p", caps=caps, recognition=recognition)
    peers = []
    for pid in present:
        needs = [need(pid, f"n{i}", draw(st.integers(0, 80)), filters=draw(filters()) if not simple else SlotFilter(),
                      **draw(slot_fields(simple)))
                 for i in range(draw(st.integers(0 if not simple else 1, max_needs)))]
        back = {"p": Decimal(draw(st.integers(0, 3)))}
        peers.append(commitment(pid, needs=needs, recognition={**draw(weights), **back},
                                damping=draw(st.sampled_from(("1", "0.8", "0.5")))))
    return provider, peers


# Seconds a test's few in-process nodes wait for a peer to fork an allocation ITC id from before one seeds it
# (`market.allocation_fork_wait`): they know each other a moment after they start (the test peers them at once), where
# the default (3 s) leaves a network started together time to learn of itself.
FORK_WAIT = 1.0
# The fork wait of the nodes that join a test's first one (`joining`): longer than any test, so they never seed.
NEVER = 600.0


async def joining(node_factory, first, name: str, **settings):
    """A node that forks its ITC id from `first` once the test peers them, and can never seed one of its own: a node
    started alone seeds once its fork wait passes, and one knowing only peers without an id seeds if its node id is
    the smallest (on a slow machine, two nodes peered after their waits passed both seeded, their ids never to add
    up).  Its fork wait is NEVER, and its node id sorts after first's: `first`, started with FORK_WAIT, seeds whether
    it knows this node yet or not, and this one waits for it."""
    config, me = first.app[appkeys.CONFIG], first.app[appkeys.NODE].peers.identity.id
    key = Path(config.data_dir).parent / name / NODE_KEY_FILE
    if key.exists():  # started before in this test: its id is what it is
        assert Identity.load_or_create(key).id > me, f"{name}'s node id sorts before {me}: start it first"
    else:
        identity = Identity.mint(config.peers.min_difficulty)
        while identity.id <= me:
            identity = Identity.mint(config.peers.min_difficulty)
        key.parent.mkdir(parents=True, exist_ok=True)
        write_secret(key, identity.private_key().private_bytes_raw())
    market = {**settings.get("market", {}), "allocation_fork_wait": NEVER}
    return await node_factory(name, **{**settings, "market": market})


async def pair(node_factory, **settings):
    """Two in-process nodes that know each other, each holding the other's market commitment (the first seeds the ITC
    id FORK_WAIT s after it started, the other forks from it: `joining`)."""
    settings = {**settings, "market": {"allocation_fork_wait": FORK_WAIT, **settings.get("market", {})}}
    a = await node_factory("a", **settings)
    b = await joining(node_factory, a, "b", **settings)
    await a.app[appkeys.NODE].peers.add(b.app[appkeys.NODE].peers.url)
    await a.app[appkeys.NODE].market.fill_book()
    await b.app[appkeys.NODE].market.fill_book()
    return a, b


def following(recipient, providers, kind: str) -> bool:
    """Whether `recipient` holds each of `providers`' offers recognising it, and each provider subscribed at it to its
    needs of `kind`: a need it posts then reaches them all in one push, and its round waits for the asks of all of
    them (it waits only for the providers whose offers, recognising it, it holds when a first ask comes in)."""
    me, allocation = recipient.app[appkeys.IDENTITY].id, recipient.app[appkeys.NODE].allocation
    network, subscribers = allocation.network(), allocation.status()["subscribers"]
    for provider in providers:
        them = provider.app[appkeys.IDENTITY].id
        if them not in network or network[them].recognition.get(me, 0) <= 0:
            return False
        if not {"commitment", f"needs:{kind}"} & set(subscribers.get(them, ())):
            return False
    return True


def in_step(monkeypatch) -> None:
    """Rounds in step however slow the machine: a recipient's round waits for the asks of every provider it expects,
    and a provider's for its recipients' answers, however long they take, so a need several providers ask for is split
    among them all in the one receipt that answers them (docs/allocation.md, "Simulator and nodes").  The nodes bound
    that wait (10 allocation delays, 5 s at least), which a loaded machine overruns: a provider whose ask comes after
    it finds the need met by the others and gives it nothing."""
    monkeypatch.setattr(allocation_step, "STEP_WAIT_MIN", 3600.0)


class LosingForks:
    """A node's peers whose next `lose` answers to a fork it asked are lost on the way back: the peer forked and kept
    its half, the node sees its request time out."""

    def __init__(self, peers, lose: int = 1) -> None:
        self.peers, self.lose, self.lost = peers, lose, 0

    async def request(self, url: str, method: str, path: str, **kwargs):
        response = await self.peers.request(url, method, path, **kwargs)
        if path == FORK_PATH and self.lost < self.lose:
            self.lost += 1
            raise PeerUnreachable(f"peer {url} is unreachable: timed out", url=url, sent=True)
        return response


def measure(i) -> Fraction:
    """The share of the interval an ITC id owns."""
    return Fraction(i) if i in (0, 1) else (measure(i[0]) + measure(i[1])) / 2


def disjoint(stamps: list[Stamp]) -> bool:
    """No part of the interval is owned by two of the stamps' ids."""
    union = Stamp(0, 0)
    for s in stamps:
        union = union.join(Stamp(s.id, 0))
    return measure(union.id) == sum(measure(s.id) for s in stamps)


def whole(stamps: list[Stamp]) -> bool:
    """The ids together own the whole interval and no part twice (their shares add up to exactly 1)."""
    return disjoint(stamps) and sum(measure(s.id) for s in stamps) == 1
