"""ListObjects paging over any key set equals the plain definition; ETags; the XML request bodies."""

from __future__ import annotations

import bisect
import hashlib

import pytest
from hypothesis import example, given, settings, strategies as st

from tests.support.s3 import listing_model
from xsc.errors import S3Error
from xsc.buckets.core import etag, listing
from xsc.s3.core import xml

KEYS = st.lists(st.text(st.sampled_from("ab/é-"), min_size=1, max_size=6), max_size=40, unique=True)


def scanner(keys: list[str]):
    ordered = sorted(k.encode() for k in keys)
    seeks = []

    def scan(start: bytes):
        seeks.append(start)
        for k in ordered[bisect.bisect_left(ordered, start):]:
            yield k.decode(), {"size": len(k)}

    return scan, seeks


@settings(deadline=None)  # pure, but the machine may be loaded
@given(keys=KEYS, prefix=st.text(st.sampled_from("ab/é"), max_size=2), delimiter=st.sampled_from(["", "/", "é", "b/"]),
       max_keys=st.integers(1, 5))
def test_paging_with_tokens_lists_exactly_the_model(keys, prefix, delimiter, max_keys) -> None:
    scan, _ = scanner(keys)
    contents, prefixes, start = [], [], b""
    for _ in range(100):
        page = listing.list_page(scan, prefix=prefix, delimiter=delimiter, max_keys=max_keys, start=start)
        assert len(page["contents"]) + len(page["prefixes"]) <= max_keys
        contents += [k for k, _ in page["contents"]]
        prefixes += page["prefixes"]
        if not page["truncated"]:
            break
        start = listing.decode_token(page["next"])
    assert (contents, prefixes) == listing_model(keys, prefix, delimiter)


@settings(deadline=None)  # pure, but the machine may be loaded
@given(keys=KEYS, prefix=st.text(st.sampled_from("a/"), max_size=2), delimiter=st.sampled_from(["", "/", "b/"]),
       max_keys=st.integers(1, 5))
@example(keys=["a/", "a/b", "a/c/d"], prefix="a/", delimiter="/", max_keys=1)
def test_v1_markers_resume_where_the_page_ended(keys, prefix, delimiter, max_keys) -> None:
    """A marker is told from a common prefix by its delimiter past the prefix: a key "a/" listed under the prefix "a/"
    is a key, and the page after it goes on with "a/b"."""
    scan, _ = scanner(keys)
    contents, prefixes, marker = [], [], ""
    for _ in range(100):
        page = listing.list_page(scan, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                 start=listing.v1_start(marker, delimiter, prefix))
        contents += [k for k, _ in page["contents"]]
        prefixes += page["prefixes"]
        if not page["truncated"]:
            break
        marker = page["last"]
    assert (contents, prefixes) == listing_model(keys, prefix, delimiter)


def test_a_common_prefix_costs_one_seek_not_one_step_per_key() -> None:
    keys = [f"dir{d}/file{i}" for d in range(3) for i in range(1000)]
    scan, seeks = scanner(keys)
    page = listing.list_page(scan, delimiter="/")
    assert page["prefixes"] == ["dir0/", "dir1/", "dir2/"] and len(seeks) == 4


def test_bad_token_is_refused() -> None:
    with pytest.raises(S3Error):
        listing.decode_token("###")


def test_etags_as_s3_computes_them() -> None:
    parts = [b"a" * 10, b"b" * 3]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    assert etag.of_bytes(parts[0]) == md5s[0]
    assert etag.multipart(md5s) == hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s)).hexdigest() + "-2"


def test_request_bodies_parse_and_refuse() -> None:
    body = (b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber>'
            b'<ETag>"abc"</ETag></Part><Part><ETag>def</ETag><PartNumber>3</PartNumber></Part></CompleteMultipartUpload>')
    assert xml.parse_complete(body) == [(1, "abc"), (3, "def")]
    keys, quiet = xml.parse_delete(b"<Delete><Quiet>true</Quiet><Object><Key>a &amp; b</Key></Object>"
                                   b"<Object><Key>c</Key><VersionId>null</VersionId></Object></Delete>")
    assert keys == [("a & b", None), ("c", "null")] and quiet
    for bad in (b"<nope", b"<Delete></Delete>", b'<!DOCTYPE x [<!ENTITY a "b">]><Delete/>', b"<Other/>"):
        with pytest.raises(S3Error) as info:
            xml.parse_delete(bad)
        assert info.value.s3_code == "MalformedXML"
    with pytest.raises(S3Error):
        xml.parse_complete(b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>")
    with pytest.raises(S3Error) as info:  # a digit to str.isdigit(), not to int()
        xml.parse_complete("<CompleteMultipartUpload><Part><PartNumber>\u00b2</PartNumber><ETag>a</ETag></Part>"
                           "</CompleteMultipartUpload>".encode())
    assert info.value.s3_code == "MalformedXML"


def test_a_body_that_declares_another_encoding_carries_no_dtd_past_the_refusal() -> None:
    """A DTD is refused whatever encoding the body declares (its bytes in UTF-16 hold no "<!DOCTYPE"), and a body that
    is not UTF-8 is refused as malformed; a UTF-8 body that names its encoding, or begins with a BOM, is read."""
    dtd = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE c [<!ENTITY e "eu-west-9">]><CreateBucketConfiguration>'
           '<LocationConstraint>&e;</LocationConstraint></CreateBucketConfiguration>')
    for bad in (dtd.encode("utf-16"), dtd.encode("utf-16-be"), b"<Delete>\xff</Delete>"):
        with pytest.raises(S3Error) as info:
            xml.parse_location(bad)
        assert info.value.s3_code == "MalformedXML", bad
    plain = "<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
    assert xml.parse_location(b'<?xml version="1.0" encoding="UTF-8"?>' + plain.encode()) == "eu-west-1"
    assert xml.parse_location(b"\xef\xbb\xbf" + plain.encode()) == "eu-west-1"


def test_a_token_takes_back_only_its_own_position_for_its_own_listing() -> None:
    tokens = listing.Tokens(b"k" * 32)
    token = tokens.token(b"a/b\x00", "objects", "bkt", "a/", "/")
    assert tokens.position(token, "objects", "bkt", "a/", "/") == b"a/b\x00"
    for other in (("objects", "bkt2", "a/", "/"), ("objects", "bkt", "a", "/"), ("objects", "bkt", "a/", ""),
                  ("objects", "bkt", "a//", ""), ("buckets", "bkt", "a/", "/")):
        with pytest.raises(S3Error) as err:
            tokens.position(token, *other)
        assert err.value.s3_code == "InvalidArgument" and err.value.details["ArgumentName"] == "continuation-token"
    with pytest.raises(S3Error):  # another front's key
        listing.Tokens(b"x" * 32).position(token, "objects", "bkt", "a/", "/")
    for forged in ("", "###", listing.encode_token(b"a/z\x00"), token[:-4], token + "AAAA"):
        with pytest.raises(S3Error):
            tokens.position(forged, "objects", "bkt", "a/", "/")
