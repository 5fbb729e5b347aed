"""JSON in and out of the node, and the one canonical form of what a signature or a hash covers (ground: no I/O).

- `loads(raw)`: JSON text parsed as `json.loads` parses it, by orjson where it can; a ValueError (JSONDecodeError)
  for any text it cannot take, one nested too deep to be read included.  `loads(raw, unique_keys=True)`, for text
  from outside (request bodies, peers' answers): an object that names one key twice refused too (`DuplicateKey`,
  naming the key), where json would keep the last one and another reader of the same text the first.
- `dumps(value)`: compact JSON bytes (UTF-8 as it is), by orjson where it can: what the node sends and stores.
- `canonical(value)`: keys sorted, no whitespace, ASCII only, no NaN or infinity: the bytes signed or hashed
  (descriptors, commitments, orders, allocation records, subscriptions, manifests, provenance records).  It is
  `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)`, written by
  orjson when that gives the same bytes; every signature already made over such bytes still verifies.
- `respelled(given, form)`: where a record as received is not the canonical form of what it was parsed into
  (a signed record must come in the one form its signature covers), or None.
- `text(value, ...)`: JSON for people (the CLI's output, export lines, files an operator edits).
- `MAX_JSON_INT`: 2^53 - 1, the largest integer every JSON reader holds exactly.
- `framed(head, data)` / `unframed(body, max_head)`: a JSON object and raw bytes in one body (the head's length in
  4 bytes, big-endian, the head, then the bytes): a request that carries both its terms and its data.

No other module of xsc imports json or orjson (tests/test_architecture.py checks it).
"""

from __future__ import annotations

import json as _json
import re
from typing import Any, Callable

import orjson

_LONG_NUMBER = re.compile(rb"(?:^|[:\[,])\s*-?[0-9]{19}")  # a number of 19 digits or more
# Digits read as 0, and what may come before a number's digits (a separator, a space, a minus sign) as ":".
_NUMBER_SHAPE = bytes.maketrans(b"123456789 \t\n\r[,-", b"000000000" + b":" * 7)
_NINETEEN_DIGITS = b"0" * 19

JSONDecodeError = _json.JSONDecodeError  # what loads raises on text that is not JSON (a ValueError)
# A JSON string (with its escapes; an unended one runs to the end), found by the regex engine.
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
# The largest integer every JSON reader holds exactly: readers that hold numbers as doubles (JavaScript, the
# dashboard) read any larger one as another number.  What a stranger sends to be published is bounded by it.
MAX_JSON_INT = 2**53 - 1


