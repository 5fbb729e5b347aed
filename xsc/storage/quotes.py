"""Where a put's shares go and what they cost: one need slot per share, matched on the market.

A put of known size publishes six need slots (share bytes x lease duration, one group, so distinct
providers while there are enough), bid at the user's maximum price (`--max-price`, default
`market.storage_bid`, micro-credits per GiB-hour).  The market clears them with the book and
assigns each to a provider at the clearing price; the user's credit must cover the whole lease
before a byte is stored.  Each holder is told the deal price when the upload begins and refuses it
under its own ask.  A stream of unknown size cannot be matched (its share size is unknown): it is
kept whole on this node at this node's ask (so `--spread`, or this node in `--avoid`, refuses it).

With fewer than six providers (this node counted), K shares stay on this node at its own ask and only the
other M go to the market (storage/core/placement.py, `home_shares`): a put is never less safe than keeping it at
home.  If the market places none of them, they stay home too.  `--spread` (or this node in `--avoid`) lets
the market place all six.  A put may keep at home (`PutQuote.home_offers`) shares whose holders refuse them for a
standing reason as they begin (gateway_put.put, `keep_home`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import BadRequest, IntegrityError, InvalidArgument, MarketNoDeal, PrepaymentRequired, StorageFull
from ..identity import parse_public_id
from ..ids import unique_bytes
from ..ledger.core.pricing import price_storage
from ..market.clearing import taking_part
from ..market.dealing import Dealing
from ..market.service import MarketService
from ..market.core.terms import refusal
from .core import erasure, layout
from .deals import MAX_PRICE
from .core.placement import home_shares
from .remote import REMEDIES
from .strangers import TERMS_TIMEOUT, Drawn, ProviderTerms
from ..units import is_whole_number, parse_ratio

log = logging.getLogger(__name__)

TERMS_ROUNDS = 4  # matchings of one put, each without the providers the last one found wanting prepayment
# The longest a put's last matching may come after its first while each round of asking the providers their terms
# between them takes at most TERMS_TIMEOUT (rounds that take longer fill the book again: `_deal_on_terms`).
TERMS_SECONDS = (TERMS_ROUNDS - 1) * TERMS_TIMEOUT
MAX_FILTER_NODES = 64  # node ids a put names in --avoid, and in --prefer: its file record keeps them


@dataclass
class PutQuote:
    share_bytes: int
    seconds: int
    nodes: list[str]  # the provider of each share
    prices: dict[int, int]  # share -> micro-credits per GiB-hour
    needs: list[str] = field(default_factory=list)
    assignments: list = field(default_factory=list)  # the market's, when it matched the needs (Dealing.spent)
    prepaid: dict[str, int] = field(default_factory=dict)  # provider -> micro-credits prepaid by itself for this put
    deals: list = field(default_factory=list)  # the put's storage deals, once written with its file
    kept_home: str = ""  # why shares meant for other nodes stay on this one (the user is told: they lose its safety)
    home_offers: bool = False  # this node may keep shares their holders refuse (it offers storage at the bid)
    # The put keeps no share here on purpose (`--spread`, this node in `--avoid`, it offers no storage at the bid, or
    # has no room for a share): one whose holder is lost during the put is rebuilt on another node, not here
    # (gateway_put `rebuild_away`).
    away: bool = False
    filters: dict = field(default_factory=dict)  # the put's own filters (`parse_filters`): its replacements follow them
    # What the put's last matching drew from its providers' terms (storage/strangers.py): the put gives it back if it
    # fails (`ProviderTerms.give_back`), so other puts do not see that room as taken until the terms are asked again.
    drawn: Drawn = field(default_factory=dict)

    def costs(self, me: str, files: list[int]) -> dict[str, int]:
        """provider -> what its shares of the files of a group quoted together (`file`) whose shares are `files` bytes
        each cost for the whole lease, for the providers other than `me` (as a matching draws them from their terms:
        `_deal_on_terms`)."""
        out: dict[str, int] = {}
        for share_bytes in files:
            for s, node in enumerate(self.nodes):
                if node != me:
                    out[node] = out.get(node, 0) + price_storage(share_bytes, self.seconds, self.prices[s])
        return out

    def give_back(self, terms: ProviderTerms | None, part: dict[str, int] | None = None) -> None:
        """The put is over: what its quote drew from its providers' terms and is still `drawn` (a put that stored its
        file cleared it: its providers keep it) is theirs again at once, not once their terms are asked again, and
        only once; `part`: provider -> the most of its draw given back (what of a group quoted together was not
        stored), the rest kept."""
        if terms is not None:
            terms.give_back(self.drawn, part)
        self.drawn.clear()

    @property
    def cost(self) -> int:
        """What every share costs for the whole lease, each share's price rounded up on its own (shares at one price,
        as a put's mostly are, priced once)."""
        counts: dict[int, int] = {}
        for p in self.prices.values():
            counts[p] = counts.get(p, 0) + 1
        return sum(n * price_storage(self.share_bytes, self.seconds, p) for p, n in counts.items())

    def file(self, share_bytes: int) -> PutQuote:
        """The quote of one file of a group quoted together (`StorageService.put_many`): the group's providers and
        prices, for a share of `share_bytes`, so that the file costs what it would have alone at those prices.  The
        group's needs and assignments stay the group's (withdrawn and spent once)."""
        return PutQuote(share_bytes, self.seconds, list(self.nodes), dict(self.prices), self.needs,
                        home_offers=self.home_offers, away=self.away, filters=self.filters)

    def to_json(self) -> dict:
        found = {"needs": self.needs, "prices": [self.prices[s] for s in sorted(self.prices)], "cost": self.cost,
                 "lease_seconds": self.seconds, "prepaid": self.prepaid}
        if self.kept_home:
            found["kept_home"] = self.kept_home
        return found


