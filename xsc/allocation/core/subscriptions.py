"""Subscriptions and digests: who gets which records of a node, and how two nodes find what one lacks
(pure: no I/O, the clock passed in).  The node side is `xsc.allocation.gossip` (allocation records)
and `xsc.market.replication` (market commitments); docs/allocation.md, "Subscriptions and digests".

**What a node subscribes to** (`interests`), after the seed's derived subgroups (seed 001: mutual
partners get everything, one-way beneficiaries their commitments, providers for me their commitments
and allocation states).  At each peer P, node A asks for:

  - P recognised by A and by P's commitment recognising A (mutual partners): `commitment`, `state`
    and, when A offers capacity, `receipt`;
  - P recognised by A only (a beneficiary of A's tier 2): when A offers capacity, `receipt` and
    P's needs of the kinds A offers (`needs:storage`, `needs:compute`: the commitment, only when it
    carries a bid of that kind -- the needs that could match A's slots); `commitment` while A does
    not hold P's commitment yet (it cannot know whether P recognises it);
  - P recognising A (its commitment names A with a weight > 0, or P subscribed to A's receipts or
    needs: only a provider that recognises A does): `commitment` and `state` (a provider for A).

That is one hop: everything a round reads of a second hop (what the *other* providers give my
recipients) arrives inside the recipients' receipts.  A node that recognises k participants (and
is recognised by k) subscribes at 2k peers at most, whatever the size of the network.

**What a node sends**: its commitment to the subscribers of `commitment` and to those of `needs:K`
when its commitment (or the one before) carries a bid of kind K; its allocation state to the
recipients it names (now or in the state before) and the subscribers of `state`; its receipt to
the providers it names (now or before) and the subscribers of `receipt`.

**A subscription** is signed by its subscriber (`XSC-SUBSCRIPTION-1`, sorted compact JSON), names the
publisher, at most `len(TOPICS)` topics from `TOPICS`, and when it expires (at most `MAX_TTL_MS`
ahead); it lapses unless renewed.  `Subscribers` keeps at most `max_total` subscribers (expired ones
are dropped first); one subscriber holds one subscription per publisher (a new one replaces it).

**Digests**: for anti-entropy a node sends, per publisher it wants, `short_hash` of the record it
holds ("" when it holds none); the other side answers with the records it holds whose hash differs
(`differing`).  The receiver then applies the usual causality rule (an older copy is stale).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, Iterable, Mapping

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ... import codec
from ...errors import InvalidArgument, from_validation
from ...identity import Identity, parse_public_id, verify
from .models import TimestampMs
from .records import NodeId

TOPICS = ("commitment", "needs:compute", "needs:storage", "receipt", "state")
MAX_TTL_MS = 600_000
"""A subscription expires at most 10 minutes after it was made (renewed by its subscriber before)."""
MAX_SUBSCRIPTIONS = 16
"""Subscriptions per message."""
MAX_SUBSCRIBERS = 1_001
"""Subscribers a node keeps: one per peer the directory can hold, and a spare."""
MAX_DIGEST = 1_001
"""Publishers per kind in one digest (one per peer the directory can hold, and this node)."""
HASH_HEX = 16

_TAG = b"XSC-SUBSCRIPTION-1\n"


def _few_topics(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) > len(TOPICS):
        raise ValueError(f"{len(v)} topics (at most {len(TOPICS)})")
    return v


def _known_topics(v: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [t for t in v if t not in TOPICS]
    if unknown:
        raise ValueError(f"unknown topic {unknown[0][:40]!r} (topics: {', '.join(TOPICS)})")
    if list(v) != sorted(set(v)):
        raise ValueError("topics must be sorted, each once")
    return v




class _Fields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subscriber: NodeId
    publisher: NodeId
    topics: Annotated[tuple[Annotated[str, Field(max_length=40)], ...], BeforeValidator(_few_topics),
                      AfterValidator(_known_topics)]
    expires: TimestampMs


class Subscription(_Fields):
    """A signed subscription (see the module docstring)."""

    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _signed_bytes(fields: BaseModel) -> bytes:
    body = fields.model_dump(mode="json", exclude={"signature"})
    return _TAG + codec.canonical(body)


def sign_subscription(identity: Identity, publisher: str, topics: Iterable[str], expires: int) -> Subscription:
    try:
        fields = _Fields(subscriber=identity.id, publisher=publisher, topics=tuple(sorted(set(topics))),
                         expires=expires)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid subscription: {exc.errors()[0]['msg']}") from None
    return Subscription.model_construct(**dict(fields), signature=identity.sign(_signed_bytes(fields)).hex())


def parse_subscription(obj: Any, *, now_ms: int) -> Subscription:
    """A valid, verified subscription that has not expired and expires at most MAX_TTL_MS from `now_ms`,
    or InvalidArgument saying what is wrong."""
    if not isinstance(obj, Mapping):
        raise InvalidArgument("a subscription must be a JSON object")
    try:
        sub = Subscription.model_validate(obj)
    except ValidationError as exc:
        raise from_validation(exc, InvalidArgument, "invalid subscription: ", where="subscription",
                              hint="see docs/allocation.md, 'Subscriptions and digests'") from None
    if not verify(parse_public_id(sub.subscriber), bytes.fromhex(sub.signature), _signed_bytes(sub)):
        raise InvalidArgument(f"the subscription of {sub.subscriber} is not signed by that node's key",
                              hint="a subscription is signed by its subscriber")
    if sub.expires <= now_ms:
        raise InvalidArgument("the subscription has expired", hint="renew it with a later expiry")
    if sub.expires > now_ms + MAX_TTL_MS:
        raise InvalidArgument(f"the subscription expires {(sub.expires - now_ms) // 1000} s from now "
                              f"(at most {MAX_TTL_MS // 1000} s)", hint="renew it before it expires instead")
    return sub


class Subscribers:
    """Who subscribed to this node's records: subscriber -> (topics, expiry in ms).  Bounded: at most
    `max_total` subscribers (expired ones are dropped before a new one is refused)."""

    def __init__(self, max_total: int = MAX_SUBSCRIBERS) -> None:
        self.max_total = max_total
        self._subs: dict[str, tuple[frozenset[str], int]] = {}

    def add(self, sub: Subscription, now_ms: int) -> bool:
        """Take (or renew, or replace) `sub`; False when the table is full of live subscribers."""
        if sub.subscriber not in self._subs and len(self._subs) >= self.max_total:
            self.expire(now_ms)
            if len(self._subs) >= self.max_total:
                return False
        if sub.topics:
            self._subs[sub.subscriber] = (frozenset(sub.topics), sub.expires)
        else:
            self._subs.pop(sub.subscriber, None)  # no topic: an unsubscription
        return True

    def expire(self, now_ms: int) -> None:
        for s in [s for s, (_, exp) in self._subs.items() if exp <= now_ms]:
            del self._subs[s]

    def topics(self, subscriber: str, now_ms: int) -> frozenset[str]:
        found = self._subs.get(subscriber)
        return found[0] if found is not None and found[1] > now_ms else frozenset()

    def of(self, topic: str, now_ms: int) -> set[str]:
        """The live subscribers of `topic`."""
        return {s for s, (topics, exp) in self._subs.items() if topic in topics and exp > now_ms}

    def forget(self, subscriber: str) -> None:
        self._subs.pop(subscriber, None)

    def recognisers(self, now_ms: int) -> frozenset[str]:
        """The live subscribers of this node's receipts or needs: the peers that recognise it."""
        return frozenset(s for s, (topics, exp) in self._subs.items()
                         if exp > now_ms and ("receipt" in topics or any(t.startswith("needs:") for t in topics)))

    def view(self, now_ms: int) -> dict[str, list[str]]:
        return {s: sorted(t) for s, (t, exp) in sorted(self._subs.items()) if exp > now_ms}

    def __len__(self) -> int:
        return len(self._subs)


