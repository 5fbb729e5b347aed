"""What both ends of the share protocol agree on (as Tahoe's http_common): limits, parsers, paths.

The holder's routes (node/http/shares.py) and its client (storage/holder_client.py) both import this module;
neither imports the other.  Pure: no I/O.

    POST   /v1/peer/shares/{si}/{share}/uploads      {size, segment_size, lease_expiry, price} -> 201 {"upload"}
    PUT    /v1/peer/shares                           shares of one segment each, whole: per share its storage index,
                                                      number, terms, block hash and manifest (JSON), then their
                                                      blocks (`whole_shares_body`) -> {"shares": [placed or refused]}
    PUT    /v1/peer/uploads/{upload}/segments/{first} the share's blocks of segments first.., concatenated
    PUT    /v1/peer/uploads/{upload}/segments/{first}?commit   the share's last blocks (first to its last segment),
                                                      then the commit's JSON: staged and committed in one request
    POST   /v1/peer/uploads/{upload}/commit           {"block_hashes": [hex], "manifest": hex}
    POST   /v1/peer/uploads/{upload}/touch            activity without a block -> {"next_segment", "segment_count"}
    DELETE /v1/peer/uploads/{upload}                  abort
    GET    /v1/peer/shares/{si}/{share}               metadata, block hashes, manifest
    GET    /v1/peer/shares/{si}/{share}/blocks?from=I&count=N   the blocks, concatenated (streamed)
    DELETE /v1/peer/shares/{si}/{share}               the uploader only
    POST   /v1/peer/shares/{si}/{share}/renew         {"lease_expiry"} the uploader only; never shortens a lease
    POST   /v1/peer/shares/{si}/{share}/audit         {"segment"} -> the block and its Merkle path
    POST   /v1/peer/damage {"si", "share", "segments"}  a holder tells the uploader of bad blocks
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ... import codec
from ...errors import BadRequest, DuplicateJsonKey, InvalidArgument
from ...units import counted
from . import erasure, layout
from .manifest import MANIFEST_VERSION, Manifest
from .merkle import HASH_BYTES, block_hash, verify_proof

MIN_SEGMENT_SIZE = 4096  # the bounds of storage.segment_size
MAX_SEGMENT_SIZE = 64 * 1024**2
MAX_PUT_BYTES = 16 * 1024**2  # per segments PUT (always at least one block): bounds a holder's memory per request
MAX_BODIES_PER_SENDER = 4  # segment bodies a holder takes in flight from one sender at once
MAX_BLOCKS_PER_GET = 64
MAX_REPORTED_SEGMENTS = 1024  # a damage report names at most this many segments (the whole share is rebuilt anyway)
DAMAGE_PATH = "/v1/peer/damage"
WHOLE_MAX_BLOCK = 1024**2  # a share of one segment whose block is at most this long may be placed in one request
WHOLE_MAX_TERMS = 16 * 1024  # bytes of its terms' JSON (the manifest of a one-segment file, in hex: ~1.3 KB)
WHOLE_MAX_SHARES = 8  # whole shares placed in one request at most (each an upload in progress: MAX_UPLOADS_PER_SENDER)
WHOLE_MAX_HEAD = WHOLE_MAX_SHARES * WHOLE_MAX_TERMS
WHOLE_MAX_BODY = 4 + WHOLE_MAX_HEAD + WHOLE_MAX_BLOCK  # the blocks of one request: WHOLE_MAX_BLOCK together
WHOLE_PATH = "/v1/peer/shares"
# Bytes of a holder's answer read at most.  An upload begun (its id and counts), segments taken, a share committed,
# an upload aborted, a share deleted or renewed, a damage report taken: a few fields.  Whole shares placed: per
# share, its counts or a refusal whose words name at most the terms it was sent.  A share's metadata: a block hash a
# segment (meta_answer_bound); for a reader that does not know the count, as many as fit (233,000: a 233 GB file at
# the default segment size) and, knowing the file's size, no more than its smallest segments make (meta_answer_most).
HOLDER_ANSWER = 4 * 1024
DAMAGE_ANSWER = 4 * 1024
WHOLE_ANSWER = WHOLE_MAX_SHARES * WHOLE_MAX_TERMS + 4 * 1024
META_ANSWER_MOST = 16 * 1024**2
_COMMIT_BYTES_PER_SEGMENT = 2 * HASH_BYTES + 4  # a hex hash, its quotes and a comma
_COMMIT_OVERHEAD = 64 * 1024  # the manifest (hex) and the rest of the JSON
_SI = re.compile(r"[0-9a-f]{64}")
HEX_HASH = re.compile(r"[0-9a-f]{64}")


def share_path(si: bytes, share: int) -> str:
    return f"/v1/peer/shares/{si.hex()}/{share}"


@dataclass(frozen=True)
class WholeShare:
    """One share of one segment placed whole: begin's terms, with commit's "block_hash" and "manifest" in hex."""

    si: bytes
    share: int
    terms: dict[str, Any]
    block: bytes


def whole_shares_body(shares: Sequence[WholeShare]) -> bytes:
    """The body placing shares of one segment each at once (`codec.framed`): per share its storage index, number,
    terms and block length, then the blocks one after the other."""
    head = {"shares": [{"si": w.si.hex(), "share": w.share, "terms": w.terms, "block_length": len(w.block)}
                       for w in shares]}
    return codec.framed(head, b"".join(w.block for w in shares))


def whole_blocks_at_least(length: int) -> int:
    """The fewest block bytes a whole shares body of `length` bytes can hold (its head is at most WHOLE_MAX_HEAD after
    its 4-byte length), and one at least: what a holder must have room for before it reads such a body."""
    return max(length - (WHOLE_MAX_BODY - WHOLE_MAX_BLOCK), 1)


def parse_whole_shares(body: bytes) -> list[WholeShare]:
    """The shares of a `whole_shares_body`, each with its block; refused if the body is not one."""
    try:
        head, blocks = codec.unframed(body, WHOLE_MAX_HEAD)
    except codec.DuplicateKey as err:
        raise DuplicateJsonKey.within("the whole shares body's head", err.key) from None
    except ValueError:
        raise InvalidArgument(f"a whole shares body is the 4-byte length of a JSON object (at most "
                              f"{WHOLE_MAX_HEAD:,} bytes), the object, then the shares' blocks") from None
    listed = head.get("shares")
    if not isinstance(listed, list) or not 1 <= len(listed) <= WHOLE_MAX_SHARES:
        raise InvalidArgument(f'a whole shares body lists 1 to {WHOLE_MAX_SHARES} shares under "shares"')
    shares, offset = [], 0
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("si"), str) or \
                not isinstance(item.get("terms"), dict) or type(item.get("share")) is not int or \
                type(item.get("block_length")) is not int:
            raise InvalidArgument('each whole share is {"si": hex, "share": int, "terms": {...}, "block_length": int}')
        if not 0 <= item["share"] < erasure.N:
            raise InvalidArgument(f"not a share number: {item['share']}",
                                  hint=f"shares are numbered 0 to {erasure.N - 1}")
        length = item["block_length"]
        if not 0 <= length <= len(blocks) - offset:
            raise InvalidArgument(f"the shares' block lengths add up to more than the {len(blocks)} bytes sent")
        shares.append(WholeShare(parse_storage_index(item["si"]), item["share"], item["terms"],
                                 blocks[offset:offset + length]))
        offset += length
    if offset != len(blocks):
        raise InvalidArgument(f"{len(blocks) - offset} bytes follow the shares' blocks")
    return shares


def put_limit(size: int, segment_size: int) -> int:
    """The most bytes one segments PUT of that upload may carry: MAX_PUT_BYTES, never more than the whole share
    holds (a share of a few bytes takes a body of a few bytes), and always at least one block."""
    return max(min(MAX_PUT_BYTES, layout.share_bytes(size, segment_size)), block_lengths(size, segment_size, 0, 1)[0])


def commit_limit(segment_count: int) -> int:
    return _COMMIT_OVERHEAD + _COMMIT_BYTES_PER_SEGMENT * segment_count


def parse_storage_index(text: str) -> bytes:
    if not _SI.fullmatch(text):
        raise InvalidArgument(f"not a storage index: {text[:80]!r}", hint="a storage index is 64 lower-case hex digits")
    return bytes.fromhex(text)


def parse_share(text: str) -> int:
    # (a length first: int() of a path segment's thousands of digits raises)
    if not text.isascii() or not text.isdigit() or len(text) > 2 or int(text) >= erasure.N:
        raise InvalidArgument(f"not a share number: {text[:20]!r}", hint=f"shares are numbered 0 to {erasure.N - 1}")
    return int(text)


def parse_count(text: str | None, name: str, *, minimum: int = 0) -> int:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, not {str(text)[:20]!r}")
    return int(text)


def block_lengths(size: int, segment_size: int, first: int, count: int) -> list[int]:
    """Lengths of one share's blocks of segments first..first+count-1 (all alike but the last segment's)."""
    return [layout.segment_block_length(layout.plaintext_length(size, segment_size, i))
            for i in range(first, first + count)]


def body_parts(size: int, segment_size: int, first: int, length: int) -> list[int]:
    """The parts a segments body of `length` bytes is read into, one buffer each: the share's blocks of segments
    first, first+1, ... while they fit (at most to its last segment), then what is left, if any (the commit's JSON
    after a share's last blocks; else bytes that `split_blocks` refuses).  The whole body in one part when `first`
    is past the share's last segment."""
    count = layout.segment_count(size, segment_size)
    full = layout.segment_block_length(segment_size)  # every block's but the last segment's
    whole = max(0, min(count - 1 - first, length // full))
    parts, left = [full] * whole, length - whole * full
    last = block_lengths(size, segment_size, count - 1, 1)[0]
    if first + whole == count - 1 and last <= left:
        parts.append(last)
        left -= last
    return parts + [left] if left else parts


def cut_commit(chunks: Sequence[bytes], blocks_length: int) -> tuple[list[bytes | memoryview], bytes]:
    """(the chunks of the blocks, the commit's JSON) of a body of a share's last blocks followed by its commit: the
    first `blocks_length` bytes are the blocks (kept as the chunks they arrived in), the rest the JSON."""
    blocks: list[bytes | memoryview] = []
    tail: list[bytes | memoryview] = []
    left = blocks_length
    for chunk in chunks:
        if left >= len(chunk):
            blocks.append(chunk)
        elif left > 0:
            view = memoryview(chunk)
            blocks.append(view[:left])
            tail.append(view[left:])
        else:
            tail.append(chunk)
        left -= len(chunk)
    if left >= 0:
        raise BadRequest(f"the body ends within the share's last blocks ({blocks_length} bytes), before the commit",
                         hint="send the blocks from the first segment to the last, then the commit's JSON")
    return blocks, b"".join(tail)


def split_blocks(body: bytes | bytearray | memoryview | Sequence[bytes | bytearray], size: int, segment_size: int,
                 first: int) -> list[bytes | bytearray]:
    """Cut a body (or the parts it was read into, one after the other) into the share's blocks of segments first,
    first+1, ...; it must split exactly.  Each block is copied once out of the parts, or not at all when it is one
    whole part (`body_parts`: a segments body read into its blocks)."""
    chunks = [body] if isinstance(body, (bytes, bytearray, memoryview)) else body
    views = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
    length_of_body = sum(len(view) for view in views)
    total = layout.segment_count(size, segment_size)
    blocks: list[bytes] = []
    offset, segment = 0, first
    chunk, start = 0, 0  # where the next block begins: views[chunk][start:]
    if not length_of_body:
        raise BadRequest("the body holds no block", hint="send the blocks of at least one segment")
    while offset < length_of_body:
        if segment >= total:
            raise BadRequest(f"the body holds more than the {counted(total - first, 'segment')} from {first} to the "
                             "last",
                             hint="send at most the share's remaining blocks")
        length = block_lengths(size, segment_size, segment, 1)[0]
        if offset + length > length_of_body:
            raise BadRequest(f"the body does not split into whole blocks: {counted(length_of_body - offset, 'byte')} "
                             f"left for segment {segment}, whose block is {length} bytes",
                             hint="send whole blocks, each of the length layout.segment_block_length gives")
        pieces, want = [], length
        while want:
            view = views[chunk]
            take = min(want, len(view) - start)
            pieces.append(view[start:start + take])
            want -= take
            start += take
            if start == len(view):
                chunk, start = chunk + 1, 0
        whole = pieces[0].obj if len(pieces) == 1 and len(pieces[0]) == len(pieces[0].obj) else None
        blocks.append(whole if type(whole) in (bytes, bytearray) else b"".join(pieces))
        offset += length
        segment += 1
    return blocks


def parse_manifest(raw: bytes) -> Manifest:
    """A manifest in its canonical encoding (refused otherwise: readers hash exactly these bytes)."""
    try:
        body = codec.loads(raw)
    except ValueError:
        raise InvalidArgument("the manifest is not JSON") from None
    fields = {"size", "segment_size", "k", "m", "segment_count", "share_roots", "ciphertext_hash", "version"}
    if not isinstance(body, dict) or set(body) != fields:
        raise InvalidArgument("the manifest does not have the manifest's fields", expected=sorted(fields))
    ints = ("size", "segment_size", "k", "m", "segment_count", "version")
    if any(type(body[f]) is not int or body[f] < 0 for f in ints):
        raise InvalidArgument(f"the manifest's {', '.join(ints)} must be integers >= 0")
    roots = body["share_roots"]
    if not isinstance(roots, list) or len(roots) != erasure.N \
            or not all(isinstance(r, str) and HEX_HASH.fullmatch(r) for r in roots) \
            or not (isinstance(body["ciphertext_hash"], str) and HEX_HASH.fullmatch(body["ciphertext_hash"])):
        raise InvalidArgument(f"the manifest needs {erasure.N} share roots and a ciphertext hash, in hex")
    if body["version"] != MANIFEST_VERSION:
        raise InvalidArgument(f"unsupported manifest version {body['version']}")
    manifest = Manifest(**{**body, "share_roots": tuple(roots)})
    if manifest.encode() != raw:
        raise InvalidArgument("the manifest is not in its canonical encoding",
                              hint="UTF-8 JSON, sorted keys, no whitespace")
    return manifest


def json_int(body: dict, name: str, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    value = body.get(name)
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidArgument(f"{name} must be an integer from {minimum} to {maximum}", got=repr(value)[:40])
    return value


def proof_sides(index: int, count: int) -> list[bool]:
    """The sides (sibling on the left?) of the Merkle path of leaf `index` among `count` leaves.

    A path's sides encode the leaf's position: checking them keeps a holder from answering an
    audit of one block with another block it still has."""
    sides: list[bool] = []
    while count > 1:
        sibling = index ^ 1
        if sibling < count:
            sides.append(sibling < index)
        count, index = (count + 1) // 2, index // 2
    return sides


def meta_answer_bound(segment_count: int) -> int:
    """The most bytes an honest answer of a share's metadata takes (a block hash in hex a segment, the manifest and
    the other fields): what a reader that knows the file reads of one before it refuses it."""
    return segment_count * (2 * HASH_BYTES + 8) + _COMMIT_OVERHEAD


def meta_answer_most(size: int) -> int:
    """What a reader that knows a file's size but not its segment count reads of a share's metadata at most: as many
    hashes as the file has segments of the smallest size a node makes, META_ANSWER_MOST at most."""
    return min(META_ANSWER_MOST, meta_answer_bound(layout.segment_count(size, MIN_SEGMENT_SIZE)))


def audit_answer_bound(manifest: Manifest, segment: int) -> int:
    """The most bytes an honest audit answer of block `segment` takes (its block in hex and one path step a level
    of the share's tree, with room for JSON's spacing): what an auditor reads of one before it refuses it, so that a
    holder answering with more costs it no more than an honest answer would."""
    length = block_lengths(manifest.size, manifest.segment_size, segment, 1)[0]
    levels = (manifest.segment_count - 1).bit_length()
    return 2 * length + levels * (2 * HASH_BYTES + 32) + 4096


def check_audit(block: bytes, path: list[tuple[bool, bytes]], share_root: bytes, segment: int,
                segment_count: int) -> bool:
    """Whether an audit answer proves the holder has block `segment` of the share with that root."""
    if not 0 <= segment < segment_count:
        return False
    if [left for left, _ in path] != proof_sides(segment, segment_count):
        return False
    return verify_proof(block_hash(block), path, share_root)


def parse_damage_report(body: Any) -> tuple[bytes, int, list[int]]:
    """A damage report's storage index, share and (sorted, distinct) segments."""
    hint = 'send {"si": <64 hex digits>, "share": <0-5>, "segments": [<block index>, ...]}'
    if not isinstance(body, dict):
        raise InvalidArgument("a damage report must be a JSON object", hint=hint)
    if not isinstance(body.get("si"), str):
        raise InvalidArgument("si must be a storage index in hex", hint=hint)
    si = parse_storage_index(body["si"])
    share = body.get("share")
    if type(share) is not int or not 0 <= share < erasure.N:
        raise InvalidArgument(f"share must be an integer from 0 to {erasure.N - 1}", hint=hint)
    segments = body.get("segments")
    if not isinstance(segments, list) or not segments or len(segments) > MAX_REPORTED_SEGMENTS \
            or not all(type(i) is int and i >= 0 for i in segments):
        raise InvalidArgument(f"segments must list 1 to {MAX_REPORTED_SEGMENTS} block indexes (integers >= 0)",
                              hint=hint)
    return si, share, sorted(set(segments))
