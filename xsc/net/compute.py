"""A paid invoke on another node, client side: the call with its authorization, and the module if missing.

    POST /v1/peer/compute/invoke  {"call", "price", "authorization", "deal"} -> {"run", "receipt"[, "trap"]}
    POST /v1/peer/compute/invoke  {..., "tab": true} -> {"run", "tab": {"authorization", "total", "count"}[, "trap"]}
    POST /v1/peer/compute/invokes {"calls": [{..., "tab": true}, ...]} -> {"results": [{"status": 200, "answer": {...}}
                                  | {"status": 4xx, "problem": {"code", "detail", ...}}, ...]}: one per call, in order
    POST /v1/peer/compute/tabs/close  {"authorization"} -> {"receipt"}: the provider's receipt for the tab's total
    GET  /v1/peer/compute/provenance/{id} -> the provider's signed record of a run, to the node that paid for it
    PUT  /v1/peer/modules[?wasi=true]   the wasm bytes (content-addressed: its id is its hash)

`InvokeBatcher` sends a gateway's tab calls to one provider **self-clocked**: a call to a provider with no
request in flight goes at once, alone (the single-call route: a lone call waits for nothing, and an older
peer understands it); calls that come while a request to that provider is in flight queue, and go together
as ONE signed request (at most MAX_BATCH_CALLS calls, MAX_BATCH_BYTES bytes) as soon as it returns: the batch
is whatever came during one round trip.  Fewer, bigger batches (each request costs both nodes a signed round
trip): when a request returns with nothing else in flight, the calls it carried plus those queued then are
EXPECTED back (answered callers tend to call again), and the queue, or a call on the idle lane within `gather`
of that return, waits until that many are queued (or a full batch), `gather` at most (the node: GATHER): eight
callers go as one batch per round, not as two groups that alternate.  A call to a lane idle for longer, or
whose last request carried one call (one caller), goes at once.  Queued calls wait STALL at most for a request
in flight (a long call may be in flight, up to its timeout): then they go anyway, as one more request in
flight.  Each call in a batch is a whole tab call (its own authorization, price and deal): the provider checks
each separately and answers each separately.  What a provider answers is checked call by call: an answer that
is not a well-formed run or refusal (a 4xx, or a 503: busy, out of credit) counts as lost (the call may have run:
the gateway keeps its budget held until the tab is paid, as for a cut connection).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import codec
from ..errors import MAX_CODE, PeerError, PeerMisbehaved, PeerRefused, PeerUnavailable, PeerUnreachable, shown
from ..tasks import stop
from .peer_client import EncodedJson, PeerClient, PeerResponse

log = logging.getLogger(__name__)

INVOKE_PATH = "/v1/peer/compute/invoke"
INVOKES_PATH = "/v1/peer/compute/invokes"
MODULES_PATH = "/v1/peer/modules"
TAB_CLOSE_PATH = "/v1/peer/compute/tabs/close"
PROVENANCE_PATH = "/v1/peer/compute/provenance/{id}"
MAX_BATCH_CALLS = 32  # calls in one batch (a provider refuses more: 400)
MAX_BATCH_BYTES = 256 * 1024  # bytes of one batch's body (a provider refuses more: 413); a larger call goes alone
STALL = 0.025  # seconds queued calls wait for a request in flight to return, at most (a long call is in flight)
GATHER = 0.002  # seconds a queue waits, at most, for the callers of a returned request to call again (the node's)
# Providers whose lanes are kept at most: past it the least recently used idle lanes go (nothing in flight, queued
# or timed); one met again starts afresh.  The providers called are whoever the matching or a stranger's provider
# records name: a lane stayed for each of them.
MOST_LANES = 1024
# Bytes of a provider's answer read at most.  A call's answer: its run's stdout and stderr (at most OUTPUT_KEPT bytes
# each, compute/wasi_io.py: OUTPUT_CAP) as JSON text, up to 6 bytes a byte (a control character is \u00XX), its
# record's other fields and a trap's words (RUN_FIELDS), and what the call sent that the record names again (its
# function); a batch's: each of its calls' answers.  A longer answer is the provider's, not an honest one: the calls
# count as lost (they may have run).
OUTPUT_KEPT = 64 * 1024
RUN_FIELDS = 64 * 1024
MODULE_ANSWER = 4 * 1024  # a module pushed: its id and whether it was new
# A push is answered once the provider has compiled the module, in a child at a lower priority bounded by CPU time
# (compute/compiler.py): on a busy provider that takes far longer on the wall than a request, up to ten times its
# CPU budget (10 s by default).  A push waits that long, not the request timeout.
PUSH_TIMEOUT = 100.0
TAB_CLOSE_ANSWER = 16 * 1024  # a tab closed: its receipt in hex (ledger/receipts.py: RECEIPT_ANSWER)
# A run's signed record: what its call sent (its arguments, at most a request's bytes), its results and a trap's words
# (RUN_FIELDS) and its batch's inclusion proof.
RECORD_ANSWER = 1024**2 + RUN_FIELDS


def invoke_answer_bound(sent: int, calls: int = 1) -> int:
    """The most bytes an honest provider answers `calls` calls sent in a body of `sent` bytes with."""
    return calls * (2 * 6 * OUTPUT_KEPT + RUN_FIELDS) + sent


async def post_invoke(client: PeerClient, url: str, provider: str, body: dict, wasm: Callable[[], bytes],
                      wasi: bool) -> dict[str, Any]:
    """Ask `provider` to run the call; a provider that lacks the module is sent it (`wasm()`) and asked once more.
    Returns its answer, checked to hold a run and a receipt (the receipt itself: Payments.complete)."""
    entry = EncodedJson(codec.dumps(body))
    try:
        response = await _invoke(client, url, provider, entry)
    except PeerRefused as err:
        if err.details.get("peer_code") != "module-not-found":
            raise
        await push_module(client, url, provider, wasm, wasi)
        response = await _invoke(client, url, provider, entry)
    return _checked(url, response, "tab" if body.get("tab") else "receipt")


async def _invoke(client: PeerClient, url: str, provider: str, entry: EncodedJson) -> PeerResponse:
    """One call's answer, read no further than an honest one goes: longer, or a server error (the fault may have
    come after its run was recorded), the call counts as lost, as a call of a batch answered so does; a 503 is a
    refusal (`_refused`)."""
    try:
        return await client.request(url, "POST", INVOKE_PATH, json=entry, to=provider, kept=True,
                                    max_size=invoke_answer_bound(len(entry)))
    except PeerRefused as err:
        if "answer_limit" in err.details:
            raise _lost(url, err.message) from None
        raise _refused(url, err) from None


def _refused(url: str, err: PeerRefused) -> PeerError:
    """What a provider's error status says of calls: a 4xx refused them before they ran, and so does a 503 (busy,
    out of credit: PeerUnavailable, worth asking again); any other 5xx may have come after a run was recorded, so
    they count as lost.  A 503 is believed: a provider that ran a call and says it did not only loses its pay."""
    status = err.details.get("peer_status")
    if status == PeerUnavailable.status:
        return PeerUnavailable(err.message, url=url, **{k: v for k, v in err.details.items() if k != "url"})
    if isinstance(status, int) and status >= 500:
        return _lost(url, err.message)
    return err


async def push_module(client: PeerClient, url: str, provider: str, wasm: Callable[[], bytes], wasi: bool,
                      charge: Callable[[bytes], str | None] | None = None) -> None:
    """Send `provider` a module it asked for (`wasm()`).  `charge(module bytes)`: the tab (its authorization id hex)
    its compile is to be charged on, made ready to pay it before the push is sent; None: no tab is named (the
    provider then charges it on this node's trust line there)."""
    data = wasm()
    tab = charge(data) if charge is not None else None
    query = "&".join((["wasi=true"] if wasi else []) + ([f"tab={tab}"] if tab is not None else []))
    await client.request(url, "PUT", MODULES_PATH + (f"?{query}" if query else ""), data=data, to=provider,
                         max_size=MODULE_ANSWER, timeout=max(client.timeout, PUSH_TIMEOUT))


def _shaped(answer: Any, paid_by: str) -> bool:
    """Whether a call's answer holds a run and what pays for it (a tab's entry, or a receipt)."""
    return isinstance(answer, dict) and isinstance(answer.get(paid_by), (str, dict)) and isinstance(answer.get("run"),
                                                                                                     dict)


def _checked(url: str, response: PeerResponse, paid_by: str) -> dict[str, Any]:
    answer = response.json()
    if not _shaped(answer, paid_by):
        raise response.shapeless(f"provider {url} answered an invoke without a run and a {paid_by}", url=url)
    return answer


async def close_tab(client: PeerClient, url: str, provider: str, authorization_hex: str,
                    check: Callable[[PeerResponse], Any] | None = None) -> Any:
    """Ask `provider` for its receipt of everything it ran under a tab's authorization: its answer, or what
    `check(response)` makes of it (ledger/receipts.py: `answered_receipt`, which strikes a receipt that does not
    check)."""
    response = await client.request(url, "POST", TAB_CLOSE_PATH, json={"authorization": authorization_hex}, to=provider,
                                    kept=True, max_size=TAB_CLOSE_ANSWER)
    answer = response.json()
    if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str):
        raise response.shapeless(f"provider {url} closed a tab without a receipt", url=url)
    return answer if check is None else check(response)