class DuplicateKey(ValueError):
    """A JSON object that names `key` twice (loads with unique_keys)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key[:60]!r} is given twice in one object")
        self.key = key


def loads(raw: bytes | str, *, unique_keys: bool = False) -> Any:
    """JSON text parsed as json.loads parses it (the same texts accepted, the same values), by orjson where it
    can.  orjson refuses what it does not take (NaN, a BOM, lone surrogates, UTF-16), and json.loads then
    decides; it would read an integer past 64 bits as a float, so a text with a number of 19 digits or more
    goes to json.loads at once.  With `unique_keys`, an object that names a key twice is a DuplicateKey
    (`_unique`).  (The regex that finds such a number costs ~30 us a KiB: it runs only on a text
    where 19 digits follow a separator, a space or a minus sign, or open it, found by a byte translation at ~2 us
    a KiB; the hex in a string, however long its runs of digits, does not make it run.)"""
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:  # a lone surrogate: json decides
            return _json_loads(raw)
    shape = raw.translate(_NUMBER_SHAPE)
    if (b":" + _NINETEEN_DIGITS not in shape and not shape.startswith(_NINETEEN_DIGITS)) \
            or _LONG_NUMBER.search(raw) is None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            return _unique(raw, value) if unique_keys else value
    return _json_loads(raw, unique_keys)


def _unique(raw: bytes, value: Any) -> Any:
    """`value` (parsed from `raw`) unless an object of `raw` names a key twice.  orjson's compact text of `value`
    names each of its keys once: when `raw` is that very text (what codec.dumps writes: every node's request), no
    key came twice.  Else the keys are counted: outside strings, every ':' of a JSON text follows a key, so `raw`
    names as many keys as it has such colons and `value` holds as many as its compact text has; the counts differ
    exactly when a key came twice (all at C speed; json's object_pairs_hook costs ~2x loads, and a walk of the
    value in Python more).  Only then is the text read again, by json, to name the key."""
    if raw.count(b":") < 2 or not isinstance(value, (dict, list)):  # no two keys, or no object at all
        return value
    try:
        written = orjson.dumps(value)
    except TypeError:  # nested past orjson's writer: json decides
        return _json_loads(raw, True)
    if written != raw and _keys_named(raw) != _keys_named(written):
        return _json_loads(raw, True)
    return value


_NOT_QUOTES_OR_COLONS = bytes(b for b in range(256) if b not in b'":')


def _keys_named(text: bytes) -> int:
    """The colons of a JSON text outside its strings: its keys.  Without escapes every quote begins or ends a
    string: the text is cut to its quotes and colons first (a hex digest or a number gone at once), then every
    other piece between quotes is outside a string (a regex's sub costs twice that split)."""
    if b"\\" in text:
        return JSON_STRING.sub(b"", text).count(b":")
    return b"".join(text.translate(None, _NOT_QUOTES_OR_COLONS).split(b'"')[::2]).count(b":")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def _json_loads(raw: bytes | str, unique_keys: bool = False) -> Any:
    try:
        return _json.loads(raw, object_pairs_hook=_no_duplicates) if unique_keys else _json.loads(raw)
    except RecursionError:  # arrays or objects nested deeper than json recurses: text this reader cannot take
        raise JSONDecodeError("nested too deep to be read", raw if isinstance(raw, str) else "", 0) from None


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON text of `value`, by orjson where it can (json for what it cannot encode: integers past 64
    bits, keys that are not text, ...).  `default` turns what is not JSON into something that is."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return _json.dumps(value, separators=(",", ":"), default=default).encode()


def text(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """JSON for people: json's own spacing (", " and ": "), or one value a line at `indent`; what is not JSON
    (a Decimal, a path) as its text."""
    return _json.dumps(value, indent=indent, sort_keys=sort_keys, default=str)


def canonical(value: Any) -> bytes:
    """The canonical form: keys sorted, no whitespace, ASCII only, no NaN (ValueError).  orjson writes the same
    bytes as json ~10x faster when its output is printable ASCII (json escapes everything else: non-ASCII and
    DEL) without floats (the two write some floats differently), and only then is its output taken.  A value
    made of plain values alone is known to have none without searching its text."""
    try:
        body = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, a key that is not text, a model: json decides
        body = None
    if body is not None and body.isascii() and b"\x7f" not in body and (
            _plain(value) or not (_has_float(body) or b"null" in body)):  # orjson writes NaN as null
        return body
    return _json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def respelled(given: Any, form: Any, form_bytes: bytes | None = None) -> str | None:
    """None when `given` (a record as it was received) is byte for byte the canonical form of `form` (the JSON form
    of what it was parsed into; `form_bytes`: `canonical(form)`, when the caller has it); else where and how it is
    spelled otherwise (`1.0` for `1`, `1` for `true`, a field left to its default ...).  A signed record must come
    in the one form its signature covers: a parser that took other spellings of the same meaning would let anyone
    make a second valid record of a signed one, a different hash, the same signature."""
    try:
        if canonical(given) == (canonical(form) if form_bytes is None else form_bytes):
            return None
    except (TypeError, ValueError):  # not JSON at all (a NaN, a key that is not text): no canonical form
        pass
    return _difference(given, form, "") or "the record is not in its canonical form"


def _difference(given: Any, form: Any, at: str) -> str | None:
    if isinstance(form, dict) and isinstance(given, dict):
        for key in sorted(set(given) | set(form), key=str):
            where = f"{at}.{key}" if at else str(key)
            if key not in given:
                return f"{where} is missing (its canonical form writes it: {text(form[key])[:60]})"
            if key not in form:
                return f"{where} is not a field of the record"
            found = _difference(given[key], form[key], where)
            if found:
                return found
        return None
    if isinstance(form, list) and isinstance(given, (list, tuple)) and len(form) == len(given):
        for i, (g, f) in enumerate(zip(given, form)):
            found = _difference(g, f, f"{at}.{i}" if at else str(i))
            if found:
                return found
        return None
    if type(given) is type(form) and given == form:
        return None
    return f"{at or 'the record'} is {text(given)[:60]}, not in its canonical form {text(form)[:60]}"


# A number with a fraction or an exponent right after ':', '[' or ',': in orjson's compact output, a float is
# one after '[' or ',', or after a key's closing quote and ':' (the same bytes inside a string count too: a
# false alarm only costs the slow way; a timestamp's "02:00:00.000000" does not count: no quote before ':').
_NUMBER = re.compile(rb"[:\[,]-?[0-9]+[.eE]")


def _has_float(body: bytes) -> bool:
    if body[:1] not in b'{["tfn' and (b"." in body or b"e" in body or b"E" in body):
        return True  # a float alone
    for found in _NUMBER.finditer(body):
        at = found.start()
        if body[at] != 0x3A or body[at - 1] == 0x22:  # not ':', or ':' right after '"'
            return True
    return False


def _plain(value: Any) -> bool:
    """Whether `value` is made of dicts, lists, text, integers, booleans and None alone (no float anywhere, so orjson
    writes what json writes): a walk of a record's ~40 values, quicker than searching its text for a float."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is not str and kind is not int and kind is not bool and item is not None:
            return False  # a float, or something else: the text decides
    return True


_BASE32_PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"]


def base32(data: bytes) -> str:
    """Unpadded lower-case base32 (RFC 4648's alphabet): base64.b32encode's text without its '=' padding, in lower
    case.  Made ten bits at a time from one integer, in half b32encode's time: every put writes two (its
    capability's key and manifest hash)."""
    chars = -(-len(data) * 8 // 5)
    top = (chars + 1) // 2 * 10  # bits in whole pairs of characters, the data's own at the top
    bits = int.from_bytes(data, "big") << (top - len(data) * 8)
    return "".join([_BASE32_PAIRS[(bits >> shift) & 1023] for shift in range(top - 10, -1, -10)])[:chars]


def framed(head: dict, data: bytes) -> bytes:
    """One body of a JSON object and raw bytes: the head's length (4 bytes, big-endian), the head, the bytes."""
    text = dumps(head)
    return len(text).to_bytes(4, "big") + text + data


def unframed(body: bytes, max_head: int) -> tuple[dict, bytes]:
    """The head and the bytes of a `framed` body (from outside: a key given twice refused); ValueError if it is not
    one, or its head is over max_head bytes."""
    length = int.from_bytes(body[:4], "big")
    if len(body) < 4 or length > max_head or 4 + length > len(body):
        raise ValueError(f"not a framed body (the 4-byte length of a JSON object of at most {max_head:,} bytes, "
                         "the object, then the data)")
    head = loads(body[4:4 + length], unique_keys=True)  # a JSONDecodeError (a DuplicateKey) is a ValueError
    if not isinstance(head, dict):
        raise ValueError("the head of a framed body is a JSON object")
    return head, body[4 + length:]
