"""A provider's terms for this node, and what to do when a provider wants prepayment (pure).

A provider takes on work for this node only within the trust line it gives it (xsc/ledger/trust.py): what this
node prepaid and paid it, plus the credit it extends, minus the work already taken on.  `Terms` is that line as
the provider says it (`GET /v1/peer/terms`), kept by the gateway for a while and drawn down by the work it sends.

Before a put's shares go to providers, the gateway checks each one's cost against its terms:

- within the line: the provider takes it;
- beyond it, within the user's prepayment budget (`ledger.auto_prepay`, a cap per provider and one in all, counted
  over everything this node ever prepaid by itself): this node prepays what is missing (at least a quarter of the
  per-provider cap at once, so that a series of small puts is not a series of prepayments) and says so.  The
  provider countersigns a prepayment only out of what it can collect from this node (ledger/trust.py: what it owes
  this node, and for a node it recognises the work it did for it), so a prepayment to a provider that owes this
  node nothing and does not recognise it is refused, and the put goes on as if it were beyond the budget;
- beyond the budget: the provider is left out of the matching, and the put goes to the providers that take it
  (or stays home); if none does, it fails with one line naming them and the `xsc ledger prepay` command.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ledger.core.model import format_credits
from ...units import MAX_MICRO_CREDITS

MAX_LINE = MAX_MICRO_CREDITS


@dataclass
class Terms:
    provider: str
    available: int  # micro-credits of work the provider takes on for this node now
    credit: int  # the credit it extends this node (0: a stranger, prepays)
    recognised: bool  # does it recognise this node
    fetched: float  # monotonic seconds when it said so

    def takes(self, cost: int) -> bool:
        return cost <= self.available


def parse_terms(provider: str, body: object, now: float) -> Terms | None:
    """The terms a provider answered, or None when its answer is not terms (then nothing is assumed)."""
    if not isinstance(body, dict):
        return None
    available, credit, recognised = body.get("available"), body.get("credit"), body.get("recognised")
    if type(available) is not int or type(credit) is not int or type(recognised) is not bool:
        return None
    if not -MAX_LINE <= available <= MAX_LINE or not 0 <= credit <= MAX_LINE:
        return None
    return Terms(provider, available, credit, recognised, now)


def prepayment(missing: int, given_to_peer: int, given_in_all: int, peer_cap: int, total_cap: int) -> int:
    """How much to prepay a provider by itself so that `missing` micro-credits of work fit its line: at least
    `missing`, a quarter of `peer_cap` if that is more, never past either cap (counted with what was already
    prepaid by itself: `given_to_peer`, `given_in_all`); 0 when `missing` does not fit the budget."""
    room = min(peer_cap - given_to_peer, total_cap - given_in_all)
    if missing <= 0 or room < missing:
        return 0
    return min(room, max(missing, -(-peer_cap // 4)))


def refusal(wanting: dict[str, int], unpaid: dict[str, str] | None = None) -> tuple[str, str]:
    """(message, hint) of a put no provider takes without prepayment: one line, node ids whole in the command.

    `wanting`: provider -> micro-credits it is missing for this put; `unpaid`: provider -> why this node's own
    prepayment of it (ledger.auto_prepay) was tried and not made."""
    first = min(wanting, key=lambda p: (wanting[p], p))
    amount = format_credits(max(1, wanting[first])).rstrip("0").rstrip(".")
    if len(wanting) == 1:
        message = f"node {first} wants prepayment for this put ({amount} credits)"
    else:  # the ids are whole, so one line names one: the cheapest, in the command that pays it
        message = f"{len(wanting)} providers want prepayment for this put, the least {amount} credits"
    tried = [p for p in wanting if p in (unpaid or {})]
    if first in tried:  # (the command below is then one this node tried by itself)
        why = unpaid[first].replace(f"node {first} ", "it ", 1)  # (its id is said already)
        message += f"; this node's own prepayment of it (ledger.auto_prepay) was tried and not made: {why}"
    elif tried:
        were = "was" if len(tried) == 1 else "were"
        message += f"; {len(tried)} of them {were} tried with this node's own prepayment (ledger.auto_prepay), not made"
    # A credit line (`xsc market recognize --credit` by its user) first: a prepayment counts only out of what that
    # node owes this one (ledger/trust.py), so a stranger that never dealt with it refuses one.
    return message, f"ask for credit, or if it owes you: xsc ledger prepay {first} {amount}"


__all__ = ["Terms", "parse_terms", "prepayment", "refusal"]