async def fetch_record(client: PeerClient, url: str, provider: str, provenance_id: str) -> Any:
    """`provider`'s signed record of the run `provenance_id` it made for this node (checked by the caller)."""
    response = await client.request(url, "GET", PROVENANCE_PATH.format(id=provenance_id), to=provider, kept=True,
                                    max_size=RECORD_ANSWER)
    return response.json()


# --- self-clocked batches of tab calls ------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Sending:
    """A tab call given to `InvokeBatcher.send`: `future` its answer (or what it raised), resolved by the batcher;
    `sent` whether it is in a request, or was and may run (a provider that answered it lacks the module ran nothing:
    the call waits for the module's push, not sent, until it goes again).  Cancelling `future` while the call is not
    sent takes it back: it is left out of its batch, or not sent again once the module is pushed.  Once it is sent,
    its caller may go away and still have its answer: `late`, set as `future` is cancelled, is then told what the
    call was answered (or what its request raised) in its stead."""

    entry: bytes  # the call's body, encoded
    module: str
    wasm: Callable[[], bytes]
    wasi: bool
    future: asyncio.Future
    sent: bool = False
    pushed: bool = False  # its module was pushed once: a second module-not-found is the answer
    late: Callable[[Any], None] | None = None
    charge: Callable[[bytes], str | None] | None = None  # the tab a push of its module names (`push_module`)

    def unwanted(self) -> bool:
        """Taken back by its caller, or its answer told already."""
        return self.future.done() and self.late is None


