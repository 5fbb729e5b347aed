"""Merkle roots and inclusion proofs (pure): every item proves itself, nothing else does."""

from __future__ import annotations

from hypothesis import given, strategies as st

from xsc.ledger.core import merkle

items_st = st.lists(st.binary(min_size=0, max_size=24), min_size=1, max_size=40)


@given(items_st)
def test_every_item_proves_its_place(items) -> None:
    root, proofs = merkle.tree(items)
    assert root == merkle.root(items)
    for i, (item, proof) in enumerate(zip(items, proofs)):
        assert merkle.verify(item, i, len(items), proof, root)


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


def test_roots_differ_with_order_and_count() -> None:
    assert merkle.root([b"a", b"b"]) != merkle.root([b"b", b"a"])
    assert merkle.root([b"a", b"b", b"c"]) != merkle.root([b"a", b"b"])
