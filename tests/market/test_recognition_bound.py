"""The recognition a node publishes is bounded (market/recognition.py, `market.recognised_at_most`): the peers it
exchanged most money with, or while none has earned anything a sample of its own, and every weight its user set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from xsc import codec, keys
from xsc.allocation import Stamp
from xsc.db import open_database
from xsc.errors import InvalidArgument
from xsc.health.core.stats import Availability
from xsc.identity import Identity
from xsc.market import sign_commitment
from xsc.market.core.book import MAX_RECOGNITION
from xsc.market.core.recognition import fold, pair_rank, rank_derived, worth
from xsc.market.recognition import Recognition

PEERS = [Identity.generate().id for _ in range(40)]


@dataclass
class _Peer:
    id: str
    url: str


class _Peers:
    """What Recognition reads of the peer directory: the peers, their availability, a version of both."""

    def __init__(self, ids: list[str], ratios: dict[str, float] | None = None, urls: dict[str, str] | None = None,
                 up_since: dict[str, int] | None = None) -> None:
        self.ids = ids
        self.ratios = ratios or {}  # peer -> its availability over 24 h (default 1.0)
        self.urls = urls or {}  # peer -> its URL (default: a listener of its own on this node's network)
        self.up_since = up_since or {}  # peer -> when it was first seen up (ms; default: not known)

    def peers(self) -> list[_Peer]:
        return [_Peer(i, self.urls.get(i, f"https://10.{n // 250}.{n % 250}.1:7000")) for n, i in enumerate(self.ids)]

    def get(self, peer: str) -> _Peer | None:
        return next((p for p in self.peers() if p.id == peer), None)

    def availability(self, peer: str) -> Availability:
        ratio = self.ratios.get(peer, 1.0)
        return Availability(ratio, ratio, 10, 100, 1.0, 0, True, 0, 0, None, up_since=self.up_since.get(peer))

    def state_version(self) -> tuple:
        return (len(self.ids),)


def _recognition(tmp_path, me: str, at_most: int = 16, ratios: dict[str, float] | None = None) -> Recognition:
    db = open_database(tmp_path / me[:8])
    return Recognition(db=db, me=me, peers=_Peers(PEERS, ratios), at_most=at_most)


def test_a_node_publishes_at_most_its_bound_and_once_a_peer_earned_only_those_that_earned(tmp_path) -> None:
    me = Identity.generate().id
    recognition = _recognition(tmp_path, me)
    assert len(recognition.weights()) == 16  # bootstrapping: nobody earned anything yet
    chosen = recognition.weights()
    partner = next(p for p in PEERS[2:30] if p not in chosen)  # one that the sample did not take
    recognition.note_paid(partner, 500, by_them=True)
    assert recognition.weights() == {partner: Decimal(2)}  # available (1) plus its share of the money (1)
    recognition.note_paid(PEERS[1], 100, by_them=False)
    weights = recognition.weights()
    assert set(weights) == {partner, PEERS[1]} and weights[partner] > weights[PEERS[1]]
    # The user's own weights are published besides, whatever they are.
    for peer in PEERS[-5:]:
        recognition.set_weight(peer, Decimal(3))
    weights = recognition.weights()
    assert all(weights[p] == 3 for p in PEERS[-5:]) and len(weights) == 7


def test_the_money_counters_keep_the_peers_that_exchanged_most_whatever_number_of_ids_pay_a_little(
        tmp_path, monkeypatch) -> None:
    """Any id that pays this node a micro-credit is counted: past MOST_COUNTED peers each way, the one that exchanged
    least goes, never a newcomer's first amount, and a partner's counter is untouched."""
    from xsc.market import recognition as module

    monkeypatch.setattr(module, "MOST_COUNTED", 16)
    recognition = _recognition(tmp_path, Identity.generate().id)
    partner, supplier = PEERS[0], PEERS[1]
    recognition.note_paid(partner, 500, by_them=True)
    recognition.note_paid(supplier, 300, by_them=False)
    for n in range(1000):
        fresh = f"fresh{n}"
        recognition.note_paid(fresh, 1, by_them=True)
        recognition.note_paid(fresh, 1, by_them=False)
        counters = recognition.counters()
        assert counters["paid_by"][fresh] == counters["delivered_by"][fresh] == 1
        assert len(counters["paid_by"]) <= 16 and len(counters["delivered_by"]) <= 16
        assert set(counters["recent"]) == set(counters["paid_by"]) | set(counters["delivered_by"])
    assert recognition.earned(partner) == 500 and recognition.earned(supplier) == 300
    # Counters written before they were bounded are read back bounded, those that exchanged most kept.
    db = open_database(tmp_path / "before")
    db.put(keys.MARKET_SELF, codec.dumps({"paid_by": {f"old{n}": n + 1 for n in range(100)}, "delivered_by": {}}))
    again = Recognition(db=db, me=Identity.generate().id, peers=_Peers(PEERS))
    assert set(again.counters()["paid_by"]) == {f"old{n}" for n in range(84, 100)}


def test_a_peer_that_earned_but_never_answered_a_probe_is_not_recognised(tmp_path) -> None:
    me = Identity.generate().id
    db = open_database(tmp_path / "db")
    peers = _Peers(PEERS)
    peers.availability = lambda peer: None if peer == PEERS[0] else Availability(1.0, 1.0, 10, 100, 1.0, 0, True, 0, 0,
                                                                                None)
    recognition = Recognition(db=db, me=me, peers=peers, at_most=4)
    recognition.note_paid(PEERS[0], 900, by_them=True)  # down: so the node is still bootstrapping
    weights = recognition.weights()
    assert PEERS[0] not in weights and len(weights) == 4
    recognition.note_paid(PEERS[1], 1, by_them=True)
    assert set(recognition.weights()) == {PEERS[1]}
    db.close()


_ids = st.sampled_from(PEERS)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_ids, st.integers(min_value=1, max_value=10**9), min_size=1, max_size=12),
       st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=60, unique=True),
       st.integers(min_value=1, max_value=20), st.binary(min_size=32, max_size=32))
def test_no_number_of_ids_that_earned_nothing_takes_a_place_from_one_that_earned(earned, grinds, at_most,
                                                                                  secret) -> None:
    """Fresh ids, however many and however chosen (ground to any bytes), take no place while a peer that earned is
    up; those kept earned the most, and an id's bytes decide only exact ties of money, under this node's secret."""
    me = PEERS[-1]
    fresh = [b.hex() for b in grinds]
    traders = {p: m for p, m in earned.items() if p != me}
    up = {p: Decimal(1) for p in [*traders, *fresh]}
    kept = rank_derived(me, up, traders, set(), at_most, secret)
    if not traders:
        return
    assert not set(kept) & set(fresh) and len(kept) == min(at_most, len(traders))
    least_kept = min(traders[p] for p in kept)
    assert all(traders[p] <= least_kept for p in traders if p not in kept)
    # A peer whose last audit failed comes after every one with a clean audit, whatever it earned.
    worst = max(traders, key=traders.get)
    after = rank_derived(me, up, traders, {worst}, len(traders), secret)
    assert after[-1] == worst


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=1, max_value=40))
def test_equal_peers_are_sampled_differently_by_each_node(tmp_path_factory, at_most: int) -> None:
    tmp = tmp_path_factory.mktemp("r")
    samples = [frozenset(_recognition(tmp, Identity.generate().id, at_most).weights()) for _ in range(4)]
    assert all(len(s) == at_most for s in samples)
    if at_most < 20:
        assert len(set(samples)) > 1  # not the same few peers recognised by everyone


def test_the_peers_a_node_recognises_mostly_recognise_it_too(tmp_path) -> None:
    """A node's neighbourhood is those it recognises and those that recognise it: with equal peers ranked the same
    from both ends of a pair, it stays near the bound instead of nearing twice the bound."""
    chosen = {me: set(_recognition(tmp_path, me, at_most=8).weights()) for me in PEERS}
    neighbourhood = [len(chosen[me] | {p for p in PEERS if me in chosen[p]}) for me in PEERS]
    assert sum(neighbourhood) / len(PEERS) <= 1.5 * 8, neighbourhood


@settings(max_examples=5, deadline=None)
@given(st.randoms(use_true_random=False))
def test_availability_seen_a_little_differently_from_each_end_keeps_the_choices_mutual(tmp_path_factory, rng) -> None:
    """Each node sees each peer's availability through its own probes: a peer probed a few times shows 0.5 to one
    node for a single failed probe and 1.0 to another.  Such differences do not break the pairs: the neighbourhoods
    stay near the bound, as they do when every peer looks the same."""
    tmp = tmp_path_factory.mktemp("r")
    seen = {me: {p: rng.choice((0.5, 0.6, 0.8, 0.9, 1.0)) for p in PEERS} for me in PEERS}
    chosen = {me: set(_recognition(tmp, me, at_most=6, ratios=seen[me]).weights()) for me in PEERS}
    neighbourhood = [len(chosen[me] | {p for p in PEERS if me in chosen[p]}) for me in PEERS]
    assert sum(neighbourhood) / len(PEERS) <= 1.5 * 6, neighbourhood


NOW = 1_700_000_000.0
HOURS_AGO = int(NOW * 1000) - 5 * 3_600_000


def _ground(me: str, count: int) -> list[str]:
    """`count` fresh ids ground against `me`: the ones of many that rank first by the pair's hash."""
    return sorted((os.urandom(32).hex() for _ in range(20 * count)), key=lambda p: pair_rank(me, p))[:count]


