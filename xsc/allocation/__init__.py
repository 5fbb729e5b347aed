"""The mutual-recognition allocator: pure cores over pydantic models, and a convergence simulator.

`compute_allocation(provider, network)` divides a provider's capacity slots among the network's
need slots (tier 1 by mutual recognition, tier 2 by one-way recognition, the rest left to the
open market); `update_damping` is the recipient's side; `receive` accepts peers' commitments
and states by their Interval Tree Clock stamps (`Stamp`).  See docs/allocation.md.
"""

from .causality import Outcome, receive
from .compute import SCALE, as_network, compute_allocation
from .convergence import CONVERGENCE_EPSILON, NETWORK_QUORUM, denominator_delta, network_converged
from .damping import damping_factor, over_allocation, recent_history, update_damping
from .divide import water_fill
from .itc import Stamp
from .matching import NeedIndex, compatible
from .models import (
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
from .received import ReceivedIndex
from .recognition import mutual_recognition, mutual_recognition_map, normalized_weights
from .simulate import SimConfig, SimResult, Simulation, random_commitments, simulate
from .simulate import plot as plot_simulation

__all__ = [
    "AllocationState", "ANY", "as_network", "CapacitySlot", "Commitment", "compatible",
    "compute_allocation", "CONVERGENCE_EPSILON", "ConvergenceSample", "damping_factor",
    "DampingSample", "denominator_delta", "mutual_recognition", "mutual_recognition_map",
    "NeedIndex", "NeedKey", "NeedSlot", "network_converged", "NETWORK_QUORUM", "normalized_weights",
    "Outcome", "over_allocation", "plot_simulation", "random_commitments", "receive",
    "ReceivedIndex", "recent_history", "SCALE", "SimConfig", "SimResult", "simulate", "Simulation",
    "SlotAllocation", "SlotDenominator", "SlotFilter", "Stamp", "update_damping", "water_fill",
]
