"""The routing table's neighbour search: the k contacts nearest a key, whatever bucket the key falls in."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node

from xsc.dht.table import Routing


def table_with(contacts: int, seed: bytes) -> tuple[Routing, list[Node]]:
    me = Node(os.urandom(20))
    routing = Routing(None, 20, me)
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