def interests(me: str, mine: Mapping[str, Decimal], theirs: Mapping[str, Mapping[str, Decimal] | None],
              offered: Iterable[str], recognisers: Iterable[str] = ()) -> dict[str, frozenset[str]]:
    """peer -> the topics `me` subscribes to at it (the rule of the module docstring).

    `mine`: my recognition weights; `theirs`: peer -> its recognition weights, from its commitment (None when
    I hold none); `offered`: the kinds my capacity slots offer; `recognisers`: peers that subscribed to my
    receipts or needs (they recognise me)."""
    offered = sorted(set(offered))
    recognisers = set(recognisers)
    out: dict[str, frozenset[str]] = {}
    for p in set(mine) | {q for q, w in theirs.items() if w and w.get(me, 0) > 0} | recognisers:
        if p == me:
            continue
        recognised = mine.get(p, 0) > 0
        weights = theirs.get(p)
        recognises_me = (weights is not None and weights.get(me, 0) > 0) or p in recognisers
        topics: set[str] = set()
        if recognised and recognises_me:
            topics |= {"commitment", "state"}
        elif recognised:
            if weights is None:
                topics.add("commitment")
            topics |= {f"needs:{k}" for k in offered if f"needs:{k}" in TOPICS}
        if recognised and offered:
            topics.add("receipt")
        if recognises_me:
            topics |= {"commitment", "state"}
        if topics:
            out[p] = frozenset(topics)
    return out


def commitment_audience(subscribers: Subscribers, kinds_now: Iterable[str], kinds_before: Iterable[str],
                        now_ms: int) -> set[str]:
    """Who gets a commitment carrying bids of `kinds_now` (the one before: `kinds_before`)."""
    out = subscribers.of("commitment", now_ms)
    for k in set(kinds_now) | set(kinds_before):
        out |= subscribers.of(f"needs:{k}", now_ms)
    return out


def short_hash(signature: str) -> str:
    """A record's entry in a digest: the first HASH_HEX hex digits of SHA-256 over its signature."""
    return hashlib.sha256(signature.encode()).hexdigest()[:HASH_HEX]


def parse_digest(obj: Any, what: str) -> dict[str, str]:
    """publisher -> short hash ("" for none), from a peer: at most MAX_DIGEST entries (counted before any is
    read), ids <= 200 characters, hashes of HASH_HEX hex digits or ""."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what} must be an object of publisher -> hash")
    if len(obj) > MAX_DIGEST:
        raise InvalidArgument(f"{len(obj)} publishers in one digest of {what} (at most {MAX_DIGEST})")
    out: dict[str, str] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not 0 < len(k) <= 200:
            raise InvalidArgument(f"a publisher in the digest of {what} must be a node id")
        if not isinstance(v, str) or (v and (len(v) != HASH_HEX or any(c not in "0123456789abcdef" for c in v))):
            raise InvalidArgument(f"a hash in the digest of {what} must be {HASH_HEX} hex digits or \"\"")
        out[k] = v
    return out


def differing(digest: Mapping[str, str], held: Mapping[str, Any]) -> list:
    """The records of `held` (publisher -> record with a `signature`) that `digest` lacks or has another of."""
    return [held[p] for p, h in digest.items() if p in held and short_hash(held[p].signature) != h]
