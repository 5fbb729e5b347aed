"""Peer addresses as the configuration and the node take them: a node's URL, one pinned to a node id, whether a host
is this machine, which addresses a node may dial."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Callable
from urllib.parse import urlsplit


def normalize_peer_url(text: str) -> str:
    """A peer URL, normalized: http://HOST:PORT or https://HOST:PORT without a trailing slash."""
    url, node = split_peer_address(text)
    if node is not None:
        raise ValueError(f"not a node URL: {text!r} (use https://HOST:PORT, without a node id)")
    return url


def split_peer_address(text: str) -> tuple[str, str | None]:
    """A node's address as a user gives it: `https://HOST:PORT`, or `https://NODE_ID@HOST:PORT` to pin
    the node it must be (the id is checked against the node's TLS key before anything is sent).
    Returns the normalized URL and the id given (or None); http:// is accepted (loopback, or upgraded)."""
    url = text.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path or parts.query or parts.fragment or parts.password is not None \
            or (parts.username is not None and not _NODE_ID.fullmatch(parts.username)):
        raise ValueError(f"not a node URL: {text!r} (use https://HOST:PORT or https://NODE_ID@HOST:PORT)")
    node = parts.username
    if node is not None:
        url = f"{parts.scheme}://{url.split('@', 1)[1]}"
    return url, node


def https_url(url: str) -> str:
    """The TLS form of a node URL (one port serves both: see xsc/serve/listener.py)."""
    return "https://" + url.removeprefix("http://") if url.startswith("http://") else url


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def names_this_machine(url: str) -> bool:
    """Does a node URL's host mean this machine wherever it is dialled from (loopback, localhost, or the
    unspecified address, which a connect takes for this machine)?"""
    host = urlsplit(url).hostname or ""
    if is_loopback_host(host):
        return True
    address = _numeric_address(host)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or address in _THIS_NETWORK


def _numeric_address(host: str):
    """The IP address a host names without a name lookup (127.1 and 2130706433 are 127.0.0.1 to a connect), or
    None for a name."""
    try:
        found = socket.getaddrinfo(host.strip("[]"), None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(found[0][4][0].split("%", 1)[0]) if found else None


def dialable(own_url: str, own_addresses: list[str] | None = None) -> Callable[[str], bool] | None:
    """Which addresses a peer's name may resolve to for this node to connect to it, by where this node's own URL
    is: on this machine (a devnet), any (None); elsewhere none on this machine (loopback, unspecified), and at a
    public address only public ones.  A peer's URL names a host; what that name resolves to is only known as it is
    dialled, and a name resolving to this machine or its LAN would point this node's requests at their services.

    A URL naming its host by a name is at a public address when any of `own_addresses`, what the name resolved to
    as the node started (net.dial.own_addresses), is public; None, a name that did not resolve, counts as public:
    a stranger's descriptor must not reach the LAN of a node that could not tell where it is."""
    if names_this_machine(own_url):
        return None
    host = urlsplit(own_url).hostname or ""
    own = _numeric_address(host)
    if own is not None:
        public = own.is_global
    else:
        public = own_addresses is None or any(_unmapped(a).is_global for a in own_addresses)

    def allowed(address: str) -> bool:
        ip = _unmapped(address)
        if ip.is_loopback or ip.is_unspecified or ip in _THIS_NETWORK:
            return False
        return ip.is_global or not public

    return allowed


def _unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address as a connect takes it: without its zone, an IPv4-mapped one as its IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network" (RFC 1122): a connect reaches this host
_NODE_ID = re.compile(r"[a-z2-7]{52}")
