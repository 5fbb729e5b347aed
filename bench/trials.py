"""Crash trials: a random workload on a devnet, kill -9 of one or two random nodes at a random moment,
restart, then every invariant XSC claims is checked.

    python -m bench.trials [--trials N] [--nodes 6] [--seed S] [--per-devnet 25] [--remote] [--json FILE]
    (make trials N=100)

One devnet serves 25 trials in a row (as Jepsen runs many histories against one cluster), then a fresh
one takes over: each trial re-reads every file its devnet holds, so a longer history only slows it.  A trial:
1. a random workload through node-0 (the gateway): puts of random sizes (0, small, several segments),
   gets, removals, renewals, repairs, invokes, and jobs with stored inputs and outputs, each run again now and
   then (a job that is not deterministic: its new run replaces its last run's outputs); puts and deletes of objects
   through the gateway's own S3 listener, jobs whose input is such an object (`s3://BUCKET/KEY:/in/data`), and
   replicated jobs (deterministic, `replicas` 3, `agree` 2: run on three other nodes, paid to those that agree);
   all the while a watch runs the SHA-256 fixture over every object under `w/`, again for each change.  Payments by
   receipt and audits run on their own (short intervals), lease GC too.  On every other devnet the gateway offers
   no compute, so its invokes and jobs are placed on the other nodes through the market and paid on tabs;
2. meanwhile, after a random delay, kill -9 of one or two random nodes (the gateway among them at times); in
   one trial of three the delay runs from the trial's first job, so the kill finds jobs running, storing and
   replacing (or a watched object changed: its job running);
3. the dead nodes' databases are checked as the crash left them (the used-bytes counter equals the bytes
   of the shares they hold), then the nodes restart;
4. checks: every acknowledged put reads back byte-exact; no file is listed that was not acknowledged (or
   in flight at the crash, and then it reads back exact); removed files stay removed; `ledger verify`
   passes on every node; at a moment when no payment is pending, the balances of all nodes sum to zero; no share's
   holding period is paid twice (the payer's storage job periods never overlap); no job is left running or
   storing; every output a job's record names (under `outputs` or `replacing`) reads back byte-exact, its size
   and SHA-256 as recorded, and is named by one record once; every stored file named like a job's output is
   named by a record (no orphans); a job's `charge_total` is the sum of the charges of its runs' provenance
   records (its local runs' exactly; with runs on providers, at least its local runs' and at most all its runs'),
   its `executions` their count, and each local run is covered by exactly one ledger transfer once its tab is
   settled (its interval after the run, or at the start after a kill), whose amount is the sum of the charges it
   covers; every object reads back through S3 as its last acknowledged put left it (or
   a change whose answer was lost), and no other is listed; a replicated job pays the providers whose outputs
   agreed, as many as it asks at least, each once (one receipt, its charge), and no other replica; once the watch
   has caught up, each watched object's digest is the target's object of its key and the target holds nothing
   else there, the watch ran at most once per change (each of its jobs at most as often as its input's bytes
   were put: now and then a watched object is put with another's bytes), and an output no object holds any more
   is no longer stored.
Every trial has its own seed, printed with any violation: `--seed S --trials 1` replays its workload and
faults (on a fresh devnet, so without the files of the trials before it; `--remote` for a trial of a devnet whose
gateway offered no compute: the replay line says so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.client import HTTPException
from pathlib import Path

import plyvel

from xsc import keys
from xsc.storage.core import erasure
from xsc.devnet import Devnet, NodeProcess, free_port, run_xsc
from xsc.storage.share_store import ShareMeta

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "fixtures" / "wasm"
ADD_WASM = WASM / "add.wasm"
JOB_MODULES = ("outputs", "clock_random", "sha256")  # WASI fixtures jobs run (compute docs, "Jobs over stored data")
SEGMENT = 16 * 1024
ENV = {"XSC_STORAGE_SEGMENT_SIZE": str(SEGMENT), "XSC_HEALTH_PROBE_INTERVAL": "1", "XSC_PEERS_GOSSIP_INTERVAL": "2",
       "XSC_AUDIT_INTERVAL": "2", "XSC_MARKET_PAYMENT_INTERVAL": "2", "XSC_STORAGE_GC_INTERVAL": "2",
       "XSC_LEDGER_SETTLE_RETRY_INTERVAL": "1", "XSC_MARKET_FRESHNESS": "30", "XSC_STORAGE_CAPACITY": "256MiB"}
CHECK_TIMEOUT = 180.0  # seconds an invariant check waits for an answer
POLL_SECONDS = 0.1  # between looks while a check waits: most of its waits end within a second, each a few looks
HISTORY = 10_000  # the most entries the ledger's history route gives (the newest)
WATCH_TIMEOUT = 90.0  # seconds the watch has to catch up after a restart (it passes every 5 s; its jobs run then)
BUCKET, TARGET = "trials", "trials-out"  # objects put through the gateway's S3 listener; the watch's outputs
WATCHED = "w/"  # the watch runs the SHA-256 fixture over each object of BUCKET under it, into TARGET (the same key)
WATCH = "trials"
READERS = 4  # acknowledged files the check reads back at once
OBJECT_KEYS = tuple(f"{prefix}{n}" for prefix in ("in/", WATCHED) for n in range(3))  # few: objects are rewritten


class Http:
    """The user API of one node (plain urllib: the harness must not share the node's code paths)."""

    def __init__(self, node: NodeProcess, timeout: float = 30.0) -> None:
        self.node = node
        self.timeout = timeout

    def call(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None,
             content_type: str = "application/octet-stream") -> tuple[int, bytes]:
        request = urllib.request.Request(self.node.url + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {self.node.token}",
                                                  "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, payload: dict | None = None,
             timeout: float | None = None) -> tuple[int, dict]:
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self.call(method, path, body, timeout, "application/json")
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, {"raw": raw[:200].decode(errors="replace")}


class S3:
    """The gateway's own S3 listener (`node.s3_listen`) through boto3: an S3 client as a user runs one."""

    def __init__(self, url: str, key: dict) -> None:
        import boto3
        from botocore.config import Config

        self.client = boto3.client("s3", endpoint_url=url, aws_access_key_id=key["access_key"],
                                   aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                                   config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                                 retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60))

    def call(self, operation: str, **params) -> tuple[int, dict]:
        """(HTTP status, answer); status 0 when no answer came (refused, cut short or timed out: done or not)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = getattr(self.client, operation)(**params)
        except ClientError as err:
            return err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0), err.response
        except (BotoCoreError, OSError, HTTPException):
            return 0, {}
        return answer["ResponseMetadata"]["HTTPStatusCode"], answer

    def read(self, bucket: str, key: str) -> bytes | None:
        """An object's bytes; None if there is no such object (raises if the answer is anything else)."""
        status, answer = self.call("get_object", Bucket=bucket, Key=key)
        if status == 404:
            return None
        if status != 200:
            raise OSError(f"GetObject s3://{bucket}/{key} answered {status or 'nothing'}")
        return answer["Body"].read()

    def keys(self, bucket: str, prefix: str) -> list[str]:
        status, answer = self.call("list_objects_v2", Bucket=bucket, Prefix=prefix)
        if status != 200:
            raise OSError(f"ListObjectsV2 s3://{bucket}/{prefix} answered {status or 'nothing'}")
        return [o["Key"] for o in answer.get("Contents", [])]