def _bootstrapping(tmp_path, me: str, peers: _Peers) -> set[str]:
    db = open_database(tmp_path / me[:8])
    chosen = set(Recognition(db=db, me=me, peers=peers, at_most=6, clock=lambda: NOW).weights())
    db.close()
    return chosen


def test_ids_ground_on_one_network_take_at_most_one_bootstrap_place(tmp_path) -> None:
    """A bootstrapping node among ten honest peers, each on a network of its own, and 200 ids ground against its
    own on one /24 (and 200 more on one IPv6 /64, and under one domain), all seen up as long as the honest ones:
    each network takes one place, the honest peers the rest."""
    me = Identity.generate().id
    honest = PEERS[:10]
    urls = {p: f"https://{23 + n}.45.67.89:7000" for n, p in enumerate(honest)}
    v4, v6, names = _ground(me, 200), _ground(me, 200), _ground(me, 200)
    urls.update({p: f"https://185.199.108.{n % 250}:{7000 + n}" for n, p in enumerate(v4)})
    urls.update({p: f"https://[2a01:4f8:1:2::{n:x}]:7000" for n, p in enumerate(v6)})
    urls.update({p: f"https://n{n}.example.net:7000" for n, p in enumerate(names)})
    ids = [*honest, *v4, *v6, *names]
    chosen = _bootstrapping(tmp_path, me, _Peers(ids, urls=urls, up_since={p: HOURS_AGO for p in ids}))
    assert len(chosen) == 6
    for ground in (v4, v6, names):
        assert len(chosen & set(ground)) <= 1, chosen
    assert len(chosen & set(honest)) >= 3


