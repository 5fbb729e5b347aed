"""Health of peers: probe challenges and availability statistics (pure; the node schedules the probes)."""

from .core.challenge import answer, check_answer, check_nonce, new_nonce
from .core.stats import (Availability, PeerHistory, availability, reachable_status, record_audit, record_probe,
                         success_ratio)

__all__ = ["Availability", "PeerHistory", "answer", "availability", "check_answer", "check_nonce", "new_nonce",
           "reachable_status", "record_audit", "record_probe", "success_ratio"]
