"""The one key layout of the node's LevelDB databases (its records', and its staged uploads' blocks': `s/b/`).

Nothing else in XSC spells a key or a prefix: every module asks this one for
its keys.  Keys are bytes: a namespace prefix, then fixed-width binary fields
so that range scans come out in a useful order.

Namespaces:
  s/  storage: blocks, share metadata, manifests, uploads in progress, files, counters, storage deals
  c/  compute: modules, compiled artifacts, provenance records
  l/  ledger:  entries, chain heads, balances, settled authorizations, forks
  h/  health:  peer availability history
  p/  peers:   known node descriptors
  m/  market:  commitments, own state, recognition, clearing prices
  n/  node:    node-wide metadata (schema version)
  o/  objects: the S3 gateway's bucket index (buckets, keys -> capabilities, multipart uploads)
"""

from __future__ import annotations

import struct

SCHEMA_VERSION = b"n/schema"

# --- storage (s/) ----------------------------------------------------------------
# Blocks sort by segment, then share: an upload then writes ascending keys, so LevelDB compactions of a large file
# move whole tables down instead of rewriting them.  A staged upload's blocks are in a database of their own, where
# no other record lands (storage/share_store.py): a table holding another record would span other files' blocks.
_BLOCK = b"s/b/"  # + storage index (32) + segment (4, big endian) + share (1) -> block bytes
_SHARE = b"s/h/"  # + storage index + share -> share metadata (published: visible)
_MANIFEST = b"s/m/"  # + storage index -> manifest bytes
_UPLOAD = b"s/U/"  # + upload id -> staging record of an upload in progress (upper case: sorts below s/b/)
_FILE = b"s/f/"  # + storage index -> record of a file this node uploaded (gateway side)
_REMOVING = b"s/r/"  # + storage index -> record of a file being removed: unlisted, its shares not all deleted yet
_DAMAGE = b"s/d/"  # + storage index + share -> why a share is known damaged
# + storage index -> copies of its shares on other nodes to delete unless a placement holds them (JSON: {"shares":
# {share: node}, "lease_expiry"}): those a repair is committing (dropped as its new placement holds them), those a
# put is committing (dropped in the write that records its file), those a removal could not delete; released at each
# start and every `storage.gc_interval` (gateway_repair.release_strays).
_STRAYS = b"s/p/"
STORAGE_USED = b"s/c/used"  # exact count of block bytes held in published shares
# Both kept while the file is listed or being removed; once it is gone and all its deals are settled to their end,
# the next payment run drops them (storage/deals.py `_forget_settled`).
STORAGE_DEALS = b"s/deals/"  # + storage index (32) + share (1) -> the storage deal of a share this node placed (JSON)
STORAGE_ENDED = b"s/ended/"  # + storage index + share + when (8) -> a deal that ended when its share moved (JSON)
# + node public key -> when that holder last passed and last failed an audit (JSON), while a deal names that holder
HOLDER_AUDITS = b"s/audits/"
HOLDER_TERMS = b"s/terms/"  # + storage index + share -> the terms a gateway placed that share here under (JSON)


def block(storage_index: bytes, share: int, segment: int) -> bytes:
    return _BLOCK + storage_index + struct.pack(">IB", segment, share)


def blocks_of(storage_index: bytes) -> bytes:
    """Prefix of every block of every share of one file."""
    return _BLOCK + storage_index


def block_share(key: bytes) -> int:
    return key[-1]


def block_segment(key: bytes) -> int:
    return struct.unpack(">I", key[-5:-1])[0]


def share(storage_index: bytes, share_number: int) -> bytes:
    return _SHARE + storage_index + struct.pack(">B", share_number)


def shares_of(storage_index: bytes) -> bytes:
    return _SHARE + storage_index


SHARES = _SHARE


def split_share(key: bytes) -> tuple[bytes, int]:
    rest = key[len(_SHARE):]
    return rest[:32], rest[32]


def manifest(storage_index: bytes) -> bytes:
    return _MANIFEST + storage_index


def upload(upload_id: bytes) -> bytes:
    return _UPLOAD + upload_id


UPLOADS = _UPLOAD
# Where staging records sorted above the blocks: a node stopped in an upload may still hold one there, and
# `ShareStore.recover` deletes what it staged as well.
UPLOADS_ABOVE_BLOCKS = b"s/u/"


def file(storage_index: bytes) -> bytes:
    return _FILE + storage_index


FILES = _FILE


def removing(storage_index: bytes) -> bytes:
    return _REMOVING + storage_index


REMOVALS = _REMOVING


def strays(storage_index: bytes) -> bytes:
    return _STRAYS + storage_index


STRAYS = _STRAYS


def damage(storage_index: bytes, share_number: int) -> bytes:
    return _DAMAGE + storage_index + struct.pack(">B", share_number)