def test_ids_seen_up_for_minutes_take_no_bootstrap_place_from_peers_seen_up_for_hours(tmp_path) -> None:
    """Fresh ids, each on a network of its own and ground against this node's, rank after every peer seen up for
    an hour or more: they take a place only when too few such peers are up."""
    me = Identity.generate().id
    honest = PEERS[:10]
    fresh = _ground(me, 200)
    urls = {p: f"https://{23 + n}.45.67.89:7000" for n, p in enumerate(honest)}
    urls.update({p: f"https://{100 + n // 200}.{n % 200}.1.1:7000" for n, p in enumerate(fresh)})
    minted = int(NOW * 1000) - 60_000
    up_since = {**{p: HOURS_AGO for p in honest}, **{p: minted for p in fresh}}
    chosen = _bootstrapping(tmp_path, me, _Peers([*honest, *fresh], urls=urls, up_since=up_since))
    assert len(chosen) == 6 and chosen <= set(honest)
    few = honest[:2]
    (tmp_path / "few").mkdir()
    chosen = _bootstrapping(tmp_path / "few", me, _Peers([*few, *fresh], urls=urls, up_since=up_since))
    assert set(few) <= chosen and len(chosen) == 6


def test_a_peer_far_below_the_best_is_recognised_only_when_too_few_are_near_it(tmp_path) -> None:
    me = Identity.generate().id
    flaky = set(PEERS[:30])
    chosen = _recognition(tmp_path, me, at_most=6, ratios={p: 0.1 for p in flaky}).weights()
    assert len(chosen) == 6 and not flaky & set(chosen)  # ten steady peers are enough
    chosen = _recognition(tmp_path, Identity.generate().id, at_most=16, ratios={p: 0.1 for p in flaky}).weights()
    steady = set(PEERS) - flaky
    assert steady <= set(chosen) and len(chosen) == 16  # all ten steady ones, then the best of the rest


