"""The CGI a web function speaks (xsc/compute/cgi.py), as properties: an answer's head is read back as it was written,
a header no caller may be given is never passed on, a path that could walk past a function's own checks is refused,
and no request header passes for a variable the node sets."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.compute.cgi import DROPPED, Request, environment, parse_cgi, path_info
from xsc.errors import BadRequest, FunctionFailed

# Headers parse_cgi reads for itself (the status, a redirect's, the length, a validator): the others are passed on.
READ_HERE = {"status", "location", "content-length", "etag", "set-cookie"}
TOKEN = st.text(alphabet="!#$%&'*+.^_`|~-" + string.ascii_letters + string.digits, min_size=1, max_size=16)
# A header's value as a function writes it: visible ASCII or any letter, with spaces inside, none at its ends.
VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cc",)),
                max_size=24).map(str.strip)
PASSED_ON = st.tuples(TOKEN, VALUE).filter(lambda h: h[0].lower() not in READ_HERE | DROPPED)
# What the node sets itself: no request header may add to or stand for one of these.
SET_BY_THE_NODE = {"GATEWAY_INTERFACE", "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REQUEST_METHOD", "SCRIPT_NAME",
                   "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_USER",
                   "AUTH_TYPE", "SERVER_NAME", "SERVER_PORT", "CONTENT_TYPE", "CONTENT_LENGTH", "X_MATCHED_ROUTE",
                   "X_RAW_PATH_INFO", "X_FULL_URL"}


def _head(lines: list[str], newline: str, body: bytes = b"") -> bytes:
    return (newline.join(lines) + newline + newline).encode() + body


@settings(max_examples=60, deadline=None)
@given(st.integers(200, 599), st.lists(PASSED_ON, max_size=6), st.sampled_from(["\n", "\r\n"]), st.binary(max_size=8))
def test_an_answers_head_is_read_back_as_written(status, headers, newline, body):
    head = _head([f"Status: {status} Whatever", *(f"{name}: {value}" for name, value in headers)], newline)
    assert parse_cgi(head + body) == (status, headers, len(head), None)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(DROPPED - {"status", "content-length"})), VALUE, st.lists(PASSED_ON, max_size=3))
def test_a_header_of_the_nodes_framing_or_origin_is_never_passed_on(dropped, value, others):
    _, headers, _, _ = parse_cgi(_head([f"{dropped.title()}: {value}", *(f"{n}: {v}" for n, v in others)], "\n"))
    assert headers == others


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["xsc_", "XSC_", "Xsc_"]), st.text(alphabet=string.ascii_letters + "_-", max_size=12),
       st.text(alphabet=string.ascii_letters + string.digits + "=;", max_size=12), st.booleans())
def test_a_cookie_named_like_the_nodes_own_is_never_set(own, name, value, unnamed):
    # A cookie with no name ("=xsc_session=...") is read by a browser as its value alone: named so, it is the node's.
    cookie = f"={own}{name}={value}" if unnamed else f"{own}{name}={value}; Path=/"
    _, headers, _, _ = parse_cgi(_head([f"Set-Cookie: {cookie}", "Set-Cookie: theirs=1"], "\r\n"))
    assert headers == [("Set-Cookie", "theirs=1")]


@settings(max_examples=60, deadline=None)
@given(st.lists(PASSED_ON, min_size=1, max_size=4), st.data(),
       st.sampled_from([chr(c) for c in [*range(0, 9), *range(11, 32), 127]]))
def test_a_control_character_in_a_header_is_the_functions_failure(headers, data, control):
    at = data.draw(st.integers(0, len(headers) - 1))
    name, value = headers[at]
    cut = data.draw(st.integers(0, len(value)))
    headers[at] = (name, value[:cut] + control + value[cut:])
    with pytest.raises(FunctionFailed):
        parse_cgi(_head([f"{n}: {v}" for n, v in headers], "\r\n"))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="/.%2fF0a7e-x", max_size=16))
def test_a_path_is_refused_or_holds_no_dot_segment_and_no_control_character(raw):
    try:
        decoded, sent = path_info("/" + raw)
    except BadRequest:
        return
    assert sent == "/" + raw and "%2f" not in raw.lower()  # an encoded '/' would hide a segment from a check
    assert not {".", ".."} & set(decoded.split("/"))
    assert not any(ord(c) < 32 or ord(c) == 127 for c in decoded)


# Header names as aiohttp hands them over (any token), values with bytes that are not UTF-8 as surrogates.
HEADER_NAME = st.sampled_from(["Content-Type", "Content-Length", "Authorization", "Cookie", "Proxy", "Connection",
                               "X_Forwarded_For", "X-Forwarded-For", "Path-Info", "Server-Name"]) | TOKEN
HEADER_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cc",)) | st.sampled_from(["\udcff", "\udc80"]),
                       max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=8),
       st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=12))
def test_no_request_header_passes_for_a_variable_the_node_sets(headers, query):
    async def read(_: int) -> bytes:
        return b""

    request = Request(method="GET", path_info="/p", query=query, headers=headers, remote="192.0.2.1",
                      host="example.org:8080", content_length=None, read=read, script_name="/fn/f", raw_path_info="/p")
    env = environment(request)
    assert {key for key in env if not key.startswith("HTTP_")} == SET_BY_THE_NODE
    passed = {"HTTP_" + name.upper().replace("-", "_") for name, _ in headers if "_" not in name}
    assert set(env) - SET_BY_THE_NODE <= passed - {"HTTP_CONTENT_LENGTH", "HTTP_AUTHORIZATION", "HTTP_COOKIE",
                                                    "HTTP_PROXY", "HTTP_CONNECTION", "HTTP_CONTENT_TYPE"}
    for value in env.values():  # what an environment can hold: UTF-8 (no surrogate: encode raises), no NUL
        assert "\0" not in value.encode("utf-8").decode()