def storage_deal(storage_index: bytes, share: int) -> bytes:
    return STORAGE_DEALS + storage_index + bytes([share])


def storage_deals_of(storage_index: bytes) -> bytes:
    return STORAGE_DEALS + storage_index


def storage_ended(storage_index: bytes, share: int, at: int) -> bytes:
    return STORAGE_ENDED + storage_index + bytes([share]) + at.to_bytes(8, "big")


def storage_ended_of(storage_index: bytes) -> bytes:
    return STORAGE_ENDED + storage_index


def holder_audit(node_key: bytes) -> bytes:
    return HOLDER_AUDITS + node_key


def holder_terms(storage_index: bytes, share: int) -> bytes:
    return HOLDER_TERMS + storage_index + bytes([share])


def split_holder_terms(key: bytes) -> tuple[bytes, int]:
    rest = key[len(HOLDER_TERMS):]
    return rest[:32], rest[32]


def damage_of(storage_index: bytes) -> bytes:
    return _DAMAGE + storage_index


DAMAGE = _DAMAGE


def damaged_storage_index(key: bytes) -> bytes:
    """The storage index of a damage mark's key."""
    return key[len(_DAMAGE):len(_DAMAGE) + 32]


# --- compute (c/) ----------------------------------------------------------------
COMPUTE = b"c/"
_MODULE = b"c/m/"  # + module hash (32) -> module record (JSON)
_WASM = b"c/w/"  # + module hash -> the module's wasm bytes (to recompile after an engine change)
_ARTIFACT = b"c/a/"  # + module hash + engine fingerprint (32) -> HMAC (32) + compiled artifact
_INVOCATIONS = b"c/n/"  # + module hash -> invocation count (8, big endian)
_PROVENANCE = b"c/p/"  # + provenance id (16: time ns (8, big endian) + random (8)) -> signed record
_TAB_RUNS = b"c/t/"  # + authorization id (32) + provenance id (16) -> amount (8) + fuel (8): a run on a peer's tab
# (then its gateway's key (32); a compile charged on the tab: time (8) + random (8) -> amount, 0, key, module hash)
# + authorization id (32) -> this node's tally of its tab with a provider, until the tab is paid or dropped: what the
# answers owe (8), the budgets of calls in flight or whose answer was lost (8), and how many of each (4, 4); then, on a
# tab a push named, what compiling its pushed modules may be charged (8) and how many modules (4)
_TAB_TALLY = b"c/y/"
# -> b"": every tab this node shows a provider has a tally from before it is shown, placed functions' too: a pending tab
# with none was never shown (compute/remote_tabs.py, GatewayTabs.start)
_TABS_TALLIED = b"c/yt"
_PROVENANCE_HEAD = b"c/h/"  # + module hash -> id (16) of the module's newest provenance record on this node
_UNSIGNED = b"c/q/"  # + provenance id -> b"": its record is durable and awaits its batch signature (compute/journal.py)
_JOB = b"c/j/"  # + user public key (32) + job id (32) -> the job's record (JSON; compute/jobs.py)
# + user public key (32) + when its latest run began (8: ns, big endian) + job id (32) -> b"": the user's jobs in the
# order they began (a job id is a hash: `c/j/` is in no useful order), written and deleted with the job's record
_JOB_BEGAN = b"c/b/"
_JOB_SUMMARY = b"c/k/"  # + user public key (32) + job id (32) -> what the list of jobs shows of it (JSON), written
#   and deleted with the job's record: a page of the list reads these, never records of up to a MiB
_JOBS_LISTED = b"c/bi"  # + user public key (32) -> b"": the user's records written before c/b/ was kept have their place
_FUNCTION = b"c/f/"  # + function name (UTF-8) -> a web function (JSON: module, inputs, limits; compute/functions.py)
_FUNCTION_SPEND = b"c/s/"  # + function name + 0x00 + minute (8, big endian) -> micro-credits its runs cost in it (8)
# + function name + 0x00 + minute (8, big endian) + authorization id (32) -> micro-credits a receipt for its requests on
# the market paid in it (8), written in the payment's own batch
_FUNCTION_PAID = b"c/v/"
_WATCH = b"c/x/"  # + watch name (UTF-8) -> the watch (JSON: spec, on, to, counters; compute/watches.py)
_WATCH_DATUM = b"c/d/"  # + watch name + 0x00 + input key (UTF-8) -> its datum done (JSON: datum hash, outputs, job)
_MAP = b"c/l/"  # + map id (16) -> the map's head (JSON: module, mount, counts of inputs; compute/maps.py)
_MAP_ASKED = b"c/z/"  # + map id (16) -> what the map was asked (JSON: its spec, its sources as given), written once
_MAP_INPUT = b"c/i/"  # + map id (16) + input index (4, big endian) -> that input: its name, state, job, outputs (JSON)
_JOB_OUTPUT = b"c/o/"  # + storage index (32) -> {"job", "user", "provenance", "name", "sha256"}: the run that wrote
#   that file (JSON)
# + authorization id (32) -> a cancel of a job run on that tab that its provider has not heard yet, asked again until it
#   does or the run must have ended (JSON: provider, the job's id there, until when; compute/provider_stops.py)
_STOP_OWED = b"c/js"
_JOB_PAYMENT = b"c/jp"  # + authorization id (32) -> {"amount", "entry"}: what a job's tab was paid, by which ledger
# entry, written in that payment's batch (the ledger finds a payment by its authorization only until it expires)
# + provenance id (16) -> a run on a provider, a job's or a checked invoke's: the record it signed (JSON; compute/jobs.py,
#   compute/spot_checks.py)
_JOB_RUN = b"c/r/"
# + authorization id (32) + check id (16: time ns, then random) -> the check a remote answer on that tab is owed (JSON:
#   provider, call, price, what the answer said), written with the tally that counts the answer and deleted with the
#   one that says what the check found (compute/spot_checks.py)
_OWED_CHECK = b"c/c/"
# + slot (2, big endian: its count modulo the runs kept) -> count (8) + provenance id (16) + provider id (ASCII): one of
#   the latest remote runs, written with the tally that counts its answer (compute/spot_checks.py)
_REMOTE_RUN = b"c/e/"
_PLACED = b"c/g/"  # + owner node id (ASCII) + 0x00 + function name (UTF-8) -> a function that node placed here (JSON:
#   its spec, price and deal, the owner's authorization of its current tab; compute/placed_functions.py)
_PLACED_COUNTS = b"c/u/"  # + owner node id (ASCII) + 0x00 + function name (UTF-8) -> its counters here (JSON:
#   requests, errors, earned), written a batch at a time without fsync (compute/placed_functions.py)


