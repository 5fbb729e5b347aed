"""A placement's LevelDB key (keys.placed) names its owner and function, reads back as the same two, and is never
another placement's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xsc import keys

NAMES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)  # a function's name
OWNERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=64)  # a node id


@given(OWNERS, NAMES, OWNERS, NAMES)
def test_a_placements_key_reads_back_as_its_owner_and_function(owner, name, other_owner, other_name) -> None:
    key = keys.placed(owner, name)
    assert key.startswith(keys.PLACED) and keys.split_placed(key) == (owner, name)
    assert (keys.placed(other_owner, other_name) == key) == ((other_owner, other_name) == (owner, name))
