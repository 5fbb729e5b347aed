"""The ledger's rules, as pure functions: what may be appended, and the audit of stored chains.

Nothing here does I/O.  Signature checks are returned as data (`SigCheck`) so the
caller can run them in parallel (Ed25519 verification releases the GIL) and feed
the results back; `signature_ok` is the pure check itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ...errors import (AuthorizationExpired, AuthorizationReplayed, BalanceOutOfRange, ChainConflict,
                       InsufficientCredit, InvalidEntry)
from ... import codec
from ...identity import public_id, verify
from .model import ZERO_HASH, Authorization, Entry, Payment, Receipt, decode_entry, digest, format_credits

CLOCK_SKEW = 300  # seconds a receipt's settlement time may lie in the future of the checking node
# An account record holds its balance as a signed 64-bit integer: an entry that would take a balance past
# this is refused before anything is written (an amount alone is at most 2**63-1, two of them are not).
MAX_BALANCE = 2**63 - 1
MIN_BALANCE = -2**63


@dataclass(frozen=True)
class AccountState:
    """What the node holds about one account's chain: its head and the balance the chain sums to."""

    seq: int = 0
    head: bytes = ZERO_HASH
    balance: int = 0
    forked: bool = False  # a proof of equivocation is stored; the account gets no new entries

    _FORMAT = struct.Struct(">Q32sqB")

    def encode(self) -> bytes:
        if not MIN_BALANCE <= self.balance <= MAX_BALANCE or not 0 <= self.seq < 2**64:
            raise balance_error(self.balance)
        return self._FORMAT.pack(self.seq, self.head, self.balance, int(self.forked))

    @classmethod
    def decode(cls, data: bytes) -> AccountState:
        seq, head, balance, flags = cls._FORMAT.unpack(data)
        return cls(seq, head, balance, bool(flags & 1))

    def after(self, entry: Entry) -> AccountState:
        return AccountState(entry.seq, entry.id, self.balance + entry.delta, self.forked)


SigCheck = tuple[bytes, bytes, bytes, str]  # public key, signature, signed body, what it is


def signature_ok(check: SigCheck) -> bool:
    public_key, signature, body, _ = check
    return len(signature) == 64 and verify(public_key, signature, body)


def describe(entry: Entry) -> str:
    return f"{entry.kind} {entry.id.hex()} ({public_id(entry.account)} seq {entry.seq})"


# --- what may be appended ---------------------------------------------------------
def check_publishable(*records: Authorization | Entry, amount: int | None = None,
                      usage: Mapping[str, object] | None = None) -> None:
    """Refuse what a stranger sends with an integer past codec.MAX_JSON_INT (an amount, a cap, a usage value, a
    time, a seq): the node publishes its entries, receipts and authorizations as JSON, and a reader holding numbers
    as doubles would read another amount.  No honest transfer comes near it (9 * 10^9 credits; see docs/ledger.md)."""
    found: list[tuple[str, object]] = []
    for record in records:
        auth = record if isinstance(record, Authorization) else record.authorization
        if not isinstance(record, Authorization):
            receipt = record.receipt
            found += [("seq", record.seq), ("receipt seq", receipt.seq), ("amount", receipt.amount),
                      ("settled_at", receipt.settled_at), *((f"usage {k}", v) for k, v in receipt.usage)]
        found += [("cap", auth.cap), ("expires_at", auth.expires_at)]
    found += [("amount", amount), *((f"usage {k}", v) for k, v in (usage or {}).items())]
    for name, value in found:
        if type(value) is int and value > codec.MAX_JSON_INT:
            raise InvalidEntry(f"{name} is {value:,}, past {codec.MAX_JSON_INT:,} (2^53 - 1), the largest integer "
                               "every JSON reader holds exactly", hint="no transfer is this large: see docs/ledger.md")