def module(module_hash: bytes) -> bytes:
    return _MODULE + module_hash


MODULES = _MODULE


def wasm(module_hash: bytes) -> bytes:
    return _WASM + module_hash


def artifact(module_hash: bytes, engine_fingerprint: bytes) -> bytes:
    return _ARTIFACT + module_hash + engine_fingerprint


def invocations(module_hash: bytes) -> bytes:
    return _INVOCATIONS + module_hash


def provenance(provenance_id: bytes) -> bytes:
    return _PROVENANCE + provenance_id


def provenance_head(module_hash: bytes) -> bytes:
    return _PROVENANCE_HEAD + module_hash


UNSIGNED = _UNSIGNED


def unsigned(provenance_id: bytes) -> bytes:
    return _UNSIGNED + provenance_id


def tab_runs(authorization_id: bytes) -> bytes:
    """Prefix of the runs this node did for a peer under one tab authorization."""
    return _TAB_RUNS + authorization_id


def tab_run(authorization_id: bytes, provenance_id: bytes) -> bytes:
    return _TAB_RUNS + authorization_id + provenance_id


def tab_tally(authorization_id: bytes) -> bytes:
    """This node's tally of one of its tabs with a provider (it pays)."""
    return _TAB_TALLY + authorization_id


TAB_TALLIES = _TAB_TALLY
TABS_TALLIED = _TABS_TALLIED


def job(user: bytes, job_id: bytes) -> bytes:
    """A user's job: the cache of its outputs is per user (one user never learns what another ran)."""
    return _JOB + user + job_id


JOBS = _JOB


def job_began(user: bytes, began_ns: int, job_id: bytes) -> bytes:
    return _JOB_BEGAN + user + began_ns.to_bytes(8, "big") + job_id


def jobs_began(user: bytes) -> bytes:
    """The prefix of a user's jobs in the order they began (`job_began`)."""
    return _JOB_BEGAN + user


def job_summary(user: bytes, job_id: bytes) -> bytes:
    return _JOB_SUMMARY + user + job_id


def jobs_listed(user: bytes) -> bytes:
    return _JOBS_LISTED + user


def split_job_began(key: bytes) -> tuple[int, bytes]:
    """The (began ns, job id) of a `job_began` key."""
    rest = key[len(_JOB_BEGAN) + 32:]
    return int.from_bytes(rest[:8], "big"), rest[8:]


FUNCTIONS = _FUNCTION


def function(name: str) -> bytes:
    return _FUNCTION + name.encode()


def function_spends(name: str) -> bytes:
    """The prefix of a function's spend by the minute (what its hourly cap is checked against)."""
    return _FUNCTION_SPEND + name.encode() + b"\0"


def function_spend(name: str, minute: int) -> bytes:
    return function_spends(name) + minute.to_bytes(8, "big")


