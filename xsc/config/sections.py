"""The configuration's sections, one model each, and NodeConfig, the whole of them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .addresses import normalize_peer_url, split_peer_address
from .fields import (
    DAY, DEFAULT_LISTEN, EVENT_LOOPS, MAX_CAPACITY, MAX_FUEL_PER_SECOND, MAX_THREADS, MiB, REGION, Seconds,
    WholeSeconds, _AT_LEAST_1, _CONNECTIONS, _JITTER, _LISTEN, _PER_SECOND, _SIZE, _UP_TO_10_YEARS,
    _UP_TO_AN_HOUR, _UP_TO_A_DAY, _UP_TO_A_WEEK, _at_least, _check, _listen_address, _span, _within,
    parse_listen, parse_size,
)


def _base_url(text: str) -> bool:
    """Whether `text` is an http(s) URL with a host and nothing after its path: a base that /fn/NAME/ is added to."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port raises
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.query or parts.fragment)


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
    # the URL callers reach web_listen at, given to owners whose functions this node serves (empty: http://web_listen,
    # its host as peers see it)
    web_public_url: Annotated[str, _check(lambda v: not v or _base_url(v), "must be an http:// or https:// URL "
                                          "callers reach web_listen at, e.g. https://fn.example.org (or empty)")] = ""
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
    # micro-credits an account may go below zero (100 credits); 0: none (a negative limit would have every account
    # hold credit it could not spend)
    credit_limit: Annotated[int, _at_least(0, "must not be negative: 0 gives no account credit")] = Field(
        default=100_000_000, le=2**62)
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
    # seconds between the storage payment runs (each pays what was held since); more than 0: a run follows the last
    # at once, which at 0 would run them back to back
    payment_interval: Annotated[Seconds, _span(0, 7 * DAY, above=True)] = 3600.0
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