def check_transfer(entry: Entry) -> None:
    """Stateless consistency of the transfer an entry carries (signatures aside)."""
    receipt, auth = entry.receipt, entry.authorization
    if auth.payer == auth.payee:
        raise InvalidEntry("payer and payee of an authorization must differ")
    if receipt.account != auth.payee:
        raise InvalidEntry("the receipt is not on the payee's chain")
    if isinstance(entry, Payment) and entry.account != auth.payer:
        raise InvalidEntry("the payment is not on the payer's chain")
    if receipt.amount > auth.cap:
        raise InvalidEntry(f"amount {format_credits(receipt.amount)} exceeds the authorized cap "
                           f"{format_credits(auth.cap)}", hint="the payer must authorize a higher cap")
    if receipt.settled_at > auth.expires_at:
        raise AuthorizationExpired(f"authorization {auth.id.hex()} expired before the receipt was settled",
                           hint="ask the payer for a fresh authorization")


def check_fresh(entry: Entry, now: int) -> None:
    """An entry being settled now: its authorization has not expired, its time is not in the future."""
    auth = entry.authorization
    if now > auth.expires_at:
        raise AuthorizationExpired(f"authorization {auth.id.hex()} expired at {auth.expires_at} (now {now})",
                           hint="ask the payer for a fresh authorization")
    if entry.receipt.settled_at > now + CLOCK_SKEW:
        raise InvalidEntry("the receipt is dated in the future", hint="check the payee's clock")


def retired_at(expires_at: int, retention: int) -> int:
    """When what guards an authorization's single use goes (its settled mark; its trust-line count marks): no entry
    under it is taken past then (`check_remembered`), nor counted on a trust line."""
    return expires_at + retention + CLOCK_SKEW


def check_remembered(entry: Entry, now: int, retention: int) -> None:
    """An entry from a counterparty: its authorization's settled mark, if it had one here, is still kept.  Past
    `retired_at` the mark may be gone, and a second receipt under the authorization would pass for a first."""
    auth = entry.authorization
    if now > retired_at(auth.expires_at, retention):
        raise AuthorizationExpired(
            f"authorization {auth.id.hex()} expired at {auth.expires_at}, more than ledger.record_retention "
            f"({retention} s) before now ({now}): whether it was settled is no longer kept, so no entry under it "
            "is taken", hint="a counterparty's entries are taken within ledger.record_retention of their "
                             "authorizations' expiry")


def check_replay(entry: Entry, settled_by: bytes | None) -> None:
    """`settled_by`: the receipt id that already settled this entry's authorization, if any."""
    if settled_by is not None and settled_by != entry.receipt.id:
        raise AuthorizationReplayed(f"authorization {entry.authorization.id.hex()} was already settled "
                       f"(receipt {settled_by.hex()}); an authorization settles at most once",
                       hint="a replayed authorization is refused; the payer must sign a new one")


def check_link(state: AccountState, entry: Entry) -> None:
    if state.forked:
        raise ChainConflict(f"account {public_id(entry.account)} equivocated (a fork is on record); "
                            "it gets no new entries")
    if entry.seq != state.seq + 1:
        raise ChainConflict(f"entry seq {entry.seq} does not extend account {public_id(entry.account)} "
                            f"(head is seq {state.seq})",
                            hint=f"send its entries from seq {state.seq + 1} on, in order", have=state.seq)
    if entry.prev != state.head:
        raise InvalidEntry(f"entry seq {entry.seq} of account {public_id(entry.account)} "
                           "does not link to the previous entry")


def check_credit(state: AccountState, entry: Entry, credit_limit: int) -> None:
    if entry.delta < 0 and state.balance + entry.delta < -credit_limit:
        raise credit_error(entry.account, state.balance, -entry.delta, credit_limit)


def credit_error(account: bytes, balance: int, amount: int, credit_limit: int,
                 promised: int = 0) -> InsufficientCredit:
    """`balance`: what the account has, less what it holds and `promised` (what the leases of earlier puts will
    still cost it: the account keeps that aside)."""
    available = max(0, balance + credit_limit)
    short = amount - available
    kept = f"; {format_credits(promised)} more is promised to the leases of earlier puts" if promised else ""
    return InsufficientCredit(
        f"insufficient credit: this costs {format_credits(amount)} credits but account {public_id(account)} "
        f"can spend {format_credits(available)} more (short by {format_credits(short)}{kept})",
        hint="earn credit by providing storage or compute, or raise the limit: xsc config set ledger.credit_limit "
             "MICRO_CREDITS (a running node uses it from its next start)",
        account=public_id(account), needed=amount, available=available, short=short,
        **({"promised": promised} if promised else {}))