@dataclass
class History:
    """What the workload was told: acknowledged files, removals, and the operations whose answer was lost."""

    files: dict[str, bytes] = field(default_factory=dict)  # capability -> content, acknowledged
    removed: set[str] = field(default_factory=set)
    in_flight: dict[str, bytes] = field(default_factory=dict)  # operation id (a put's name) -> its content
    jobs: dict[str, int] = field(default_factory=dict)  # job id -> its runs answered (not replays)
    jobs_in_flight: int = 0  # job runs whose answer was lost (any job: the id is not known before the answer)
    job_answers: dict[str, int] = field(default_factory=dict)  # status (and problem code) -> how many jobs got it
    job_sent: threading.Event = field(default_factory=threading.Event)  # a job was asked for (or a watched object
    # changed) in this trial
    objects: dict[str, bytes] = field(default_factory=dict)  # key of BUCKET -> content, acknowledged
    objects_in_flight: dict[str, list[bytes | None]] = field(default_factory=dict)  # key -> what a put (or None: a
    # delete) whose answer was lost may have left, since its last acknowledged change
    watched_puts: dict[str, int] = field(default_factory=dict)  # SHA-256 -> puts of those bytes under WATCHED sent
    # (each a change the watch runs once at most: a job of the watch runs at most as often as its input was put)
    acked: int = 0
    violations: list[str] = field(default_factory=list)  # wrong answers seen by the workload itself
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sizes(rng: random.Random) -> int:
    return rng.choice([0, 1, rng.randrange(2, SEGMENT), rng.randrange(SEGMENT, 6 * SEGMENT),
                       rng.randrange(6 * SEGMENT, 20 * SEGMENT)])


def _shares_on(http: Http, cap: str, nodes: set[str]) -> int:
    """How many of a file's shares the gateway placed on `nodes` (node ids), from its listing."""
    status, listing = http.json("GET", "/v1/store/files")
    for record in listing.get("files", []) if status == 200 else []:
        if record["capability"] == cap:
            return sum(1 for node in record.get("placement") or [] if node in nodes)
    return 0


def run_job(http: Http, rng: random.Random, history: History, known: list[str], jobs: dict[str, str]) -> None:
    """A job run through the gateway: the outputs fixture over one of a few stored files (three outputs, the third
    a copy of its stdin) or the clock fixture with its stdout stored.  Neither is deterministic, so asked again
    it runs again and replaces its last run's outputs (the clock's with other bytes)."""
    if rng.random() < 0.5 or not known:
        spec, expected = {"module": jobs["clock_random"], "outputs": False, "stdout_to_store": True}, None
    else:
        stdin = rng.choice(known[:3])  # a few inputs only: the same jobs run again
        spec = {"module": jobs["outputs"], "stdin": stdin}
        with history.lock:
            content = history.files.get(stdin)
        expected = None if content is None else [{name: hashlib.sha256(b).hexdigest() for name, b in {
            "out/a.txt": b"alpha\n", "out/b.txt": b"bravo bravo\n", "out/c.txt": content}.items()}]
    send_job(http, history, spec, expected, f"over {stdin[:32]}…" if expected is not None else "")


def run_digest_job(http: Http, rng: random.Random, history: History, known: list[str], jobs: dict[str, str],
                   replicated: bool) -> None:
    """The SHA-256 fixture over an object of BUCKET (an S3 input, read through the bucket index) or a stored file,
    its stdout stored.  `replicated`: deterministic, on three other nodes, paid to the two or three that agree."""
    with history.lock:  # mostly an object that is there (one that is not: the job is refused)
        present = sorted(history.objects)
        key = rng.choice(present) if present and rng.random() < 0.8 else rng.choice(OBJECT_KEYS)
        if replicated and known and rng.random() < 0.5:
            source = rng.choice(known[:3])
            contents = [history.files.get(source)]
        else:
            source, contents = f"s3://{BUCKET}/{key}", _object_contents(history, key)
    # Its own env: never the watch's job, nor the other kind's, over the same bytes.
    spec = {"module": jobs["sha256"], "argv": ["/in/data"], "inputs": [f"{source}:/in/data"], "outputs": False,
            "stdout_to_store": True, "env": {"TRIAL": "replicated" if replicated else "s3"}}
    if replicated:
        spec.update(deterministic=True, replicas=3, agree=2)
    expected = [{"stdout": hashlib.sha256(_digest(c)).hexdigest()} for c in contents if c is not None]
    send_job(http, history, spec, expected, f"over {source[:40]}")


def _digest(content: bytes) -> bytes:
    """What the SHA-256 fixture prints for `content` (as sha256sum does)."""
    return hashlib.sha256(content).hexdigest().encode() + b"\n"


def _object_contents(history: History, key: str) -> list[bytes | None]:
    """What an object of BUCKET may hold now (None: no object): its last acknowledged content, or what a put or delete
    whose answer was lost since left.  Under history.lock."""
    return [history.objects.get(key), *history.objects_in_flight.get(key, [])]


def send_job(http: Http, history: History, spec: dict, expected: list[dict[str, str]] | None, what: str) -> None:
    """Ask the gateway for a job and record its answer; `expected`: the outputs (name -> SHA-256) it may answer."""
    with history.lock:
        history.jobs_in_flight += 1
    history.job_sent.set()
    try:
        status, answer = http.call("POST", "/v1/compute/jobs", json.dumps(spec).encode() + b"\n",
                                   content_type="application/x-xsc-job")
    except urllib.error.URLError as err:
        if isinstance(err.reason, ConnectionRefusedError):  # the gateway is down: nothing was asked
            with history.lock:
                history.jobs_in_flight -= 1
        raise
    if status >= 500 and status != 502:  # 502: replicas that disagree (an answer, not a lost one)
        return  # it may have run (kept in flight)
    try:
        job = json.loads(answer)
    except ValueError:
        job = {}
    with history.lock:
        answered_as = f"{status} {job.get('code', '')}".strip()
        if spec.get("replicas", 1) > 1:
            answered_as += " (replicated)"
        history.job_answers[answered_as] = history.job_answers.get(answered_as, 0) + 1
        history.jobs_in_flight -= 1
        if "id" in job and job.get("replayed") is False:  # it ran (a failed run's problem names its job too)
            history.jobs[job["id"]] = history.jobs.get(job["id"], 0) + 1
        history.acked += status == 201
    if status != 201:
        return  # refused (its stdin removed meanwhile, no provider, ...), or failed
    got = {o["name"]: o["sha256"] for o in job.get("outputs", [])}
    if expected is not None and got not in expected:
        history.violations.append(f"job {job['id'][:16]} {what} answered outputs {sorted(got)} that are not its "
                                  "input's")


