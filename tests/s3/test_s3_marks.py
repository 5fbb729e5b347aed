"""The front's file marks (buckets/marks.py): every name it gives is its own; no other name is, whatever a user types."""

from __future__ import annotations

from hypothesis import given, strategies as st

from xsc.buckets.marks import FileMarks

MARKS = FileMarks(b"k" * 32)


@given(st.text(max_size=200))
def test_every_name_the_front_gives_is_its_own(label: str) -> None:
    assert MARKS.ours(MARKS.name(label))


@given(st.text(max_size=200), st.text(min_size=1, max_size=40))
def test_a_name_a_user_types_is_never_the_fronts(label: str, typed: str) -> None:
    name = MARKS.name(label)
    for other in ("s3:" + label, "s3:" + typed, name + typed, name[:-1], name[:-1] + ("0" if name[-1] != "0" else "1"),
                  FileMarks(b"x" * 32).name(label)):
        if other != name:
            assert not MARKS.ours(other)


def test_no_name_is_given_twice_and_a_copied_name_is_nobodys() -> None:
    first, second = MARKS.name("b/k"), MARKS.name("b/k")
    assert first != second and MARKS.ours(first) and MARKS.ours(second)
    stored = [{"name": first, "capability": "front"}, {"name": second, "capability": "front-too"},
              {"name": second, "capability": "user-copy"}, {"name": "s3:b/k", "capability": "user"}]
    assert MARKS.files(stored) == ["front"]


def test_the_secret_is_made_once_private_and_kept(tmp_path) -> None:
    first = FileMarks.load(tmp_path)
    assert (tmp_path / "s3-files.key").stat().st_mode & 0o777 == 0o600
    assert FileMarks.load(tmp_path).ours(first.name("bucket/key"))