def check_balance(state: AccountState, entry: Entry) -> None:
    balance = state.balance + entry.delta
    if not MIN_BALANCE <= balance <= MAX_BALANCE:
        raise balance_error(balance, entry.account)


def balance_error(balance: int, account: bytes | None = None) -> BalanceOutOfRange:
    whose = f"account {public_id(account)}" if account else "an account"
    return BalanceOutOfRange(
        f"this entry would take the balance of {whose} to {format_credits(balance)} credits, past the ledger's "
        f"range of ±{format_credits(MAX_BALANCE)}", hint="no real transfer is this large: the amount is refused",
        balance=str(balance))


def check_append(state: AccountState, entry: Entry, *, settled_by: bytes | None, credit_limit: int) -> AccountState:
    """All stateful rules for appending one entry to its account's chain; returns the account's new state."""
    check_transfer(entry)
    check_link(state, entry)
    check_replay(entry, settled_by)
    check_credit(state, entry, credit_limit)
    check_balance(state, entry)
    return state.after(entry)


# --- audit of stored chains -------------------------------------------------------
BELOW_LIMIT = "below-credit-limit"


@dataclass(frozen=True)
class Violation:
    message: str
    account: str | None = None
    seq: int | None = None
    entry: str | None = None  # entry id (hex) when it could be read
    # What kind of violation, where it calls for other advice than corruption: BELOW_LIMIT is a balance under the
    # limit configured now, which entries made under a higher `ledger.credit_limit` are once it is lowered.
    code: str = ""

    def __str__(self) -> str:
        where = []
        if self.entry:
            where.append(f"entry {self.entry}")
        if self.account:
            where.append(f"account {self.account}" + (f" seq {self.seq}" if self.seq is not None else ""))
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def to_json(self) -> dict:
        return {"message": self.message, "account": self.account, "seq": self.seq, "entry": self.entry,
                "code": self.code, "text": str(self)}