def change_object(s3: S3, rng: random.Random, history: History) -> None:
    """A put (or now and then a delete) of an object of BUCKET through the gateway's S3 listener.  Under WATCHED a
    put holds new bytes, or now and then another watched object's (one job of the watch, its outputs two objects')."""
    key = rng.choice(OBJECT_KEYS)
    data: bytes | None = None
    if rng.random() < 0.8:
        data = rng.randbytes(rng.choice([0, 1, rng.randrange(2, SEGMENT), rng.randrange(SEGMENT, 4 * SEGMENT)]))
        if key.startswith(WATCHED):
            with history.lock:
                others = [b for k, b in sorted(history.objects.items()) if k.startswith(WATCHED) and k != key]
                data = rng.choice(others) if others and rng.random() < 0.3 else rng.randbytes(16) + data
                digest = hashlib.sha256(data).hexdigest()
                history.watched_puts[digest] = history.watched_puts.get(digest, 0) + 1
            history.job_sent.set()  # the watch runs a job for it
        status, _ = s3.call("put_object", Bucket=BUCKET, Key=key, Body=data)
        done = status == 200
    else:
        status, _ = s3.call("delete_object", Bucket=BUCKET, Key=key)
        done = status == 204
    with history.lock:
        if done:
            history.objects_in_flight.pop(key, None)
            if data is None:
                history.objects.pop(key, None)
            else:
                history.objects[key] = data
            history.acked += 1
        elif status == 0 or status >= 500:
            history.objects_in_flight.setdefault(key, []).append(data)


def workload(http: Http, rng: random.Random, history: History, ops: int, module: str | None,
             gateway_down: threading.Event, victims: set[str], jobs: dict[str, str] | None = None,
             s3: S3 | None = None) -> None:
    """`ops` random operations through the gateway; every answer is recorded (a lost one as in flight).
    `victims`: the ids of the nodes this trial kills; `jobs`: the ids of the job fixtures (JOB_MODULES); `s3`: the
    gateway's S3 listener."""
    for n in range(ops):
        kind = rng.choices(["put", "get", "rm", "renew", "repair", "invoke", "job", "object", "s3-job", "replicated"],
                           [5, 3, 1, 1, 1, 2, 2, 3, 1, 1])[0]
        cap = None
        with history.lock:
            known = sorted(history.files)
        try:
            if kind == "put" or not known:
                data = rng.randbytes(_sizes(rng))
                op = f"put-{rng.getrandbits(32):08x}"
                with history.lock:
                    history.in_flight[op] = data
                status, answer = http.call("POST", "/v1/store/files?name=" + op, data)
                if status == 201:
                    cap = json.loads(answer)["capability"]
                    with history.lock:
                        history.files[cap] = data
                        history.in_flight.pop(op, None)
                        history.acked += 1
                elif status < 500 and status != 502:
                    with history.lock:
                        history.in_flight.pop(op, None)  # refused outright: nothing was stored
            elif kind == "get":
                cap = rng.choice(known)
                status, body = http.call("GET", f"/v1/store/files/{cap}")
                if status == 200:
                    with history.lock:
                        expected = history.files.get(cap)
                    if expected is not None and body != expected:
                        history.violations.append(f"get of {cap[:48]}… returned other bytes")
                    history.acked += 1
            elif kind == "rm":
                cap = rng.choice(known)
                with history.lock:
                    data = history.files.pop(cap)
                    history.in_flight[f"rm-{cap}"] = data
                status, _ = http.json("DELETE", f"/v1/store/files/{cap}")
                with history.lock:
                    if status == 200:
                        history.removed.add(cap)
                        history.in_flight.pop(f"rm-{cap}", None)
                        history.acked += 1
                    elif status < 500:  # refused: the file is still there
                        history.files[cap] = history.in_flight.pop(f"rm-{cap}")
            elif kind == "renew":
                status, _ = http.json("POST", f"/v1/store/files/{rng.choice(known)}/renew", {"duration": 7200})
                history.acked += status == 200
            elif kind == "repair":
                status, _ = http.json("POST", f"/v1/store/files/{rng.choice(known)}/repair")
                history.acked += status == 200
            elif kind == "invoke" and module:
                a, b = rng.randrange(1000), rng.randrange(1000)
                status, answer = http.json("POST", "/v1/compute/invoke",
                                           {"module": module, "function": "add", "args": [a, b]})
                got = [r.get("value") for r in answer.get("results", [])] if status == 200 else None
                if status == 200 and got != [a + b]:
                    history.violations.append(f"add {a} {b} returned {got}")
                history.acked += status == 200
            elif kind == "job" and jobs:
                run_job(http, rng, history, known, jobs)
            elif kind == "object" and s3:
                change_object(s3, rng, history)
            elif kind in ("s3-job", "replicated") and jobs:
                run_digest_job(http, rng, history, known, jobs, replicated=kind == "replicated")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # the gateway died: the operation's outcome is unknown (kept in flight)
        except HTTPException as err:  # an answer cut short after its headers
            if gateway_down.is_set():
                continue  # killed mid-answer (the mark is set before the kill)
            # A live gateway must finish what it started while at most m = 2 of the file's shares are gone.  A
            # put while a node was down doubles shares up on one node (6 shares, 5 nodes up): killing it and
            # another then takes 3, and the get rightly stops (the node says which shares it lost).
            try:
                lost = _shares_on(http, cap, victims) if kind == "get" and cap else 0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, HTTPException):
                lost = 0  # the listing failed too: a violation, unless the gateway was killed meanwhile
            if not gateway_down.is_set() and lost <= erasure.M:
                history.violations.append(f"{kind}: the live gateway cut its answer short ({err!r:.120})")


def check_store(data_dir: Path) -> list[str]:
    """A dead node's database as the crash left it: its used-bytes counter equals its shares' bytes."""
    db = plyvel.DB(str(data_dir / "db"))
    try:
        raw = db.get(keys.STORAGE_USED)
        counted = int.from_bytes(raw, "big") if raw else 0
        held = sum(ShareMeta.decode(v).stored_bytes for _, v in db.iterator(prefix=keys.SHARES))
    finally:
        db.close()
    return [] if counted == held else [f"{data_dir.name}: used counter {counted} != {held} bytes of shares held"]