def function_paids(name: str) -> bytes:
    """The prefix of what the receipts for a function's requests on the market paid, by the minute."""
    return _FUNCTION_PAID + name.encode() + b"\0"


def function_paid(name: str, minute: int, authorization_id: bytes) -> bytes:
    return function_paids(name) + minute.to_bytes(8, "big") + authorization_id


WATCHES = _WATCH


def watch(name: str) -> bytes:
    return _WATCH + name.encode()


def watch_datums(name: str) -> bytes:
    return _WATCH_DATUM + name.encode() + b"\x00"


def watch_datum(name: str, key: str) -> bytes:
    return watch_datums(name) + key.encode()


MAPS = _MAP


def map_(map_id: bytes) -> bytes:
    return _MAP + map_id


def map_asked(map_id: bytes) -> bytes:
    return _MAP_ASKED + map_id


def map_inputs(map_id: bytes) -> bytes:
    return _MAP_INPUT + map_id


def map_input(map_id: bytes, index: int) -> bytes:
    return map_inputs(map_id) + index.to_bytes(4, "big")


def job_output(storage_index: bytes) -> bytes:
    return _JOB_OUTPUT + storage_index


JOB_OUTPUTS = _JOB_OUTPUT


def job_run(provenance_id: bytes) -> bytes:
    return _JOB_RUN + provenance_id


JOB_RUNS = _JOB_RUN  # in provenance id order, which is time order


def job_payment(authorization_id: bytes) -> bytes:
    return _JOB_PAYMENT + authorization_id


JOB_PAYMENTS = _JOB_PAYMENT


def stop_owed(authorization_id: bytes) -> bytes:
    return _STOP_OWED + authorization_id


STOPS_OWED = _STOP_OWED


def owed_check(authorization_id: bytes, check_id: bytes) -> bytes:
    return _OWED_CHECK + authorization_id + check_id


OWED_CHECKS = _OWED_CHECK


def remote_run(slot: int) -> bytes:
    return _REMOTE_RUN + slot.to_bytes(2, "big")


REMOTE_RUNS = _REMOTE_RUN


PLACED = _PLACED


def placed(owner: str, name: str) -> bytes:
    return _PLACED + owner.encode() + b"\0" + name.encode()


def split_placed(key: bytes, prefix: bytes = _PLACED) -> tuple[str, str]:
    """The (owner, function name) of a placement's key (or of its counters', with `prefix` PLACED_COUNTS)."""
    owner, _, name = key[len(prefix):].partition(b"\0")
    return owner.decode(), name.decode()


PLACED_COUNTS = _PLACED_COUNTS


def placed_counts(owner: str, name: str) -> bytes:
    return _PLACED_COUNTS + owner.encode() + b"\0" + name.encode()


PROVENANCE = _PROVENANCE  # in id order, which is time order
TAB_RUNS = _TAB_RUNS  # every run on a peer's tab, by authorization id

