"""Node configuration: TOML in the data dir, overridden by environment variables.

Precedence (highest first): command-line flags, `XSC_<SECTION>_<KEY>` environment
variables (e.g. `XSC_STORAGE_CAPACITY=10GiB`, `XSC_NODE_LISTEN=127.0.0.1:7071`),
`<data dir>/config.toml`, the defaults below.  The data dir itself is `--data-dir`,
else `$XSC_HOME`, else `~/.xsc`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Callable
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, InvalidArgument, from_validation
from .paths import resolve_data_dir
from . import units
from .units import is_whole_number


class _Refused(ValueError):
    """A parser's refusal as pydantic takes it (a ValueError, its text the message and hint), its message and the
    value it would take (`example`) kept apart: the line of a bad configuration value names, in one pair of
    parentheses, where it was set and the command that sets a good one."""

    def __init__(self, err: InvalidArgument | ConfigError) -> None:
        super().__init__(err.with_hint)
        self.message, self.hint, self.example = err.message, err.hint, err.details.get("example")


def _refused_as_value_error(parse: Callable[[Any], int]) -> Callable[[Any], int]:
    """A units parser whose refusal is a ValueError: pydantic then names the key the value was given for."""
    def parsed(v: Any) -> int:
        try:
            return parse(v)
        except InvalidArgument as err:
            raise _Refused(err) from None
    return parsed


parse_size = _refused_as_value_error(units.parse_size)
parse_duration = _refused_as_value_error(units.parse_duration)
parse_seconds = _refused_as_value_error(units.parse_seconds)  # type: ignore[arg-type]

DEFAULT_LISTEN = "127.0.0.1:7070"
EVENT_LOOPS = ("uvloop", "asyncio")  # node.event_loop (xsc/tasks.py: run)
CONFIG_FILE = "config.toml"
MiB = 1024 * 1024
MAX_CAPACITY = 4 * 1024**6  # bytes (4 EiB): under 2**63, with room for what is summed with it
MAX_THREADS = 1024
MAX_FUEL_PER_SECOND = 10**10  # x MAX_THREADS x 7 days of a bucket stays under 2**63
DAY = 86400
REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?", re.ASCII)  # an S3 region's name: us-east-1, eu-central-2


def _check(ok: Callable[[Any], bool], message: str) -> AfterValidator:
    """Refuse a value `ok` does not take with `message` (pydantic's error names the key)."""
    def checked(v: Any) -> Any:
        if not ok(v):
            raise ValueError(message)
        return v
    return AfterValidator(checked)


def _within(low: float, high: float, message: str) -> AfterValidator:
    return _check(lambda v: low <= v <= high, message)


def _at_least(low: float, message: str) -> AfterValidator:
    return _check(lambda v: v >= low, message)


def _span(low: float, high: float | None = None, *, above: bool = False, why: str = "") -> AfterValidator:
    """A duration's bounds, said in the units a user writes it in ("must be from 50ms to 7d"); `above`: more than
    `low`, not `low` itself."""
    said = units.duration_argument
    first = f"more than {said(low)}" if above else f"from {said(low)}" if high is not None else f"at least {said(low)}"
    last = "" if high is None else f" and at most {said(high)}" if above else f" to {said(high)}"
    return _check(lambda v: (v > low if above else v >= low) and (high is None or v <= high),
                  f"must be {first}{last}{why}")


_SIZE = BeforeValidator(parse_size)  # 10GiB, 500MB, 4096
_DURATION = BeforeValidator(parse_duration)  # 30d, 1.5h, 3600: whole seconds
_SECONDS = BeforeValidator(parse_seconds)  # 10m, 250ms, 1.5h, 600, 600.0: seconds, a float
Seconds = Annotated[float, _SECONDS]  # a period a node waits or allows, taken in any unit a user writes it in
WholeSeconds = Annotated[int, _DURATION]  # a duration kept to the second (a lease, a record's retention)
_AT_LEAST_1 = _at_least(1, "must be at least 1")
_PER_SECOND = _within(1, 1_000_000, "must be between 1 and 1000000 requests per second")
_UP_TO_A_DAY = _span(0.05, DAY)
_UP_TO_A_WEEK = _span(0.05, 7 * DAY)
_UP_TO_AN_HOUR = _span(0, 3600, above=True)
_JITTER = _within(0, 0.9, "must be between 0 and 0.9 (a fraction of the interval)")
_UP_TO_10_YEARS = _span(1, 3650 * DAY)


def _listen_address(required: bool) -> AfterValidator:
    """HOST:PORT with a fixed port; empty where not `required` (then not served)."""
    def checked(v: str) -> str:
        if v or required:
            try:
                parse_listen(v)
            except ConfigError as err:  # pydantic's error names the setting
                raise _Refused(err) from None
        return v
    return AfterValidator(checked)


_LISTEN = _listen_address(required=False)
_CONNECTIONS = _within(16, 1_000_000, "must be from 16 to 1000000 connections")


class _Section(BaseModel):
    """A section of settings, one declaration each: its type with its parser and checks (Annotated, or Field's
    bounds), its default, a comment saying what it is.  Its TOML key and XSC_* variable follow from its name."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NodeSection(_Section):
    listen: Annotated[str, _listen_address(required=True)] = DEFAULT_LISTEN
    # HOST:PORT of a TLS-only listener for peers (empty: peers use node.listen, over TLS)
    peer_listen: Annotated[str, _LISTEN] = ""
    log_level: Annotated[str, _check(lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
                                     "must be DEBUG, INFO, WARNING or ERROR")] = "INFO"
    # open connections in all (kept under the open-files limit); idle ones make room
    max_connections: Annotated[int, _CONNECTIONS] = 2048
    max_connections_per_ip: Annotated[int, _CONNECTIONS] = 256  # ... and from one client address
    # seconds a connection may stay open without a request in progress
    idle_timeout: Annotated[Seconds, _span(1, 3600)] = 45.0
    # user API requests per second with the token, and each S3 user's at s3_listen (bursts of twice that); 429 past it
    user_rate_limit: Annotated[float, _PER_SECOND] = 2000.0
    # failed authentications (a wrong token, session or login link; at node.s3_listen a wrong signature or an
    # unknown access key) per second from one address, in bursts of 30; past them the address is answered 429 (S3:
    # 503 SlowDown), whatever it sends, until its bucket refills
    auth_failure_limit: Annotated[float, _within(0.001, 1000, "must be between 0.001 and 1000 a second")] = 1.0
    # HOST:PORT where web functions answer anyone (/fn/NAME/...); empty: no functions served
    web_listen: Annotated[str, _LISTEN] = ""
    # function requests per second from one address (bursts of twice that); 429 past it
    web_rate_limit: Annotated[float, _PER_SECOND] = 100.0
    web_public_url: str = ""  # the URL callers reach web_listen at (empty: http://web_listen, its host as peers see it)
    # HOST:PORT where the node itself answers S3 (as `xsc s3 serve` does); empty: not served
    s3_listen: Annotated[str, _LISTEN] = ""
    # the region S3 clients sign for, and GetBucketLocation answers (as `xsc s3 serve --region`)
    s3_region: Annotated[str, _check(lambda v: REGION.fullmatch(v) is not None,
                                     "must be a region name like us-east-1 (a-z, 0-9 and '-')")] = "us-east-1"
    s3_max_buckets: int = Field(default=10_000, ge=1, le=1_000_000)  # buckets one S3 user may own (as an AWS account)
    s3_max_uploads: int = Field(default=1_000, ge=1, le=1_000_000)  # multipart uploads one S3 user may have going
    # seconds an unfinished multipart upload is kept; then it and its parts go
    s3_upload_expiry: Annotated[WholeSeconds, _UP_TO_10_YEARS] = 7 * DAY
    # the event loop the node and `xsc s3 serve` run on: uvloop (libuv's, less CPU a request) or asyncio (Python's own)
    event_loop: Annotated[str, _check(lambda v: v in EVENT_LOOPS, "must be uvloop or asyncio")] = "asyncio"
    # seconds between checks that each function on the market is served and paid
    placement_interval: Annotated[Seconds, _span(0.1, 600)] = 5.0


_GRACE = _span(0)


class StorageSection(_Section):
    # bytes of block data this node will hold (byte counts are stored and offered as signed 64-bit integers)
    capacity: Annotated[int, _SIZE, _check(lambda v: v <= MAX_CAPACITY, "must be at most 4 EiB")] = 10 * 1024**3
    segment_size: Annotated[int, _SIZE, _within(4096, 64 * MiB, "segment_size must be between 4 KiB and 64 MiB")] = MiB
    # seconds (= xsc.storage.core.leases bounds, not imported: the CLI starts faster)
    lease_duration: Annotated[WholeSeconds, _span(60, 3650 * DAY)] = 30 * DAY
    # seconds a share holder may take to answer a read before a get uses other shares
    remote_timeout: Annotated[Seconds, _span(0, DAY, above=True)] = 5.0
    # seconds between garbage collections of shares whose lease ended, and between attempts to delete on other
    # nodes the copies of shares no placement holds (a removal's unreached holders, a repair cut short)
    gc_interval: Annotated[Seconds, _UP_TO_A_WEEK] = 600.0
    # seconds a share is kept after its lease ended (a late renewal still finds it)
    gc_grace: Annotated[WholeSeconds, _GRACE] = DAY
    # blocks deleted per second at most by the garbage collection
    gc_rate: Annotated[int, _at_least(1, "must be at least 1 block per second")] = 10_000
    # seconds a share another node placed here may go unpaid before it is deleted
    unpaid_grace: Annotated[WholeSeconds, _GRACE] = 3 * DAY


class ComputeSection(_Section):
    fuel: Annotated[int, _AT_LEAST_1] = 10_000_000_000  # default and maximum fuel per call
    memory: Annotated[int, _SIZE] = 64 * MiB  # default and maximum linear memory per call
    # default and maximum wall-clock seconds per call
    timeout: Annotated[Seconds, _span(0, DAY, above=True)] = 5.0
    # each is a thread of the node's process, started with it
    threads: Annotated[int, _AT_LEAST_1, _check(lambda v: v <= MAX_THREADS, f"must be at most {MAX_THREADS}")] \
        = Field(default_factory=lambda: os.cpu_count() or 2, json_schema_extra={"default_said": "the number of cores"})
    max_module_size: Annotated[int, _SIZE, _AT_LEAST_1] = 16 * MiB
    peer_compile_timeout: Annotated[Seconds, _UP_TO_AN_HOUR] = 10.0  # CPU seconds to compile a peer's module
    # calls admitted (running or waiting for a thread); more are refused with 503
    max_queued: Annotated[int, _AT_LEAST_1] = 256
    # child processes that run the tries of small web requests on other cores (docs/compute.md, Web services);
    # 0: tried on the event loop's thread
    web_runners: int = Field(default_factory=lambda: 1 if (os.cpu_count() or 1) >= 2 else 0, ge=0, le=64,
                             json_schema_extra={"default_said": "1 with two cores or more, else 0"})
    # the most a function another node places here may ask: bytes of a request's body, and requests at once; a
    # placement asking more is refused (docs/compute.md, Web services)
    placed_max_body: Annotated[int, _SIZE, _check(lambda v: v <= 1 << 30, "must be at most 1 GiB")] = 64 * MiB
    placed_concurrency: int = Field(default=16, ge=1, le=256)
    # micro-credits per 64 KiB page of peak linear memory per second of a call (docs/compute.md, Metering)
    memory_price: int = Field(default=10, ge=0, le=10**9)
    # seconds after a job or a call began that its records (the job, its outputs' links, its providers' signed runs;
    # provenance records) are deleted once nothing needs them: a job's files stored or read by a job kept, a tab
    # not settled (docs/compute.md, Retention)
    record_retention: Annotated[WholeSeconds, _UP_TO_10_YEARS] = 30 * DAY
    # the share of the answers of calls run on other nodes whose provider's signed record is fetched and held to the
    # answer (docs/compute.md, "Calls run on another node"); 0: only the calls invoked with --verify
    check_rate: float = Field(default=1 / 32, ge=0, le=1)


class LedgerSection(_Section):
    credit_limit: int = 100_000_000  # micro-credits an account may go below zero (100 credits)
    low_balance: int = Field(default=10, ge=0, le=100)  # warn when less than this % of the credit limit is available
    # seconds between retries of unfinished remote payments
    settle_retry_interval: Annotated[Seconds, _span(0, above=True)] = 30.0
    # Credit only along recognition (docs/security.md): micro-credits of work this node does ahead of payment for
    # a peer the user recognises (xsc market recognize PEER W --credit C sets one peer's line) and for any other
    stranger_credit: int = Field(default=0, ge=0, le=2**62)  # 0: strangers prepay (xsc ledger prepay)
    peer_credit: int = Field(default=10_000_000, ge=0, le=2**62)
    # Prepayment to providers that want it (storage/strangers.py): off, puts go only to providers that take them
    # (or stay home); on, this node prepays by itself, at most auto_prepay_peer micro-credits to one provider and
    # auto_prepay_total to all of them, in all
    auto_prepay: bool = False
    auto_prepay_peer: int = Field(default=1_000_000, ge=0, le=2**62)
    auto_prepay_total: int = Field(default=10_000_000, ge=0, le=2**62)
    # seconds a put waits for one such prepayment's receipt: one not answered by then is left to the payments' retry
    # (as after a crash), and the put goes on without that provider
    prepay_wait: Annotated[Seconds, _UP_TO_AN_HOUR] = 5.0
    # Aggregated settlement of invokes (xsc/ledger/tabs.py): a (payer, payee) tab is settled as one transfer when
    # it is tab_interval seconds old, owes tab_threshold micro-credits or covers tab_max_refs invokes (1: every
    # invoke is its own transfer)
    tab_interval: Annotated[Seconds, _UP_TO_AN_HOUR] = 1.0
    tab_threshold: int = Field(default=1_000_000, ge=1, le=2**62)
    tab_max_refs: int = Field(default=4096, ge=1, le=4096)
    # seconds the ledger keeps what is not kept for good past its time (docs/ledger.md, Retention): the provenance
    # ids an aggregated transfer covers, after it was settled; the settled marks (the replay check: no entry under an
    # authorization that expired longer ago is taken) and the marks that count a receipt or a payment on a trust
    # line once, after its authorization expired
    record_retention: Annotated[WholeSeconds, _span(
        2 * DAY, 3650 * DAY, why=" (a payment is retried for a day past its expiry)")] = 30 * DAY


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


def _seed(text: str) -> str:
    """A seed as configured, normalized, keeping the node id that pins it (https://NODE_ID@HOST:PORT)."""
    url, node = split_peer_address(text)
    return url.replace("://", f"://{node}@", 1) if node else url


def _seeds(v: Any) -> Any:
    """A list of seeds, or one string of them comma-separated (XSC_PEERS_URLS)."""
    return [u for u in v.split(",") if u.strip()] if isinstance(v, str) else v


class PeersSection(_Section):
    # nodes to join on start (XSC_PEERS_URLS: comma-separated)
    urls: Annotated[list[str], BeforeValidator(_seeds),
                    AfterValidator(lambda v: list(dict.fromkeys(_seed(u) for u in v)))] = []
    # the URL peers reach this node at (empty: https://<node.peer_listen or node.listen>)
    public_url: Annotated[str, AfterValidator(lambda v: normalize_peer_url(v) if v else "")] = ""
    tls: bool = True  # advertise https:// and reach every peer over TLS pinned to its node id (docs/security.md)
    loopback_plaintext: bool = True  # accept peer requests without TLS from loopback addresses (never from others)
    channel_auth: bool = True  # over TLS, prove this node's key once a connection (client certificate), unsigned
    gossip_interval: Annotated[Seconds, _UP_TO_A_DAY] = 30.0  # seconds between descriptor exchanges with a random peer
    request_timeout: Annotated[Seconds, _UP_TO_A_DAY] = 10.0  # seconds a node-to-node request may take
    # TCP congestion control of the sockets peers talk on (xsc/net/congestion.py; empty: the host's default).  A
    # host's default is loss-based (cubic), which carries little on a long path that loses packets.
    congestion: Annotated[str, _check(
        lambda v: not v or re.fullmatch(r"[a-z0-9_]{1,15}", v),
        "must be a kernel's congestion control name (as in "
        "/proc/sys/net/ipv4/tcp_available_congestion_control, e.g. bbr), or empty for the host's")] = "bbr"
    # signed-request nonces remembered in all (see identity.ReplayGuard); ... and per sender: past it, a sender gets
    # 429 with Retry-After
    replay_capacity: Annotated[int, _within(1, 10_000_000, "must be between 1 and 10,000,000 nonces")] = 200_000
    replay_per_sender: Annotated[int, _within(1, 10_000_000, "must be between 1 and 10,000,000 nonces")] = 20_000
    # signed requests per second one peer key may send (bursts of twice that); 429 past it
    rate_limit: Annotated[float, _PER_SECOND] = 5000.0
    # Work units (node/peer_routes.py: about one signature check each) one peer key may spend per second, charged on
    # a request's headers from its declared length; bursts of 8 seconds of it; 429 past it, before the body is read.
    work_rate: float = Field(default=1000.0, ge=1, le=1_000_000)
    # Nodes not known before this node takes per second from one address's messages of descriptors (bursts of 256:
    # a node joining a network of 1,000 learns them in ~25 s); past it their descriptors are not even checked.
    new_node_rate: float = Field(default=32.0, ge=1, le=1_000_000)
    # Admission (docs/security.md): bits of proof of work a peer's node id must have (this node's own id is minted
    # with as many on its first start: ~2**N keys, about 95 s at 20 on one core here; 0 admits any key)
    min_difficulty: int = Field(default=16, ge=0, le=40)
    # a closed network's shared secret: peers without it are refused (empty: an open network)
    grid_secret: Annotated[str, _check(
        lambda v: not v or 16 <= len(v) <= 256,
        "a grid secret must have 16 to 256 characters (make one with: openssl rand -hex 32)")] = ""
    quarantine_strikes: int = Field(default=5, ge=1, le=1_000_000)  # misbehaviours within an hour before quarantine
    # seconds a quarantined peer stays refused (xsc peers quarantine rm lifts it)
    quarantine_for: Annotated[WholeSeconds, _UP_TO_10_YEARS] = DAY
    # The hash table (docs/peers.md): UDP on the port number of the peer listener, to find nodes and files' holders
    dht: bool = True
    dht_interval: Annotated[Seconds, _UP_TO_A_DAY] = 30.0  # seconds between rounds: join, republish
    dht_rate: float = Field(default=200.0, ge=1, le=1_000_000)  # datagrams a second one address may send
    dht_ttl: Annotated[Seconds, _span(60, 3650 * DAY)] = 7 * 86400.0  # seconds a record is kept unless stored again


class HealthSection(_Section):
    # seconds between probe rounds (each varied by +-probe_jitter of itself)
    probe_interval: Annotated[Seconds, _UP_TO_A_DAY] = 10.0
    probe_jitter: Annotated[float, _JITTER] = 0.2
    probe_timeout: Annotated[Seconds, _UP_TO_A_DAY] = 5.0  # seconds a peer may take to answer a challenge
    # Peers outside the neighbourhood (those the node recognises) probed a round: a sample, each kept for a few
    # rounds, then replaced by those probed longest ago; with more of them, each is probed less often, so a round
    # costs the same however large the network grows.
    probe_others: int = Field(default=2, ge=1, le=1000)


def _rate(v: Any) -> int:
    """A byte rate: a size, or one as the docs write it (20MB/s)."""
    if isinstance(v, str) and v.rstrip().endswith("/s"):
        v = v.rstrip()[:-2]
    return parse_size(v)


_RATE = BeforeValidator(_rate)  # 20MB/s, 20MB, 20000000
_OFF_AT_0 = _at_least(0, "must be at least 0 (0 turns it off)")


class AuditSection(_Section):
    """Storage audits of the shares this node placed, the scrubber of those it holds, automatic repair."""

    # seconds between audit rounds (each varied by +-jitter) and between scrub passes
    interval: Annotated[Seconds, _UP_TO_A_WEEK] = 60.0
    jitter: Annotated[float, _JITTER] = 0.2
    blocks_per_round: Annotated[int, _OFF_AT_0] = 4  # random remote blocks audited per round (0: no audits)
    scrub_rate: Annotated[int, _RATE, _OFF_AT_0] = 20 * 1000**2  # bytes/s re-hashed (0: no scrubbing)
    # Consecutive failed probes of a holder before its shares are rebuilt elsewhere; audits of one share refused in a
    # row by a holder that answers its probes before that share is.
    repair_after_failures: Annotated[int, _AT_LEAST_1] = 3
    # Audits of one share in a row that a holder up by its probes lets time out before it counts as a failed audit
    # (containment: the share is audited again first until then).
    timeouts_before_failure: int = Field(default=3, ge=1, le=1000)


_NOT_NEGATIVE = _at_least(0, "must be at least 0")
_DELAY = _span(0, 7 * DAY)


class MarketSection(_Section):
    """The market: this node's offer and pricing policy, and what its user bids by default.

    Storage prices are micro-credits per GiB-hour of block bytes held, compute prices micro-credits
    per million fuel.  A provider's ask rises with its utilization from the floor to the ceiling:
    ask = floor + (ceiling - floor) x utilization^ask_exponent (docs/market.md)."""

    offer_storage: bool = True  # publish capacity slots for the free storage
    offer_compute: bool = True  # publish capacity slots for compute (off: invokes run on other providers)
    storage_ask_floor: Annotated[int, _NOT_NEGATIVE] = 1_000
    storage_ask_ceiling: Annotated[int, _NOT_NEGATIVE] = 4_000
    compute_ask_floor: Annotated[int, _NOT_NEGATIVE] = 10
    compute_ask_ceiling: Annotated[int, _NOT_NEGATIVE] = 40
    ask_exponent: Annotated[int, _within(1, 8, "must be between 1 and 8")] = 2
    # What the user bids by default: the providers' default ceiling, so a put or invoke is served
    # whenever a provider with the default policy has room (the price is set by the clearing).
    storage_bid: Annotated[int, _NOT_NEGATIVE] = 4_000  # the default maximum price of a put (xsc store put --max-price)
    compute_bid: Annotated[int, _NOT_NEGATIVE] = 40  # the default maximum price of an invoke (xsc compute invoke --max-price)
    # the time buckets the call market clears
    bucket_seconds: Annotated[WholeSeconds, _span(60, 7 * DAY)] = 3600
    # fuel one compute thread offers per second of a bucket; a bucket's compute offer, fuel_per_second x
    # compute.threads x bucket_seconds, is a signed 64-bit quantity
    fuel_per_second: Annotated[int, _NOT_NEGATIVE, _check(lambda v: v <= MAX_FUEL_PER_SECOND,
                                                   f"must be at most {MAX_FUEL_PER_SECOND:,}")] = 1_000_000_000
    # seconds between the storage payment runs (each pays what was held since)
    payment_interval: Annotated[Seconds, _DELAY] = 3600.0
    # seconds changes to this node's offer are gathered before it is re-published
    publish_delay: Annotated[Seconds, _DELAY] = 0.2
    # seconds a participant's newest offer counts as current (re-published every third)
    freshness: Annotated[Seconds, _span(3, DAY)] = 60.0
    # seconds an allocation round waits after a change, gathering others (debounce)
    allocation_delay: Annotated[Seconds, _DELAY] = 0.5
    # seconds a node without an allocation ITC id waits for a peer to fork one from before it seeds one (or, restarted,
    # goes on with its stored one): nodes started together learn of each other meanwhile, so that one seeds
    allocation_fork_wait: Annotated[Seconds, _span(0.1, 600)] = 3.0
    # Commitments one peer may have this node check (parse and verify) per second, in bursts of two full messages
    # (2,002); a message past it gets 429 with Retry-After, unread.  A network of 1,000 nodes re-signing every
    # freshness/3 needs ~50/s from the peers it pulls from.
    commitment_rate: float = Field(default=200.0, ge=1, le=1_000_000)
    # Peers at most whose recognition a node derives and publishes (the user's own weights are published besides):
    # those it exchanged most money with, or, while no peer that is up has earned anything, a sample of the peers
    # that are up fixed per node (docs/market.md, "Recognition").  Who a node
    # subscribes to, pushes its offer to and holds the offer of follows recognition, so this bounds what keeping up
    # with the market costs a node however large the network grows.
    recognised_at_most: int = Field(default=6, ge=1, le=1000)
    # Seconds after which the money exchanged with a peer counts half in its derived recognition: a partner that
    # traded much long ago gives way to one that trades now (docs/market.md, "Recognition").
    recognition_half_life: Annotated[Seconds, _span(60, 3650 * DAY)] = 30 * 86400.0

    @model_validator(mode="after")
    def _ceilings(self) -> "MarketSection":
        for kind in ("storage", "compute"):
            if getattr(self, f"{kind}_ask_ceiling") < getattr(self, f"{kind}_ask_floor"):
                raise ValueError(f"{kind}_ask_ceiling must not be below {kind}_ask_floor")
        return self


class NodeConfig(_Section):
    data_dir: Path
    node: NodeSection = Field(default_factory=NodeSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)
    ledger: LedgerSection = Field(default_factory=LedgerSection)
    peers: PeersSection = Field(default_factory=PeersSection)
    health: HealthSection = Field(default_factory=HealthSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    market: MarketSection = Field(default_factory=MarketSection)

    @property
    def url(self) -> str:
        host, port = parse_listen(self.node.listen)
        return f"http://{host}:{port}"

    def to_toml(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"data_dir"}, exclude_none=True)  # TOML has no null


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not is_whole_number(port) or not 0 <= int(port) < 65536:
        raise ConfigError(f"not a listen address: {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:7070")
    if int(port) == 0:  # the system's pick, another each start: what the node says and records would be wrong
        raise ConfigError(f"port 0 is no fixed listen address: {text!r}", hint="give a port, e.g. 127.0.0.1:7070")
    return host.strip("[]"), int(port)


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides a setting: XSC_<SECTION>_<KEY>."""
    return f"XSC_{section}_{key}".upper()


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, key in config_keys():
        if env_name(section, key) in environ:
            out.setdefault(section, {})[key] = environ[env_name(section, key)]
    return out


def _sections() -> dict[str, type[_Section]]:
    """Each section's name and model, in the order the file lists them."""
    return {section: field.annotation for section, field in NodeConfig.model_fields.items()  # type: ignore[misc]
            if section != "data_dir"}


def config_keys() -> list[tuple[str, str]]:
    """Every (section, key) of the configuration, in the order the file lists them."""
    return [(section, key) for section, model in _sections().items() for key in model.model_fields]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, a number of more digits than int() reads
        raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix or delete the file") from e


def _validate(root: Path, raw: dict[str, Any], where: str | None, sources: dict[str, str] | None = None) -> NodeConfig:
    """The config of `raw`; a bad value is a ConfigError naming its key and, with `sources` (key -> default, file,
    env or flag), where it was set; else `where` says where to look (None: nowhere, `xsc config set`'s value).  Its
    one pair of parentheses says where, and what sets a good value: the key's default, or a value the parser's
    refusal gives."""
    try:
        return NodeConfig(data_dir=root, **raw)
    except ValidationError as e:
        first = e.errors()[0]
        location = first["loc"]
        key = ".".join(str(part) for part in location[:2])
        source = (sources or {}).get(key) if len(location) >= 2 else None
        refused = (first.get("ctx") or {}).get("error")
        # the key's own default is a value it takes (a duration parser's 10m is below ledger.record_retention's 2d)
        good = _default_of(location) or getattr(refused, "example", None)
        if source == "file" and first["type"] == "extra_forbidden":
            where = f"set in {root / CONFIG_FILE}: remove it there"
        elif source == "file":
            where = f"set in {root / CONFIG_FILE}: fix it there, or with: xsc config set {key} {good or 'VALUE'}"
        elif source == "env":
            where = f"set by ${env_name(*key.split('.', 1))}: unset it" + (f", or set it to e.g. {good}" if good else "")
        elif source == "flag":
            where = "given by the command's flag" + (f": give e.g. {good}" if good else "")
        elif where is None and len(location) < 2:  # two keys at odds (a ceiling below its floor): no one value fixes it
            where = "nothing written; see the section's values with: xsc config show"
        elif where is None:
            where = f"nothing written; try: xsc config set {key} {good or 'VALUE'}"
        if isinstance(refused, _Refused):  # its own hint gives way to a command that shows a value the key takes
            # (kept where there is none: an address another key's default would take, node.s3_listen's)
            hint = where if good or not refused.hint else f"{refused.hint}; {where}"
            raise ConfigError(f"bad configuration value {key}: {refused.message}", hint=hint) from e
        raise from_validation(e, ConfigError, "bad configuration value ", hint=where) from e


def _default_of(location: tuple) -> str | None:
    """The default of the key at `location` (section, key) as `xsc config set` takes it, if it is a plain one."""
    field = _sections().get(str(location[0])) if len(location) >= 2 else None
    default = field.model_fields.get(str(location[1])) if field is not None else None
    value = None if default is None or (default.json_schema_extra or {}).get("default_said") else default.default
    if isinstance(value, bool):
        return "true" if value else "false"
    value = written(default, value) if default is not None else None
    return str(value) if isinstance(value, (int, float, str)) and value != "" else None


def written(field: Any, value: Any) -> Any:
    """A key's value as a user writes it, taken back exactly by its parser: a size, a duration or a rate in its unit
    (10GiB, 30d, 10m, 250ms, 20MB/s), not 10737418240 bytes or 600.0 seconds; other values, and 0, as they are."""
    if type(value) is float and _SECONDS in field.metadata and value > 0:
        return units.duration_argument(value)
    if type(value) is not int or value <= 0:
        return value
    if _SIZE in field.metadata:
        said = units.size_argument(value)
    elif _DURATION in field.metadata:
        return units.duration_argument(value)
    elif _RATE in field.metadata:
        said = units.size_argument(value) + "/s"
    else:
        return value
    return value if said.removesuffix("/s") == str(value) else said  # bytes in no unit: the number itself


def as_written(cfg: "NodeConfig") -> dict[str, dict[str, Any]]:
    """`cfg.to_toml()` with each size, duration and rate `written` as a user writes it: what a person reads."""
    models = _sections()
    return {section: {key: written(models[section].model_fields[key], value) for key, value in values.items()}
            for section, values in cfg.to_toml().items()}


def load_config_with_sources(
    data_dir: str | os.PathLike | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[NodeConfig, dict[str, str]]:
    """The effective config, and where each `section.key` came from: default, file, env or flag."""
    root = resolve_data_dir(data_dir)
    path = root / CONFIG_FILE
    layers = [
        ("file", _read_file(path)),
        ("env", _env_overrides(dict(os.environ if environ is None else environ))),
        ("flag", {s: {k: v for k, v in vals.items() if v is not None} for s, vals in (overrides or {}).items()}),
    ]
    raw: dict[str, Any] = {}
    sources = {f"{s}.{k}": "default" for s, k in config_keys()}
    for source, layer in layers:
        raw = _merge(raw, layer)
        for section, values in layer.items():
            for key in values if isinstance(values, dict) else ():
                sources[f"{section}.{key}"] = source
    config = _validate(root, raw, f"check {path}, XSC_* environment variables and the command's flags", sources)
    return config, sources


def load_config(
    data_dir: str | os.PathLike | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> NodeConfig:
    """Read the config of a data dir (which need not exist yet)."""
    return load_config_with_sources(data_dir, overrides, environ)[0]


_HEADER = """\
# XSC node configuration.  Keys left commented out take the default shown.
# Change one with: xsc config set SECTION.KEY VALUE (or uncomment it here); see them all with: xsc config show
# XSC_<SECTION>_<KEY> environment variables and `xsc node start` flags override this file for one run only
# (but --listen: a node keeps its address, so `xsc node start --listen` sets node.listen here).
"""


def render_config_file(raw: dict[str, Any]) -> str:
    """config.toml: the keys set in `raw`, and every other key commented out with its default."""
    import tomli_w

    defaults = NodeConfig(data_dir=Path(".")).to_toml()
    parts = [_HEADER]
    for section, model in _sections().items():
        given = raw.get(section, {})
        lines = [f"\n[{section}]"]
        for key, field in model.model_fields.items():
            said = (field.json_schema_extra or {}).get("default_said")  # type: ignore[union-attr]
            if key in given:
                lines.append(tomli_w.dumps({key: given[key]}).strip())
            elif said:  # a default that differs from machine to machine
                lines.append(f"# {key} = <{said}>")
            else:  # as a user writes it (30d, 10GiB), the value it loads back as
                lines.append("# " + tomli_w.dumps({key: written(field, defaults[section][key])}).strip())
        extra = {k: v for k, v in given.items() if k not in model.model_fields}
        lines += [tomli_w.dumps({k: v}).strip() for k, v in extra.items()]
        parts.append("\n".join(lines) + "\n")
    for section, values in raw.items():  # unknown sections stay, so validation can name them
        if section not in NodeConfig.model_fields:
            parts.append("\n" + tomli_w.dumps({section: values}))
    return "".join(parts)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_default_config(data_dir: str | os.PathLike) -> None:
    """The config.toml of a first start: every key commented out with its default."""
    _write(Path(data_dir) / CONFIG_FILE, render_config_file({}))


def parse_value(text: str) -> Any:
    """A value as typed on the command line: a TOML value if it is one (true, 5, 1.5, [..]), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except ValueError:  # TOMLDecodeError, or a number of more digits than int() reads: the text, for its key to judge
        return text


def set_config_value(data_dir: str | os.PathLike | None, dotted: str, text: str) -> tuple[NodeConfig, Any]:
    """Set SECTION.KEY in the data dir's config.toml, after checking the file stays valid."""
    root = resolve_data_dir(data_dir)
    section, _, key = dotted.partition(".")
    if (section, key) not in config_keys():
        close = [f"{s}.{k}" for s, k in config_keys() if k == key or s == section][:6]
        raise ConfigError(f"no configuration key {dotted!r}",
                          hint="keys in that section: " + ", ".join(close) if close else "list them with: xsc config show")
    path = root / CONFIG_FILE
    raw = _read_file(path)
    value = parse_value(text)
    raw.setdefault(section, {})[key] = value
    config = _validate(root, raw, None)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, render_config_file(raw))
    return config, value
