"""Each S3 user's own ledger account on the node: what its puts cost is paid from it.

A user's account is an Ed25519 key derived from the node's client key and the user's name (a hash of the client
key's deterministic signature of the name): nothing to store, the same account after every restart, and no
one without the client key can sign for it.  The node's operator funds it (`xsc s3 fund USER CREDITS`: a
transfer from the node's account, within what that account keeps for the deals of every put, a user's too); each file the S3 front stores for the user is then paid back to the node's
account, which pays the providers the put's deals as for any put: a transfer of the put's whole cost, signed by
the user's account, before the object is recorded.

A user's account has no credit line: it spends what it was given and no more.  Its charges pass one at a time
through a lock, the balance checked before each one, so no two puts can together spend past it (the charges of a
group of small objects pass together, each checked against what the ones before it left: `charge_many`).  The default
user (keys made without `--user`) is the operator, whose puts the node's account pays directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import codec
from ..errors import Conflict, InsufficientCredit, InvalidArgument, XscError
from ..identity import Identity, verify
from ..ledger import LedgerService, Payment, decode_entry, format_credits
from ..storage.core.capability import Capability
from .core import names
from .entries import charged_row
from .index import funded_note

DERIVE = b"xsc s3 user account\x00"
FUND_JOB = "s3:fund:"  # + the user's name: the job of `fund`'s transfers
PUT_JOB = "s3:put:"  # + the file's storage index (hex): the job of a charge's transfer
REFUND_JOB = "s3:refund:"  # + the same: the job of the transfer that gives a refused write's charge back
MAX_AMOUNT = names.MAX_AMOUNT  # micro-credits one transfer moves at most (a billion credits)
# Users whose derived accounts are kept (the least recently asked of let go first): a request can name any user, and
# deriving one again is a signature.
ACCOUNTS_KEPT = 4096
CHAIN_PAGE = 64  # entries of a user's chain read at once, back from its head, for a retried charge's first entry
ROW_SIGNED = b"xsc s3 charge row\x00"  # what the node's account signs of each row of charges and refunds owed it exports
log = logging.getLogger(__name__)


class UserAccounts:
    def __init__(self, ledger: LedgerService, owner: Identity, funded: Callable[[], list[str]] = lambda: [],
                 charged: Callable[[list[str]], Awaitable[object]] | None = None,
                 chargeable: Callable[[str, list[str]], Awaitable[list[XscError | int | None]]] | None = None) -> None:
        self.ledger = ledger
        self.owner = owner  # the node's client account: funds the users, and pays the providers
        self.funded = funded  # the users the node's account funded, by name (index.funded; noted by `fund`)
        self.charged = charged  # (the files charged): each judged once its charge's row is written (S3Index.charged)
        # (user, the files to charge): whether each may be, before its transfer (S3Index.chargeable)
        self.chargeable = chargeable
        self._accounts: OrderedDict[str, Identity] = OrderedDict()  # the ACCOUNTS_KEPT asked of last
        self._accounts_lock = threading.Lock()  # (asked of on the loop and in the node's pool)
        self._charging = asyncio.Lock()
        # account -> (the seq of its chain's last entry read, the jobs of its charges and refunds): `charged_here`'s
        self._chains: dict[bytes, tuple[int, set[str]]] = {}
        self._chains_lock = threading.Lock()  # (imports run in the node's pool)

    def account(self, user: str) -> Identity:
        names.check_user(user)
        with self._accounts_lock:
            found = self._accounts.get(user)
            if found is not None:
                self._accounts.move_to_end(user)
                return found
        seed = hashlib.sha256(self.owner.sign(DERIVE + user.encode())).digest()
        found = Identity(Ed25519PrivateKey.from_private_bytes(seed))
        with self._accounts_lock:
            self._accounts[user] = found
            while len(self._accounts) > ACCOUNTS_KEPT:
                self._accounts.popitem(last=False)
        return found

    def charged_here(self) -> Callable[[str, str], bool]:
        """(user, capability) -> whether this node's ledger holds a charge or a refund of the file for the user (its
        job `s3:put:` or `s3:refund:` and the file's storage index), for one import request (synchronous: in the
        node's pool).  Each user's chain is read as it is first asked of: the entries written since it was last read
        (`_chains`, kept across an import's requests until `forget_chains`), not the whole chain again."""
        jobs: dict[str, set[str]] = {}

        def held(user: str, capability: str) -> bool:
            if user not in jobs:
                jobs[user] = self._s3_jobs(self.account(user).public_key)
            index = Capability.parse(capability).storage_index.hex()
            return bool({PUT_JOB + index, REFUND_JOB + index} & jobs[user])
        return held

    def _s3_jobs(self, account: bytes) -> set[str]:
        """The jobs of the account's charges and refunds: its chain's entries read once, those written since added."""
        with self._chains_lock:
            seq, jobs = self._chains.get(account, (0, set()))
            for data in self.ledger.store.chain(account, seq + 1):
                entry = decode_entry(data)
                seq, job = entry.seq, (entry.receipt if isinstance(entry, Payment) else entry).authorization.job
                if job.startswith((PUT_JOB, REFUND_JOB)):
                    jobs.add(job)
            self._chains[account] = (seq, jobs)
            return jobs

    def forget_chains(self) -> None:
        """An import's charges are judged: the chains read for them let go (they hold a job a charge or refund)."""
        with self._chains_lock:
            self._chains.clear()

    def row_signature(self, row: dict) -> str:
        """The node's account's signature of a row of its charges or refunds owed ({cap, charge, user, amount}), which
        its export carries: an import brings back only the rows this node signed (`row_signed`), whose amounts it
        pays back from its account, not the rows a file someone else wrote says are this node's."""
        return self.owner.sign(_row_message(row)).hex()

    def row_signed(self, row: dict) -> bool:
        signature = row.get("signature")
        try:
            return isinstance(signature, str) and verify(self.owner.public_key, bytes.fromhex(signature),
                                                         _row_message(row))
        except ValueError:
            return False

    def view(self, user: str) -> dict:
        account = self.account(user)
        return {"user": user, "account": account.id, "balance": self.ledger.account_view(account.public_key)["balance"],
                "pays": "the node's account" if user == names.DEFAULT_USER else "its own account"}

    async def ledger_accounts(self) -> list[dict]:
        """The ledger's accounts (LedgerService.accounts), each S3 user's the node funded with the role `s3 user NAME`:
        the ledger knows its own accounts' roles, not whose a derived key is.  The node's client account is its
        balance (LedgerService.balance), available as a put's credit check counts it."""
        named = self._users_by_account()
        mine = await self.ledger.balance(self.owner.public_key)
        views = [mine if view["account"] == mine["account"] else view for view in self.ledger.accounts()]
        views = [_named(view, named) for view in views]
        return sorted(views, key=lambda v: (v["role"] is None, v["role"] or "", v["account"]))

    async def ledger_account(self, account: bytes) -> dict:
        """One account's balance (LedgerService.balance) with its role named as `ledger_accounts` names it."""
        return _named(await self.ledger.balance(account), self._users_by_account())

    def _users_by_account(self) -> dict[str, str]:
        named = {}
        for user in self.funded():
            try:
                named[self.account(user).id] = f"s3 user {user}"
            except InvalidArgument:  # not a user's name (an index written by hand): its account stays unnamed
                continue
        return named

    async def move(self, action: str, user: str, body: dict) -> dict:
        """`fund` ({"amount"}) or `charge` ({"capability", "amount"}), as the node's API asks."""
        capability = body.get("capability")
        if action == "fund":
            return await self.fund(user, body.get("amount"))
        if not isinstance(capability, str) or len(capability) > 512:
            raise InvalidArgument('send {"capability": the stored file\'s capability, "amount": micro-credits}')
        return await self.charge(user, capability, body.get("amount"))

    async def fund(self, user: str, amount: int) -> dict:
        """Move `amount` from the node's account to the user's (within the node's credit, like any payment)."""
        _check_amount(amount)
        if user == names.DEFAULT_USER:
            raise InvalidArgument(f"the user {user}'s puts are paid by the node's account: it has nothing to fund",
                                  hint="fund the users of keys made with --user")
        if amount == 0:  # a signed transfer of nothing would still be an entry in both chains, for ever
            raise InvalidArgument("a funding moves at least 0.000001 credits, not 0",
                                  hint=f"xsc s3 fund {user} CREDITS")
        account = self.account(user)
        await self._keeps_credit_for_puts(user, amount)
        await self.ledger.ensure_credit(self.owner, amount)  # what the node's account holds for running work stays
        # The user noted as funded (`users` lists it) in the transfer's own synced write: a funding refused leaves no
        # note, and one paid is never left without it, however the node stops.
        entry = await self.ledger.settle(self.owner, account, amount, {}, FUND_JOB + user,
                                         puts=(funded_note(user),))
        return {**self.view(user), "amount": amount, "entry": entry}

    def funded_in_ledger(self) -> list[str]:
        """The users the ledger shows the node's account funded: each whose account's chain opens with a funding
        (`fund`'s transfer, job `s3:fund:USER`, from the node's account to the account derived for USER).  A user's
        account has no credit line, so its first entry is the first funding it was given."""
        found = []
        for account, entry in self.ledger.opening_entries():
            authorization = getattr(entry, "authorization", None)
            if (entry.kind != "receipt" or authorization is None or authorization.payer != self.owner.public_key
                    or not authorization.job.startswith(FUND_JOB)):
                continue
            user = authorization.job[len(FUND_JOB):]
            try:
                if self.account(user).public_key == account:
                    found.append(user)
            except InvalidArgument:  # not a user's name: a transfer of another kind
                continue
        return sorted(found)

    async def _keeps_credit_for_puts(self, user: str, amount: int) -> None:
        """InsufficientCredit unless the node's account, once it paid `amount`, could still pay for puts: every put,
        a user's as well as the operator's, is paid to its providers by the node's account, so credit funded away
        from it stops them all.  It keeps what its deals still promise (its balance's `available` is net of it, as a
        put's credit check counts it) and `ledger.low_balance` percent of its credit limit."""
        view = await self.ledger.balance(self.owner.public_key)
        available, promised = view["available"], view.get("promised", 0)
        keep = -(-self.ledger.low_balance * self.ledger.credit_limit // 100)  # the least that is not low
        most = available - keep
        if amount <= most:
            return
        fix = (f"fund at most {format_credits(most)}: xsc s3 fund {user} {format_credits(most)}" if most > 0 else
               "give the node's account credit first: xsc config set ledger.credit_limit MICRO_CREDITS")
        raise InsufficientCredit(
            f"funding {user} with {format_credits(amount)} credits would leave this node's own account "
            f"{format_credits(max(available - amount, 0))} credits for puts (it can spend "
            f"{format_credits(available)} beyond the {format_credits(promised)} its storage deals still promise, and "
            f"it keeps {format_credits(keep)} for puts): every put through the S3 front would be refused",
            hint=fix, available=available, promised=promised, most=max(most, 0))

    async def charge(self, user: str, capability: str, amount: int) -> dict:
        """The user's account pays the node's account `amount` for the file `capability` it stored; InsufficientCredit
        (nothing paid) if its balance does not cover it.  The default user's puts are the node's own: no charge."""
        (charged,) = await self.charge_many(user, [(capability, amount)])
        if isinstance(charged, BaseException):
            raise charged
        return charged

    async def charge_many(self, user: str, charges: list[tuple[str, int]],
                          fresh: bool = False) -> list[dict | BaseException]:
        """`charge` of each (capability, amount) of `user`'s, in order: each one's answer, or its own refusal when
        what the account holds after those before it does not cover it, or `chargeable` refuses it (`fresh`: files
        the node stored itself just now, a group of small objects, which nothing else names yet: not asked).  A file
        the user was charged for already (a charge retried) is answered as that charge, paid once.  Each is a
        transfer of its own, all settled at once (the ledger writes transfers settled together in one synced batch);
        a fault of the node's is that charge's outcome."""
        if user == names.DEFAULT_USER:
            return [{**self.view(user), "charged": 0} for _ in charges]
        account = self.account(user)
        async with self._charging:  # (the check and the rows of one user's charges are never interleaved)
            judged = await self._judged(user, charges, fresh)
            left = self.ledger.account_view(account.public_key)["balance"]
            outcomes: list[Awaitable[str] | XscError | int] = []
            for (capability, amount), verdict in zip(charges, judged):
                if not isinstance(verdict, str):  # a refusal, or the amount of its charge noted already
                    outcomes.append(verdict)
                    continue
                if left < amount:
                    outcomes.append(InsufficientCredit(
                        f"S3 user {user}'s account holds {format_credits(max(left, 0))} credits; this put costs "
                        f"{format_credits(amount)} (the node's operator funds it with: xsc s3 fund {user} CREDITS)",
                        hint=f"xsc s3 fund {user} CREDITS"))
                    continue
                left -= amount
                # What it paid noted in the transfer's own batch, until the file's record is written or refused
                # (entries.py): a refused one is refunded (refunds.py).
                index = Capability.parse(verdict).storage_index.hex()
                outcomes.append(self.ledger.settle(account, self.owner, amount, {"files": 1}, f"{PUT_JOB}{index}",
                                                   puts=(charged_row(user, verdict, amount),) if amount else ()))
            entries = await asyncio.gather(*(o for o in outcomes if not isinstance(o, (XscError, int))),
                                           return_exceptions=True)
        settled = iter(entries)
        view = self.view(user)
        answers: list[dict | BaseException] = []
        paid: list[str] = []
        for verdict, (capability, amount), outcome in zip(judged, charges, outcomes):
            if isinstance(outcome, int):  # charged already: that charge's answer, paid once
                job = PUT_JOB + Capability.parse(capability).storage_index.hex()
                first = await self._entry_of(account.public_key, job)
                answers.append({**view, "charged": outcome, "entry": first, "again": True})
                continue
            entry = outcome if isinstance(outcome, XscError) else next(settled)
            answers.append(entry if isinstance(entry, BaseException) else {**view, "charged": amount, "entry": entry})
            if amount and not isinstance(entry, BaseException):
                paid.append(verdict)
        if paid and self.charged is not None:
            try:
                await self.charged(paid)
            except Exception:  # noqa: BLE001 - the charges stand; the index judges their rows as it next opens
                log.exception("could not judge the rows of %d S3 charge(s) yet", len(paid))
        return answers

    async def _entry_of(self, account: bytes, job: str) -> str | None:
        """The id of the account's newest transfer of `job` (a charge's, whose retry is answered with the entry the
        first made), read back from the chain's head a page at a time: a retry comes as its charge's answer is lost,
        so its entry is among the newest.  None if the chain holds none."""
        seq = self.ledger.account_view(account)["seq"]
        while seq > 0:
            first = max(seq - CHAIN_PAGE + 1, 1)
            for entry in reversed(await self.ledger.history.chain(account, first, seq - first + 1)):
                if entry["kind"] == "payment" and entry["job"] == job:
                    return entry["id"]
            seq = first - 1
        return None

    async def _judged(self, user: str, charges: list[tuple[str, int]], fresh: bool) -> list[str | XscError | int]:
        """Each charge's file as its rows spell it (its capability's canonical text), to be charged; or its refusal (an
        amount or a capability that is not one, or what `chargeable` says), or the amount of the user's charge of it
        noted already (a charge retried)."""
        judged: list[str | XscError | int] = []
        for capability, amount in charges:
            try:
                _check_amount(amount)
                judged.append(Capability.parse(capability).text)
            except XscError as err:
                judged.append(err)
        files = sorted({cap for cap in judged if isinstance(cap, str)})
        asked = self.chargeable is not None and bool(files) and not fresh
        verdicts = dict(zip(files, await self.chargeable(user, files))) if asked else {}
        seen: set[str] = set()
        for n, cap in enumerate(judged):
            if not isinstance(cap, str):
                continue
            if cap in seen:  # (one file is one object's: the node's own groups never name one twice)
                judged[n] = Conflict(f"the file {cap[:24]}… is named twice in one group of charges", capability=cap)
            elif verdicts.get(cap) is not None:
                judged[n] = verdicts[cap]
            seen.add(cap)
        return judged


def _row_message(row: dict) -> bytes:
    return ROW_SIGNED + codec.canonical({key: row[key] for key in ("cap", "charge", "user", "amount")})


def _named(view: dict, named: dict[str, str]) -> dict:
    """The ledger's view of an account, named if it is an S3 user's, whose credit is what it was funded: it has no
    credit line (`charge_many` spends its balance only), whatever the ledger's own limit for accounts."""
    if view["role"] is not None or view["account"] not in named:
        return view
    return {**view, "role": named[view["account"]], "credit_limit": 0,
            "available": max(0, view["balance"] - view["held"])}


def _check_amount(amount: object) -> int:
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= MAX_AMOUNT:
        raise InvalidArgument(f"an amount is a whole number of micro-credits from 0 to {MAX_AMOUNT}, not {amount!r}")
    return amount