# --- ledger (l/) -----------------------------------------------------------------
LEDGER = b"l/"
LEDGER_ENTRIES = b"l/e/"  # + account (32) + seq (8, big endian) -> encoded entry (the chains, in order)
LEDGER_IDS = b"l/i/"  # + entry id (32) -> account (32) + seq (8)
# + the receipt id of a payment on a chain here (32) -> the payment's account (32) + seq (8): the payer's half of a
# transfer is found by the id the payee's node shows for it (its receipt entry's)
LEDGER_RECEIPTS = b"l/y/"
LEDGER_ACCOUNTS = b"l/a/"  # + account -> account state (seq, head id, balance, forked flag)
# + authorization id (32) -> id of the receipt that settled it: the replay check, kept ledger.record_retention past
# the authorization's expiry (no entry under it is taken later)
LEDGER_SETTLED = b"l/u/"
LEDGER_FORKS = b"l/f/"  # + account + seq (8) + entry id -> a conflicting entry (proof of equivocation)
# Cross-node settlement, payer side: an authorization sent to a payee on another node, not yet completed.
LEDGER_PENDING = b"l/p/"  # + authorization id -> encoded signed authorization (its cap is held)
LEDGER_CLAIMS = b"l/q/"  # + authorization id -> what to ask the payee to countersign (JSON: amount, usage)
LEDGER_COMPLETED = b"l/c/"  # + authorization id -> id of the payment that completed it (idempotent complete)
# + when (8: unix seconds, big endian) + authorization id -> a payment to another node dropped unpaid (JSON: its node,
# amount, job, why and what to do), kept for its payer to read (ledger/dropped.py; the newest few hundred)
LEDGER_DROPPED = b"l/d/"
# + authorization id -> the receipt's id (32) + the node that asked for it (its id, ASCII), or that id alone (the
# receipt is then found by its settled mark): written with the receipt, deleted in the batch in which that node's
# trust line counts it (ledger/trust.py), so a receipt a kill -9 left uncounted is counted at the next start,
# however late.
LEDGER_SENDERS = b"l/n/"
# + authorization id -> id of this node's payment under it (32), written with the payment, deleted in the batch in
# which the payee's trust line counts it as owed: as l/n/ for receipts.
LEDGER_UNCOUNTED = b"l/w/"
# + authorization id -> the node that asked for its receipt (its id, ASCII): the one peer besides the payer's own
# key the receipt is shown to (GET /v1/peer/ledger/receipts/{id}); written with the receipt, retired with its
# settled mark.
LEDGER_ASKED = b"l/k/"
# Aggregated settlement (ledger/tabs.py): what a payer owes a payee for acknowledged work not settled yet, and
# the refs (provenance ids) each aggregated transfer covers, under the Merkle root its job reference names.
LEDGER_OWED = b"l/o/"  # + ref (16: a provenance id) -> payer (32) + payee (32) + amount (8) + fuel (8)
LEDGER_COVERS = b"l/b/"  # + Merkle root (32) -> the refs it covers, 16 bytes each, in order
# + when (8: unix seconds, big endian) + the key of a record that is not kept for good (l/u/, l/k/, l/c/, l/b/, l/tp/,
# l/to/) -> b"", or for a replay guard (l/u/, l/k/, l/tp/, l/to/) its authorization's expiry (8, big endian: the sweep
# moves the row when ledger.record_retention was raised, without finding the entry): written with that record,
# deleted with it once `when` has passed (ledger/retirement.py `retire`)
LEDGER_RETIRE = b"l/r/"
LEDGER_RETIRE_INDEXED = b"l/ri"  # -> b"": the records written before they had an l/r/ row were given theirs
LEDGER_SETTLED_INDEXED = b"l/ru"  # -> b"": the settled marks (l/u/) written before they had an l/r/ row have theirs
LEDGER_EXPIRY_INDEXED = b"l/rx"  # -> b"": the replay guards' l/r/ rows written without their expiry were given it


def ledger_entry(account: bytes, seq: int) -> bytes:
    return LEDGER_ENTRIES + account + struct.pack(">Q", seq)


def ledger_chain(account: bytes) -> bytes:
    """Prefix of one account's entries, in seq order."""
    return LEDGER_ENTRIES + account


def split_ledger_entry(key: bytes) -> tuple[bytes, int]:
    rest = key[len(LEDGER_ENTRIES):]
    return rest[:32], struct.unpack(">Q", rest[32:40])[0]


def ledger_id(entry_id: bytes) -> bytes:
    return LEDGER_IDS + entry_id


def ledger_receipt(receipt_id: bytes) -> bytes:
    return LEDGER_RECEIPTS + receipt_id


def ledger_account(account: bytes) -> bytes:
    return LEDGER_ACCOUNTS + account


def ledger_settled(authorization_id: bytes) -> bytes:
    return LEDGER_SETTLED + authorization_id


def ledger_fork(account: bytes, seq: int, entry_id: bytes) -> bytes:
    return LEDGER_FORKS + account + struct.pack(">Q", seq) + entry_id


def split_ledger_fork(key: bytes) -> tuple[bytes, int, bytes]:
    rest = key[len(LEDGER_FORKS):]
    return rest[:32], struct.unpack(">Q", rest[32:40])[0], rest[40:]


def ledger_pending(authorization_id: bytes) -> bytes:
    return LEDGER_PENDING + authorization_id


def ledger_claim(authorization_id: bytes) -> bytes:
    return LEDGER_CLAIMS + authorization_id


def ledger_dropped(when: int, authorization_id: bytes) -> bytes:
    return LEDGER_DROPPED + struct.pack(">Q", max(0, when)) + authorization_id


def ledger_completed(authorization_id: bytes) -> bytes:
    return LEDGER_COMPLETED + authorization_id


def ledger_sender(authorization_id: bytes) -> bytes:
    return LEDGER_SENDERS + authorization_id


def ledger_asked(authorization_id: bytes) -> bytes:
    return LEDGER_ASKED + authorization_id


def ledger_uncounted(authorization_id: bytes) -> bytes:
    return LEDGER_UNCOUNTED + authorization_id


def ledger_owed(ref: bytes) -> bytes:
    return LEDGER_OWED + ref


def ledger_covers(merkle_root: bytes) -> bytes:
    return LEDGER_COVERS + merkle_root


def ledger_retire(when: int, key: bytes) -> bytes:
    return LEDGER_RETIRE + struct.pack(">Q", max(0, when)) + key


def split_ledger_retire(key: bytes) -> tuple[int, bytes]:
    """(when, the key of the record retired then)."""
    rest = key[len(LEDGER_RETIRE):]
    return struct.unpack(">Q", rest[:8])[0], rest[8:]


