"""Property tests of the pure storage core: erasure coding, sizes, Merkle proofs, capabilities."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import InvalidCapability
from xsc.storage import Capability
from xsc.storage.core import erasure, layout
from xsc.storage.core.crypto import KEY_BYTES, SegmentCipher, TAG_BYTES, new_key, storage_index
from xsc.storage.core.manifest import Manifest, decode_manifest
from xsc.errors import IntegrityError
from xsc.storage.core.merkle import block_hash, proof, root, verify_proof

SUBSETS = list(itertools.combinations(range(erasure.N), erasure.K))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=0, max_size=5000), subset=st.sampled_from(SUBSETS))
def test_any_four_of_six_blocks_rebuild_the_segment(data: bytes, subset: tuple[int, ...]) -> None:
    blocks = erasure.encode(data)
    assert len(blocks) == 6 and len({len(b) for b in blocks}) == 1
    chosen = {i: blocks[i] for i in subset}
    assert erasure.decode(chosen, len(data)) == data


def test_every_pair_of_lost_blocks_is_survivable_on_a_full_segment() -> None:
    data = os.urandom(1024 * 1024 + 16)
    blocks = erasure.encode(data)
    for lost in itertools.combinations(range(6), 2):
        kept = {i: b for i, b in enumerate(blocks) if i not in lost}
        assert erasure.decode(kept, len(data)) == data


@settings(max_examples=150, deadline=None)
@given(plain=st.binary(min_size=0, max_size=5000), subset=st.sampled_from(SUBSETS), flip=st.integers(0, 10**9))
def test_a_segment_decrypts_from_its_pieces_as_from_its_whole_ciphertext(plain: bytes, subset: tuple[int, ...],
                                                                          flip: int) -> None:
    cipher = SegmentCipher(os.urandom(32))
    ciphertext = cipher.encrypt(5, plain)
    blocks = erasure.encode(ciphertext)
    pieces = erasure.pieces({i: blocks[i] for i in subset}, len(ciphertext))
    assert b"".join(pieces) == ciphertext
    if subset == tuple(range(erasure.K)):  # the data blocks as they are, only the padding cut off
        assert all(isinstance(p, bytes) and p is blocks[i] or p.obj is blocks[i] for i, p in enumerate(pieces))
    decrypted = cipher.decrypt(5, pieces)
    # One buffer per piece, none as large as the segment (a buffer of a segment's size would be mapped on its own).
    assert isinstance(decrypted, list) and b"".join(decrypted) == plain if len(pieces[-1]) >= TAG_BYTES and \
        len(pieces) > 1 else decrypted == plain
    if isinstance(decrypted, list):
        assert all(len(p) <= len(blocks[0]) for p in decrypted)
    with pytest.raises(IntegrityError):
        cipher.decrypt(6, pieces)
    # A byte changed anywhere, the tag included, and nothing is returned.
    at = flip % len(ciphertext)
    block, offset = divmod(at, len(blocks[0]))
    changed = bytearray(blocks[block])
    changed[offset] ^= 1
    with pytest.raises(IntegrityError):
        cipher.decrypt(5, erasure.pieces({**dict(enumerate(blocks[:erasure.K])), block: bytes(changed)},
                                         len(ciphertext)))


@settings(max_examples=150, deadline=None)
@given(plain=st.binary(min_size=0, max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=6),
       subset=st.sampled_from(SUBSETS))
def test_a_segment_encrypted_from_its_pieces_is_the_one_encrypted_whole(plain: bytes, cuts: list[int],
                                                                         subset: tuple[int, ...]) -> None:
    cipher = SegmentCipher(os.urandom(32))
    bounds = [0, *sorted(c % (len(plain) + 1) for c in cuts), len(plain)]
    pieces = [plain[a:b] for a, b in zip(bounds, bounds[1:])]
    ciphertext = cipher.encrypt(9, plain)
    assert bytes(cipher.encrypt_pieces(9, pieces)) == ciphertext
    # Encoded from the thread's buffer, then read back through the get's steps from any 4 of the 6 blocks.
    blocks = erasure.encode(cipher.encrypt_pieces(9, pieces))
    assert blocks == erasure.encode(ciphertext) and all(isinstance(b, bytes) for b in blocks)
    chosen = erasure.pieces({i: blocks[i] for i in subset}, len(ciphertext))
    assert _joined(cipher.decrypt(9, chosen)) == plain


def test_the_buffer_a_thread_encrypts_into_is_reused_and_leaks_nothing_into_a_shorter_segment() -> None:
    cipher = SegmentCipher(os.urandom(32))
    full = os.urandom(64 * 1024)
    first = cipher.encrypt_pieces(0, [full[:1000], full[1000:]])
    assert bytes(first) == cipher.encrypt(0, full)
    first_blocks = erasure.encode(first)
    # A file's short last segment, into the same buffer: its blocks are its own, padded with zeros, and the blocks
    # of the segment before are untouched (copies, not views of the buffer).
    last = os.urandom(101)  # 117 bytes of ciphertext: 3 of padding in the last block
    view = cipher.encrypt_pieces(1, [last])
    assert view.obj is first.obj  # the same buffer, kept from the segment before
    blocks = erasure.encode(view)
    assert blocks == erasure.encode(cipher.encrypt(1, last)) and blocks[erasure.K - 1].endswith(bytes(3))
    assert first_blocks == erasure.encode(cipher.encrypt(0, full))
    assert _joined(cipher.decrypt(1, erasure.pieces(dict(enumerate(blocks[2:], 2)), len(last) + TAG_BYTES))) == last


def test_a_segment_decrypted_into_buffers_given_is_views_of_them_and_a_reused_one_leaks_nothing() -> None:
    cipher = SegmentCipher(os.urandom(32))
    given: list[bytearray] = []

    def buffer(size: int) -> bytearray:
        given.append(bytearray(b"\xff" * size))
        return given[-1]

    plain = os.urandom(10_000)
    pieces = erasure.pieces(dict(enumerate(erasure.encode(cipher.encrypt(3, plain)))), len(plain) + TAG_BYTES)
    decrypted = cipher.decrypt(3, pieces, buffer)
    assert b"".join(decrypted) == plain and len(decrypted) == len(given)
    assert all(p.obj is b for p, b in zip(decrypted, given))
    # A shorter segment into the same buffers (full of the one before): only its own bytes are in its pieces.
    short = os.urandom(101)
    reused = iter(given)
    again = cipher.decrypt(4, erasure.pieces(dict(enumerate(erasure.encode(cipher.encrypt(4, short)))),
                                             len(short) + TAG_BYTES), lambda size: next(reused))
    assert b"".join(again) == short and all(p.obj is b for p, b in zip(again, given))
    with pytest.raises(IntegrityError):
        cipher.decrypt(5, pieces, buffer)


def _joined(decrypted: bytes | list[bytearray]) -> bytes:
    """A segment's plaintext as `decrypt` answers it: whole, or one buffer per piece."""
    return decrypted if isinstance(decrypted, bytes) else b"".join(decrypted)


