"""Merkle roots and inclusion proofs (pure): every item proves its own place (index and count), nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from xsc.ledger.core import merkle

items_st = st.lists(st.binary(min_size=0, max_size=24), min_size=1, max_size=40)
MAX = 64


def _items(count: int) -> list[bytes]:
    return [b"item %d of %d" % (k, count) for k in range(count)]


TREES = {n: (_items(n), *merkle.tree(_items(n))) for n in range(1, MAX + 1)}
# (count, index): a count of items to MAX and a place among them
places = st.integers(1, MAX).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))


@given(items_st)
def test_every_item_proves_its_place(items) -> None:
    root, proofs = merkle.tree(items)
    assert root == merkle.root(items)
    for i, (item, proof) in enumerate(zip(items, proofs)):
        assert merkle.verify(item, i, len(items), proof, root)


def test_every_place_of_every_count_to_64_verifies() -> None:
    for n, (items, root, proofs) in TREES.items():
        for i in range(n):
            assert merkle.verify(items[i], i, n, proofs[i], root)


@settings(max_examples=400, deadline=None)
@given(places, places)
def test_a_proof_verifies_at_no_other_index_or_count(place, claimed) -> None:
    (n, i), (m, j) = place, claimed
    items, root, proofs = TREES[n]
    if (j, m) != (i, n):
        assert not merkle.verify(items[i], j, m, proofs[i], root)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 33, 64])
def test_no_proof_of_a_count_passes_at_a_nearby_place(n) -> None:
    """Exhaustive where the first rule let most respellings through: counts one either side, every index."""
    items, root, proofs = TREES[n]
    for i in range(n):
        for m in (n - 1, n, n + 1):
            for j in range(max(m, 0)):
                if (j, m) != (i, n):
                    assert not merkle.verify(items[i], j, m, proofs[i], root)


def test_without_the_count_a_proof_passes_at_other_places() -> None:
    """Why the root commits to the count: item 0 of 3 is item 0 of 4, and item 1 of 2 item 2 of 3, by the tree's top."""
    items, _, proofs = TREES[3]
    assert merkle.verify_unsized(items[0], 0, 4, proofs[0], merkle.unsized_root(items))
    assert not merkle.verify(items[0], 0, 4, proofs[0], merkle.root(items))
    items, _, proofs = TREES[2]
    assert merkle.verify_unsized(items[1], 2, 3, proofs[1], merkle.unsized_root(items))
    assert not merkle.verify(items[1], 2, 3, proofs[1], merkle.root(items))


@settings(max_examples=300, deadline=None)
@given(places, st.data())
def test_a_tampered_item_proof_or_root_fails(place, data) -> None:
    n, i = place
    items, root, proofs = TREES[n]
    proof = proofs[i]
    assert not merkle.verify(items[i] + b"x", i, n, proof, root)
    assert not merkle.verify(items[i], i, n, proof + [bytes(32)], root)  # one hash too many
    assert not merkle.verify(items[i], i, n, proof, bytes(32))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), "hash changed")
        bit = data.draw(st.integers(0, 255), "bit")
        changed = bytearray(proof[k])
        changed[bit // 8] ^= 1 << bit % 8
        assert not merkle.verify(items[i], i, n, proof[:k] + [bytes(changed)] + proof[k + 1:], root)
        assert not merkle.verify(items[i], i, n, proof[:-1], root)  # one hash too few
        assert not merkle.verify(items[i], i, n, proof[:k] + [proof[k][:16]] + proof[k + 1:], root)  # a short hash
        if len(proof) > 1:
            assert not merkle.verify(items[i], i, n, proof[::-1], root)


@given(items_st, st.data())
def test_a_changed_item_index_or_proof_fails(items, data) -> None:
    root, proofs = merkle.tree(items)
    i = data.draw(st.integers(0, len(items) - 1))
    assert not merkle.verify(items[i] + b"x", i, len(items), proofs[i], root)
    others = [j for j in range(len(items)) if items[j] != items[i]]
    if others:
        j = data.draw(st.sampled_from(others))
        assert not merkle.verify(items[i], j, len(items), proofs[j], root)
    if proofs[i]:
        assert not merkle.verify(items[i], i, len(items), proofs[i][:-1], root)
    assert not merkle.verify(items[i], i, len(items), proofs[i], bytes(32))


@pytest.mark.parametrize("index, count", [(True, 2), (0, True), (-1, 3), (3, 3), (0, 0), (0, 2**64), (0.0, 1)])
def test_an_index_or_count_out_of_place_fails(index, count) -> None:
    items, root, proofs = TREES[3]
    assert not merkle.verify(items[0], index, count, proofs[0], root)


def test_roots_differ_with_order_and_count() -> None:
    assert merkle.root([b"a", b"b"]) != merkle.root([b"b", b"a"])
    assert merkle.root([b"a", b"b", b"c"]) != merkle.root([b"a", b"b"])
