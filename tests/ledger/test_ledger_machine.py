"""A hypothesis state machine: random authorizations and settlements among several accounts.

The model says what must happen (settled, or refused and why); the real store on LevelDB
must agree, and after every step balances sum to zero, none is below its credit limit, and
verify passes."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tests.support.ledger import open_store
from xsc.errors import AuthorizationExpired, AuthorizationReplayed, InsufficientCredit, InvalidEntry
from xsc.identity import Identity
from xsc.ledger import Settlement
from xsc.ledger.core.model import authorize

LIMIT = 500
KEYS = [Identity.generate() for _ in range(4)]


class LedgerMachine(RuleBasedStateMachine):
    authorizations = Bundle("authorizations")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="xsc-ledger-sm-")
        self.db, self.store = open_store(os.path.join(self.dir, "db"), credit_limit=LIMIT)
        self.now = 1_700_000_000
        self.balances = {k.public_key: 0 for k in KEYS}
        self.seqs = {k.public_key: 0 for k in KEYS}
        self.settled: set[bytes] = set()

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=authorizations, payer=st.sampled_from(KEYS), payee=st.sampled_from(KEYS),
          cap=st.integers(0, 400), ttl=st.integers(0, 120))
    def authorize(self, payer, payee, cap, ttl):
        return payer, payee, authorize(payer, payee.public_key, cap, "job", self.now + ttl, os.urandom(16))

    @rule(seconds=st.integers(1, 30))
    def tick(self, seconds):
        self.now += seconds

    def _expected(self, payer, payee, auth, amount, pending: dict):
        """What the rules say about settling this now, given settlements earlier in the same group."""
        if payer.public_key == payee.public_key:
            return InvalidEntry
        if amount > auth.cap:
            return InvalidEntry
        if self.now > auth.expires_at:
            return AuthorizationExpired
        if auth.id in self.settled or auth.id in pending:
            return AuthorizationReplayed
        if self.balances[payer.public_key] + pending.get(payer.public_key, 0) - amount < -LIMIT:
            return InsufficientCredit
        return None

    def _settle(self, items):
        requests = [Settlement(payer, payee, auth, amount, (("fuel", amount),)) for (payer, payee, auth), amount in items]
        expected, pending = [], {}
        for (payer, payee, auth), amount in items:
            outcome = self._expected(payer, payee, auth, amount, pending)
            expected.append(outcome)
            if outcome is None:
                pending[auth.id] = 1
                pending[payer.public_key] = pending.get(payer.public_key, 0) - amount
                pending[payee.public_key] = pending.get(payee.public_key, 0) + amount
        results = self.store.settle(requests, self.now)
        for ((payer, payee, auth), amount), want, got in zip(items, expected, results):
            event(f"outcome: {want.__name__ if want else 'settled'}")
            if want is None:
                assert not isinstance(got, Exception), got
                assert got.amount == amount and got.account == payer.public_key
                self.balances[payer.public_key] -= amount
                self.balances[payee.public_key] += amount
                self.seqs[payer.public_key] += 1
                self.seqs[payee.public_key] += 1
                self.settled.add(auth.id)
            else:
                assert isinstance(got, want), (want, got)

    @rule(auth=authorizations, amount=st.integers(0, 400))
    def settle(self, auth, amount):
        self._settle([(auth, amount)])

    @rule(auth=consumes(authorizations), amount=st.integers(0, 450))
    def settle_and_forget(self, auth, amount):
        self._settle([(auth, amount)])

    @rule(group=st.lists(st.tuples(authorizations, st.integers(0, 400)), min_size=2, max_size=6))
    def settle_group(self, group):
        self._settle(group)

    @invariant()
    def balances_agree_sum_to_zero_and_respect_the_limit(self):
        stored = {k.public_key: self.store.state(k.public_key) for k in KEYS}
        assert {k: s.balance for k, s in stored.items()} == self.balances
        assert {k: s.seq for k, s in stored.items()} == self.seqs
        assert sum(self.balances.values()) == 0
        assert all(b >= -LIMIT for b in self.balances.values())

    @invariant()
    def verify_passes(self):
        report = self.store.verify()
        assert report["ok"], report["violations"]
        assert report["balance_sum"] == 0 and report["open_transfers"] == 0


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
test_ledger_state_machine = LedgerMachine.TestCase