def test_three_lost_blocks_cannot_be_decoded() -> None:
    blocks = erasure.encode(b"x" * 100)
    with pytest.raises(ValueError):
        erasure.decode({0: blocks[0], 4: blocks[4], 5: blocks[5]}, 100)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 50_000), segment_size=st.sampled_from([4096, 4099, 8192]))
def test_layout_predicts_the_exact_block_bytes(size: int, segment_size: int) -> None:
    data = bytes(size)
    total = 0
    for i in range(layout.segment_count(size, segment_size)):
        plain = data[i * segment_size:(i + 1) * segment_size]
        assert len(plain) == layout.plaintext_length(size, segment_size, i)
        total += sum(len(b) for b in erasure.encode(bytes(len(plain) + TAG_BYTES)))
    assert total == layout.stored_bytes(size, segment_size)


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 40), data=st.data())
def test_merkle_proofs_verify_and_detect_changes(count: int, data) -> None:
    hashes = [block_hash(i.to_bytes(4, "big")) for i in range(count)]
    top = root(hashes)
    index = data.draw(st.integers(0, count - 1))
    path = proof(hashes, index)
    assert verify_proof(hashes[index], path, top)
    assert not verify_proof(block_hash(b"other"), path, top)


def test_segment_encryption_binds_position() -> None:
    cipher = SegmentCipher(os.urandom(32))
    ct = cipher.encrypt(3, b"hello")
    assert cipher.decrypt(3, ct) == b"hello"
    with pytest.raises(IntegrityError):
        cipher.decrypt(4, ct)


def test_storage_index_hides_the_key() -> None:
    key = os.urandom(32)
    assert storage_index(key) != key and len(storage_index(key)) == 32


def test_file_keys_are_fresh_in_a_forked_child_too() -> None:
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000 and {len(k) for k in keys} == {KEY_BYTES}
    # The generator runs in this process: a child forked from it must not draw the keys the parent will.
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, b"".join(new_key() for _ in range(4)))
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read, "rb") as pipe:
        drawn = pipe.read()
    assert status == 0 and len(drawn) == 4 * KEY_BYTES
    parents = b"".join(new_key() for _ in range(4))
    assert not {drawn[i:i + KEY_BYTES] for i in range(0, len(drawn), KEY_BYTES)} & \
        {parents[i:i + KEY_BYTES] for i in range(0, len(parents), KEY_BYTES)}


def test_manifest_hash_detects_any_change() -> None:
    m = Manifest(size=10, segment_size=4096, k=4, m=2, segment_count=1, share_roots=("00" * 32,) * 6,
                 ciphertext_hash="11" * 32)
    raw = m.encode()
    assert decode_manifest(raw, m.digest()) == m
    with pytest.raises(IntegrityError):
        decode_manifest(raw.replace(b'"size":10', b'"size":11'), m.digest())


@settings(max_examples=100, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), digest=st.binary(min_size=32, max_size=32),
       size=st.integers(0, 2**50))
def test_capability_round_trips(key: bytes, digest: bytes, size: int) -> None:
    cap = Capability(key=key, manifest_hash=digest, size=size)
    assert Capability.parse(str(cap)) == cap


@pytest.mark.parametrize("text", [
    "", "hello", "xsc:chk:", "xsc:chk:abc", "xsc:chk:a:b:4:2:10",
    "xsc:chk:" + "a" * 52 + ":" + "b" * 52 + ":4:2:\u00b2",  # a digit to str.isdigit(), not to int()
    "xsc:lit:" + "a" * 52 + ":" + "b" * 52 + ":4:2:10",
])
def test_malformed_capabilities_are_refused(text: str) -> None:
    with pytest.raises(InvalidCapability):
        Capability.parse(text)


def test_truncated_and_altered_capabilities_are_refused() -> None:
    good = str(Capability(key=os.urandom(32), manifest_hash=os.urandom(32), size=5))
    for cut in (10, 30, len(good) - 12):
        with pytest.raises(InvalidCapability):
            Capability.parse(good[:cut])
    with pytest.raises(InvalidCapability):
        Capability.parse(good.replace(":4:2:", ":3:2:"))
    with pytest.raises(InvalidCapability):
        Capability.parse(good.rsplit(":", 1)[0] + ":-5")