def parse_max_price(text: str | None, default: int) -> int:
    """`?max_price=` of a put (micro-credits per GiB-hour), else the node's default bid."""
    if text is None:
        return default
    if not is_whole_number(text) or int(text) > MAX_PRICE:
        raise InvalidArgument(f"max_price must be a whole number of micro-credits per GiB-hour, not {text!r}",
                              hint="e.g. --max-price 5000")
    return int(text)


def parse_filters(query: Mapping[str, str]) -> dict:
    """The put's own filters: `avoid` and `prefer` (comma-separated node ids), `min_availability` (0 to 1),
    `spread` (1: the market places every share, none kept home on purpose)."""
    out: dict = {}
    spread = query.get("spread")
    if spread is not None:
        if spread not in ("0", "1", "true", "false"):
            raise InvalidArgument(f"spread is 1 or 0, not {spread!r}", hint="e.g. --spread")
        out["spread"] = spread in ("1", "true")
    for name in ("avoid", "prefer"):
        text = query.get(name, "")
        ids = tuple(dict.fromkeys(i for i in text.split(",") if i))
        if len(ids) > MAX_FILTER_NODES:
            raise InvalidArgument(f"{name} names {len(ids)} nodes, and a put takes at most {MAX_FILTER_NODES}",
                                  hint=f"name at most {MAX_FILTER_NODES} nodes with --{name}")
        for node in ids:
            try:
                parse_public_id(node)
            except BadRequest:
                raise InvalidArgument(f"--{name} takes a node's whole id, not {node!r}",
                                      hint="the ids of the nodes this one knows: xsc peers ls") from None
        out[name] = ids
    text = query.get("min_availability")
    if text is not None:
        ratio = parse_ratio(text)
        if ratio is None:
            raise InvalidArgument(f"min_availability must be a ratio from 0 to 1, not {text!r}",
                                  hint="e.g. --min-availability 0.99")
        out["min_availability"] = ratio
    return out