def _answers(node: NodeProcess) -> bool:
    health = node.health()
    return bool(health) and health.get("status") in ("pass", "warn")


def wait_for(what: str, test, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():
            return True
        time.sleep(POLL_SECONDS)
    return False


def invariants(net: Devnet, history: History, s3: S3 | None = None) -> tuple[int, list[str]]:
    """(invariants checked, violations) once every node is back (a loaded machine answers slowly, not wrongly:
    the checks wait long before they call silence a violation)."""
    gateway = Http(net.first, CHECK_TIMEOUT)
    violations: list[str] = []
    checked = 0
    with history.lock:
        files, removed, in_flight = dict(history.files), set(history.removed), dict(history.in_flight)
    violations += _read_back(gateway, files)
    checked += len(files)
    status, listing = gateway.json("GET", "/v1/store/files")
    for record in listing.get("files", []) if status == 200 else []:
        cap = record["capability"]
        if record.get("name", "").startswith(("job:", "s3:")):
            continue  # a job's output or an object's file: held to the jobs' records and the objects
        checked += 1
        if cap in removed:
            violations.append(f"removed file {cap[:48]}… is listed")
        elif cap not in files:
            # A put whose answer was lost, or a file whose removal's answer was lost: either may be listed.
            lost = in_flight.get(record.get("name", ""))
            if lost is None:  # not `or`: an empty file's content is b"", which is falsy
                lost = in_flight.get(f"rm-{cap}")
            if lost is None:
                violations.append(f"file {cap[:48]}… is listed but was never acknowledged nor in flight")
            else:
                got_status, body = gateway.call("GET", f"/v1/store/files/{cap}")
                if got_status != 200 or body != lost:
                    kind = "rm" if record.get("name", "") not in in_flight else "put"
                    violations.append(f"file {cap[:48]}… listed after a {kind} whose answer was lost is unreadable "
                                      f"({got_status}: {body[:160]!r})")
    https = [Http(node, CHECK_TIMEOUT) for node in net]
    violations += _ledgers_verified(https)
    checked += len(https)
    # Balances sum to zero whenever no payment is half done (a payee has credited, its payer not yet debited).
    # Storage payments go on in the background, so the harness reads every node's pending payments and both
    # balances at once (one thread per read, as close to a snapshot as HTTP allows) until it catches a moment
    # with nothing pending anywhere: there the sum must be 0.
    checked += 1
    reads = [(http, path) for http in https
             for path in ("/v1/node/status", "/v1/ledger/accounts/client", "/v1/ledger/accounts/node")]

    def read(pair: tuple[Http, str]) -> dict:
        return pair[0].json("GET", pair[1])[1]

    quiet_sums: list[int] = []
    balanced = False
    deadline = time.monotonic() + CHECK_TIMEOUT
    with ThreadPoolExecutor(len(reads)) as readers:
        while time.monotonic() < deadline and not balanced and len(quiet_sums) < 20:
            answers = list(readers.map(read, reads))
            pending = sum(a.get("payments", {}).get("pending", 1) for a in answers[0::3])
            total = sum(a.get("balance", 0) for n, a in enumerate(answers) if n % 3)
            if pending == 0:
                balanced = total == 0
                quiet_sums.append(total)
            if not balanced:
                time.sleep(0.2)
    if not balanced:
        violations.append(f"the balances of all nodes sum to {quiet_sums} while no payment was pending, not 0"
                          if quiet_sums else f"payments still pending after {CHECK_TIMEOUT:.0f} s")
    checked += 1
    status, history_json = gateway.json("GET", "/v1/ledger/accounts/client/history?limit=10000")
    periods: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for entry in history_json.get("entries", []):
        parts = entry.get("job", "").split(":")
        if parts[0] == "store" and len(parts) == 5:
            periods.setdefault((parts[1], parts[2]), []).append((int(parts[3]), int(parts[4])))
    for (si, share), spans in periods.items():
        spans.sort()
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            if b0 < a1:
                violations.append(f"share {share} of {si[:16]} paid twice for {b0}..{min(a1, b1)}")
    watched: set[str] | None = None
    if s3 is not None:
        object_checked, object_violations = object_invariants(s3, history)
        watch_checked, watch_violations, watched = watch_invariants(s3, gateway, history)
        checked += object_checked + watch_checked
        violations += object_violations + watch_violations
    job_checked, job_violations = job_invariants(net, history, watched)
    return checked + job_checked, violations + job_violations


def _read_back(gateway: Http, files: dict[str, bytes]) -> list[str]:
    """Every acknowledged file (`files`: capability -> content) reads back byte-exact: a few at once, as a get waits
    on the holders more than it computes."""

    def read(cap: str) -> str | None:
        for _ in range(20):  # shares on nodes still starting answer a moment later
            status, body = gateway.call("GET", f"/v1/store/files/{cap}")
            if status == 200 and body == files[cap]:
                return None
            time.sleep(0.5)
        return f"acknowledged file {cap[:48]}… does not read back ({status})"

    with ThreadPoolExecutor(READERS) as readers:
        return [violation for violation in readers.map(read, files) if violation]


def _ledgers_verified(https: list[Http]) -> list[str]:
    """`ledger verify` passes on every node: each audits its own chains, side by side."""
    with ThreadPoolExecutor(len(https)) as verifiers:
        reports = list(verifiers.map(lambda http: http.json("GET", "/v1/ledger/verify"), https))
    return [f"{http.node.name}: ledger verify: {report.get('violations', report)}"
            for http, (status, report) in zip(https, reports) if status != 200 or not report.get("ok")]


def object_invariants(s3: S3, history: History) -> tuple[int, list[str]]:
    """Every object of BUCKET reads back through S3 as its last acknowledged put left it (or a change whose answer
    was lost), a deleted one stays deleted, and no other is listed."""
    with history.lock:
        allowed = {key: _object_contents(history, key) for key in set(history.objects) | set(history.objects_in_flight)}
    violations: list[str] = []
    answered, listed = _answer(lambda: set(s3.keys(BUCKET, "")))
    if not answered:
        return 1, [f"s3://{BUCKET} is not listed {CHECK_TIMEOUT:.0f} s after the restart"]
    for key in sorted(set(allowed) | listed):
        answered, got = _answer(lambda: s3.read(BUCKET, key))
        if not answered:
            violations.append(f"object s3://{BUCKET}/{key} does not read back {CHECK_TIMEOUT:.0f} s after the restart")
        elif got not in allowed.get(key, [None]):
            held = "no object" if got is None else f"{len(got)} bytes"
            violations.append(f"object s3://{BUCKET}/{key} holds {held}, not what was put "
                              f"({['none' if c is None else len(c) for c in allowed.get(key, [None])]})")
    return len(set(allowed) | listed), violations


def watch_invariants(s3: S3, gateway: Http, history: History) -> tuple[int, list[str], set[str]]:
    """(checked, violations, the capabilities TARGET's objects hold) once the watch has caught up: each object under
    WATCHED has its digest in TARGET under its key, TARGET holds nothing else there, and the watch ran at most once
    per change."""
    off: list[str] = []

    def caught_up() -> bool:
        off[:] = _watch_off(s3)
        return not off

    violations: list[str] = []
    if not wait_for("the watch caught up", caught_up, WATCH_TIMEOUT):
        status, answer = gateway.json("GET", "/v1/compute/watches")
        found = [w for w in answer.get("watches", []) if w.get("name") == WATCH] if status == 200 else []
        said = f" (backlog {found[0].get('backlog')}, last error {found[0].get('last_error')!r})" if found else ""
        violations += [f"watch {WATCH}, {WATCH_TIMEOUT:.0f} s after the restart{said}: {o}" for o in off]
    status, answer = gateway.json("GET", "/v1/compute/watches")
    with history.lock:
        changes = sum(history.watched_puts.values())
    for watch in answer.get("watches", []) if status == 200 else []:
        if watch.get("name") == WATCH and watch.get("runs", 0) > changes:
            violations.append(f"watch {WATCH} ran {watch['runs']} times for {changes} changes")
    watched: set[str] = set()
    for key in _answer(lambda: s3.keys(TARGET, WATCHED))[1] or []:
        status, record = gateway.json("GET", f"/v1/s3/buckets/{TARGET}/object?key={urllib.parse.quote(key)}")
        watched.update(part["cap"] for part in record.get("parts", []) if status == 200)
    return 2, violations, watched


def _answer(read):
    """(answered, what `read` returned): tried again while it raises OSError (a node still starting answers 503)."""
    got = []

    def test() -> bool:
        try:
            got.append(read())
        except OSError:
            return False
        return True

    return wait_for("an answer", test, CHECK_TIMEOUT), got[-1] if got else None


def _watch_off(s3: S3) -> list[str]:
    """How TARGET differs from the digests of the objects under WATCHED ([] once the watch has caught up)."""
    try:
        sources = {key: s3.read(BUCKET, key) for key in s3.keys(BUCKET, WATCHED)}
        targets = {key: s3.read(TARGET, key) for key in s3.keys(TARGET, WATCHED)}
    except OSError as err:
        return [str(err)]
    off = [f"s3://{TARGET}/{key} holds {'nothing' if targets.get(key) is None else repr(targets[key][:16])}, not "
           f"the digest of s3://{BUCKET}/{key}" for key, data in sorted(sources.items())
           if data is not None and targets.get(key) != _digest(data)]
    off += [f"s3://{TARGET}/{key} outlived its input (an orphan output)"
            for key in sorted(targets.keys() - sources.keys())]
    return off


def _unfinished(gateway: Http) -> list[dict]:
    """Every job record of the gateway's user, once none is running or storing any more (a start finishes those
    a stop cut short); [] with a violation's text if that never comes."""
    records: list[dict] = []

    def settled() -> bool:
        records.clear()
        status, listed = gateway.json("GET", "/v1/compute/jobs?limit=1000")
        for job in listed.get("jobs", []) if status == 200 else []:
            got, record = gateway.json("GET", f"/v1/compute/jobs/{job['id']}")
            if got != 200 or record.get("state") in ("running", "storing"):
                return False
            records.append(record)
        return status == 200

    return records if wait_for("jobs settled", settled, CHECK_TIMEOUT) else []


def job_invariants(net: Devnet, history: History, watched: set[str] | None = None) -> tuple[int, list[str]]:
    """(checked, violations) of the jobs' records against the store, their runs' provenance and the ledger.
    `watched`: the capabilities the watch's outputs in TARGET hold (its jobs' other outputs were replaced)."""
    gateway = Http(net.first, CHECK_TIMEOUT)
    violations: list[str] = []
    jobs = _unfinished(gateway)
    if not jobs and history.jobs:
        return 1, [f"jobs still running or storing (or unlisted) {CHECK_TIMEOUT:.0f} s after the restart"]
    checked = 0
    named: dict[str, str] = {}  # capability -> the job (and place) naming it
    replaced: dict[str, str] = {}  # capability -> the watch's job whose output no object of TARGET holds any more
    for job in jobs:
        jid = job["id"]
        for place in ("outputs", "replacing"):
            for out in job.get(place) or []:
                checked += 1
                cap = out["capability"]
                if cap in named:
                    violations.append(f"output {cap[:40]}… named twice: by {named[cap]} and job {jid[:16]} {place}")
                named[cap] = f"job {jid[:16]} {place}"
                if _watch_job(job) and cap not in (watched or set()):
                    replaced[cap] = f"job {jid[:16]}'s {out['name']}"
                    continue  # removed with the object that held it (below)
                status, body = gateway.call("GET", f"/v1/store/files/{cap}")
                if status != 200 or len(body) != out["size"] or hashlib.sha256(body).hexdigest() != out["sha256"]:
                    violations.append(f"job {jid[:16]}'s {place[:-1]} {out['name']} does not read back as recorded "
                                      f"({status}, {len(body)} of {out['size']} bytes)")
    status, listing = gateway.json("GET", "/v1/store/files")  # read once no job stores (its record read since)
    for record in listing.get("files", []) if status == 200 else []:
        if record.get("name", "").startswith("job:"):
            checked += 1
            if record["capability"] not in named:
                violations.append(f"stored file {record['name']} ({record['capability'][:40]}…) is no job's output "
                                  "(an orphan)")
    # The watch removes the file of an output it replaced with its object (the S3 front's collector finishes what a
    # kill -9 cut short): an output of the watch's no object holds is not stored for good.
    stored: set[str] = set()

    def collected() -> bool:
        status, listing = gateway.json("GET", "/v1/store/files")
        stored.clear()
        if status != 200:
            return False
        stored.update(record["capability"] for record in listing.get("files", []))
        return not stored & replaced.keys()

    if replaced and not wait_for("replaced outputs removed", collected, WATCH_TIMEOUT):
        violations += [f"watch {WATCH}: {replaced[cap]} ({cap[:40]}…) is held by no object of s3://{TARGET} but "
                       "still stored" for cap in sorted(stored & replaced.keys())]
    violations += _job_charges(net, gateway, jobs, history)
    return checked + len(jobs), violations


def _watch_job(job: dict) -> bool:
    """A job the watch ran (its spec has no env; the workload's jobs over objects have one)."""
    return not (job.get("spec") or {}).get("env") and \
        any((i.get("s3") or "").startswith(f"s3://{BUCKET}/{WATCHED}") for i in job.get("inputs") or [])


def _job_charges(net: Devnet, gateway: Http, jobs: list[dict], history: History) -> list[str]:
    """A job is charged once per run: its charge_total against its runs' provenance records (on the gateway, and
    on the providers for runs placed there), each local run covered by one ledger transfer of the right amount."""
    runs: list[dict[str, list[dict]]] = []  # per node: job id -> the records of its runs there
    for node in net:
        status, answer = Http(node, CHECK_TIMEOUT).json("GET", "/v1/compute/provenance?limit=1000")
        by_job: dict[str, list[dict]] = {}
        for signed in answer.get("records", []) if status == 200 else []:
            record = signed.get("record", {})
            if isinstance(record.get("job"), dict):
                by_job.setdefault(record["job"].get("id"), []).append(record)
        runs.append(by_job)
    violations: list[str] = []
    with history.lock:
        answered, lost, puts = dict(history.jobs), history.jobs_in_flight, dict(history.watched_puts)
    paid = _providers_paid(gateway, jobs)
    received: dict[str, dict[str, list[int]]] = {}  # node -> what its node account credited, by authorization
    for job in jobs:
        jid = job["id"]
        run = job.get("run") or jid  # a replicated job's runs name the run its replicas share, not the job asked
        local = runs[0].get(run, [])
        remote = [r for by_job in runs[1:] for r in by_job.get(run, [])]
        total, executions = job.get("charge_total", job.get("charge", 0)), job.get("executions", 0)
        local_sum, all_sum = sum(r["charge"] for r in local), sum(r["charge"] for r in local + remote)
        if not remote and (total != local_sum or executions != len(local)):
            violations.append(f"job {jid[:16]}: charge_total {total} over {executions} runs, but its {len(local)} "
                              f"runs' records charge {local_sum}")
        elif not local_sum <= total <= all_sum:
            violations.append(f"job {jid[:16]}: charge_total {total}, outside its local runs' {local_sum} and all "
                              f"its runs' {all_sum}")
        if _watch_job(job):
            read = (job.get("inputs") or [{}])[0].get("sha256", "")
            if executions > puts.get(read, 0):  # a job of the watch is its spec over its input's bytes
                violations.append(f"watch {WATCH}'s job {jid[:16]} ran {executions} times for {puts.get(read, 0)} "
                                  "puts of its input")
        elif not answered.get(jid, 0) <= executions <= answered.get(jid, 0) + lost:
            violations.append(f"job {jid[:16]}: {executions} runs recorded, {answered.get(jid, 0)} answered "
                              f"and {lost} lost")
        if (job.get("guarantee") or {}).get("replicas", 1) > 1:
            violations += _replicas_paid(net, job, [by_job.get(run, []) for by_job in runs], paid, received)
        if job.get("paid_on") and sum(p.get("charge", 0) for p in job["paid_on"]) != job.get("charge"):
            violations.append(f"job {jid[:16]}: its providers were paid {job['paid_on']} for a run charged "
                              f"{job.get('charge')}")
    violations += _local_runs_paid(gateway, {r["id"]: r for by_job in runs[:1] for rs in by_job.values() for r in rs})
    # What the ledger paid each provider of a job's latest run: its tab's one receipt, of the run's charge (read from
    # the whole chain: a devnet's history runs past the newest 10,000 entries the history route gives).
    for job in jobs:
        for tab in job.get("paid_on") or []:
            if paid.get(tab.get("authorization"), []) not in ([tab.get("charge")], [] if not tab.get("charge") else 0):
                violations.append(f"job {job['id'][:16]}: the tab of its run on {str(tab.get('provider'))[:16]} "
                                  f"paid {paid.get(tab.get('authorization'), [])}, not once its charge "
                                  f"{tab.get('charge')}")
    return violations


def _providers_paid(gateway: Http, jobs: list[dict], timeout: float = CHECK_TIMEOUT) -> dict[str, list[int]]:
    """What the gateway's client account paid, by authorization (`_paid_by_authorization`), once every tab a job's
    record says it owes a charge (`paid_on`) is paid, or `timeout` passed: a tab is closed up to its interval after
    its run and its receipt paid after that (a run of the watch's, as it catches up, ends a moment before the check)."""
    owed = {tab.get("authorization") for job in jobs for tab in job.get("paid_on") or [] if tab.get("charge")}
    paid: dict[str, list[int]] = {}

    def settled() -> bool:
        paid.clear()
        paid.update(_paid_by_authorization(gateway))
        return all(paid.get(authorization) for authorization in owed)

    settled() or wait_for("providers paid", settled, timeout)
    return paid


def _local_runs_paid(gateway: Http, charges: dict[str, dict], timeout: float = CHECK_TIMEOUT) -> list[str]:
    """Each local run (`charges`: its provenance record by id) covered by exactly one ledger transfer, each transfer
    the sum of the charges it covers.  A run's tab is settled up to its interval after the run, or at the next start
    once a kill -9 came first (from its owed record, written with the run's): a run recorded a moment before (the
    watch's, as it catches up) is waited for, not held unpaid, and judged once every run is paid or `timeout` passed."""
    read: list[tuple[dict[str, int], float, list[dict]]] = []

    def paid() -> bool:
        status, history_json = gateway.json("GET", f"/v1/ledger/accounts/client/history?limit={HISTORY}&expand=1")
        entries = history_json.get("entries", []) if status == 200 else []
        # The history gives the newest entries only: a run older than the oldest of them was paid before it.
        since = entries[-1].get("settled_at") or 0 if len(entries) >= HISTORY else 0
        covered: dict[str, int] = {}
        for entry in entries:
            for ref in entry.get("covered") or []:
                covered[ref] = covered.get(ref, 0) + 1
        read[:] = [(covered, since, entries)]
        return status == 200 and all(covered.get(ref) or _when(r) < since for ref, r in charges.items())

    paid() or wait_for("local runs paid", paid, timeout)
    covered, since, entries = read[-1]
    all_local = _all_charges(gateway)  # read after the history: every run a transfer covers is recorded by then
    violations: list[str] = []
    for entry in entries:
        refs = entry.get("covered") or []
        if refs and all(ref in all_local for ref in refs) and \
                sum(all_local[ref] for ref in refs) != -(entry.get("delta") or 0):
            violations.append(f"ledger entry {entry.get('seq')} paid {-(entry.get('delta') or 0)} for runs charged "
                              f"{sum(all_local[ref] for ref in refs)}")
    unpaid = [ref for ref, record in charges.items() if covered.get(ref, 0) != 1
              and not (covered.get(ref, 0) == 0 and _when(record) < since)]
    tabs = gateway.json("GET", "/v1/node/status")[1].get("tabs") if unpaid else None
    for ref in unpaid:
        waited = f" ({timeout:.0f} s on; the gateway's open tabs: {tabs})" if not covered.get(ref) else ""
        violations.append(f"local job run {ref} paid by {covered.get(ref, 0)} ledger transfers, not 1{waited}")
    return violations


def _replicas_paid(net: Devnet, job: dict, runs: list[list[dict]], paid: dict[str, list[int]],
                   received: dict[str, dict[str, list[int]]]) -> list[str]:
    """A replicated job pays the providers whose outputs agreed (as many as it asks at least), each once, and no
    other replica: `runs` are the records of its runs on each node (their tabs' authorizations in their deals).  No
    other replica is paid by the payer (`paid`), nor credits a receipt for its run (`received`, by node: read as
    needed)."""
    jid, paid_on = job["id"][:16], job.get("paid_on") or []
    providers = [tab.get("provider") for tab in paid_on]
    agreed = {r.get("provider") for r in job.get("replicas") or [] if r.get("paid")}
    violations: list[str] = []
    if len(set(providers)) != len(providers):
        violations.append(f"replicated job {jid}: a provider is paid twice ({providers})")
    if job.get("state") == "done" and (set(providers) != agreed or len(agreed) < job["guarantee"].get("agree", 1)):
        violations.append(f"replicated job {jid}: paid {len(providers)} providers, {len(agreed)} agreed "
                          f"({job['guarantee']['agree']} asked)")
    tabs = {tab.get("authorization") for tab in paid_on}
    for node, records in zip(net, runs):
        for record in records:
            authorization = (record.get("deal") or {}).get("authorization")
            if authorization in tabs:
                continue
            if node.name not in received:
                received[node.name] = _paid_by_authorization(Http(node, CHECK_TIMEOUT), "node")
            credited = [-amount for amount in received[node.name].get(authorization, [])]
            if paid.get(authorization) or credited:
                violations.append(f"replicated job {jid} ({job.get('state')}): its replica on {node.name}, not one "
                                  f"that agreed, was paid {paid.get(authorization, [])} and credited {credited}")
    return violations


def _when(record: dict) -> float:
    """When a provenance record's run was recorded (its ISO 8601 timestamp), in seconds since the epoch."""
    return datetime.fromisoformat(record.get("timestamp", "1970-01-01T00:00:00Z").replace("Z", "+00:00")).timestamp()


def _paid_by_authorization(http: Http, account: str = "client") -> dict[str, list[int]]:
    """What the node's client account paid for runs under each authorization, from its whole chain, oldest first (its
    node account: what it was paid, each amount negative): less what a receipt says was for compiling a module pushed
    to its provider (usage `compiles`, which the paying gateway holds to the price it computes itself)."""
    paid: dict[str, list[int]] = {}
    start: int | None = 1
    while start is not None:
        status, page = http.json("GET", f"/v1/ledger/accounts/{account}/chain?from={start}")
        if status != 200:
            break
        for entry in page.get("entries", []):
            delta, compiles = entry.get("delta") or 0, (entry.get("usage") or {}).get("compiles", 0)
            runs = delta + compiles if delta < 0 else delta - compiles if delta > 0 else 0  # the compile left out
            paid.setdefault(entry.get("authorization") or "", []).append(-runs)
        start = page.get("next")
    return paid


def _all_charges(http: Http) -> dict[str, int]:
    """The charge of every run (invoke or job) the node recorded, by provenance id."""
    status, answer = http.json("GET", "/v1/compute/provenance?limit=1000")
    return {s["record"]["id"]: s["record"].get("charge", 0) for s in answer.get("records", [])
            if status == 200 and "record" in s}


@dataclass
class TrialResult:
    seed: int
    acked: int
    faults: int
    checked: int
    violations: list[str]
    seconds: float


@dataclass
class Faults:
    """What a trial kills and when: `victims` (indexes of the devnet's nodes; 0 is the gateway), after `delay`
    seconds from the trial's start, or from its first job sent (if one comes within 10 s) when `after_a_job`."""

    victims: list[int]
    delay: float
    after_a_job: bool


def fault_plan(rng: random.Random, nodes: int) -> Faults:
    """The faults of a trial, the first draws of its seed's `rng` (the workload draws on from there)."""
    victims = rng.sample(range(nodes), rng.choice([1, 1, 2]))
    delay = rng.uniform(0.0, 2.0)
    after_a_job = rng.random() < 1 / 3
    if after_a_job:
        delay = rng.uniform(0.0, 0.6)
    return Faults(victims, delay, after_a_job)


def trial(net: Devnet, history: History, seed: int, module: str | None, ops: int = 14,
          jobs: dict[str, str] | None = None, s3: S3 | None = None) -> TrialResult:
    """One trial; `history` is the whole run's (the devnet keeps every earlier trial's files)."""
    rng = random.Random(seed)
    started = time.monotonic()
    acked_before = history.acked
    history.violations.clear()
    plan = fault_plan(rng, len(net))
    victims = [net[n] for n in plan.victims]
    victim_ids = {(node.health() or {}).get("serviceId", "") for node in victims}
    delay, after_a_job = plan.delay, plan.after_a_job
    history.job_sent.clear()
    gateway = Http(net.first)

    gateway_down = threading.Event()

    def inject() -> None:
        if after_a_job:
            history.job_sent.wait(10.0)
        time.sleep(delay)
        for node in victims:
            if node is net.first:
                gateway_down.set()  # before the kill, so the workload never sees the cut before the mark
            node.kill()

    def work() -> None:
        try:
            workload(gateway, rng, history, ops, module, gateway_down, victim_ids, jobs, s3)
        finally:
            history.job_sent.set()  # a workload that ended without a job sends none: the kill waits for it no more

    with ThreadPoolExecutor(2) as pool:
        faults = pool.submit(inject)
        pool.submit(work).result()
        faults.result()
    violations = list(history.violations)
    for node in victims:
        violations += check_store(node.data_dir)
    for node in victims:
        node.spawn()
    for node in victims:
        node.wait_listening(CHECK_TIMEOUT)
    wait_for("nodes up", lambda: all(_answers(node) for node in net), CHECK_TIMEOUT)
    checked, found = invariants(net, history, s3)
    violations += found
    return TrialResult(seed, history.acked - acked_before, len(victims), checked + len(victims), violations,
                       time.monotonic() - started)


PER_DEVNET = 25  # trials on one devnet: each trial re-reads every file of its devnet, so keep the history short


def run(trials: int, nodes: int = 6, seed: int | None = None, root: Path | None = None,
        out=print, per_devnet: int = PER_DEVNET, remote: bool = False) -> list[TrialResult]:
    """`trials` trials, `per_devnet` at a time on a fresh devnet; trial n has seed `seed + n`.  `remote`: every
    devnet's gateway offers no compute (else every other one's)."""
    seed = random.randrange(2**32) if seed is None else seed
    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="xsc-trials-")) if root is None else root
    results: list[TrialResult] = []
    out(f"{'trial':>5} {'seed':>10} {'acked':>6} {'faults':>6} {'checked':>8} {'violations':>10} {'s':>6}")
    try:
        for first in range(0, trials, per_devnet):
            numbers = range(first, min(trials, first + per_devnet))
            # Every other devnet's gateway offers no compute: its invokes and jobs run on the others, paid on tabs.
            _on_one_devnet(root / f"devnet-{first // per_devnet}", nodes, numbers, seed, results, out,
                           remote=remote or (first // per_devnet) % 2 == 1)
    finally:
        if own_root and not any(r.violations for r in results):
            shutil.rmtree(root, ignore_errors=True)
        elif own_root:
            out(f"kept the devnets' data dirs and logs for the violations: {root}")
    total = sum(len(r.violations) for r in results)
    out(f"{len(results)} trials, {sum(r.acked for r in results)} operations acknowledged, "
        f"{sum(r.faults for r in results)} faults injected, {sum(r.checked for r in results)} invariants "
        f"checked, {total} violations")
    return results


def _on_one_devnet(root: Path, nodes: int, numbers: range, seed: int, results: list[TrialResult], out,
                   remote: bool = False) -> None:
    envs = [{"XSC_MARKET_OFFER_COMPUTE": "false"} if remote and n == 0 else {} for n in range(nodes)]
    s3_port = free_port()
    envs[0]["XSC_NODE_S3_LISTEN"] = f"127.0.0.1:{s3_port}"  # the gateway answers S3 itself
    net = Devnet(root, nodes, env=ENV, envs=envs)
    try:
        net.start(timeout=120)
        net.wait_peered(timeout=120)
        status, answer = Http(net.first).call("POST", "/v1/modules", ADD_WASM.read_bytes())
        module = json.loads(answer)["id"] if status in (200, 201) else None
        jobs = {}
        for name in JOB_MODULES:
            status, answer = Http(net.first).call("POST", "/v1/modules?wasi=true", (WASM / f"{name}.wasm").read_bytes())
            if status not in (200, 201):
                raise RuntimeError(f"the gateway refused the {name} fixture ({status}: {answer[:200]!r})")
            jobs[name] = json.loads(answer)["id"]
        s3 = _watching(net, s3_port, jobs["sha256"])
        history = History()
        out(f"devnet {root.name}: invokes and jobs run on "
            f"{'the other nodes' if remote else 'any node (the market places them)'}")
        for n in numbers:
            result = trial(net, history, seed + n, module, jobs=jobs, s3=s3)
            results.append(result)
            out(f"{n + 1:>5} {result.seed:>10} {result.acked:>6} {result.faults:>6} {result.checked:>8} "
                f"{len(result.violations):>10} {result.seconds:>6.1f}")
            for violation in result.violations:
                out(f"      seed {result.seed}: {violation}  (replay: python -m bench.trials --trials 1 "
                    f"--seed {result.seed}{' --remote' if remote else ''})")
        out(_jobs_seen(net, history))
    finally:
        net.stop()


def _watching(net: Devnet, port: int, sha256: str) -> S3:
    """An S3 key for the gateway's user, BUCKET and TARGET, and the watch: the SHA-256 fixture over each object under
    WATCHED, its stdout the object of TARGET under the same key."""
    created = run_xsc("--data-dir", str(net.first.data_dir), "s3", "keys", "create", "--json")
    if created.returncode != 0:
        raise RuntimeError(f"xsc s3 keys create: {created.stderr[-300:]}")
    s3 = S3(f"http://127.0.0.1:{port}", json.loads(created.stdout))
    for bucket in (BUCKET, TARGET):
        status, answer = s3.call("create_bucket", Bucket=bucket)
        if status != 200:
            raise RuntimeError(f"the gateway refused bucket {bucket} ({status}: {answer.get('Error')})")
    status, answer = Http(net.first).json("POST", "/v1/compute/watches", {
        "name": WATCH, "spec": {"module": sha256, "argv": ["/in/data"], "outputs": False, "stdout_to_store": True},
        "on": f"s3://{BUCKET}/{WATCHED}", "to": f"s3://{TARGET}/{WATCHED}"})
    if status != 201:
        raise RuntimeError(f"the gateway refused the watch ({status}: {answer})")
    return s3


def _jobs_seen(net: Devnet, history: History) -> str:
    """What the devnet's jobs did: how many, run how often, where their latest runs were, how many outputs; how many
    were replicated (and how many replicas were paid), what the watch did."""
    gateway = Http(net.first, CHECK_TIMEOUT)
    status, listed = gateway.json("GET", "/v1/compute/jobs?limit=1000")
    jobs = [gateway.json("GET", f"/v1/compute/jobs/{j['id']}")[1] for j in listed.get("jobs", [])] \
        if status == 200 else []
    here = (net.first.health() or {}).get("serviceId")
    local = sum(j.get("provider") == here for j in jobs)
    replicated = [j for j in jobs if (j.get("guarantee") or {}).get("replicas", 1) > 1]
    status, answer = gateway.json("GET", "/v1/compute/watches")
    watches = [w for w in answer.get("watches", []) if w.get("name") == WATCH] if status == 200 else []
    return (f"      {len(jobs)} jobs, {sum(j.get('executions', 0) for j in jobs)} runs "
            f"({sum(j.get('executions', 0) > 1 for j in jobs)} jobs run again), latest runs on the gateway "
            f"{local}, elsewhere {len(jobs) - local}, "
            f"{sum(len(j.get('outputs') or []) for j in jobs)} outputs, "
            f"{sum(len(j.get('replacing') or []) for j in jobs)} replaced outputs kept; answers "
            f"{dict(sorted(history.job_answers.items()))}, {history.jobs_in_flight} lost\n"
            f"      {len(replicated)} replicated jobs ({sum(j.get('state') == 'done' for j in replicated)} done, "
            f"{sum(len(j.get('paid_on') or []) for j in replicated)} replicas paid, "
            f"{sum('error' in r for j in replicated for r in j.get('replicas') or [])} lost); watch {WATCH}: "
            f"{', '.join(f'{k} {w.get(k)}' for w in watches for k in ('runs', 'skips', 'failures'))} for "
            f"{sum(history.watched_puts.values())} changes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--per-devnet", type=int, default=PER_DEVNET, help="trials on one devnet before a fresh one")
    parser.add_argument("--remote", action="store_true",
                        help="every devnet's gateway offers no compute (its invokes and jobs run on the others)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    results = run(args.trials, args.nodes, args.seed, per_devnet=args.per_devnet, remote=args.remote)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    raise SystemExit(1 if any(r.violations for r in results) else 0)


if __name__ == "__main__":
    main()