def retire_expiry(expires_at: int) -> bytes:
    """The value of a replay guard's l/r/ row: its authorization's expiry."""
    return struct.pack(">Q", max(0, expires_at))


def split_retire_expiry(value: bytes) -> int | None:
    """The authorization's expiry a row's value carries (None: a row that carries none)."""
    return struct.unpack(">Q", value)[0] if len(value) == 8 else None


# --- health (h/) -----------------------------------------------------------------
HEALTH = b"h/"
HEALTH_PEERS = b"h/p/"  # + node public key (32) -> that peer's probe history and audit result (JSON)


def health_peer(node_key: bytes) -> bytes:
    return HEALTH_PEERS + node_key


# --- peers (p/) ------------------------------------------------------------------
PEERS = b"p/"
PEER_DESCRIPTORS = b"p/d/"  # + node public key (32) -> its newest signed descriptor (JSON)
PEER_REMOVED = b"p/x/"  # + node public key -> when the user removed it (ms, 8 big endian): its descriptors are ignored


def peer_descriptor(node_key: bytes) -> bytes:
    return PEER_DESCRIPTORS + node_key


def peer_removed(node_key: bytes) -> bytes:
    return PEER_REMOVED + node_key


PEER_QUARANTINE = b"p/q/"  # + node public key -> why and until when it is quarantined (JSON)


def peer_quarantine(node_key: bytes) -> bytes:
    return PEER_QUARANTINE + node_key


# + node public key -> when it misbehaved within the last hour (JSON "at": unix seconds, oldest first; "last": per kind
# counted at most once a minute, when one last counted), or that list alone (no such kind)
PEER_STRIKES = b"p/s/"


def peer_strikes(node_key: bytes) -> bytes:
    return PEER_STRIKES + node_key


# --- market (m/) -----------------------------------------------------------------
MARKET = b"m/"
MARKET_COMMITMENTS = b"m/c/"  # + participant public key (32) -> its newest signed market commitment (JSON)
MARKET_SELF = b"m/s"  # this node's own market state: its ITC stamp (JSON), so stamps only grow across restarts
MARKET_RECOGNITION = b"m/r/"  # + peer public key -> the recognition weight the user set (decimal text)
MARKET_TIE_SECRET = b"m/t"  # 32 random bytes, made once: orders peers that earned equal sums (never published)
MARKET_ALLOCATION = b"m/a"  # this node's allocation ITC stamp (hex text): forked from a peer on join and on restart
# Forks this node asked of peers and got no answer to yet (JSON list of {"peer", "name", "retire"}): written before
# each is asked, so an answer a peer gave under that name and lost on the way is asked for again, after a restart too.
MARKET_FORKS_ASKED = b"m/f"
MARKET_FORKS_GIVEN = b"m/g/"  # + peer public key -> the fork this node gave that peer's latest named request (JSON)
MARKET_STANDING = b"m/n/"  # + need id -> a standing need slot of this node (JSON bid), allocated in rounds
MARKET_PRICES = b"m/p/"  # + kind + b"/" + bucket (8) + time ms (8) -> a clearing price and its volume (JSON)


def market_commitment(participant: bytes) -> bytes:
    return MARKET_COMMITMENTS + participant


def market_recognition(peer: bytes) -> bytes:
    return MARKET_RECOGNITION + peer


def market_standing(need_id: str) -> bytes:
    return MARKET_STANDING + need_id.encode()


def market_fork_given(peer: bytes) -> bytes:
    return MARKET_FORKS_GIVEN + peer


def split_market_fork_given(key: bytes) -> bytes:
    return key[len(MARKET_FORKS_GIVEN):]


# Trust lines (ledger/trust.py): what each peer paid this node and what its work cost, and its credit line.
TRUST_LINES = b"l/t/"  # + peer node public key -> {"paid": int, "used": int, "owed": int} (JSON)
TRUST_CREDIT = b"l/tc/"  # + peer node public key -> the credit line the user set for it (decimal micro-credits)
TRUST_PAID = b"l/tp/"  # + authorization id -> b"" once its receipt was counted on its peer's line
TRUST_OWED = b"l/to/"  # + authorization id -> b"" once this node's payment under it was counted as owed
# What this node prepaid each provider by itself (storage/strangers.py, ledger.auto_prepay): its caps hold across restarts.
AUTO_PREPAID = b"l/ap/"  # + provider node public key -> micro-credits prepaid to it by itself in all (decimal)


def trust_line(peer: bytes) -> bytes:
    return TRUST_LINES + peer


def trust_credit(peer: bytes) -> bytes:
    return TRUST_CREDIT + peer


def trust_paid(authorization_id: bytes) -> bytes:
    return TRUST_PAID + authorization_id


def trust_owed(authorization_id: bytes) -> bytes:
    return TRUST_OWED + authorization_id


