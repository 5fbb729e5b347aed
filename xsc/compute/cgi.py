"""CGI as a web function speaks it (RFC 3875, with WAGI's variables): what it is told of a request, and the head of
the answer it writes.  Nothing here reads or writes but a log line (an ETag no caller could send back, dropped).

  Request       what a function is told of an HTTP request (the route parses it)
  path_info     a request's PATH_INFO, decoded, refused where it could walk past the function's own checks
  environment   the request's CGI variables
  parse_cgi     the start of a CGI answer: its status, the headers it may set, where its body starts, its length
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from ..errors import BadRequest, FunctionFailed
from .web_answers import declared_length, entity_tag

MAX_HEAD = 64 * 1024  # bytes of CGI headers
_ENV_NAME = re.compile(r"[A-Z0-9_]{1,100}")  # a request header passed to the function as HTTP_<NAME>
_ENCODED_SLASH = re.compile(r"%2f", re.IGNORECASE)
_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# request headers no function sees (Connection: hop-by-hop, as WAGI leaves it out)
_NOT_PASSED = frozenset({"CONTENT_LENGTH", "AUTHORIZATION", "COOKIE", "PROXY", "CONNECTION"})
# Headers a function's answer may not set: hop-by-hop ones and its framing (the node's, from what it sends), and
# those that reach past the function to its whole origin (every function on this listener, other owners' placed
# ones among them): a service worker's scope widened over them, their cookies and storage cleared.
DROPPED = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                     "transfer-encoding", "upgrade", "content-length", "status", "service-worker-allowed",
                     "clear-site-data"})
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")  # an RFC 9110 token, its value
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # in a header block whose CRLFs are LFs: all but tab and LF
_STATUS = re.compile(r"([2-5][0-9][0-9])(?:[ \t].*)?")
ReadFn = Callable[[int], Awaitable[bytes]]
log = logging.getLogger(__name__)


@dataclass
class Request:
    """What a function is told of an HTTP request (the route parses it)."""

    method: str
    path_info: str  # decoded (RFC 3875), after script_name
    query: str
    headers: list[tuple[str, str]]
    remote: str
    host: str
    content_length: int | None
    read: ReadFn
    script_name: str = ""  # the route's prefix: /fn/NAME (/fn/OWNER_ID/NAME for a placed function)
    raw_path_info: str = ""  # path_info as sent, still encoded
    port: int = 0  # the port the request came to
    scheme: str = "http"  # of the listener it came to (not a header's word for it)
    target: str = ""  # its path and query as sent, still encoded (of an absolute-form target too)
    version: str = "HTTP/1.1"


def path_info(raw: str) -> tuple[str, str]:
    """A request's PATH_INFO, decoded as RFC 3875 says, and as sent: `raw` is its path after /fn/NAME, still
    encoded.  Bytes that are not UTF-8 become U+FFFD (no environment holds them; X_RAW_PATH_INFO has them as
    sent).  Refused if it has a '.' or '..' segment or an encoded '/' (no browser sends either): a function that
    checks where a path starts (or a proxy in front that does) would be walked past, as /public/..%2Fprivate/x,
    to what its files keep elsewhere; or a control character (%00 would end the variable early, %0a split the
    lines of a log or of a header the function writes it into)."""
    raw = raw or "/"
    path = unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")
    if _PATH_CONTROL.search(path):
        raise BadRequest(f"the request's path {raw[:200]!r} holds a control character once decoded",
                         hint="send a path without %00 to %1f or %7f")
    if not {".", ".."}.isdisjoint(path.split("/")) or ("%" in raw and _ENCODED_SLASH.search(raw)):
        raise BadRequest(f"the request's path {raw[:200]!r} has a '.' or '..' segment or an encoded '/'",
                         hint="send the path a browser would: dot segments resolved, '/' as it is")
    return path, raw


def environment(request: Request) -> dict[str, str]:
    """The request's CGI variables: every one WAGI sets, with its meaning.  REMOTE_HOST is REMOTE_ADDR (no name is
    looked up: RFC 3875 lets a server that does no lookup give the address, and a lookup would wait on the caller's
    DNS); PATH_TRANSLATED is PATH_INFO (no file of the node's is named by a path); AUTH_TYPE and REMOTE_USER are
    empty (a function's callers are anonymous).  These, CONTENT_TYPE and CONTENT_LENGTH are set even when empty: a
    program written for WAGI reads them as always there, and none of them is taken from the owner's `env`.  Every
    header becomes HTTP_<NAME>, so none can pass for one of these (`X-Full-Url` is HTTP_X_FULL_URL); a header
    named with '_' is not passed: it would take the place of (or be taken for) the one named with '-' that a proxy
    in front checks or sets (X_Forwarded_For as HTTP_X_FORWARDED_FOR); nor is `Proxy` (HTTP_PROXY is read as a
    proxy's address: httpoxy).  A header sent twice is one variable, its values joined as HTTP joins them.  A value
    aiohttp kept bytes of that are not UTF-8 in (as surrogates, which no environment holds) has them replaced."""
    name, port = _host_port(request.host, request.port)
    target = request.target or request.script_name + (request.raw_path_info or "/") + (
        "?" + request.query if request.query else "")
    env = {"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": request.version, "SERVER_SOFTWARE": "xsc",
           "REQUEST_METHOD": request.method, "SCRIPT_NAME": request.script_name, "PATH_INFO": request.path_info,
           "PATH_TRANSLATED": request.path_info, "QUERY_STRING": request.query, "REMOTE_ADDR": request.remote,
           "REMOTE_HOST": request.remote, "REMOTE_USER": "", "AUTH_TYPE": "", "SERVER_NAME": name,
           "SERVER_PORT": port, "CONTENT_TYPE": "", "CONTENT_LENGTH": str(request.content_length or 0),
           # WAGI's own: the route the request matched, PATH_INFO as sent, and the URL the caller asked for
           "X_MATCHED_ROUTE": request.script_name + "/...", "X_RAW_PATH_INFO": request.raw_path_info or "/",
           "X_FULL_URL": f"{request.scheme}://{name}:{port}{target}"}
    for name, value in request.headers:
        if "_" in name:
            continue
        if not value.isascii():  # (aiohttp refuses a NUL in a header)
            value = _utf8(value)
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        elif key not in _NOT_PASSED and _ENV_NAME.fullmatch(key):
            key = "HTTP_" + key
            env[key] = env[key] + ", " + value if key in env else value
    for key in ("SERVER_NAME", "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "X_FULL_URL"):
        if not env[key].isascii():
            env[key] = _utf8(env[key])
    return env


def _host_port(host: str, port: int) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT: the Host header's name and port (the names a caller reached the function by,
    behind a proxy too), else the port the request came to."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name, given = name + "]", rest.removeprefix(":")
    else:
        name, _, given = host.partition(":")
    return name, given if given.isascii() and given.isdigit() else str(port)


def _utf8(text: str) -> str:
    """`text` as an environment can hold it: bytes that are not UTF-8 replaced by U+FFFD, NULs dropped."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace").replace("\0", "")


def parse_cgi(head: bytes) -> tuple[int, list[tuple[str, str]], int, int | None]:
    """The start of a CGI response: (its status, the headers it may set, where its body starts, the length it
    declares).  Header lines,
    then a blank line; `Status:` (200 if none, 302 with a Location and no Status).  Every header is checked
    before it reaches the caller: a name that is no HTTP token, a value with a control character (a CR or NUL
    would split or end the response) or not UTF-8, and a Status that is no final HTTP status (a 1xx would leave the
    caller waiting for another answer, or a proxy tunnelling the connection) are the function's failure (502)."""
    lf, crlf = head.find(b"\n\n"), head.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        end, body = crlf, crlf + 4
    elif lf >= 0:
        end, body = lf, lf + 2
    else:
        raise FunctionFailed(f"the function's answer is not a CGI response (no blank line after its headers in its "
                             f"first {MAX_HEAD:,} bytes)")
    try:
        text = head[:end].decode()
    except UnicodeDecodeError:
        raise FunctionFailed("the function's answer has headers that are not UTF-8") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if (control := _CONTROL.search(text)) is not None:
        raise FunctionFailed(f"the function's answer has a control character ({control.group()!r}) in its headers")
    status, explicit, headers, declared = 200, False, [], None
    for line in text.split("\n"):
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise FunctionFailed(f"the function's answer has a malformed header line: {line[:80]!r}")
        name, value = match.groups()
        lower = name.lower()
        if lower == "status":
            code = _STATUS.fullmatch(value)
            if code is None:
                raise FunctionFailed(f"the function's Status is not a final HTTP status (200 to 599): {value[:40]!r}")
            status, explicit = int(code.group(1)), True
        elif lower == "location" and not explicit:
            status = 302
        elif lower == "content-length":
            if declared is not None and declared_length(value) != declared:
                raise FunctionFailed("the function's answer declares two Content-Lengths")
            declared = declared_length(value)
        elif lower == "etag":
            if (tag := entity_tag(value)) is None:  # a validator no caller could send back
                log.info("a function's ETag that no quoting makes an entity tag is dropped: %r", line[:200])
                continue
            value = tag
        if _kept(lower, value):
            headers.append((name, value))
    return status, headers, body, declared


def _kept(lower: str, value: str) -> bool:
    if lower in DROPPED:
        return False
    if lower == "set-cookie":
        # The node's cookies: a function's page must never set the dashboard's session.  A browser sends a cookie
        # set with no name ("=xsc_session=...") as its value alone, which a server reads as that name.
        pair = value.split(";", 1)[0]
        name = pair.split("=", 1)[0].strip() or pair.partition("=")[2].split("=", 1)[0].strip()
        return not name.lower().startswith("xsc_")
    return True


__all__ = ["DROPPED", "MAX_HEAD", "ReadFn", "Request", "environment", "parse_cgi", "path_info"]