def recorded_filters(wanted: Mapping) -> dict:
    """The put's filters (`parse_filters`) as its file record keeps them, those given only: its repairs place the
    shares they rebuild by them (`filters_of`)."""
    out: dict = {name: list(wanted[name]) for name in ("avoid", "prefer") if wanted.get(name)}
    if wanted.get("min_availability") is not None:
        out["min_availability"] = str(wanted["min_availability"])
    if wanted.get("spread"):
        out["spread"] = True
    return out


def filters_of(record: Mapping | None) -> dict:
    """The placement filters a file record keeps (`recorded_filters`), checked and bounded as a put's query is: none
    for a record without them.  IntegrityError for a record whose filters are not what a put writes."""
    raw = (record or {}).get("filters")
    if raw is None:
        return {}
    try:
        if not isinstance(raw, dict) or set(raw) - {"avoid", "prefer", "min_availability", "spread"}:
            raise InvalidArgument(f"not an object of avoid, prefer, min_availability and spread: {str(raw)[:80]}")
        query = {}
        for name in ("avoid", "prefer"):
            ids = raw.get(name, [])
            if not isinstance(ids, list) or len(ids) > MAX_FILTER_NODES or \
                    not all(type(i) is str and "," not in i for i in ids):
                raise InvalidArgument(f"{name} is not a list of at most {MAX_FILTER_NODES} node ids")
            query[name] = ",".join(ids)
        if "min_availability" in raw:
            if type(raw["min_availability"]) is not str:
                raise InvalidArgument("min_availability is not a ratio written as a string")
            query["min_availability"] = raw["min_availability"]
        if "spread" in raw:
            if type(raw["spread"]) is not bool:
                raise InvalidArgument("spread is not true or false")
            query["spread"] = "1" if raw["spread"] else "0"
        return parse_filters(query)
    except BadRequest as err:  # (a node id that is not one: identity's own)
        raise IntegrityError(f"this file's record holds placement filters this node cannot read ({err}); nothing was "
                             "changed", hint="remove the file with `xsc store rm` and put it again") from None


def describe_filters(wanted: Mapping, me: str | None = None) -> str:
    """The filters that restrict where shares go, as the user gave them (`--avoid <id> --min-availability 0.99`;
    `me`: this node's id, named as such); "" for none."""
    said = [f"--avoid {'this node' if node == me else node}" for node in wanted.get("avoid", ())]
    if wanted.get("min_availability") is not None:
        said.append(f"--min-availability {wanted['min_availability']}")
    return " ".join(said)


def providers(market: MarketService) -> set[str]:
    """The nodes a put could place shares on now: active storage providers in the book that are not down."""
    takes_part = taking_part(market)  # the rule a deal matches by
    return {a.slot.owner for a in market.book.asks() if a.slot.kind == "storage" and takes_part(a.slot.owner)}


def most_room(market: MarketService) -> int:
    """The most room one provider offers a put: the book's, and this node's own offer as it is now (a node that
    leaves withdraws it from its peers and its book, not from its own puts under way; and the book's copy of it is
    the one last published, which lags a put just stored by `market.publish_delay`: a put right after it would be
    told of room this node no longer has)."""
    own = max((a.slot.quantity for a in market.offer.own_asks() if a.slot.kind == "storage"), default=0)
    return max(market.book.most_offered("storage", but=market.me), own)