@dataclass
class _Lane:
    """The calls to one provider: the requests in flight, and the calls that wait for one of them to return."""

    url: str
    flying: int = 0  # requests in flight
    single_only: bool = False  # the provider does not know the batch route (an older peer)
    queue: deque[Sending] = field(default_factory=deque)
    stall: asyncio.TimerHandle | None = None  # sends the queue if no request returns in time
    expect: int = 0  # calls expected: the last request's calls plus those queued when it returned
    returned: float = float("-inf")  # when it returned (loop time)
    gather: asyncio.TimerHandle | None = None  # sends the gathered queue when the wait is over


def _lost(url: str, why: str) -> PeerUnreachable:
    """A call whose answer did not come back well formed: it may have run (its budget stays held until paid)."""
    return PeerUnreachable(f"provider {url}: {why}", url=url, reason=why, sent=True)


def _unsent(url: str) -> PeerUnreachable:
    return PeerUnreachable(f"provider {url}: the node stopped before the call was sent", url=url, sent=False)


class InvokeBatcher:
    """Tab calls to providers, batched per provider while a request to it is in flight (module docstring).

    `stall`: seconds queued calls wait for a request in flight to return, at most; then they go anyway, as one
    more request in flight (a long call in flight, up to its timeout, must not hold up the calls behind it).
    `gather`: seconds a queue waits, at most, for the callers of a request that returned to call again (0: none
    waits; a call to a lane with nothing in flight goes at once).
    `before_send`: called just before each request carrying calls is sent: what must be on the payer's disk before
    a provider may run them (the gateway's tallies of its tabs) is written there, once for the whole batch."""

    def __init__(self, client: PeerClient, *, max_calls: int = MAX_BATCH_CALLS, max_bytes: int = MAX_BATCH_BYTES,
                 stall: float = STALL, gather: float = 0.0, before_send: Callable[[], None] = lambda: None) -> None:
        self.client, self.max_calls, self.max_bytes, self.stall = client, max_calls, max_bytes, stall
        self.gather = gather
        self.before_send = before_send
        self._lanes: OrderedDict[str, _Lane] = OrderedDict()  # the least recently used first
        self._pushes: dict[tuple[str, str], asyncio.Future] = {}
        self._batches: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0  # batch requests sent (status, tests)
        self.batched = 0  # calls sent in them
        self.stalled = 0  # queues sent before a request in flight returned
        self.gathered = 0  # queues that waited for the callers of a returned request (status, tests)

    def status(self) -> dict[str, int]:
        return {"batches": self.batches, "batched_calls": self.batched, "stalled": self.stalled,
                "gathered": self.gathered}

    async def close(self) -> None:
        """Stop sending: batches in flight are abandoned (their calls count as lost, the queued ones as not sent)."""
        self._closed = True
        for lane in self._lanes.values():
            self._fail_queue(lane)
        await stop(*self._batches, *self._pushes.values())  # (a call waiting for a push: not sent)

    def send(self, url: str, provider: str, body: dict, wasm: Callable[[], bytes], wasi: bool,
             charge: Callable[[bytes], str | None] | None = None) -> Sending:
        """Ask `provider` to run one tab call (`body`, with "tab": true): its answer, checked to hold a run and a
        tab, comes on the `Sending`'s future.  A provider that lacks the module is sent it (`wasm()`, one push per
        module at a time, its compile charged on the tab `charge` names: `push_module`) and asked again, once.  No
        task is started for the call: it goes with a request's."""
        future = asyncio.get_running_loop().create_future()
        sending = Sending(codec.dumps(body), str(body["call"]["module"]), wasm, wasi, future, charge=charge)
        self._go(url, provider, sending)
        return sending

    async def invoke(self, url: str, provider: str, body: dict, wasm: Callable[[], bytes],
                     wasi: bool) -> dict[str, Any]:
        """`send`'s answer, awaited (cancelled: the call is taken back unless it was sent, and its answer dropped)."""
        return await self.send(url, provider, body, wasm, wasi).future

    def _go(self, url: str, provider: str, sending: Sending) -> None:
        if self._closed:
            self._settle(sending, _unsent(url))
            return
        lane = self._lanes.get(provider)
        if lane is None or lane.url != url:
            self._lanes.pop(provider, None)
            self._prune_lanes()
            lane = self._lanes[provider] = _Lane(url)
        else:
            self._lanes.move_to_end(provider)
        if lane.single_only or len(sending.entry) > self.max_bytes // 2:
            self._start(provider, lane, [sending], counted=False)
        elif lane.gather is not None:  # the queue waits for the expected callers: this is one of them
            lane.queue.append(sending)
            if len(lane.queue) >= min(lane.expect, self.max_calls):  # all came back, or a full batch
                self._flush(provider, lane)
        elif lane.flying:  # goes with the next batch, when a request in flight returns
            lane.queue.append(sending)
            if lane.stall is None:
                lane.stall = asyncio.get_running_loop().call_later(self.stall, self._stalled, provider, lane)
        elif lane.expect > 1 and (waited := asyncio.get_running_loop().time() - lane.returned) < self.gather:
            lane.queue.append(sending)  # the callers of the request that returned may follow
            self.gathered += 1
            lane.gather = asyncio.get_running_loop().call_later(self.gather - waited, self._gathered, provider, lane)
        else:
            self._start(provider, lane, [sending])  # a lone call goes at once

    def _answered(self, url: str, provider: str, sending: Sending, result: dict[str, Any] | BaseException) -> None:
        """`result` is what the provider answered `sending` (or what its request raised)."""
        if sending.unwanted():  # its caller went away, and took its answer with it
            return
        if isinstance(result, PeerRefused) and result.details.get("peer_code") == "module-not-found" and \
                not sending.pushed:
            sending.sent, sending.pushed = False, True  # it ran nothing: it waits for the push
            self._push(url, provider, sending)
        else:
            self._settle(sending, result)

    @staticmethod
    def _settle(sending: Sending, result: dict[str, Any] | BaseException) -> None:
        if sending.late is not None:
            late, sending.late = sending.late, None
            late(result)
        elif isinstance(result, BaseException):
            sending.future.set_exception(result)
        else:
            sending.future.set_result(result)

    def _push(self, url: str, provider: str, sending: Sending) -> None:
        key = (provider, sending.module)
        pushing = self._pushes.get(key)
        if pushing is None:  # calls of one batch that all lacked the module push it once
            pushing = self._pushes[key] = asyncio.ensure_future(push_module(self.client, url, provider,
                                                                            sending.wasm, sending.wasi, sending.charge))
            pushing.add_done_callback(lambda _: self._pushes.pop(key, None))
        pushing.add_done_callback(lambda done: self._pushed(url, provider, sending, done))

    def _pushed(self, url: str, provider: str, sending: Sending, pushing: asyncio.Future) -> None:
        if sending.unwanted():  # its caller went away while it waited: it is not sent again
            return
        if pushing.cancelled():  # the node stops
            self._settle(sending, _unsent(url))
        elif pushing.exception() is not None:
            self._settle(sending, pushing.exception())
        else:
            self._go(url, provider, sending)

    def lanes(self) -> int:
        """Providers whose lanes are kept (status, tests)."""
        return len(self._lanes)

    def _prune_lanes(self) -> None:
        passed = 0  # lanes in use moved to the newest end: each passed once a prune
        while len(self._lanes) >= MOST_LANES and passed < len(self._lanes):  # (room for one more)
            provider, lane = next(iter(self._lanes.items()))
            if lane.flying or lane.queue or lane.stall is not None or lane.gather is not None:
                self._lanes.move_to_end(provider)
                passed += 1
                continue
            del self._lanes[provider]

    def _returned(self, provider: str, lane: _Lane, carried: int) -> None:
        """A request in flight carrying `carried` calls returned: what queued meanwhile goes now, as one batch;
        or, nothing else in flight, once the request's callers called again too (`gather` at most)."""
        lane.flying -= 1
        lane.expect, lane.returned = carried + len(lane.queue), asyncio.get_running_loop().time()
        if not lane.queue:
            return
        if lane.flying or not self.gather or self._closed or lane.gather is not None or \
                len(lane.queue) >= self.max_calls:  # a full batch waits for nobody
            self._flush(provider, lane)
            return
        if lane.stall is not None:
            lane.stall.cancel()
            lane.stall = None
        self.gathered += 1
        lane.gather = asyncio.get_running_loop().call_later(self.gather, self._gathered, provider, lane)

    def _gathered(self, provider: str, lane: _Lane) -> None:
        lane.gather = None
        if lane.queue:
            self._flush(provider, lane)

    def _stalled(self, provider: str, lane: _Lane) -> None:
        lane.stall = None
        if lane.queue:
            self.stalled += 1
            self._flush(provider, lane)

    def _flush(self, provider: str, lane: _Lane) -> None:
        self._stop_timers(lane)
        if self._closed:
            self._fail_queue(lane)
            return
        taken = self._take(lane)
        if lane.queue:  # more than one batch holds: the rest waits for the next return (or the stall)
            lane.stall = asyncio.get_running_loop().call_later(self.stall, self._stalled, provider, lane)
        if taken:
            self._start(provider, lane, taken)

    def _start(self, provider: str, lane: _Lane, taken: list[Sending], counted: bool = True) -> None:
        """Send `taken` in one request (a lone call on the single-call route), `counted` in flight on its lane."""
        for sending in taken:
            sending.sent = True
        if counted:
            lane.flying += 1
        task = asyncio.create_task(self._send_batch(provider, lane, taken, counted))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _send_batch(self, provider: str, lane: _Lane, taken: list[Sending], counted: bool) -> None:
        url, results = lane.url, None
        try:
            results = await self._batch(lane, provider, taken)
        except Exception as err:  # (the tallies' write before it failed): each caller is told
            results = [err] * len(taken)
        finally:
            if results is None:  # cancelled (the node stops): what was sent may have run
                results = [_lost(url, "the node stopped before the answer came") for _ in taken]
            for sending, result in zip(taken, results):
                self._answered(url, provider, sending, result)
            if counted:
                self._returned(provider, lane, len(taken))

    @staticmethod
    def _stop_timers(lane: _Lane) -> None:
        for timer in (lane.stall, lane.gather):
            if timer is not None:
                timer.cancel()
        lane.stall = lane.gather = None

    def _fail_queue(self, lane: _Lane) -> None:
        self._stop_timers(lane)
        for item in lane.queue:
            if not item.unwanted():
                self._settle(item, _unsent(lane.url))
        lane.queue.clear()

    def _take(self, lane: _Lane) -> list[Sending]:
        taken: list[Sending] = []
        size = len(b'{"calls":[]}')
        while lane.queue and len(taken) < self.max_calls and size + len(lane.queue[0].entry) + 1 <= self.max_bytes:
            item = lane.queue.popleft()
            if item.unwanted():  # its caller went away before it was sent: nothing of it is sent
                continue
            size += len(item.entry) + 1
            taken.append(item)
        return taken

    async def _batch(self, lane: _Lane, provider: str, taken: list[Sending]) -> list[dict[str, Any] | PeerError]:
        if len(taken) == 1:
            return [await self._settled(self._one(lane.url, provider, taken[0].entry))]
        return await self._post_batch(lane, provider, [sending.entry for sending in taken])

    @staticmethod
    async def _settled(coroutine) -> dict[str, Any] | PeerError:
        try:
            return await coroutine
        except PeerError as err:
            return err

    async def _one(self, url: str, provider: str, entry: bytes) -> dict[str, Any]:
        self.before_send()
        response = await _invoke(self.client, url, provider, EncodedJson(entry))
        try:
            return _checked(url, response, "tab")
        except PeerMisbehaved:  # answered (struck), not with a run: it may have run, as a call of a batch answered so
            raise _lost(url, "it answered a call without a run and a tab") from None

    async def _post_batch(self, lane: _Lane, provider: str, entries: list[bytes]) -> list[dict[str, Any] | PeerError]:
        url = lane.url
        body = EncodedJson(b'{"calls":[' + b",".join(entries) + b"]}")
        self.batches += 1
        self.batched += len(entries)
        self.before_send()
        try:
            response = await self.client.request(url, "POST", INVOKES_PATH, json=body, to=provider, kept=True,
                                                 max_size=invoke_answer_bound(len(body), len(entries)))
        except PeerRefused as err:
            if "answer_limit" in err.details:  # answered past what an honest provider says: the calls may have run
                return [_lost(url, err.message) for _ in entries]
            status = err.details.get("peer_status")
            if status in (404, 405) and err.details.get("peer_code") in ("not-found", "method-not-allowed"):
                log.info("provider %s does not take batches of calls: sending them one by one", provider)
                lane.single_only = True  # an older peer: nothing ran
                return list(await asyncio.gather(*(self._settled(self._one(url, provider, e)) for e in entries)))
            if isinstance(status, int) and status >= 500 and status != PeerUnavailable.status:  # after what?
                return [_lost(url, f"the batch failed ({err.message})") for _ in entries]
            return [copy.copy(_refused(url, err)) for _ in entries]  # refused whole before anything ran
        except PeerError as err:
            return [copy.copy(err) for _ in entries]
        return _results(url, response, len(entries))


