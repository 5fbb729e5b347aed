"""bench/trials.py's ledger checks: each local run is paid by exactly one transfer once its tab is settled, which is
up to the tab's interval after the run (or the next start, after a kill -9), and each provider's tab by one receipt
once it is closed: a run that ended a moment before the check is waited for, while a run never paid, or paid twice,
is still a violation."""

from __future__ import annotations

from bench import trials

RUN = "18ec711215b277c5e13f811982078bf8"
RECORD = {"id": RUN, "charge": 82, "timestamp": "2026-01-01T00:00:00Z", "job": {"id": "j" * 64}}
JOB = {"id": "j" * 64, "state": "done", "charge_total": 82, "executions": 1, "spec": {"env": {"A": "1"}}}


class Gateway:
    """The gateway's answers to the check: its provenance, and its client history and chain as each read finds them."""

    def __init__(self, histories: list[list[list[str]]], chains: list[list[str]] = ([],)) -> None:
        self.histories = histories  # per read: the refs each transfer covers (the last read's stays)
        self.chains = chains  # per read: the authorizations the client account paid 82 under
        self.reads = self.chain_reads = 0

    def json(self, method: str, path: str, payload=None, timeout=None) -> tuple[int, dict]:
        if path.startswith("/v1/compute/provenance"):
            return 200, {"records": [{"record": RECORD}]}
        if path.startswith("/v1/ledger/accounts/client/history"):
            covers = self.histories[min(self.reads, len(self.histories) - 1)]
            self.reads += 1
            return 200, {"entries": [{"seq": n, "delta": -82 * len(refs), "covered": refs}
                                     for n, refs in enumerate(covers)]}
        if path.startswith("/v1/ledger/accounts/client/chain"):
            paid = self.chains[min(self.chain_reads, len(self.chains) - 1)]
            self.chain_reads += 1
            return 200, {"entries": [{"authorization": a, "delta": -82} for a in paid]}
        if path == "/v1/node/status":
            return 200, {"tabs": {"tabs": 1, "refs": 1, "amount": 82}}
        return 200, {}


def test_a_run_whose_tab_settles_after_the_check_began_is_paid_once(monkeypatch) -> None:
    gateway = Gateway([[], [[RUN]]])  # its tab still open at the first read, settled by the second
    monkeypatch.setattr(trials, "Http", lambda node, timeout=None: gateway)
    history = trials.History(jobs={JOB["id"]: 1})
    assert trials._job_charges(["gateway"], gateway, [JOB], history) == []
    assert gateway.reads == 2


def test_a_provider_whose_tab_is_paid_after_the_check_began_is_paid_once(monkeypatch) -> None:
    gateway = Gateway([[[RUN]]], [[], ["a" * 64]])  # its receipt not paid yet at the first read, paid by the second
    monkeypatch.setattr(trials, "Http", lambda node, timeout=None: gateway)
    job = {**JOB, "charge": 82, "paid_on": [{"provider": "p", "authorization": "a" * 64, "charge": 82}]}
    assert trials._job_charges(["gateway", "p"], gateway, [job], trials.History(jobs={JOB["id"]: 1})) == []
    assert gateway.chain_reads == 2


def test_a_run_never_paid_or_paid_twice_is_a_violation() -> None:
    unpaid = trials._local_runs_paid(Gateway([[]]), {RUN: RECORD}, timeout=0.3)
    assert len(unpaid) == 1 and f"{RUN} paid by 0 ledger transfers, not 1" in unpaid[0] and "'refs': 1" in unpaid[0]
    twice = trials._local_runs_paid(Gateway([[[RUN], [RUN]]]), {RUN: RECORD}, timeout=0.3)
    assert twice == [f"local job run {RUN} paid by 2 ledger transfers, not 1"]