async def quote(dealing: Dealing, segment_size: int, size: int | None, seconds: int, bid: int,
                spread: bool = False, terms: ProviderTerms | None = None, dry: bool = False,
                share_bytes: int | None = None, **wanted) -> PutQuote:
    """Match the put's needs on the market (or, for an unknown size, price it here at our own ask), on providers
    whose `terms` for this node take their part (storage/strangers.py; `dry`: a quote that prepays nothing).
    `share_bytes`: each need's size, when it is not one file's share of `size` (the shares of a group of files
    placed together, `PutQuote.file`)."""
    market = dealing.market
    me = market.me
    if size is None:
        if spread or me in wanted.get("avoid", ()):
            asked = "--spread" if spread else "this node in --avoid"
            raise InvalidArgument(f"a put of unknown size (a stream, stdin) is kept whole on this node: {asked} "
                                  "cannot be honoured", hint="put it from a file: xsc store put FILE --spread")
        ask = market.offer.ask("storage")
        if ask is None:
            raise StorageFull("this node offers no storage for a stream of unknown size",
                              hint="send the size (Content-Length), or turn market.offer_storage on")
        if ask > bid:
            raise InvalidArgument(f"this node's ask of {ask} per GiB-hour is above your maximum price {bid}",
                                  hint=f"raise --max-price to at least {ask}")
        # Said when other providers offer: a user with a network expects the shares spread, not all here.
        why = ("a put of unknown size (a stream, stdin) is kept whole on this node (put it from a file to place "
               "shares on other nodes)") if providers(market) - {me} else ""
        return PutQuote(0, seconds, [me] * erasure.N, {s: ask for s in range(erasure.N)}, kept_home=why,
                        filters={**wanted, "spread": spread})
    if share_bytes is None:
        share_bytes = layout.share_bytes(size, segment_size)
    room = most_room(market)
    if room < share_bytes:
        raise StorageFull(f"no node offers room for a share of this file ({share_bytes} bytes; the most any "
                          f"offers is {room})", hint="free space, or add nodes with `xsc peers add`")
    ask = market.offer.ask("storage")
    home_offers = ask is not None and ask <= bid and me not in wanted.get("avoid", ())
    others = providers(market) - {me}
    home = home_shares(len(others) + home_offers, home_offers, spread)
    found = None
    if not home or not others:
        try:
            found = await _matched(dealing, share_bytes, room, seconds, bid, erasure.N, wanted, terms, dry=dry)
        except PrepaymentRequired as err:
            if not home_offers:
                raise
            log.info("%s: %d shares stay here", err, erasure.K)
            home = erasure.K
    if found is None:
        found = await _quote_from_home(dealing, share_bytes, seconds, bid, home, ask, wanted, terms, dry)
    used, capacity = market.offer.storage_usage()
    # A share lost during the put is rebuilt where the put would have kept it: here only if the put keeps shares here
    # on purpose and one more fits beside those it keeps (rebuilt here without room, its repair would fail for good).
    spare = capacity - used - found.nodes.count(me) * share_bytes
    found.home_offers, found.away = home_offers, not home_offers or spread or spare < share_bytes
    found.filters = {**wanted, "spread": spread}
    return found


async def _quote_from_home(dealing: Dealing, share_bytes: int, seconds: int, bid: int, home: int, ask: int,
                           wanted: dict, terms: ProviderTerms | None, dry: bool) -> PutQuote:
    """`home` shares here, the others matched on the market away from this node (on distinct providers while there
    are enough, else several on one: this node keeps K whatever), or all here if the market places none away.
    The shares here cost what the others cost (at least this node's ask)."""
    market = dealing.market
    me = market.me
    away = {**wanted, "avoid": tuple(sorted({*wanted.get("avoid", ()), me}))}
    others = len(providers(market) - set(away["avoid"]))
    try:
        matched = await _matched(dealing, share_bytes, share_bytes, seconds, bid, erasure.N - home, away, terms,
                                 grouped=others >= erasure.N - home, dry=dry)
    except (MarketNoDeal, StorageFull, PrepaymentRequired) as err:
        log.info("the market placed no share of this put away from this node (%s): all stay here", err)
        return PutQuote(share_bytes, seconds, [me] * erasure.N, {s: ask for s in range(erasure.N)},
                        kept_home=err.with_hint)
    price = max(ask, *matched.prices.values())
    return PutQuote(share_bytes, seconds, [me] * home + matched.nodes,
                    {**{s: price for s in range(home)}, **{home + s: p for s, p in matched.prices.items()}},
                    matched.needs, matched.assignments, matched.prepaid, drawn=matched.drawn)


