"""The key a per-address cap or rate limit counts a caller by: one rule for every listener and limit."""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def address_key(remote: str | None) -> str:
    """The key a caller at `remote` is limited by: its IPv4 address, or the /64 of its IPv6 one (a host is given a
    /64, and could send each request, or open each connection, from a fresh address of it).  An IPv4 caller of a
    dual-stack listener, seen at an IPv4-mapped address, is keyed by its IPv4 address, not by the /64 all of them
    share.  IPv6 brackets and a zone (`%eth0`) are ignored."""
    if not remote or ":" not in remote:
        return remote or "?"
    try:
        packed = socket.inet_pton(socket.AF_INET6, remote.strip("[]").partition("%")[0])
    except OSError:
        return remote
    if packed[:12] == _IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


def network_key(remote: str | None) -> str:
    """The network a caller at `remote` is counted in where one operator could hold many addresses (a bound on what
    all the node ids of a network may hold at once): the /24 of a public IPv4 address, the /64 of an IPv6 one
    (`address_key`'s, an IPv4-mapped address taken as its IPv4 one).  A private, loopback or link-local IPv4 address
    is its own key: those callers are on this node's own network, where a /24 is one site's many hosts (a cluster,
    a container bridge), not one stranger's."""
    key = address_key(remote)
    try:
        packed = socket.inet_pton(socket.AF_INET, key)
    except OSError:
        return key  # an IPv6 /64, or not an address at all (a Unix socket: "?")
    if not ipaddress.IPv4Address(packed).is_global:
        return key
    return socket.inet_ntop(socket.AF_INET, packed[:3] + b"\0") + "/24"


@functools.cache
def _suffixes() -> PublicSuffixList:
    """The ICANN section of the Public Suffix List the package ships (read once, when a name is first grouped;
    nothing is fetched).  Its private section is left out on purpose: names under `duckdns.org` or `github.io` are
    handed out free, so each is no costlier to a stranger than a name under a domain of its own."""
    return PublicSuffixList(only_icann=True)


def registrable_domain(name: str) -> str:
    """The domain `name` is registered under: its public suffix in ICANN's list (`com`, `co.uk`) and the label
    before it, in ASCII (an IDN's two spellings are one
    domain).  A name that is a public suffix itself, or no valid name, is its own."""
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return _suffixes().privatesuffix(name) or name


def url_network(url: str) -> str:
    """The network a peer's URL is counted in where one operator could run many node ids (a bootstrapping node's
    recognition, market/core/recognition.py): `network_key` of a public address; a name's registrable domain
    (wildcard DNS makes names under one domain free, a domain is not); HOST:PORT of a private, loopback or link-local
    address or of `localhost`, which only this node's own network reaches, where each listener is a node of its
    own."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        numeric = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host}:{parts.port}"
        return "name:" + registrable_domain(host)
    if isinstance(numeric, ipaddress.IPv6Address) and numeric.ipv4_mapped is not None:
        numeric = numeric.ipv4_mapped
    if not numeric.is_global:
        return f"{numeric}:{parts.port}"
    return network_key(str(numeric))


__all__ = ["address_key", "network_key", "registrable_domain", "url_network"]
