"""Compute's records in the node's LevelDB: modules, their wasm and compiled artifacts, counters, provenance."""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable, Iterable


from .. import codec
from .. import keys
from .modules import ModuleInfo
from ..db import Database, Rows

log = logging.getLogger(__name__)


class ComputeStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- modules ---------------------------------------------------------------
    def module(self, module_hash: bytes) -> ModuleInfo | None:
        data = self._db.get(keys.module(module_hash))
        if data is None:
            return None
        info = ModuleInfo.from_json(codec.loads(data))
        info.invocations = self.invocations(module_hash)
        return info

    def modules(self) -> list[ModuleInfo]:
        out = []
        for key, data in self._db.iterator(prefix=keys.MODULES):
            info = ModuleInfo.from_json(codec.loads(data))
            info.invocations = self.invocations(key[len(keys.MODULES):])
            out.append(info)
        return out

    def wasm(self, module_hash: bytes) -> bytes | None:
        return self._db.get(keys.wasm(module_hash))

    def save_module(self, module_hash: bytes, info: ModuleInfo, wasm: bytes,
                    artifact_key: bytes, sealed_artifact: bytes, also: Rows = ()) -> None:
        """Record, wasm and artifact together, durably, with the rows `also` (a pushed module's compile charged on a
        tab): a deployed module is never half there, nor there without them."""
        record = info.to_json()
        record.pop("invocations")  # kept in its own counter
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(keys.wasm(module_hash), wasm)
            batch.put(artifact_key, sealed_artifact)
            batch.put(keys.module(module_hash), codec.dumps(record))
            for key, value in also:
                batch.put(key, value)

    def update_module(self, module_hash: bytes, info: ModuleInfo) -> None:
        record = info.to_json()
        record.pop("invocations")
        self._db.put(keys.module(module_hash), codec.dumps(record), sync=True)

    def remove_module(self, module_hash: bytes) -> None:
        """The module, its wasm, compiled artifacts, count and chain head go; its provenance records stay."""
        with self._db.write_batch(transaction=True, sync=True) as batch:
            for key in (keys.module(module_hash), keys.wasm(module_hash), keys.invocations(module_hash),
                        keys.provenance_head(module_hash)):
                batch.delete(key)
            for key in self._db.iterator(prefix=keys.artifact(module_hash, b""), include_value=False):
                batch.delete(key)

    def last_used_ns(self, module_hash: bytes) -> int | None:
        """When the module's newest recorded run started (a provenance id begins with its time), if any."""
        head = self._db.get(keys.provenance_head(module_hash))
        return struct.unpack(">Q", head[:8])[0] if head else None

    # --- compiled artifacts --------------------------------------------------------
    @staticmethod
    def artifact_key(module_hash: bytes, fingerprint: bytes) -> bytes:
        """Where a module's artifact compiled by an engine of `fingerprint` is kept (also what its seal binds)."""
        return keys.artifact(module_hash, fingerprint)

    def artifact(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def save_artifact(self, key: bytes, sealed_artifact: bytes) -> None:
        self._db.put(key, sealed_artifact, sync=True)

    # --- invocation counts and provenance ---------------------------------------------
    def invocations(self, module_hash: bytes) -> int:
        data = self._db.get(keys.invocations(module_hash))
        return struct.unpack(">Q", data)[0] if data else 0

    def record_run(self, provenance_id: bytes, signed: bytes, module_hash: bytes, invocations: int) -> None:
        # Not synced: a kill -9 keeps it (it is in the OS's buffers); only a machine crash may lose the last runs.
        with self._db.write_batch() as batch:
            batch.put(keys.provenance(provenance_id), signed)
            batch.put(keys.invocations(module_hash), struct.pack(">Q", invocations))

    def provenance(self, provenance_id: bytes) -> bytes | None:
        return self._db.get(keys.provenance(provenance_id))

    def kept_run(self, provenance_id: bytes) -> dict[str, Any] | None:
        """A provider's signed record of a run it made for this node, as this node checked and kept it."""
        raw = self._db.get(keys.job_run(provenance_id))
        return None if raw is None else codec.loads(raw)

    def keep_run(self, provenance_id: bytes, signed: dict[str, Any]) -> None:
        self._db.put(keys.job_run(provenance_id), codec.dumps(signed))

    # --- remote answers' spot checks (compute/spot_checks.py) ---------------------
    @staticmethod
    def owed_check_row(authorization_id: bytes, check_id: bytes, check: dict | None) -> dict[bytes, bytes | None]:
        """The row of a check an answer on a tab is owed (None: deleted, the check done), written with the tab's tally."""
        return {keys.owed_check(authorization_id, check_id): None if check is None else codec.dumps(check)}

    def owed_checks(self) -> list[tuple[bytes, bytes, dict | None]]:
        """Every check a stop left owed: (authorization id, check id, the check; None if it cannot be read)."""
        out = []
        with self._db.iterator(prefix=keys.OWED_CHECKS) as it:
            for key, value in it:
                rest = key[len(keys.OWED_CHECKS):]
                try:
                    check = codec.loads(value)
                except ValueError:
                    check = None
                out.append((rest[:32], rest[32:], check if isinstance(check, dict) else None))
        return out

    def owed_check_ids(self, after: tuple[bytes, bytes] | None = None,
                       limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """The checks owed on disk, in the order of their rows, from the one after `after` on (None: the first),
        `limit` at most: (authorization id, check id)."""
        start = keys.OWED_CHECKS if after is None else keys.owed_check(*after)
        stop = keys.OWED_CHECKS[:-1] + bytes([keys.OWED_CHECKS[-1] + 1])
        out = []
        with self._db.iterator(start=start, stop=stop, include_start=after is None, include_value=False) as it:
            for key in it:
                rest = key[len(keys.OWED_CHECKS):]
                out.append((rest[:32], rest[32:]))
                if len(out) == limit:
                    break
        return out

    @staticmethod
    def owed_check_ids_in(rows: dict[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
        """The checks owed whose rows `rows` write (not those they delete): (authorization id, check id)."""
        found = (key[len(keys.OWED_CHECKS):] for key, value in rows.items()
                 if value is not None and key.startswith(keys.OWED_CHECKS))
        return [(rest[:32], rest[32:]) for rest in found]

    def owed_check(self, authorization_id: bytes, check_id: bytes) -> dict | None:
        """A check owed on disk as it was written; {} if it cannot be read, None if there is no such row."""
        raw = self._db.get(keys.owed_check(authorization_id, check_id))
        if raw is None:
            return None
        try:
            check = codec.loads(raw)
        except ValueError:
            return {}
        return check if isinstance(check, dict) else {}

    @staticmethod
    def remote_run_row(count: int, slots: int, provenance_id: bytes, provider: str) -> dict[bytes, bytes]:
        """The row of the `count`th remote run: in the place of the run `slots` before it (the latest `slots` are kept)."""
        return {keys.remote_run(count % slots): count.to_bytes(8, "big") + provenance_id + provider.encode()}

    def remote_runs(self) -> list[tuple[int, bytes, str]]:
        """The latest remote runs, oldest first: (count, provenance id, provider)."""
        out = []
        with self._db.iterator(prefix=keys.REMOTE_RUNS, include_key=False) as it:
            for value in it:
                try:
                    provider = value[24:].decode("ascii")
                except UnicodeDecodeError:
                    continue
                if len(value) > 24 and provider.isalnum():
                    out.append((int.from_bytes(value[:8], "big"), value[8:24], provider))
        return sorted(out)

    def provenance_counts(self, since_ns: int, bucket_ns: int, buckets: int, cap: int) -> tuple[list[int], bool]:
        """How many provenance records fall in each of `buckets` intervals of `bucket_ns` from `since_ns` (their ids
        start with their time), counting keys only and at most `cap` of them; and whether all were counted."""
        counts = [0] * buckets
        seen = 0
        start = keys.provenance(since_ns.to_bytes(8, "big"))
        stop = keys.PROVENANCE[:-1] + bytes([keys.PROVENANCE[-1] + 1])  # the end of the provenance keys
        with self._db.iterator(start=start, stop=stop, include_value=False) as it:
            for key in it:
                i = (int.from_bytes(key[len(keys.PROVENANCE):][:8], "big") - since_ns) // bucket_ns
                if i >= buckets:
                    break
                counts[i] += 1
                seen += 1
                if seen >= cap:
                    return counts, False
        return counts, True

    def forget_provenance(self, before_ns: int, keep: Callable[[bytes], bool], most: int) -> int:
        """Delete the provenance records of runs that began before `before_ns` (an id starts with its time), oldest
        first and `most` at most, but those `keep(id)` and those awaiting their batch's signature (the next start
        signs them); how many went, in one write."""
        gone = []
        with self._db.iterator(start=keys.PROVENANCE, stop=keys.provenance(before_ns.to_bytes(8, "big")),
                               include_value=False) as it:
            for key in it:
                record_id = key[len(keys.PROVENANCE):]
                if not keep(record_id) and self._db.get(keys.unsigned(record_id)) is None:
                    gone.append(key)
                    if len(gone) >= most:
                        break
        if gone:
            with self._db.write_batch() as batch:
                for key in gone:
                    batch.delete(key)
        return len(gone)

    def tab_runs(self) -> set[bytes]:
        """The provenance ids of every run on a peer's tab not receipted yet (`c/t/`)."""
        with self._db.iterator(prefix=keys.TAB_RUNS, include_value=False) as it:
            return {key[-16:] for key in it}

    def recent_provenance(self, limit: int) -> list[bytes]:
        out = []
        with self._db.iterator(prefix=keys.PROVENANCE, reverse=True, include_key=False) as it:
            for data in it:
                out.append(data)
                if len(out) >= limit:
                    break
        return out

    # --- watches (compute/watches.py) --------------------------------------------
    # --- cancels a provider has not heard yet (compute/provider_stops.py) --------------
    def owe_stop(self, authorization_id: bytes, stop: dict[str, Any] | None) -> None:
        """Keep `stop` owed on the tab `authorization_id` (None: heard, or its run over: forgotten)."""
        key = keys.stop_owed(authorization_id)
        if stop is None:
            self._db.delete(key, sync=True)
        else:
            self._db.put(key, codec.dumps(stop), sync=True)

    def stops_owed(self) -> dict[bytes, dict[str, Any]]:
        with self._db.iterator(prefix=keys.STOPS_OWED) as rows:
            return {key[len(keys.STOPS_OWED):]: codec.loads(value) for key, value in rows}

    def watches(self) -> list[dict]:
        with self._db.iterator(prefix=keys.WATCHES) as it:
            return [codec.loads(v) for _, v in it]

    def watch(self, name: str) -> dict | None:
        raw = self._db.get(keys.watch(name))
        return None if raw is None else codec.loads(raw)

    def save_watch(self, watch: dict) -> None:
        self._db.put(keys.watch(watch["name"]), codec.dumps(watch), sync=True)

    def remove_watch(self, name: str) -> None:
        """The watch and its datums, in one write."""
        with self._db.write_batch(sync=True) as batch:
            batch.delete(keys.watch(name))
            with self._db.iterator(prefix=keys.watch_datums(name), include_value=False) as it:
                for key in it:
                    batch.delete(key)

    def datums(self, name: str) -> dict[str, dict]:
        """Input key -> its datum done, for one watch."""
        base = keys.watch_datums(name)
        with self._db.iterator(prefix=base) as it:
            return {k[len(base):].decode(): codec.loads(v) for k, v in it}

    def datum(self, name: str, key: str) -> dict | None:
        raw = self._db.get(keys.watch_datum(name, key))
        return None if raw is None else codec.loads(raw)

    def save_datum(self, name: str, key: str, datum: dict) -> None:
        self._db.put(keys.watch_datum(name, key), codec.dumps(datum), sync=True)

    def remove_datum(self, name: str, key: str) -> None:
        self._db.delete(keys.watch_datum(name, key), sync=True)

    # --- maps (compute/maps.py) ----------------------------------------------------
    def maps(self) -> list[dict]:
        with self._db.iterator(prefix=keys.MAPS) as it:
            return [codec.loads(v) for _, v in it]

    def map(self, map_id: bytes) -> dict | None:
        raw = self._db.get(keys.map_(map_id))
        return None if raw is None else codec.loads(raw)

    def map_asked(self, map_id: bytes) -> dict | None:
        raw = self._db.get(keys.map_asked(map_id))
        return None if raw is None else codec.loads(raw)

    def map_inputs(self, map_id: bytes) -> list[dict]:
        with self._db.iterator(prefix=keys.map_inputs(map_id)) as it:
            return [codec.loads(v) for _, v in it]

    def map_input(self, map_id: bytes, index: int) -> dict | None:
        raw = self._db.get(keys.map_input(map_id, index))
        return None if raw is None else codec.loads(raw)

    def save_map(self, head: dict, inputs: dict[int, dict], asked: dict | None = None,
                 forget: Iterable[bytes] = ()) -> None:
        """The map's head and these inputs in one write (an input's state and the head's counts never disagree);
        with what it was `asked` (once, as it is made) and the maps `forget`, each with its inputs."""
        map_id = bytes.fromhex(head["id"])
        with self._db.write_batch(sync=True) as batch:
            for old in forget:
                self._forget_map(batch, old)
            if asked is not None:
                batch.put(keys.map_asked(map_id), codec.dumps(asked))
            batch.put(keys.map_(map_id), codec.dumps(head))
            for index, entry in inputs.items():
                batch.put(keys.map_input(map_id, index), codec.dumps(entry))

    def forget_map(self, map_id: bytes) -> None:
        """The map's head, what it was asked and every input's record gone in one synced write: a crash leaves the
        map whole or gone, never a head without its inputs or inputs no head names."""
        with self._db.write_batch(sync=True) as batch:
            self._forget_map(batch, map_id)

    def _forget_map(self, batch, map_id: bytes) -> None:
        batch.delete(keys.map_(map_id))
        batch.delete(keys.map_asked(map_id))
        with self._db.iterator(prefix=keys.map_inputs(map_id), include_value=False) as it:
            for key in it:
                batch.delete(key)

    # --- web functions (compute/functions.py) ------------------------------------
    def functions(self) -> list[dict]:
        with self._db.iterator(prefix=keys.FUNCTIONS) as it:
            return [codec.loads(v) for _, v in it]

    def save_function(self, record: dict) -> None:
        self._db.put(keys.function(record["name"]), codec.dumps(record), sync=True)

    def remove_function(self, name: str) -> None:
        with self._db.write_batch(sync=True) as batch:
            batch.delete(keys.function(name))
            for prefix in (keys.function_spends(name), keys.function_paids(name)):
                with self._db.iterator(prefix=prefix, include_value=False) as it:
                    for key in it:
                        batch.delete(key)

    def function_spend(self, name: str, since: int) -> dict[int, int]:
        """What a function's runs cost, by the minute, from minute `since` on; older minutes are deleted."""
        return self._by_minute(keys.function_spends(name), since)

    def function_paid(self, name: str, since: int) -> dict[int, int]:
        """What the receipts for a function's requests on the market paid, by the minute, from minute `since` on;
        older minutes are deleted."""
        return self._by_minute(keys.function_paids(name), since)

    @staticmethod
    def function_paid_row(name: str, minute: int, authorization_id: bytes, amount: int) -> dict[bytes, bytes]:
        """The row of a receipt paid for a function's requests on the market, written in the payment's batch."""
        return {keys.function_paid(name, minute, authorization_id): amount.to_bytes(8, "big")}

    def _by_minute(self, prefix: bytes, since: int) -> dict[int, int]:
        spent: dict[int, int] = {}
        old = []
        with self._db.iterator(prefix=prefix) as it:
            for key, value in it:
                minute = int.from_bytes(key[len(prefix):len(prefix) + 8], "big")
                if minute < since:
                    old.append(key)
                else:
                    spent[minute] = spent.get(minute, 0) + int.from_bytes(value, "big")
        if old:
            with self._db.write_batch() as batch:
                for key in old:
                    batch.delete(key)
        return spent

    @staticmethod
    def function_spend_entries(name: str, minute: int, total: int,
                               gone: list[int] = ()) -> tuple[tuple[bytes, bytes | None], ...]:
        """The (key, value) of what a function's runs cost in `minute`, written with a run's record, and those
        (value None: deleted) of the minutes `gone` past its hour."""
        return ((keys.function_spend(name, minute), total.to_bytes(8, "big")),
                *((keys.function_spend(name, old), None) for old in gone))

    # --- functions other nodes placed here (compute/placed_functions.py) -----------
    def placements(self) -> list[tuple[tuple[str, str], Any]]:
        """Every placement: ((owner, function name), what was placed)."""
        return self._readable(keys.PLACED, "placement")

    def save_placement(self, owner: str, name: str, placement: dict,
                       also: Rows = ()) -> None:
        """A placement, whole in one synced write with the rows `also` (what reading its files charged on its tab): a
        kill -9 leaves them there or not, never in part."""
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.put(keys.placed(owner, name), codec.dumps(placement))
            for key, value in also:
                batch.put(key, value)

    def remove_placement(self, owner: str, name: str) -> None:
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.delete(keys.placed(owner, name))
            batch.delete(keys.placed_counts(owner, name))

    def placed_counts(self) -> dict[tuple[str, str], dict]:
        """(owner, function name) -> the counters kept of a placed function (requests, errors, earned)."""
        return dict(self._readable(keys.PLACED_COUNTS, "placed function's counters"))

    def _readable(self, prefix: bytes, what: str) -> list[tuple[tuple[str, str], Any]]:
        """The rows under `prefix` that read, as ((owner, function name), value).  One the disk gives back unreadable
        is deleted with a logged error: a start must not fail on it (an unreadable placement is dropped, as one that
        no longer checks is, and its owner places it again; unreadable counters start again from nothing)."""
        rows, unreadable = [], []
        with self._db.iterator(prefix=prefix) as it:
            for key, value in it:
                try:
                    rows.append((keys.split_placed(key, prefix), codec.loads(value)))
                except ValueError as err:  # (a name not UTF-8 too: UnicodeDecodeError is one)
                    log.error("a %s kept on disk is unreadable (%r: %s): it is dropped", what, key[:160], err)
                    unreadable.append(key)
        if unreadable:
            with self._db.write_batch(transaction=True, sync=True) as batch:
                for key in unreadable:
                    batch.delete(key)
        return rows

    def save_placed_counts(self, counts: dict[tuple[str, str], dict | None]) -> None:
        """Placed functions' counters (None: deleted), in one batch and without fsync: a kill -9 loses at most what
        they counted since the batch before, never a request's answer."""
        with self._db.write_batch(transaction=True, sync=False) as batch:
            for (owner, name), kept in counts.items():
                if kept is None:
                    batch.delete(keys.placed_counts(owner, name))
                else:
                    batch.put(keys.placed_counts(owner, name), codec.dumps(kept))