async def _matched(dealing: Dealing, share_bytes: int, room: int, seconds: int, bid: int, count: int,
                   wanted: dict, terms: ProviderTerms | None = None, grouped: bool = True,
                   dry: bool = False) -> PutQuote:
    """`count` shares matched on the market, one need each (`grouped`, one group: distinct providers while there
    are enough)."""
    market = dealing.market
    group = f"put-{unique_bytes(6).hex()}"
    needs = [f"{group}-{s}" for s in range(count)]
    need = dealing.need(needs[0], "storage", share_bytes, seconds, bid, group=group if grouped else None, **wanted)
    dealing.needs.open_alike(need, needs)  # published while the put runs
    drawn: Drawn = {}
    try:
        assignments, prepaid, passed = await _deal_on_terms(dealing, need, needs, share_bytes, seconds, terms, dry,
                                                            drawn)
    except BaseException as err:
        withdraw_needs(dealing, needs)
        affordable = any(a.slot.kind == "storage" and a.price <= bid for a in market.book.asks())
        if isinstance(err, MarketNoDeal) and affordable and not err.details.get("refusing") and \
                set(err.details.get("needs", {}).values()) <= {"capacity_taken", "no_compatible_slot"}:
            raise StorageFull(f"the providers have no room for all {count} shares of this file ({share_bytes} "
                              f"bytes each; the most free on one provider is {room} bytes)",
                              hint="free space, or add nodes with `xsc peers add`", needs=err.details["needs"]) from None
        raise
    finally:
        dealing.remember()
    placed = [assignments[n] for n in needs]
    nodes = [a.provider for a in placed]
    # Shares the market placed here once the providers that wanted prepayment (or refuse this node) were left out:
    # the user is told why, as when shares stay home on purpose (a `--spread` put would otherwise end "all 6 shares
    # on this one node" without a word of the other nodes).
    return PutQuote(share_bytes, seconds, nodes, {s: a.price for s, a in enumerate(placed)},
                    needs, placed, prepaid, drawn=drawn, kept_home=passed if market.me in nodes else "")


async def _deal_on_terms(dealing: Dealing, need, needs: list[str], share_bytes: int, seconds: int,
                         terms: ProviderTerms | None, dry: bool,
                         drawn: Drawn | None = None) -> tuple[dict, dict[str, int], str]:
    """The market's assignments of the needs `needs` (each `need` under its own id), on providers whose terms take
    their part: a provider that wants a prepayment beyond the user's budget is left out and the needs matched again
    (at most TERMS_ROUNDS times), and so is one that refuses this node outright (`ProviderTerms.shut_out`);
    (assignments, providers prepaid in all its rounds, why providers were left out: "" if none was).  Only the last
    matching's parts are drawn from the providers' terms: those an earlier one drew are given back as the needs are
    matched again.  PrepaymentRequired, in one line, when only providers wanting prepayment are left; MarketNoDeal
    naming one that refuses this node when only those are.  `drawn`: what the last matching drew, kept there for the
    put to give back if it fails."""
    shut_out = terms.shut_out() if terms is not None else {}
    exclude: set[str] = set(shut_out)
    wanting: dict[str, int] = {}
    unpaid: dict[str, str] = {}  # providers this node tried to prepay by itself and did not: why (the refusal says it)
    prepaid: dict[str, int] = {}
    drawn = {} if drawn is None else drawn
    # The book was filled with offers that last TERMS_SECONDS, a round of asking terms between each matching: rounds
    # that took longer (a prepayment sent within one, a provider slow to say its terms) fill it again before the
    # next matching, with offers that last the rounds still to come.
    lasting = time.monotonic() + TERMS_SECONDS
    try:
        for left in range(TERMS_ROUNDS - 1, -1, -1):
            if time.monotonic() > lasting:
                await dealing.market.fill_book(kind="storage", wanted=erasure.N, needed=left * TERMS_TIMEOUT)
                lasting = time.monotonic() + left * TERMS_TIMEOUT
            try:
                assignments = await dealing.deal_alike(need, needs, frozenset(exclude))
            except MarketNoDeal as err:
                if wanting:
                    message, hint = refusal(wanting, unpaid)
                    raise PrepaymentRequired(message, hint=hint, providers=wanting) from None
                if shut_out:
                    raise _shut_out_refusal(shut_out, err) from None
                raise
            if terms is None:
                return assignments, {}, ""
            costs: dict[str, int] = {}
            for n in needs:
                a = assignments[n]
                if a.provider != dealing.me:
                    costs[a.provider] = costs.get(a.provider, 0) + price_storage(share_bytes, seconds, a.price)
            if not costs:  # every share stays here: no provider's terms to draw down
                terms.give_back(drawn)
                return assignments, prepaid, _passed_over(wanting, shut_out, unpaid)
            refused, now_prepaid = await terms.settle(costs, dry, drawn, unpaid)
            for provider, amount in now_prepaid.items():
                prepaid[provider] = prepaid.get(provider, 0) + amount
            refusing = {p: code for p, code in terms.shut_out().items() if p in costs}  # found as their terms were asked
            if not refused and not refusing:
                return assignments, prepaid, _passed_over(wanting, shut_out, unpaid)
            wanting.update(refused)
            shut_out.update(refusing)
            exclude |= set(refused) | set(refusing)
    except BaseException:
        if terms is not None:
            terms.give_back(drawn)  # nothing of the put is sent
        raise
    terms.give_back(drawn)
    if not wanting:
        raise _shut_out_refusal(shut_out, MarketNoDeal(f"no provider took the shares in {TERMS_ROUNDS} matchings"))
    message, hint = refusal(wanting, unpaid)
    raise PrepaymentRequired(message, hint=hint, providers=wanting)