@dataclass
class Audit:
    """Walks every stored chain once and collects every violation of the ledger's invariants.

    Feed it with `chain()` per account, `fork()` per stored fork proof, `index()` and `used()`
    with the lookup tables, then run `signature_checks()` (in parallel, outside) and call
    `finish()` with the failed ones."""

    credit_limit: int
    # A settled authorization that expired before this may have lost its settled mark (`retired_at`): only those
    # expiring from it on must have one.
    marks_kept_from: int = 0
    violations: list[Violation] = field(default_factory=list)
    entries: int = 0
    accounts: int = 0
    # (signed body, signature) -> the check and where it was first seen; one check per distinct signature
    # (id of the signed body, signature) -> where it was first seen: (account, seq, entry id)
    _sigs: dict[tuple[bytes, bytes], tuple[bytes, int, bytes]] = field(default_factory=dict)
    _new_checks: list[SigCheck] = field(default_factory=list)
    _auth_checks: dict[bytes, tuple[SigCheck, bytes, int, bytes]] = field(default_factory=dict)
    _ids: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    # Plain tuples, not entry objects: a walk over 100,000s of entries keeps the GC's work small.
    _receipts: dict[bytes, int] = field(default_factory=dict)  # receipt id on a payee chain -> amount
    # receipt id -> (payee, receipt seq, amount, payer, payment seq, payment id) of the payment countersigning it
    _paid: dict[bytes, tuple[bytes, int, int, bytes, int, bytes]] = field(default_factory=dict)
    # authorization id -> (receipt id, the authorization's expiry)
    _settled: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    _heads: dict[bytes, int] = field(default_factory=dict)
    _balances: dict[bytes, int] = field(default_factory=dict)
    _forked: set[bytes] = field(default_factory=set)
    _marked: set[bytes] = field(default_factory=set)

    def _add(self, message: str, account: bytes | None = None, seq: int | None = None,
             entry: Entry | None = None, code: str = "") -> Violation:
        v = Violation(message, public_id(account) if account else None, seq, entry.id.hex() if entry else None, code)
        self.violations.append(v)
        return v

    def chain(self, account: bytes, records: Iterable[tuple[int, bytes]], stored: AccountState | None) -> None:
        """One account's entries in key order: (seq from the key, encoded entry)."""
        self.accounts += 1
        state = AccountState()
        head_known = True  # an unreadable entry hides the head: its successor's link cannot be judged
        seen_auth: dict[bytes, int] = {}
        for key_seq, data in records:
            self.entries += 1
            try:
                entry = decode_entry(data)
            except InvalidEntry as exc:
                self._add(f"unreadable entry: {exc.message}", account, key_seq)
                state, head_known = AccountState(key_seq, ZERO_HASH, state.balance), False
                continue
            if entry.account != account or entry.seq != key_seq:
                self._add("entry is stored under another account or seq than it names", account, key_seq, entry)
            if key_seq != state.seq + 1:
                self._add(f"gap in the chain: seq {state.seq + 1} to {key_seq - 1} missing", account, key_seq, entry)
            if head_known and entry.prev != state.head:
                self._add("broken link: prev is not the hash of the previous entry", account, key_seq, entry)
            checks = entry.signatures()
            # The entry's own signature, and for a payment the receipt's.  The authorization's signature is
            # inside the receipt body (covered by the payee's and the payer's signatures); it is checked
            # on its own only where the payer has not signed a payment for it (see deferred_checks).
            self._need(checks[0], entry.id, account, key_seq, entry.id)
            if isinstance(entry, Receipt):
                self._auth_checks.setdefault(entry.id, (checks[-1], entry.authorization.id, account, key_seq))
            else:
                self._need(checks[1], entry.receipt.id, account, key_seq, entry.id)
            try:
                check_transfer(entry)
            except InvalidEntry as exc:
                self._add(exc.message, account, key_seq, entry)
            auth_id, receipt_id = entry.authorization.id, entry.receipt.id
            if auth_id in seen_auth:
                self._add(f"replay: authorization {auth_id.hex()} already settled at seq {seen_auth[auth_id]}",
                          account, key_seq, entry)
            seen_auth[auth_id] = key_seq
            other = self._settled.setdefault(auth_id, (receipt_id, entry.authorization.expires_at))[0]
            if other != receipt_id:
                self._add(f"replay: authorization {auth_id.hex()} settled by two different receipts", account, key_seq, entry)
            if isinstance(entry, Receipt):
                self._receipts[receipt_id] = entry.amount
            else:
                r = entry.receipt
                self._paid[receipt_id] = (r.account, r.seq, r.amount, account, key_seq, entry.id)
            balance = state.balance + entry.delta
            if not MIN_BALANCE <= balance <= MAX_BALANCE:
                self._add(f"balance {format_credits(balance)} is past the ledger's range", account, key_seq, entry)
            if balance < -self.credit_limit:
                self._add(f"balance {format_credits(balance)} is below the credit limit "
                          f"-{format_credits(self.credit_limit)}", account, key_seq, entry, BELOW_LIMIT)
            self._ids[entry.id] = (account, key_seq)
            state, head_known = AccountState(key_seq, entry.id, balance), True
        self._heads[account] = state.seq
        self._balances[account] = state.balance
        if stored is None:
            self._add("chain has no account record (head and balance)", account)
        elif (stored.seq, stored.head, stored.balance) != (state.seq, state.head, state.balance):
            self._add(f"account record (seq {stored.seq}, balance {format_credits(stored.balance)}) does not match "
                      f"its chain (seq {state.seq}, balance {format_credits(state.balance)})", account)
        if stored is not None and stored.forked:
            self._marked.add(account)

    def orphan_account(self, account: bytes, stored: AccountState) -> None:
        """An account record with no chain at all."""
        if stored.seq or stored.balance:
            self._add(f"account record says seq {stored.seq} but no entries are stored", account)
        if stored.forked:
            self._marked.add(account)

    def fork(self, account: bytes, seq: int, data: bytes) -> None:
        """A stored proof of equivocation: a second, validly signed entry for (account, seq)."""
        self._forked.add(account)
        try:
            entry = decode_entry(data)
        except InvalidEntry as exc:
            self._add(f"unreadable fork proof: {exc.message}", account, seq)
            return
        self._add(f"fork: account equivocated, a second entry {entry.id.hex()} claims seq {seq}",
                  account, seq, entry)
        self._need(entry.signatures()[0], entry.id, account, seq, entry.id)

    def index(self, entry_id: bytes, account: bytes, seq: int) -> None:
        if self._ids.get(entry_id) != (account, seq):
            self._add(f"index names entry {entry_id.hex()} that is not stored there", account, seq)
        else:
            self._ids[entry_id] = (b"", -1)  # seen

    def used(self, auth_id: bytes, receipt_id: bytes) -> None:
        if self._settled.get(auth_id, (None,))[0] != receipt_id:
            self._add(f"settled-authorization mark {auth_id.hex()} matches no stored entry")
        self._settled.pop(auth_id, None)

    def _need(self, check: SigCheck, body_id: bytes, account: bytes, seq: int, entry_id: bytes) -> None:
        key = (body_id, check[1])
        if key not in self._sigs:
            self._sigs[key] = (account, seq, entry_id)
            self._new_checks.append(check)

    def deferred_checks(self) -> list[SigCheck]:
        """After every chain is walked: authorization signatures of receipts no stored payment countersigns."""
        for receipt_id, (check, auth_id, account, seq) in self._auth_checks.items():
            if receipt_id not in self._paid:
                self._need(check, auth_id, account, seq, receipt_id)
        self._auth_checks.clear()
        return self.take_signature_checks()

    def take_signature_checks(self) -> list[SigCheck]:
        """The signature checks found since the last call (each distinct signature once)."""
        checks, self._new_checks = self._new_checks, []
        return checks

    def finish(self, failed: Iterable[SigCheck]) -> dict:
        for _, signature, body, what in failed:
            account, seq, entry_id = self._sigs[(digest(body), signature)]
            self.violations.append(Violation(f"invalid {what} signature", public_id(account), seq, entry_id.hex()))
        for entry_id, (account, seq) in self._ids.items():
            if seq >= 0:
                self._add(f"entry {entry_id.hex()} is missing from the index", account, seq)
        for auth_id, (_, expires_at) in self._settled.items():
            if expires_at >= self.marks_kept_from:
                self._add(f"authorization {auth_id.hex()} has no settled-authorization mark")
        for account in self._marked - self._forked:
            self._add("account is marked as forked but no fork proof is stored", account)
        for account in self._forked - self._marked:
            self._add("a fork proof is stored but the account is not marked", account)
        open_sum, open_transfers = 0, 0
        for receipt_id, (payee, receipt_seq, amount, payer, payment_seq, payment_id) in self._paid.items():
            if receipt_id in self._receipts:
                continue
            if self._heads.get(payee, 0) >= receipt_seq:
                self.violations.append(Violation(
                    f"payment countersigns receipt {receipt_id.hex()} but the payee's chain holds another "
                    f"entry at seq {receipt_seq}", public_id(payer), payment_seq, payment_id.hex()))
            open_transfers += 1
            open_sum -= amount
        for receipt_id, amount in self._receipts.items():
            if receipt_id not in self._paid:
                open_transfers += 1
                open_sum += amount
        total = sum(self._balances.values())
        if total != open_sum:
            self._add(f"balances sum to {format_credits(total)}, expected {format_credits(open_sum)} "
                      f"(zero plus transfers whose other half is held elsewhere)")
        self.violations.sort(key=lambda v: (v.account or "", v.seq or 0, v.message))
        return {
            "ok": not self.violations,
            "accounts": self.accounts,
            "entries": self.entries,
            "signatures": len(self._sigs),
            "open_transfers": open_transfers,
            "balance_sum": total,
            "violations": [v.to_json() for v in self.violations],
        }
