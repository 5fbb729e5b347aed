"""The gateway's side of dealing with strangers: each provider's terms for this node, and prepayment within the
user's budget (the rules: xsc/market/core/terms.py).

`ProviderTerms.settle(costs)` is asked before a put's shares go to the providers the market chose: it answers the
providers that will not take their part (and how much each is missing), after prepaying those it may within
`ledger.auto_prepay` (each cut short after `ledger.prepay_wait` seconds).  A provider that does not answer, its terms
or a prepayment, holds up no settlement but those of work meant for it: nothing is held while a provider is waited on.
A settlement of work for a provider that a prepayment under way may cover waits for it, then draws on it (or, if it was
not made, decides again): one provider is not prepaid twice for work one prepayment covers.
Terms are asked of each provider (`GET /v1/peer/terms`, one signed request answered from its trust line) at most every
TERMS_SECONDS (REFUSED_SECONDS while it takes nothing), and drawn down here by what each put sends it; a provider that
does not answer is assumed to take the work (it is then down, and the put's replacement of refusing holders copes), and
is not asked again for SILENT_SECONDS: the puts meanwhile do not each wait TERMS_TIMEOUT for it.
A call, a job, a replica of a job or a placed web function a provider refused for want of prepayment is remembered
the same way (`wanted_prepayment`): the next ones pass over it (`PassingOver`) while another provider takes them.
What this node prepaid by itself is counted in LevelDB (`keys.auto_prepaid`), so the caps hold across restarts.

A provider that refuses this node outright (it quarantined this node, or does not admit it: SHUT_OUT), as its terms
are asked or as it refuses a share, is left out of puts and of repairs for SHUT_OUT_SECONDS (`shut_out`, read by
storage/placing.py and the put's matching): asking it again would only be refused again, each time a round trip to it
and its shares placed elsewhere after all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .. import keys
from ..config import LedgerSection
from ..db import Database
from ..errors import PeerError, PrepaymentRequired, XscError, shown
from ..identity import parse_public_id
from ..ledger.core.model import format_credits
from ..market.core.terms import Terms, parse_terms, prepayment
from ..tasks import Locks

log = logging.getLogger(__name__)

TERMS_SECONDS = 30.0  # a provider's terms are asked again after this long
# ... and those of a provider that did not say them (it timed out, failed or answered no terms) after this long: till
# then puts take it as one that says nothing (it takes the work), without waiting for it again each time.
SILENT_SECONDS = TERMS_SECONDS
REFUSED_SECONDS = 2.0  # ... and those of a provider that wanted prepayment after this long (its user may recognise us)
TERMS_TIMEOUT = 3.0  # seconds a provider has to say its terms
MAX_PROVIDERS = 64  # providers asked for their terms per put (a put has at most 6)

# Refusals that are a provider's standing decision about this node as a whole, and how long a put leaves it out
# after one: a quarantine lasts a day by default (peers.quarantine_for), an operator may lift it sooner.
SHUT_OUT = frozenset({"quarantined", "not-admitted"})
SHUT_OUT_SECONDS = 600.0

MAX_WHY = 160  # characters of a refused prepayment's reason a put's message quotes (a payee's words, in part)

TERMS_PATH = "/v1/peer/terms"
TERMS_ANSWER = 4 * 1024  # bytes of a provider's terms read at most: three numbers (ledger/trust.py: terms_for)


class Peers(Protocol):
    def peer(self, node_id: str) -> Any: ...
    async def request(self, peer_url: str, method: str, path: str, **kwargs: Any) -> Any: ...


Prepay = Callable[[str, int], Awaitable[Any]]  # (provider, micro-credits) -> the prepayment made
Drawn = dict[str, tuple[Terms, int]]  # provider -> (its terms, micro-credits of work drawn from them)


class ProviderTerms:
    def __init__(self, *, db: Database, peers: Peers, prepay: Prepay, budget: LedgerSection) -> None:
        self.db = db
        self.peers = peers
        self.prepay = prepay
        self.auto_prepay = budget.auto_prepay  # with its caps: ledger.auto_prepay_peer, ledger.auto_prepay_total
        self.peer_cap = budget.auto_prepay_peer if self.auto_prepay else 0
        self.total_cap = budget.auto_prepay_total if self.auto_prepay else 0
        self.prepay_wait = budget.prepay_wait  # seconds a settlement waits for one prepayment's receipt
        self._terms: dict[str, Terms] = {}
        self._shut_out: dict[str, tuple[float, str]] = {}  # provider -> (until when, monotonic; its refusal's code)
        self._silent: dict[str, float] = {}  # provider that did not say its terms -> when (monotonic) it did not
        self._asking: Locks[str] = Locks()  # provider -> the one request for its terms under way
        self._prepaying: dict[str, asyncio.Future] = {}  # provider -> done when the prepayment under way to it is over
        self._waiting = 0  # settlements waiting for a prepayment under way (`_after_prepayments`)
        self.prepaid_total = sum(int(v) for _, v in db.iterator(prefix=keys.AUTO_PREPAID))

    def prepaid(self, provider: str) -> int:
        raw = self.db.get(keys.auto_prepaid(parse_public_id(provider)))
        return int(raw) if raw else 0

    def _fresh(self, provider: str) -> Terms | None:
        held = self._terms.get(provider)
        if held is not None and time.monotonic() - held.fetched < (TERMS_SECONDS if held.available > 0
                                                                   else REFUSED_SECONDS):
            return held
        return None

    async def terms(self, provider: str) -> Terms | None:
        """`provider`'s terms for this node, held, or asked (one request at a time: those asking meanwhile take its
        answer, and all draw on one `Terms`), or None if it does not say them."""
        held = self._fresh(provider)
        if held is not None or self._quiet(provider):
            return held
        async with self._asking.one(provider):
            held = self._fresh(provider)
            if held is not None or self._quiet(provider):  # (answered, or not, to the one asking meanwhile)
                return held
            return await self._ask(provider)

    def _quiet(self, provider: str) -> bool:
        """Whether `provider` did not say its terms within the last SILENT_SECONDS: it is not asked again till then,
        or every put would wait TERMS_TIMEOUT for it."""
        since = self._silent.get(provider)
        if since is None:
            return False
        if time.monotonic() - since < SILENT_SECONDS:
            return True
        del self._silent[provider]
        return False

    def _unanswered(self, provider: str) -> None:
        if len(self._silent) >= 4 * MAX_PROVIDERS:
            self._silent.clear()
        self._silent[provider] = time.monotonic()

    async def _ask(self, provider: str) -> Terms | None:
        now = time.monotonic()
        try:
            response = await asyncio.wait_for(self.peers.request(self.peers.peer(provider).url, "GET", TERMS_PATH,
                                                                 to=provider, max_size=TERMS_ANSWER), TERMS_TIMEOUT)
            found = parse_terms(provider, response.json(), now)
            if found is None:  # nothing is assumed of it, and its node is struck (net/peer_client.py)
                raise response.shapeless(f"node {provider} answered its terms with something else",
                                         hint='a node answers {"available": INT, "credit": INT, "recognised": BOOL}')
        except (XscError, TimeoutError, OSError) as err:
            log.info("node %s did not say its terms: %s (not asked again for %d s)", provider, err, SILENT_SECONDS)
            self.refused(provider, err)
            self._unanswered(provider)
            return None
        self._hold(found)
        return found

    def refused(self, provider: str, err: BaseException) -> None:
        """A request to `provider` failed with `err`: one of its SHUT_OUT refusals leaves it out of puts and repairs a
        while."""
        code = (err.details or {}).get("peer_code") if isinstance(err, PeerError) else None
        if code is not None:  # it answered: it is no longer taken to be silent (`_quiet`)
            self._silent.pop(provider, None)
        if code in SHUT_OUT:
            if len(self._shut_out) >= 4 * MAX_PROVIDERS:
                self._shut_out.clear()
            self._shut_out[provider] = (time.monotonic() + SHUT_OUT_SECONDS, code)
            log.info("node %s refuses this node (%s): no put or repair asks it for %d s", provider, code,
                     SHUT_OUT_SECONDS)

    def shut_out(self) -> dict[str, str]:
        """provider -> the code of its refusal, for the providers that refused this node within SHUT_OUT_SECONDS."""
        now = time.monotonic()
        for provider in [p for p, (until, _) in self._shut_out.items() if until <= now]:
            del self._shut_out[provider]
        return {provider: code for provider, (_, code) in self._shut_out.items()}

    def _hold(self, terms: Terms) -> None:
        if len(self._terms) >= 4 * MAX_PROVIDERS:
            self._terms.clear()
        self._terms[terms.provider] = terms

    def wants_prepayment(self, provider: str) -> None:
        """A provider answered work (a call, a job) with prepayment-required: it is held to take nothing from this
        node until its terms are asked again (after REFUSED_SECONDS), so the next work goes elsewhere first."""
        self._hold(Terms(provider, 0, 0, False, time.monotonic()))

    async def refuses(self, provider: str) -> bool:
        """Whether a provider said it takes nothing from this node, and says so still (its terms asked again once
        REFUSED_SECONDS passed: one small signed request, never the work).  A provider not known to refuse is not
        asked: the work goes to it, and its answer says."""
        held = self._terms.get(provider)
        if held is None or held.available > 0:
            return False
        terms = await self.terms(provider)
        return terms is not None and terms.available <= 0

    def wanted_prepayment(self, provider: str, err: BaseException) -> bool:
        """Whether `err`, `provider`'s answer to work, was a refusal for want of prepayment: remembered if so
        (`wants_prepayment`)."""
        wanted = isinstance(err, XscError) and (err.code == PrepaymentRequired.code or
                                                (err.details or {}).get("peer_code") == PrepaymentRequired.code)
        if wanted:
            self.wants_prepayment(provider)
        return wanted

    def passing_over(self) -> "PassingOver":
        """What one piece of work (a call, a job, a replica, a placed function) passes over: see PassingOver."""
        return PassingOver(self)

    def forget(self, provider: str) -> None:
        """A provider refused work: its terms are asked again before the next put (once SILENT_SECONDS passed if it
        did not say them: a holder that did not answer a share either is asked no sooner for having failed it)."""
        self._terms.pop(provider, None)

    async def settle(self, costs: dict[str, int], dry: bool = False, drawn: Drawn | None = None,
                     unpaid: dict[str, str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
        """(providers that will not take their part -> micro-credits missing, providers prepaid now -> amount).
        The others' terms are drawn down by their part.  `dry`: only say which would refuse (nothing is prepaid).
        `drawn`: what an earlier settlement of the same work drew, work matched again since (without the providers
        that refused it) and never sent as it was then: given back first (`give_back`), then this one's draws.
        `unpaid`: told of each provider this node tried to prepay by itself and did not, and why (the put says it)."""
        costs = dict(list(costs.items())[:MAX_PROVIDERS])
        wanting: dict[str, int] = {}
        if drawn is not None:
            self.give_back(drawn)
        # Each provider's terms are asked on their own: one that does not answer holds up no other settlement.
        found = await asyncio.gather(*(self.terms(p) for p in costs))
        await self._after_prepayments(costs, found)
        paying: dict[str, tuple[Terms, int]] = {}  # provider -> (its terms, the prepayment it is sent)
        prepaid: dict[str, int] = {}
        try:
            self._decide(costs, found, dry, drawn, wanting, paying)
            # Sent once all is decided, each cut short after `prepay_wait`: a payee that does not answer holds up no
            # other settlement, nor this one for longer.  A settlement meanwhile that the prepayment may cover waits
            # for it (`_after_prepayments`).
            failed = await self._prepay_all({provider: amount for provider, (_, amount) in paying.items()})
            for provider, (terms, amount) in paying.items():
                if provider not in failed:
                    prepaid[provider] = amount
                    terms.available += amount
                    self._draw(terms, costs[provider], drawn)
                else:
                    wanting[provider] = costs[provider] - max(0, terms.available)
                    if unpaid is not None:
                        unpaid[provider] = failed[provider]
        finally:  # (cancelled or failed too: those waiting decide again, on the terms as they are then)
            for provider in paying:
                self._prepaying.pop(provider).set_result(None)
        return wanting, prepaid

    def _decide(self, costs: dict[str, int], found: list[Terms | None], dry: bool, drawn: Drawn | None,
                wanting: dict[str, int], paying: dict[str, tuple[Terms, int]]) -> None:
        """What each provider of `costs` takes (drawn), is missing (`wanting`) or is to be prepaid (`paying`, each
        a prepayment under way from now on), all with no wait in between, so that two puts never count on one room
        or one prepayment (on the newest terms held: asked again meanwhile, they replaced the ones `found`)."""
        for (provider, cost), asked in zip(costs.items(), found):
            terms = self._terms.get(provider, asked) if asked is not None else None
            if terms is None:
                continue
            if not terms.takes(cost):
                amount = prepayment(cost - terms.available, self.prepaid(provider), self.prepaid_total,
                                    self.peer_cap, self.total_cap)
                if not amount:
                    wanting[provider] = cost - max(0, terms.available)
                elif not dry:
                    # Counted before it is sent (a crash in between leaves the budget smaller, never overspent),
                    # and as it is decided: a settlement meanwhile does not count on the same budget.
                    self._count(provider, amount)
                    self._prepaying[provider] = asyncio.get_running_loop().create_future()
                    paying[provider] = (terms, amount)
                continue
            if not dry:
                self._draw(terms, cost, drawn)

    async def _after_prepayments(self, costs: dict[str, int], found: list[Terms | None]) -> None:
        """Once no prepayment is under way to a provider of `costs` whose terms do not take its part: were it decided
        now, it would prepay the provider again what the one under way may cover (each within the caps, but twice)."""
        while True:
            under_way = {self._prepaying[p] for (p, cost), asked in zip(costs.items(), found)
                         if p in self._prepaying and asked is not None and not self._terms.get(p, asked).takes(cost)}
            if not under_way:
                return
            self._waiting += 1
            try:
                await asyncio.wait(under_way)  # (each is bounded by `prepay_wait`)
            finally:
                self._waiting -= 1

    @staticmethod
    def _draw(terms: Terms, cost: int, drawn: Drawn | None) -> None:
        terms.available -= cost
        if drawn is not None:
            drawn[terms.provider] = (terms, cost)

    @staticmethod
    def give_back(drawn: Drawn, part: dict[str, int] | None = None) -> None:
        """Work `settle` drew from providers' terms is not sent after all: what it drew is theirs again (in terms asked
        again since, it was never drawn: they are not the ones given back to), and no longer in `drawn`, so that it is
        given back once.  `part`: provider -> the most of its draw given back (the work of it that was not sent);
        the rest stays drawn."""
        for provider, (terms, cost) in list(drawn.items()):
            given = cost if part is None else min(cost, part.get(provider, 0))
            terms.available += given
            if given < cost:
                drawn[provider] = (terms, cost - given)
            else:
                del drawn[provider]

    def _count(self, provider: str, amount: int) -> None:
        self.prepaid_total += amount
        self.db.put(keys.auto_prepaid(parse_public_id(provider)), str(self.prepaid(provider) + amount).encode(),
                    sync=True)

    async def _prepay_all(self, paying: dict[str, int]) -> dict[str, str]:
        """The providers of `paying` (provider -> micro-credits, counted already) whose prepayment was not made, and
        why."""
        made = await asyncio.gather(*(self._prepay(provider, amount) for provider, amount in paying.items()))
        return {provider: why for provider, why in zip(paying, made) if why is not None}

    async def _prepay(self, provider: str, amount: int) -> str | None:
        """Send a prepayment `_count`ed already, waited for `prepay_wait` seconds at most; None once made, else why
        not.  Refused, it counts no more; one whose payee has not answered by then is cut short as a crash would cut
        it: its authorization stays pending and the payments' retry finishes it (ledger/settlement.py), counted
        meanwhile (the caps are never passed)."""
        try:
            await asyncio.wait_for(self.prepay(provider, amount), self.prepay_wait)
        except TimeoutError:
            log.warning("node %s did not answer a prepayment of %s credits within %s s: the put goes on without it "
                        "(the payment is retried in the background)", provider, format_credits(amount),
                        self.prepay_wait)
            return f"it did not answer within {self.prepay_wait:g} s (retried in the background)"
        except XscError as err:
            self._count(provider, -amount)
            log.warning("could not prepay node %s %s credits: %s", provider, format_credits(amount), err)
            return shown(err.message, MAX_WHY)
        log.info("prepaid node %s %s credits by itself (ledger.auto_prepay; %s of %s prepaid to it in all)",
                 provider, format_credits(amount), format_credits(self.prepaid(provider)),
                 format_credits(self.peer_cap))
        return None

    def status(self) -> dict[str, Any]:
        return {"auto_prepay": self.auto_prepay, "peer_cap": self.peer_cap, "total_cap": self.total_cap,
                "prepaid_in_all": self.prepaid_total, "prepaying": sorted(self._prepaying),
                "waiting_for_prepayments": self._waiting}


class PassingOver:
    """The providers one piece of work passes over because they said lately that they take nothing from this node
    (`ProviderTerms.refuses`), while the market offers another; once it offers none, they are asked again (once),
    and one that still wants prepayment says what to do.  Every placement of compute work goes through one."""

    def __init__(self, terms: ProviderTerms) -> None:
        self.terms = terms
        self.passed: set[str] | None = set()  # None: no other provider took the work, these are asked again

    def left_out(self) -> frozenset[str]:
        return frozenset(self.passed or ())

    def exhausted(self) -> bool:
        """The market offered no provider but those passed over: whether to ask it again with them back in."""
        if self.passed:
            self.passed = None
            return True
        return False

    async def passes(self, provider: str) -> bool:
        """Whether the work passes `provider` over (it refuses this node still); the market is then asked again."""
        if self.passed is not None and await self.terms.refuses(provider):
            self.passed.add(provider)
            return True
        return False


__all__ = ["PassingOver", "ProviderTerms", "SHUT_OUT", "SHUT_OUT_SECONDS", "TERMS_ANSWER", "TERMS_PATH",
           "TERMS_SECONDS"]
