"""A bootstrapping node's sample (market/recognition.py, `_Sample`) is kept up with the peers whose descriptor or
probe history changed, not made of every known peer at each probe round: whatever the probes, audits, joins,
departures, clocks and user weights, it names the peers a plain ranking of every known peer names (`rank_derived`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings, strategies as st

from xsc.db import open_database
from xsc.health.core.stats import BUCKET_MS, Availability
from xsc.identity import Identity
from xsc.market.core.recognition import SETTLED_MS, pair_rank, rank_derived
from xsc.market.recognition import Recognition
from xsc.net.addresses import url_network

ME = Identity.generate().id
PEERS = [Identity.generate().id for _ in range(12)]
START_MS = 1_700_000_000_000


@dataclass
class _Peer:
    id: str
    url: str


class _Directory:
    """What Recognition reads of the peers, with the changes the node's peer service says: whose descriptor or probe
    history changed since a version (None once they are no longer all remembered), and the 5-minute bucket."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.urls: dict[str, str] = {}
        self.seen: dict[str, Availability] = {}
        self.changes: list[str] = []
        self.remembered_from = 0  # changes before this one are forgotten

    def changed(self, peer: str) -> None:
        self.changes.append(peer)

    def peers(self) -> list[_Peer]:
        return [_Peer(p, url) for p, url in sorted(self.urls.items())]

    def get(self, peer: str) -> _Peer | None:
        return _Peer(peer, self.urls[peer]) if peer in self.urls else None

    def availability(self, peer: str) -> Availability:
        return self.seen.get(peer) or Availability(None, None, 0, 0, None, 0, None, None, None, None)

    def _bucket(self) -> int:
        now = int(self.clock() * 1000)
        return now - now % BUCKET_MS

    def state_version(self) -> tuple:
        return len(self.changes), self._bucket()

    def availability_version(self) -> tuple:
        return 0, len(self.changes), self._bucket()

    def availability_changed_since(self, version: tuple) -> set[str] | None:
        return None if version[1] < self.remembered_from else set(self.changes[version[1]:])


def _plain(recognition: Recognition, directory: _Directory, now: int) -> dict[str, Decimal]:
    """The weights a bootstrapping node publishes, made of every known peer."""
    up = {d.id: w for d in directory.peers() if d.id != ME and d.id not in recognition.user_weights
          and (w := recognition.derived_weight(d.id, bootstrapping=True)) > 0}
    settled = {p for p in up if (since := directory.availability(p).up_since) is not None and now - since >= SETTLED_MS}
    networks = {p: url_network(directory.urls[p]) for p in up}
    kept = rank_derived(ME, up, {}, set(), recognition.at_most, b"", networks=networks, settled=settled)
    weights = {**{p: up[p] for p in kept}, **recognition.user_weights}
    return {p: w for p, w in sorted(weights.items()) if w > 0 and p != ME}


peer = st.sampled_from(PEERS)
steps = st.one_of(
    st.tuples(st.just("join"), peer, st.integers(0, 3), st.integers(1, 250)),
    st.tuples(st.just("leave"), peer),
    # (up for a little under the hour that settles it, mostly: the clock's steps then settle peers between probes)
    st.tuples(st.just("probe"), peer, st.sampled_from([None, 0.0, 0.3, 0.5, 0.75, 0.96, 1.0]), st.booleans(),
              st.integers(SETTLED_MS - 15 * 60_000, SETTLED_MS + 60_000) | st.integers(0, 2 * SETTLED_MS),
              st.sampled_from([None, True, False])),
    st.tuples(st.just("time"), st.integers(1, 10 * 60_000) | st.integers(1, 2 * SETTLED_MS)),
    st.tuples(st.just("back"), st.integers(1, SETTLED_MS)),
    st.tuples(st.just("forget")),
    st.tuples(st.just("weigh"), peer, st.sampled_from([None, Decimal("0"), Decimal("2")])),
)


def _probe(directory: _Directory, peer: str, ratio: float | None, up_since: int | None, *, up: bool = True,
           audit: bool | None = None) -> None:
    """`peer` probed: its history (so its availability) changed, as the peer service says."""
    now = int(directory.clock() * 1000)
    directory.seen[peer] = Availability(ratio, ratio, 10, 100, 1.0, 0, up if ratio is not None else None, now, now,
                                        None, last_audit=None if audit is None else {"ok": audit}, up_since=up_since)
    directory.changed(peer)