def auto_prepaid(provider: bytes) -> bytes:
    return AUTO_PREPAID + provider


def market_price(kind: str, bucket: int, at_ms: int) -> bytes:
    return MARKET_PRICES + kind.encode() + b"/" + bucket.to_bytes(8, "big") + at_ms.to_bytes(8, "big")


def market_prices_of(kind: str) -> bytes:
    return MARKET_PRICES + kind.encode() + b"/"


def split_market_price(key: bytes) -> tuple[str, int, int]:
    kind, _, rest = key[len(MARKET_PRICES):].partition(b"/")
    return kind.decode(), int.from_bytes(rest[:8], "big"), int.from_bytes(rest[8:16], "big")


# --- objects: the S3 bucket index (o/) ----------------------------------------------
OBJECTS = b"o/"
OBJECT_BUCKETS = b"o/b/"  # + bucket name (UTF-8) -> bucket record (JSON: created)
# + S3 user name + 0x00 + bucket -> b"": a bucket the user owns or was granted, written with the bucket's record: a
# user's ListBuckets reads its own buckets, not every user's
OBJECT_BUCKETS_BY_USER = b"o/y/"
OBJECT_BUCKETS_BY_USER_INDEXED = b"o/yi"  # -> b"": the buckets recorded before o/y/ was kept were given their entries
OBJECT_KEYS = b"o/o/"  # + bucket + 0x00 + key (UTF-8) -> object record (JSON: parts' capabilities, size, ETag, ...)
OBJECT_UPLOADS = b"o/u/"  # + upload id (ASCII) -> multipart upload in progress (JSON: bucket, key, created, ...)
# + bucket + 0x00 + key + 0x00 + created (8: a double, big endian) + upload id -> b"": a bucket's uploads in progress in
# key order, a key's in the order they began (keys hold no NUL), written with the o/u/ record: a page of
# ListMultipartUploads reads its range, not every upload
OBJECT_UPLOADS_BY_KEY = b"o/k/"
OBJECT_UPLOADS_BY_KEY_INDEXED = b"o/ki"  # -> b"": the uploads recorded before o/k/ was kept were given their entries
# + created (8: a double, big endian, as o/k/) + upload id -> b"": the uploads in progress in the order they began,
# written with the o/u/ record: the expiry reads those past its horizon, not every upload
OBJECT_UPLOADS_BY_AGE = b"o/t/"
# + S3 user name (UTF-8) -> how many uploads in progress it began (decimal ASCII), written in each batch that begins or
# ends one: a user's bound and `xsc s3 users` read these, not every upload
OBJECT_UPLOAD_COUNTS = b"o/n/"
# + modified (8: a double, big endian) + upload id -> b"": the completed uploads in the order they completed, written
# with the o/c/ record: a Complete forgets those past COMPLETED_KEEP by reading them alone
OBJECT_COMPLETED_BY_AGE = b"o/d/"
OBJECT_AGES_INDEXED = b"o/ti"  # -> b"": the uploads recorded before o/t/, o/n/ and o/d/ were kept were given theirs
OBJECT_PARTS = b"o/p/"  # + upload id + 0x00 + part number (4, big endian) -> an uploaded part (JSON: capability, ...)
OBJECT_COMPLETED = b"o/c/"  # + upload id (ASCII) -> an upload completed (JSON: bucket, key, etag, modified)
OBJECT_GARBAGE = b"o/g/"  # + capability (ASCII) -> a file no object refers to any more, to remove from the store
OBJECT_FUNDED = b"o/f/"  # + S3 user name (UTF-8) -> b"": a user the node's account funded (`xsc s3 users` lists it)
OBJECT_FUNDED_INDEXED = b"o/fi"  # -> b"": the users funded before they had an o/f/ record were given theirs
OBJECT_HOLDERS = b"o/h/"  # + capability (ASCII) -> the key of the object or part record that refers to the file
OBJECT_HOLDERS_INDEXED = b"o/hi"  # -> b"": the records written before o/h/ was kept were given their entries
OBJECT_SHARED = b"o/s/"  # + capability (ASCII) -> JSON list of record keys (hex): every record that shared the file
OBJECT_SHARED_INDEXED = b"o/si"  # -> b"": the files records share (an import let them) were found and given o/s/
# + capability (ASCII) + 0x00 + charge id (16 hex digits) -> JSON {"user", "amount"}: what an S3 user's account paid
# for a file whose record is not written yet, one row a charge (a charge retried is answered as the one whose row is
# there: S3Index.chargeable), written by the charge's own ledger batch; the record's batch deletes the file's rows, a refusal's (or a reconciliation that finds the file an
# orphan) turns each into an o/r/ row of the same charge id
OBJECT_CHARGED = b"o/a/"
# + capability (ASCII) + 0x00 + charge id -> JSON {"user", "amount"}: a refund owed for a charge of a write refused
# after it; the refund's own ledger batch deletes it, and only a transfer that finds it there is settled
# (buckets/refunds.py)
OBJECT_REFUNDS = b"o/r/"