def _results(url: str, response: PeerResponse, count: int) -> list[dict[str, Any] | PeerError]:
    """A provider's answer to a batch, call by call: a run, a refusal, or lost (anything else)."""
    lost = f"it answered a batch of {count} calls without {count} results"
    try:
        answer = response.json()
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != count:
            raise response.shapeless(f"provider {url} {lost}")
    except PeerMisbehaved:  # struck; any of its calls may have run
        return [_lost(url, lost) for _ in range(count)]
    out: list[dict[str, Any] | PeerError] = []
    unshaped = 0  # calls answered 200 without a run: lost, and the answer struck once for them all
    for result in results:
        status = result.get("status") if isinstance(result, dict) else None
        if status == 200:
            if _shaped(result.get("answer"), "tab"):
                out.append(result["answer"])
            else:  # it may have run
                unshaped += 1
                out.append(_lost(url, "it answered a call without a run and a tab"))
        elif type(status) is int and (400 <= status < 500 or status == PeerUnavailable.status) \
                and isinstance(result.get("problem"), dict):
            problem = result["problem"]
            code, detail = str(problem.get("code", "http-error"))[:1000], str(problem.get("detail", ""))[:10_000]
            out.append(_refused(url, PeerRefused(f"peer {url} refused POST {INVOKE_PATH}: {shown(detail)}", url=url,
                                                 peer_status=status, peer_code=shown(code, MAX_CODE))))
        else:  # a server error, or nothing sensible: it may have run
            out.append(_lost(url, f"it answered a call of a batch with status {status!r}"))
    if unshaped:
        response.shapeless(f"provider {url} answered {unshaped} of a batch's {count} calls without a run and a tab")
    return out


__all__ = ["GATHER", "INVOKES_PATH", "INVOKE_PATH", "InvokeBatcher", "MAX_BATCH_BYTES", "MAX_BATCH_CALLS",
           "MODULES_PATH", "PROVENANCE_PATH", "Sending", "TAB_CLOSE_PATH", "close_tab", "fetch_record",
           "invoke_answer_bound", "post_invoke", "push_module"]