def _bootstrapping(tmp_path, peers: dict[str, str]):
    """A node that traded with nobody, its directory holding `peers` (id -> URL), its clock 10 s into a 5-minute
    bucket: (its recognition, its directory, its clock), its sample recognising one peer."""
    clock = _Clock()
    clock.ms -= clock.ms % BUCKET_MS - 10_000
    directory = _Directory(clock)
    directory.urls.update(peers)
    recognition = Recognition(db=open_database(tmp_path / "db"), me=ME, peers=directory, at_most=1, clock=clock)
    return recognition, directory, clock


def test_a_peer_whose_hour_up_ends_between_probes_of_others_takes_its_place_among_the_settled(tmp_path) -> None:
    """Peers up for an hour rank first: one whose hour ends while only other peers are probed ranks with them from
    then on, though no change of its own says so."""
    newer, older, other = sorted(PEERS[:3], key=lambda p: pair_rank(ME, p))  # `newer` first among equals
    recognition, directory, clock = _bootstrapping(tmp_path, {newer: "https://10.0.1.1:7000",
                                                             older: "https://10.0.2.1:7000",
                                                             other: "https://10.0.3.1:7000"})
    _probe(directory, older, 1.0, clock.ms - 2 * SETTLED_MS)
    _probe(directory, newer, 1.0, clock.ms - SETTLED_MS + 60_000)
    assert list(recognition.weights()) == [older]  # (settled: before `newer`, which ranks first among equals)
    clock.ms += 90_000  # (the same 5-minute bucket)
    _probe(directory, other, None, None)  # a probe round of another peer, which stays unproven
    assert recognition.weights() == _plain(recognition, directory, clock.ms) == {newer: Decimal("1.0")}


def test_a_peer_that_becomes_an_equal_of_the_best_as_the_best_falls_is_ranked_with_them(tmp_path) -> None:
    """While bootstrapping, peers within 0.5 of the best weight are equals, ranked by the pair alone: when the best
    falls, a peer that came within 0.5 of it, with no change of its own, ranks among them."""
    near, equal, best = sorted(PEERS[:3], key=lambda p: pair_rank(ME, p))  # `near` first among equals
    recognition, directory, clock = _bootstrapping(tmp_path, {near: "https://10.0.1.1:7000",
                                                             equal: "https://10.0.2.1:7000",
                                                             best: "https://10.0.3.1:7000"})
    _probe(directory, best, 1.0, None)
    _probe(directory, equal, 0.9, None)
    _probe(directory, near, 0.4, None)
    assert list(recognition.weights()) == [equal]  # (`near`, 0.6 below the best, is not an equal)
    _probe(directory, best, 0.9, None)
    assert recognition.weights() == _plain(recognition, directory, clock.ms) == {near: Decimal("0.4")}


class _Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> float:
        return self.ms / 1000


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=60), st.integers(1, 3))
def test_the_sample_kept_with_the_peers_changes_is_the_one_made_of_every_peer(ops, at_most) -> None:
    clock = _Clock()
    directory = _Directory(clock)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(Path(tmp) / "db")
        try:
            recognition = Recognition(db=db, me=ME, peers=directory, at_most=at_most, clock=clock)
            for op in ops:
                if op[0] == "join":
                    directory.urls[op[1]] = f"https://10.0.{op[2]}.{op[3]}:7000"  # 4 networks: one place each
                    directory.changed(op[1])
                elif op[0] == "leave":
                    directory.urls.pop(op[1], None)
                    directory.seen.pop(op[1], None)
                    directory.changed(op[1])
                elif op[0] == "probe":
                    _, p, ratio, up, since, audit = op
                    _probe(directory, p, ratio, None if ratio is None else clock.ms - since, up=up, audit=audit)
                elif op[0] == "time":
                    clock.ms += op[1]
                elif op[0] == "back":
                    clock.ms -= op[1]
                elif op[0] == "forget":
                    directory.remembered_from = len(directory.changes) + 1
                else:
                    recognition.set_weight(op[1], op[2])
                assert recognition.weights() == _plain(recognition, directory, clock.ms), op
        finally:
            db.close()