def _passed_over(wanting: dict[str, int], shut_out: dict[str, str], unpaid: dict[str, str]) -> str:
    """Why a matching left providers out, with the command that lets them in (as a put they all refuse says it)."""
    if wanting:
        message, hint = refusal(wanting, unpaid)
    elif shut_out:
        message, hint = _refusing(shut_out)
    else:
        return ""
    return f"{message} ({hint})" if hint else message


def _refusing(shut_out: dict[str, str]) -> tuple[str, str]:
    """(who refuses this node outright and why, what lets it in), naming one node whole."""
    node, code = next(iter(sorted(shut_out.items())))
    others = f" and {len(shut_out) - 1} more" if len(shut_out) > 1 else ""
    return f"node {node}{others} refuses this node ({code})", REMEDIES.get(code, "").format(node=node)


def _shut_out_refusal(shut_out: dict[str, str], err: MarketNoDeal) -> MarketNoDeal:
    """The market's no-deal once the providers that refuse this node outright were left out, naming them."""
    message, hint = _refusing(shut_out)
    return MarketNoDeal(f"{message}, and no other provider took the shares meant for it", hint=hint or err.hint,
                        needs=err.details.get("needs", {}), refusing=shut_out)


def withdraw_needs(dealing: Dealing, needs: list[str]) -> None:
    """The put is over (stored or not): its needs leave the book."""
    dealing.needs.withdraw(needs)


async def relocation(dealing: Dealing, share_bytes: int, seconds: int, *, avoid: set[str],
                     bid: int | None = None, failed: frozenset[str] = frozenset(),
                     wanted: Mapping | None = None) -> tuple[str, int]:
    """A provider (not in `avoid`) and its price for one share placed again (a repair, or a holder that could
    not take its share), at `bid` (default: the node's default bid), within the put's own filters (`wanted`:
    `parse_filters`); `failed` providers do not even take part in the clearing (a dead provider's ask must not set
    the price the others are measured against)."""
    wanted = wanted or {}
    need = dealing.need(f"repair-{unique_bytes(6).hex()}", "storage", share_bytes, seconds,
                        dealing.market.config.storage_bid if bid is None else bid,
                        avoid=tuple(sorted(set(avoid) | set(wanted.get("avoid", ())))),
                        prefer=tuple(wanted.get("prefer", ())), min_availability=wanted.get("min_availability"))
    try:
        assignment = (await dealing.deal([need], failed))[need.slot.id]
    finally:
        dealing.remember()
    return assignment.provider, assignment.price