def object_bucket(bucket: str) -> bytes:
    return OBJECT_BUCKETS + bucket.encode()


def object_bucket_of_user(user: str, bucket: str) -> bytes:
    return object_buckets_of_user(user) + bucket.encode()


def object_buckets_of_user(user: str) -> bytes:
    """Prefix of a user's o/y/ entries, in bucket order."""
    return OBJECT_BUCKETS_BY_USER + user.encode() + b"\x00"


def object_key(bucket: str, key: str | bytes) -> bytes:
    """An object's key; `key` may be raw bytes (a listing position, not necessarily UTF-8)."""
    return OBJECT_KEYS + bucket.encode() + b"\x00" + (key if isinstance(key, bytes) else key.encode())


def objects_of(bucket: str) -> bytes:
    return OBJECT_KEYS + bucket.encode() + b"\x00"


def object_upload(upload_id: str) -> bytes:
    return OBJECT_UPLOADS + upload_id.encode()


def object_upload_by_key(bucket: str, key: str, created: float, upload_id: str) -> bytes:
    return object_uploads_of(bucket) + key.encode() + b"\x00" + struct.pack(">d", created) + upload_id.encode()


def object_upload_by_age(created: float, upload_id: str) -> bytes:
    return OBJECT_UPLOADS_BY_AGE + _age(created) + upload_id.encode()


def uploads_begun_before(horizon: float) -> bytes:
    """Where the o/t/ entries of uploads begun at `horizon` or later start."""
    return OBJECT_UPLOADS_BY_AGE + _age(horizon)


def object_completed_by_age(modified: float, upload_id: str) -> bytes:
    return OBJECT_COMPLETED_BY_AGE + _age(modified) + upload_id.encode()


def completed_before(horizon: float) -> bytes:
    """Where the o/d/ entries of uploads completed at `horizon` or later start."""
    return OBJECT_COMPLETED_BY_AGE + _age(horizon)


def split_by_age(entry: bytes, prefix: bytes) -> str:
    """The upload id of an o/t/ or o/d/ entry."""
    return entry[len(prefix) + 8:].decode()


def _age(seconds: float) -> bytes:
    # A non-negative double's big-endian bytes sort as the number does; a clock before 1970 counts as 1970.
    return struct.pack(">d", max(0.0, seconds))


def object_upload_count(user: str) -> bytes:
    return OBJECT_UPLOAD_COUNTS + user.encode()


def object_uploads_of(bucket: str) -> bytes:
    """Prefix of a bucket's o/k/ entries, in key order."""
    return OBJECT_UPLOADS_BY_KEY + bucket.encode() + b"\x00"


def split_upload_by_key(entry: bytes, base: bytes) -> tuple[str, str]:
    """The key and the upload id of an o/k/ entry under `base` (`object_uploads_of`)."""
    key, _, rest = entry[len(base):].partition(b"\x00")
    return key.decode(), rest[8:].decode()


def object_part(upload_id: str, number: int) -> bytes:
    return OBJECT_PARTS + upload_id.encode() + b"\x00" + struct.pack(">I", number)


def object_parts_of(upload_id: str) -> bytes:
    return OBJECT_PARTS + upload_id.encode() + b"\x00"


def object_completed(upload_id: str) -> bytes:
    return OBJECT_COMPLETED + upload_id.encode()


def object_garbage(capability: str) -> bytes:
    return OBJECT_GARBAGE + capability.encode()


def object_holder(capability: str) -> bytes:
    return OBJECT_HOLDERS + capability.encode()


def object_shared(capability: str) -> bytes:
    return OBJECT_SHARED + capability.encode()


def object_funded(user: str) -> bytes:
    return OBJECT_FUNDED + user.encode()


def object_charged(capability: str, charge: str = "") -> bytes:
    """A charge's row (`charge` empty: the prefix of the file's rows)."""
    return OBJECT_CHARGED + capability.encode() + b"\x00" + charge.encode()


def object_refund(capability: str, charge: str = "") -> bytes:
    """A refund's row (`charge` empty: the prefix of the file's rows)."""
    return OBJECT_REFUNDS + capability.encode() + b"\x00" + charge.encode()


def split_charge_row(prefix: bytes, key: bytes) -> tuple[str, str]:
    """The (capability, charge id) of an o/a/ or o/r/ row's key (`prefix`: which); ValueError if it is not one."""
    cap, nul, charge = key[len(prefix):].partition(b"\x00")
    if not nul or not cap or not charge:
        raise ValueError("not a charge's row")
    return cap.decode(), charge.decode()