def test_the_weights_a_user_sets_stay_within_what_one_commitment_carries(tmp_path) -> None:
    """The user's weights and the derived ones are published in one commitment of at most MAX_RECOGNITION entries:
    past that, every commitment the node signs is refused and it publishes nothing."""
    db = open_database(tmp_path / "db")
    derived = PEERS[:6]
    room = MAX_RECOGNITION - len(derived)
    with db.write_batch() as batch:  # as many as the user may set, written at once (one by one they are synced)
        for _ in range(room):
            batch.put(keys.market_recognition(os.urandom(32)), b"2")
    me = Identity.generate()
    recognition = Recognition(db=db, me=me.id, peers=_Peers(derived), at_most=len(derived))
    with pytest.raises(InvalidArgument, match=f"at most {room} recognition weights"):
        recognition.set_weight(PEERS[-1], Decimal(1))
    mine = next(iter(recognition.user_weights))
    recognition.set_weight(mine, Decimal(3))  # one already set may change, or go
    recognition.set_weight(mine, None)
    recognition.set_weight(PEERS[-1], Decimal(1))
    weights = recognition.weights()
    assert len(weights) == MAX_RECOGNITION
    sign_commitment(me, recognition=weights, stamp=Stamp.seed().event(), timestamp=0)  # still publishable
    db.close()


def test_peers_that_earned_equal_sums_keep_their_places_across_a_restart(tmp_path) -> None:
    """Equal sums are ordered under the node's own secret: made once and kept, so a restart reshuffles nothing."""
    me = Identity.generate().id

    def kept() -> set[str]:
        db = open_database(tmp_path / "db")
        recognition = Recognition(db=db, me=me, peers=_Peers(PEERS), at_most=4, clock=lambda: 1_700_000_000.0)
        for peer in PEERS[:30]:
            recognition.note_paid(peer, 100, by_them=True)
        chosen = set(recognition.weights())
        db.close()
        return chosen

    first = kept()
    assert len(first) == 4 and all(kept() == first for _ in range(3))


DAY_MS = 86_400_000
_receipts = st.lists(st.tuples(st.integers(min_value=1, max_value=10**12), st.integers(min_value=0, max_value=400 * DAY_MS)),
                     min_size=1, max_size=30)
_half_lives = st.floats(min_value=60, max_value=10 * 365 * 86400)


def _folded(receipts, half_life: float):
    counter = None
    for amount, at in receipts:
        counter = fold(counter, amount, at, half_life)
    return counter


