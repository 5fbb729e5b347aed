"""The mutual-recognition allocator: pure cores over pydantic models, and its simulators.

The contract (docs/allocation.md has the rules, with the reasons where they differ from the seed):

One round, provider's side -- what a provider node computes whenever something it reads changes::

    state = provider_round(my_commitment, commitments, receipts, previous=my_last_state, now_ms=now)

  `commitments`: participant -> latest Commitment (need slots, recognition, damping factor);
  `receipts`: recipient -> its latest Receipt.  For every need slot of every recipient it
  recognises, the provider takes from the receipt (`grant`) the units the *other* providers give
  (so residual need = quantity - that) and its cap for this round; then
  `compute_allocation(provider, commitments, received=..., caps=..., previous=..., now_ms=...)`
  divides each capacity slot: tier 1 (mutual recognition) before tier 2 (one-way), in proportion
  to recognition x need x damping factor, water-filled, each need slot capped at min(residual
  need, cap).  Returns an `AllocationState` (ITC-stamped, an event after the previous one): its
  `slot_allocations`, the `wanted` need slots (where the cap stopped it: a request for a larger
  grant), the slot denominators and the `converged` flag (denominators moved <= 0.001, relative).
  Publish it to the recipients it names (this time and last time).

One round, recipient's side -- whenever a provider's state addressed to it changes::

    received, wanted = addressed_to(me, provider_states)      # or built from the messages
    my_commitment, receipt = recipient_round(my_commitment, received, wanted, now_ms=now,
                                             previous=my_last_receipt)

  totals what each provider gives each of its need slots, records the over-allocation in the
  damping history (`update_damping`: 0.5 oscillating, 0.8 stuck, 1.0 steady) and returns the
  commitment with its new history and the `Receipt` (per need slot: quantity, total, each
  provider's part, the providers asking for more; over-allocation; damping factor; ITC stamp).
  Publish the receipt to the providers it names when its entries changed, and the commitment
  when its damping factor changed.

Guarantees, when every provider computes on the same receipts: no capacity slot gives more than
its quantity, no provider gives a need slot more than its residual need, the grants of a need
slot add up to at most its quantity minus what it already has (so no need slot is ever
over-allocated), and tier 1 is served before tier 2.  On views that differ (a live network)
over-allocation can appear, and the next receipt sheds it (each provider keeps its part x N / T).

`receive(held, incoming)` accepts commitments, allocation states and receipts by their Interval
Tree Clock stamps (`Stamp`): stale ignored, newer replaces, concurrent merged.

Nothing here reads the clock or a random source, or does I/O.  `Simulation` (events: latencies,
ITC, reactive recompute) and `RoundSimulation` (synchronous rounds, a process pool) run these
same functions; there is no second allocator.
"""

from .core.causality import Outcome, receive
from .core.compute import SCALE, as_network, compute_allocation
from .core.convergence import CONVERGENCE_EPSILON, NETWORK_QUORUM, denominator_delta, network_converged
from .core.damping import damping_factor, over_allocation, recent_history, update_damping
from .core.divide import water_fill
from ..itc import Stamp
from .core.matching import NeedIndex, compatible
from .core.models import (
    ANY,
    AllocationState,
    CapacitySlot,
    Commitment,
    ConvergenceSample,
    DampingSample,
    NeedKey,
    NeedSlot,
    SlotAllocation,
    SlotDenominator,
    SlotFilter,
)
from .core.received import ReceivedIndex
from .core.recognition import mutual_recognition, mutual_recognition_map, normalized_weights
from .core.rounds import Receipt, ReceiptEntry, addressed_to, grant, provider_round, provider_view, recipient_round
from .core.simulate import SimConfig, SimResult, Simulation, random_commitments, simulate
from .core.simulate import plot as plot_simulation

__all__ = [
    "AllocationState", "ANY", "as_network", "CapacitySlot", "Commitment", "compatible",
    "compute_allocation", "CONVERGENCE_EPSILON", "ConvergenceSample", "damping_factor",
    "DampingSample", "denominator_delta", "mutual_recognition", "mutual_recognition_map",
    "NeedIndex", "NeedKey", "NeedSlot", "network_converged", "NETWORK_QUORUM", "normalized_weights",
    "Outcome", "over_allocation", "plot_simulation", "random_commitments", "receive",
    "ReceivedIndex", "recent_history", "SCALE", "SimConfig", "SimResult", "simulate", "Simulation",
    "SlotAllocation", "SlotDenominator", "SlotFilter", "Stamp", "update_damping", "water_fill",
    "Receipt", "ReceiptEntry", "addressed_to", "grant", "provider_round", "provider_view", "recipient_round",
]
