"""The routing table's neighbour search: the k contacts nearest a key, whatever bucket the key falls in."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node

from xsc.dht.table import Protocol, Routing, Store


def table_with(contacts: int, seed: bytes, routing: Routing | None = None) -> tuple[Routing, list[Node]]:
    routing = routing or Routing(None, 20, Node(os.urandom(20)))
    me = routing.node
    nodes = [Node(os.urandom(20), f"10.0.{i >> 8}.{i & 255}", 4000) for i in range(contacts)]
    for node in nodes:
        if routing.is_new_node(node):
            bucket = routing.buckets[routing.get_bucket_for(node)]
            if not bucket.add_node(node) and (bucket.has_in_range(me) or bucket.depth() % 5 != 0):
                routing.split_bucket(routing.get_bucket_for(node))
                routing.buckets[routing.get_bucket_for(node)].add_node(node)
    return routing, [n for b in routing.buckets for n in b.nodes.values()]


@settings(max_examples=60, deadline=None)
@given(contacts=st.integers(min_value=1, max_value=300), key=st.binary(min_size=20, max_size=20))
def test_the_neighbours_of_any_key_are_the_nearest_contacts_held(contacts, key) -> None:
    routing, held = table_with(contacts, key)
    target = Node(key)
    found = routing.find_neighbors(target)
    nearest = sorted((n for n in held if n.id != key), key=target.distance_to)[:20]
    assert [n.id for n in found] == [n.id for n in nearest]


def test_a_newcomer_is_handed_the_records_it_is_now_closest_to_and_no_others() -> None:
    key = bytes(19) + b"\x10"
    me = Node(bytes(19) + b"\x01", "10.0.0.1", 1)  # this node: the closest holder of the key
    store = Store(ttl=3600)
    store[key] = b"records"
    protocol = Protocol(me, store, 3, admit=lambda *_: True, quota=None, min_difficulty=0, now_ms=lambda: 0)
    for i in range(3):  # the k = 3 closest it knows besides itself, all farther from the key than it is
        protocol.router.add_contact(Node(b"\x0f" + bytes([i]) * 19, f"10.0.1.{i}", 1))
    far = Node(b"\xf0" + bytes(19), "10.0.2.1", 1)
    protocol.welcome_if_new(far)
    assert not protocol.handovers  # farther than the k closest: nothing handed over
    near = Node(bytes(19) + b"\x11", "10.0.2.2", 1)
    protocol.welcome_if_new(near)
    assert list(protocol.handovers) == [(near, key, b"records")]
    protocol.handovers.clear()
    protocol.welcome_if_new(near)  # known already: nothing again
    assert not protocol.handovers


def test_a_newcomers_hand_over_reads_the_routing_table_once_and_hands_over_what_a_search_per_key_would() -> None:
    """A search of the routing table per stored key would hold the event loop 5.4 s per newcomer over MAX_KEYS keys
    (one admitted id's records can fill them): the hand-over is the one such searches choose, the table read once."""
    me = Node(os.urandom(20), "10.0.0.1", 1)
    protocol = Protocol(me, Store(ttl=3600), 20, admit=lambda *_: True, quota=None, min_difficulty=0,
                        now_ms=lambda: 0)
    _, held = table_with(300, b"", protocol.router)
    near = [(me.long_id ^ int.from_bytes(os.urandom(20), "big") >> shift).to_bytes(20, "big")
            for shift in range(100, 160) for _ in range(10)]  # keys this node is likely the closest holder of
    # (a contact's id is its node record's key)
    keys = list(dict.fromkeys(near + [os.urandom(20) for _ in range(2000)] + [n.id for n in held[:20]]))
    for key in keys:
        protocol.storage[key] = key
    newcomer = Node((me.long_id ^ (1 << 120)).to_bytes(20, "big"), "10.0.9.9", 1)
    expected = []
    for key in keys:
        target = Node(key)
        nearest = sorted((n for n in held if n.id != key), key=target.distance_to)[:20]
        if not nearest or (newcomer.distance_to(target) < nearest[-1].distance_to(target)
                           and me.distance_to(target) < nearest[0].distance_to(target)):
            expected.append(key)
    searches = []
    search = protocol.router.find_neighbors
    protocol.router.find_neighbors = lambda *args, **kwargs: searches.append(args) or search(*args, **kwargs)
    protocol._hand_over(newcomer)
    assert sorted(key for _, key, _ in protocol.handovers) == sorted(expected) and expected
    assert len(searches) == 0