@settings(max_examples=300, deadline=None)
@given(_receipts, st.randoms(use_true_random=False), _half_lives, st.integers(min_value=0, max_value=100 * DAY_MS))
def test_decayed_money_is_the_same_in_any_order_and_only_falls_with_age(receipts, rng, half_life, later) -> None:
    now = max(at for _, at in receipts) + later
    shuffled = list(receipts)
    rng.shuffle(shuffled)
    one, other = worth(_folded(receipts, half_life), now, half_life), worth(_folded(shuffled, half_life), now, half_life)
    assert abs(one - other) <= 1e-9 * max(one, other) + 1e-300
    exact = sum(amount * 2 ** (-(now - at) / (half_life * 1000)) for amount, at in receipts)
    assert abs(one - exact) <= 1e-9 * exact + 1e-300
    assert worth(_folded(receipts, half_life), now + DAY_MS, half_life) <= one  # it only falls as time passes


@settings(max_examples=200, deadline=None)
@given(_receipts, st.integers(min_value=0, max_value=29), st.integers(min_value=1, max_value=10**9),
       st.integers(min_value=DAY_MS, max_value=100 * DAY_MS), st.floats(min_value=86400, max_value=10 * 365 * 86400))
def test_more_money_is_worth_more_and_the_same_money_older_is_worth_less(receipts, which, more, older, half_life):
    which %= len(receipts)
    now = max(at for _, at in receipts) + DAY_MS
    base = worth(_folded(receipts, half_life), now, half_life)
    amount, at = receipts[which]
    raised = [*receipts[:which], (amount + more, at), *receipts[which + 1:]]
    assert worth(_folded(raised, half_life), now, half_life) >= base
    if at >= older:
        aged = [*receipts[:which], (amount, at - older), *receipts[which + 1:]]
        assert worth(_folded(aged, half_life), now, half_life) <= base
        alone = worth(fold(None, amount, at, half_life), now, half_life)
        assert worth(fold(None, amount, at - older, half_life), now, half_life) < alone
        assert worth(fold(None, amount + more, at, half_life), now, half_life) > alone


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_partner_that_traded_much_long_ago_gives_way_to_one_that_trades_now(tmp_path) -> None:
    """A peer recognised for money it exchanged half a year ago does not keep its place for ever: a steady partner
    that trades now, for less money in all, is recognised instead."""
    clock = _Clock()
    db = open_database(tmp_path / "db")
    recognition = Recognition(db=db, me=Identity.generate().id, peers=_Peers(PEERS[:2]), at_most=1, clock=clock)
    old, steady = PEERS[:2]
    recognition.note_paid(old, 10_000, by_them=True)
    assert set(recognition.weights()) == {old}
    clock.now += 180 * 86400
    for _ in range(30):
        recognition.note_paid(steady, 100, by_them=True)
        clock.now += 86400
    assert recognition.earned(old) > recognition.earned(steady)  # more money in all, ...
    assert set(recognition.weights()) == {steady}  # ... but long ago
    view = {row["peer"]: row for row in recognition.view(_NoBook())}
    assert view[steady]["recent"] > view[old]["recent"] and view[old]["earned"] == 10_000
    db.close()


def test_the_money_s_times_are_kept_across_a_restart(tmp_path) -> None:
    clock = _Clock()
    db = open_database(tmp_path / "db")
    recognition = Recognition(db=db, me=Identity.generate().id, peers=_Peers(PEERS[:2]), clock=clock)
    recognition.note_paid(PEERS[0], 1_000, by_them=False)
    db.put(keys.MARKET_SELF, codec.dumps(recognition.counters()))  # as the market writes them
    clock.now += 30 * 86400
    again = Recognition(db=db, me=recognition.me, peers=_Peers(PEERS[:2]), clock=clock)
    assert again.worth(PEERS[0]) == pytest.approx(500)
    db.close()


class _NoBook:
    def get(self, participant: str) -> None:
        return None
