"""Batches of remote tab calls (net/compute.py: InvokeBatcher, POST /v1/peer/compute/invokes).

The provider's side on a real node, attacked with signed requests: the batch is bounded before anything is
parsed or run (too many calls, too many bytes), and each call is checked and run as if it came alone: a
malformed call, a call on another node's or a forged authorization, on a closed tab or past its tab's cap, or
one that traps, fails alone while the others run.  The gateway's side against a fake provider (every answer
is hostile): self-clocked batches, bounded, answers checked call by call, an older peer served one by one.
And two real nodes: concurrent invokes go in batches and are paid exactly."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from tests.support.attacks import INVOKE_PRICE
from tests.support.compute import deploy, invoke, peer_with_provider, wasm
from tests.support.waiting import eventually_async

from xsc.compute.provider_tabs import compile_price
from xsc.compute.service import InvokeCall
from xsc.errors import PeerRefused, PeerUnavailable, PeerUnreachable
from xsc.identity import Identity, sign_request
from xsc.ledger.core.model import authorize, encode_authorization
from xsc.net.compute import INVOKE_PATH, INVOKES_PATH, MAX_BATCH_BYTES, MAX_BATCH_CALLS, TAB_CLOSE_PATH, InvokeBatcher
from xsc.net.peer_client import PeerResponse
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE

FUEL = 1_000_000
_json = json  # FakeProvider.request takes a `json` argument, as PeerClient.request does


async def _peer(node, sender: Identity, body: bytes, path: str = INVOKES_PATH) -> tuple[int, dict]:
    headers = sign_request(sender, "POST", path, body, receiver=node.app[IDENTITY].id)
    response = await node.request("POST", path, data=body, headers={**headers, "Authorization": ""})
    return response.status, await response.json()


def _tab(payer: Identity, payee: bytes, cap: int = 10**12) -> str:
    auth = authorize(payer, payee, cap, "compute:rtab:test", int(time.time()) + 600, os.urandom(16))
    return encode_authorization(auth).hex()


def _call(module: str, authorization: str, function: str = "add", args: list | None = None) -> dict:
    return {"call": {"module": module, "function": function, "args": [1, 2] if args is None else args, "fuel": FUEL},
            "price": INVOKE_PRICE, "authorization": authorization, "deal": {}, "tab": True}


def _batch(*calls) -> bytes:
    return json.dumps({"calls": list(calls)}).encode()


def _runs(node) -> int:
    return len(node.app[NODE].compute.provenance_records.recent(1000))


async def test_a_batch_is_bounded_before_anything_runs(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    gateway = Identity.generate()
    tab = _tab(gateway, node.app[IDENTITY].public_key)
    status, problem = await _peer(node, gateway, _batch(*[_call(module, tab)] * (MAX_BATCH_CALLS + 1)))
    assert status == 400 and problem["code"] == "invalid-argument", problem
    status, problem = await _peer(node, gateway, _batch())
    assert status == 400 and problem["code"] == "invalid-argument", problem
    padded = {**_call(module, tab), "deal": {"pad": "x" * MAX_BATCH_BYTES}}
    status, problem = await _peer(node, gateway, _batch(padded))
    assert status == 413 and problem["code"] == "payload-too-large", problem
    for body in (b"[1, 2]", b"not json", json.dumps({"calls": [_call(module, tab)], "more": 1}).encode(),
                 json.dumps({"calls": {"0": _call(module, tab)}}).encode()):
        status, problem = await _peer(node, gateway, body)
        assert status == 400 and problem["code"] == "invalid-argument", (body, problem)
    assert _runs(node) == 0


async def test_each_call_of_a_batch_counts_against_the_peers_rate(node_factory) -> None:
    node = await node_factory(peers={"rate_limit": 2})  # bursts of 4 requests
    module = await deploy(node, "add")
    gateway = Identity.generate()
    tab = _tab(gateway, node.app[IDENTITY].public_key)
    status, answer = await _peer(node, gateway, _batch(*[_call(module, tab)] * 3))
    assert status == 200 and [r["status"] for r in answer["results"]] == [200] * 3, answer
    status, problem = await _peer(node, gateway, _batch(*[_call(module, tab)] * 3))  # 6 calls: past the burst
    assert status == 429 and problem["code"] == "quota-exceeded", problem
    assert _runs(node) == 3


async def test_each_call_of_a_batch_is_checked_alone_and_fails_alone(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    traps = await deploy(node, "traps")
    gateway = Identity.generate()
    me = node.app[IDENTITY].public_key
    tab = _tab(gateway, me)
    forged = tab[:-2] + ("00" if tab[-2:] != "00" else "01")  # its signature changed in one byte
    elsewhere = _tab(gateway, Identity.generate().public_key)  # pays another node
    budget = node.app[NODE].compute.budget(InvokeCall(module, "add", [1, 2], FUEL), INVOKE_PRICE)
    small = _tab(gateway, me, cap=budget)  # covers one call
    closed = _tab(Identity.generate(), me)
    status, answer = await _peer(node, gateway, _batch(_call(module, closed)))
    assert status == 200 and answer["results"][0]["status"] == 200, answer
    status, _ = await _peer(node, gateway, json.dumps({"authorization": closed}).encode(), TAB_CLOSE_PATH)
    assert status == 200
    runs = _runs(node)
    calls = [
        _call(module, tab),                                           # 0 runs
        "not an object",                                              # 1 malformed
        {k: v for k, v in _call(module, tab).items() if k != "tab"},  # 2 not a tab call
        {**_call(module, tab), "price": -1},                          # 3 bad price
        _call(module, tab, args=[1]),                                 # 4 wrong argument count
        _call(module, forged),                                        # 5 forged authorization
        _call(module, elsewhere),                                     # 6 pays another node
        _call(module, closed),                                        # 7 its tab is closed
        _call(module, small),                                         # 8 runs: the tab's cap covers one call
        _call(module, small),                                         # 9 ... and not a second
        _call(traps, tab, "unreachable", []),                         # 10 runs, traps
        _call("ab" * 32, tab),                                        # 11 no such module
        _call(module, tab, args=[3, 4]),                              # 12 runs
    ]
    status, answer = await _peer(node, gateway, _batch(*calls))
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == len(calls)
    codes = {i: r["problem"]["code"] for i, r in enumerate(results) if r["status"] != 200}
    assert codes == {1: "invalid-argument", 2: "invalid-argument", 3: "invalid-argument",
                     4: "wrong-argument-count", 5: "forbidden", 6: "forbidden", 7: "authorization-replayed",
                     9: "deal-refused", 11: "module-not-found"}, codes
    for i in codes:
        assert results[i]["status"] == results[i]["problem"]["status"] >= 400
    ok = {i: r["answer"] for i, r in enumerate(results) if r["status"] == 200}
    assert ok[0]["run"]["results"] == [{"type": "i32", "value": 3}]
    assert ok[12]["run"]["results"] == [{"type": "i32", "value": 7}]
    assert ok[10]["trap"]["kind"] == "unreachable" and "results" not in ok[10]["run"]
    assert ok[0]["tab"]["authorization"] == ok[12]["tab"]["authorization"]
    assert _runs(node) == runs + 4  # only the four calls that ran left records
    # Each call is metered on its own tab as if it had come alone.
    tabs = node.app[NODE].paid.provider_tabs
    assert tabs.calls(bytes.fromhex(ok[0]["tab"]["authorization"])) == 3
    assert tabs.calls(bytes.fromhex(ok[8]["tab"]["authorization"])) == 1



async def test_a_batchs_records_are_durable_before_its_answer_and_a_large_group_of_them_signed_in_its_write(
        node_factory, monkeypatch) -> None:
    """The gateway waits for every record of its batch: each is on disk when the batch is answered, and a group of
    SIGN_IN_GROUP or more of them (a batch's calls usually make one) is written signed, not rewritten later; the
    records of smaller groups wait for their signature with their marks (SIGN_DELAY, or a read)."""
    from xsc.compute import journal as journal_module
    from xsc.compute import provenance

    monkeypatch.setattr(journal_module, "SIGN_DELAY", 60.0)  # nothing is signed after the answer within the test
    node = await node_factory()
    module = await deploy(node, "add")
    gateway = Identity.generate()
    tab = _tab(gateway, node.app[IDENTITY].public_key)
    journal = node.app[NODE].compute.journal
    sizes: list[int] = []
    real = journal._write

    def write(items):
        sizes.append(len(items))
        return real(items)

    monkeypatch.setattr(journal, "_write", write)
    calls = 2 * journal_module.SIGN_IN_GROUP
    status, answer = await _peer(node, gateway, _batch(*[_call(module, tab)] * calls))
    assert status == 200 and [r["status"] for r in answer["results"]] == [200] * calls, answer
    assert sum(sizes) == calls
    ids = [bytes.fromhex(r["answer"]["run"]["provenance"]) for r in answer["results"]]
    stored = [node.app[NODE].compute.store.provenance(i) for i in ids]  # as stored: no read signs them first
    assert all(s is not None for s in stored)
    assert sum(journal_module.unsigned(s) for s in stored) == sum(n for n in sizes if n < journal_module.SIGN_IN_GROUP)
    assert all(provenance.is_valid(provenance.decode(s)) for s in stored if not journal_module.unsigned(s))


async def test_each_call_of_a_batch_is_held_to_the_nodes_ask_and_none_runs_when_it_offers_none(node_factory) -> None:
    """The calls of a batch are held to this node's compute ask when the batch came (found once for the batch):
    those priced under it are refused before they run (0: compute for nothing), the others run; with the node
    leaving (its stop began), every call of a batch is refused 503 `node-stopping` (its gateway goes elsewhere)."""
    node = await node_factory(market={"compute_ask_floor": 500, "compute_ask_ceiling": 500})
    module = await deploy(node, "add")
    gateway = Identity.generate()
    tab = _tab(gateway, node.app[IDENTITY].public_key)
    prices = [0, 499, 500, INVOKE_PRICE, 1, 10**6]
    status, answer = await _peer(node, gateway, _batch(*[{**_call(module, tab), "price": p} for p in prices]))
    assert status == 200, answer
    refused = [i for i, r in enumerate(answer["results"]) if r["status"] != 200]
    assert refused == [0, 1, 4], answer
    for i in refused:
        problem = answer["results"][i]["problem"]
        assert problem["code"] == "deal-refused" and "under this node's ask of 500" in problem["detail"], problem
    assert _runs(node) == 3
    await node.app[NODE].market.leave()  # it offers nothing more
    status, answer = await _peer(node, gateway, _batch(*[_call(module, tab)] * 3))
    assert status == 200 and {(r["status"], r["problem"]["code"]) for r in answer["results"]} == {
        (503, "node-stopping")}, answer
    assert _runs(node) == 3


async def test_a_batch_of_one_call_and_the_single_route_answer_alike(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    gateway = Identity.generate()
    tab = _tab(gateway, node.app[IDENTITY].public_key)
    status, single = await _peer(node, gateway, json.dumps(_call(module, tab)).encode(), INVOKE_PATH)
    assert status == 200, single
    status, answer = await _peer(node, gateway, _batch(_call(module, tab)))
    assert status == 200 and answer["results"][0]["status"] == 200, answer
    batched = answer["results"][0]["answer"]
    assert set(batched) == set(single) and set(batched["run"]) == set(single["run"])
    assert batched["tab"]["count"] == 2


# --- the gateway's side, against a fake provider ---------------------------------------------------------
class FakeProvider:
    """A PeerClient whose provider answers what the test says; every request is recorded."""

    def __init__(self, answer) -> None:
        self.answer = answer  # (path, [entries]) -> (status, body) or raises
        self.sent: list[tuple[str, int]] = []  # (path, calls in it)
        self.release = asyncio.Event()  # requests on the paths in `held` wait for it
        self.release.set()
        self.held = {INVOKE_PATH, INVOKES_PATH}

    async def request(self, url, method, path, *, json=None, data=None, to=None, kept=False, **_):
        body = _json.loads(bytes(json))
        entries = body["calls"] if path == INVOKES_PATH else [body]
        self.sent.append((path, len(entries)))
        await asyncio.sleep(0)  # a real request always waits for its answer
        if path in self.held:
            await self.release.wait()
        status, answer = self.answer(path, entries)
        if status >= 400:
            raise PeerRefused(f"peer {url} refused", url=url, peer_status=status,
                              peer_code=answer.get("code", "http-error"))
        return PeerResponse(status, {}, _json.dumps(answer).encode(), node=to)


def _ran(entry: dict) -> dict:
    return {"run": {"charge": 1, "n": entry["call"]["args"][0]}, "tab": {"authorization": "00", "total": 1,
                                                                           "count": 1}}


def _honest(path, entries):
    if path == INVOKE_PATH:
        return 200, _ran(entries[0])
    return 200, {"results": [{"status": 200, "answer": _ran(e)} for e in entries]}


def _body(n: int, pad: int = 0) -> dict:
    return {"call": {"module": "ab" * 32, "function": "add", "args": [n, 0], "pad": "x" * pad}, "tab": True}


async def _burst(batcher: InvokeBatcher, provider: FakeProvider, count: int, pad: int = 0) -> list:
    """One call goes alone and is held in flight while `count - 1` more come; then the provider answers."""
    provider.release.clear()
    first = asyncio.create_task(batcher.invoke("http://b", "B", _body(0, pad), lambda: b"", False))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.invoke("http://b", "B", _body(i, pad), lambda: b"", False))
            for i in range(1, count)]
    await asyncio.sleep(0)
    provider.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


async def test_calls_that_come_while_one_is_in_flight_go_together_when_it_returns() -> None:
    provider = FakeProvider(_honest)
    batcher = InvokeBatcher(provider, stall=60)
    assert (await batcher.invoke("http://b", "B", _body(7), lambda: b"", False))["run"]["n"] == 7
    assert provider.sent == [(INVOKE_PATH, 1)]  # a lone call goes at once, on the single-call route
    provider.sent.clear()
    results = await _burst(batcher, provider, 1 + 2 * MAX_BATCH_CALLS + 3)
    assert [r["run"]["n"] for r in results] == list(range(1 + 2 * MAX_BATCH_CALLS + 3))  # each its own answer
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, MAX_BATCH_CALLS), (INVOKES_PATH, MAX_BATCH_CALLS),
                             (INVOKES_PATH, 3)]
    provider.sent.clear()
    await _burst(batcher, provider, 9, pad=MAX_BATCH_BYTES // 5)  # bounded in bytes too: 4 calls fit
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 4), (INVOKES_PATH, 4)]
    assert batcher.batches == 5


async def test_the_payers_tallies_are_written_once_before_each_request_and_a_failed_write_sends_nothing() -> None:
    provider = FakeProvider(_honest)
    requests_before: list[int] = []
    batcher = InvokeBatcher(provider, stall=60, before_send=lambda: requests_before.append(len(provider.sent)))
    await _burst(batcher, provider, 1 + MAX_BATCH_CALLS + 3)
    assert len(provider.sent) == 3 and requests_before == [0, 1, 2]  # once a request, each before it went

    def full() -> None:
        raise OSError(28, "No space left on device")

    batcher.before_send = full
    with pytest.raises(OSError):
        await batcher.invoke("http://b", "B", _body(0), lambda: b"", False)
    assert len(provider.sent) == 3


async def test_a_long_call_in_flight_holds_up_the_calls_behind_it_for_the_stall_at_most() -> None:
    provider = FakeProvider(_honest)
    provider.held = {INVOKE_PATH}  # the lone call runs long; batches are answered at once
    provider.release.clear()
    batcher = InvokeBatcher(provider, stall=0.01)
    long = asyncio.create_task(batcher.invoke("http://b", "B", _body(0), lambda: b"", False))
    await asyncio.sleep(0)
    behind = await asyncio.gather(*(batcher.invoke("http://b", "B", _body(i), lambda: b"", False) for i in (1, 2, 3)))
    assert [r["run"]["n"] for r in behind] == [1, 2, 3] and not long.done()
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 3)] and batcher.stalled == 1
    provider.release.set()
    assert (await long)["run"]["n"] == 0


async def test_closing_fails_queued_calls_as_not_sent_and_a_batch_in_flight_as_lost() -> None:
    provider = FakeProvider(_honest)
    provider.held = {INVOKES_PATH}
    provider.release.clear()
    batcher = InvokeBatcher(provider, stall=60)
    calls = [asyncio.create_task(batcher.invoke("http://b", "B", _body(i), lambda: b"", False)) for i in range(3)]
    while provider.sent != [(INVOKE_PATH, 1), (INVOKES_PATH, 2)]:  # the lone call returned; the batch is held
        await asyncio.sleep(0)
    queued = [asyncio.create_task(batcher.invoke("http://b", "B", _body(i), lambda: b"", False)) for i in (3, 4)]
    await asyncio.sleep(0)
    await batcher.close()
    results = await asyncio.gather(*calls, *queued, return_exceptions=True)
    assert results[0]["run"]["n"] == 0
    assert all(isinstance(r, PeerUnreachable) and r.details["sent"] is True for r in results[1:3]), results
    assert all(isinstance(r, PeerUnreachable) and r.details["sent"] is False for r in results[3:]), results


async def _callers(batcher: InvokeBatcher, count: int, calls: int, first: int = 0) -> list:
    """`count` callers, each calling again as soon as it is answered (`calls` times; the first one `first` more)."""
    async def caller(i: int) -> list:
        return [(await batcher.invoke("http://b", "B", _body(i), lambda: b"", False))["run"]["n"]
                for _ in range(calls + (first if i == 0 else 0))]

    return await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(count))), 30)


async def test_the_callers_of_a_returned_batch_are_gathered_into_one_batch_and_a_lone_caller_never_waits() -> None:
    provider = FakeProvider(_honest)
    batcher = InvokeBatcher(provider, stall=60, gather=60)  # a queue waits for every expected caller
    await _callers(batcher, 1, 3)  # one caller: each of its calls goes at once, alone (it would wait 60 s else)
    assert provider.sent == [(INVOKE_PATH, 1)] * 3 and batcher.gathered == 0
    provider.sent.clear()
    # Eight callers: the first call goes alone, the seven that come meanwhile wait for its caller to call again;
    # from then on the eight go together, one batch per round, never split into two groups that alternate.
    results = await _callers(batcher, 8, 5, first=1)
    assert results == [[i] * (5 + (i == 0)) for i in range(8)]
    assert provider.sent == [(INVOKE_PATH, 1)] + [(INVOKES_PATH, 8)] * 5
    # After a batch of 8 returned, a call on the idle lane waits for the others; the eighth sends them.
    provider.sent.clear()
    waiting = [asyncio.create_task(batcher.invoke("http://b", "B", _body(i), lambda: b"", False)) for i in range(7)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert provider.sent == [] and not any(task.done() for task in waiting)
    last = await batcher.invoke("http://b", "B", _body(7), lambda: b"", False)
    assert [r["run"]["n"] for r in await asyncio.gather(*waiting)] + [last["run"]["n"]] == list(range(8))
    assert provider.sent == [(INVOKES_PATH, 8)]


async def test_callers_that_do_not_call_again_hold_a_queue_up_for_the_gather_wait_at_most() -> None:
    provider = FakeProvider(_honest)
    batcher = InvokeBatcher(provider, stall=60, gather=0.01)
    results = await _burst(batcher, provider, 3)  # the lone call's caller does not call again
    assert [r["run"]["n"] for r in results] == [0, 1, 2]
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 2)] and batcher.gathered == 1
    assert (await batcher.invoke("http://b", "B", _body(3), lambda: b"", False))["run"]["n"] == 3  # waited, alone
    provider.sent.clear()
    provider.release.clear()  # the last request carried one call: the next goes at once
    alone = asyncio.create_task(batcher.invoke("http://b", "B", _body(4), lambda: b"", False))
    for _ in range(3):
        await asyncio.sleep(0)
    assert provider.sent == [(INVOKE_PATH, 1)]
    provider.release.set()
    assert (await alone)["run"]["n"] == 4


async def test_a_full_batch_waits_for_no_caller() -> None:
    provider = FakeProvider(_honest)
    batcher = InvokeBatcher(provider, stall=60, gather=60, max_calls=4)
    results = await asyncio.wait_for(_burst(batcher, provider, 9), 30)  # 8 queued behind the lone call: 2 full
    assert [r["run"]["n"] for r in results] == list(range(9))
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 4), (INVOKES_PATH, 4)] and batcher.gathered == 0


async def test_closing_fails_a_gathered_queue_as_not_sent() -> None:
    provider = FakeProvider(_honest)
    batcher = InvokeBatcher(provider, stall=60, gather=60)
    calls = [asyncio.create_task(batcher.invoke("http://b", "B", _body(i), lambda: b"", False)) for i in range(3)]
    while len(provider.sent) < 1 or not calls[0].done():  # the lone call returned; the two wait for its caller
        await asyncio.sleep(0)
    await batcher.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0]["run"]["n"] == 0 and provider.sent == [(INVOKE_PATH, 1)]
    assert all(isinstance(r, PeerUnreachable) and r.details["sent"] is False for r in results[1:]), results


@pytest.mark.parametrize("answer, expected", [
    ({"results": []}, "lost"),  # too few results
    ({"results": [{"status": 200, "answer": {"run": {}}}] * 6}, "lost"),  # too many
    ({"nothing": 1}, "lost"),
    ([1, 2, 3], "lost"),
    ({"results": ["x", None, 3, {"status": "200"}, {"status": 200}]}, "lost"),
    ({"results": [{"status": 200, "answer": {"run": "no"}}] * 5}, "lost"),  # not a run and a tab
    ({"results": [{"status": 500, "problem": {"code": "x"}}] * 5}, "lost"),  # a server error: it may have run
    ({"results": [{"status": 422, "problem": {"code": "deal-refused", "detail": "no"}}] * 5}, "refused"),
    # busy before it ran: nothing owed, worth asking again (a lie only loses the provider its pay)
    ({"results": [{"status": 503, "problem": {"code": "compute-busy", "detail": "busy"}}] * 5}, "compute-busy"),
])
async def test_a_hostile_answer_to_a_batch_is_checked_call_by_call(answer, expected) -> None:
    def hostile(path, entries):
        return (200, _ran(entries[0])) if path == INVOKE_PATH else (200, answer)

    provider = FakeProvider(hostile)
    results = await _burst(InvokeBatcher(provider, stall=60), provider, 6)
    assert "run" in results[0]  # the lone call, answered on the single route
    for result in results[1:]:
        if expected == "lost":  # it may have run: its budget stays held until the tab is paid
            assert isinstance(result, PeerUnreachable) and result.details["sent"] is True, result
        elif expected == "refused":
            assert isinstance(result, PeerRefused) and result.details["peer_code"] == "deal-refused", result
        else:
            assert isinstance(result, PeerUnavailable) and result.details["peer_code"] == expected, result


@pytest.mark.parametrize("answer", [{"nothing": 1}, [1, 2, 3], {"run": "no", "tab": {}}, {"run": {}}])
async def test_a_lone_call_answered_without_a_run_and_a_tab_counts_as_lost_as_a_batchs_call_does(answer) -> None:
    provider = FakeProvider(lambda path, entries: (200, answer))
    provider.held = set()
    with pytest.raises(PeerUnreachable) as lost:  # it may have run: its budget stays held until the tab is paid
        await InvokeBatcher(provider).invoke("http://b", "B", _body(0), lambda: b"", False)
    assert lost.value.details["sent"] is True


@pytest.mark.parametrize("status, code", [(503, "compute-busy"), (503, "node-credit-exhausted"), (500, "internal-error"),
                                          (502, "function-failed"), (504, "function-timeout")])
async def test_a_lone_calls_503_is_a_refusal_and_any_other_server_error_counts_as_lost(status, code) -> None:
    provider = FakeProvider(lambda path, entries: (status, {"code": code}))
    with pytest.raises(PeerRefused if status == 503 else PeerUnreachable) as failed:
        await InvokeBatcher(provider).invoke("http://b", "B", _body(0), lambda: b"", False)
    if status == 503:  # refused before it ran: nothing owed, and the provider's reason kept
        assert type(failed.value) is PeerUnavailable and failed.value.details["peer_code"] == code, failed.value
    else:  # it may have run: its budget stays held until the tab is paid
        assert failed.value.details["sent"] is True


async def test_a_refused_or_unreachable_batch_fails_its_calls_and_an_older_peer_gets_them_one_by_one() -> None:
    def older(path, entries):
        return (404, {"code": "not-found"}) if path == INVOKES_PATH else (200, _ran(entries[0]))

    provider = FakeProvider(older)
    batcher = InvokeBatcher(provider, stall=60)
    results = await _burst(batcher, provider, 4)
    assert [r["run"]["n"] for r in results] == [0, 1, 2, 3]
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 3)] + [(INVOKE_PATH, 1)] * 3
    provider.sent.clear()
    await _burst(batcher, provider, 3)  # known now: no batch is tried again
    assert provider.sent == [(INVOKE_PATH, 1)] * 3

    for status, code, refused in ((429, "quota-exceeded", PeerRefused), (503, "compute-busy", PeerUnavailable)):
        def refusing(path, entries):
            return (status, {"code": code}) if path == INVOKES_PATH else (200, _ran(entries[0]))

        provider = FakeProvider(refusing)
        results = await _burst(InvokeBatcher(provider, stall=60), provider, 3)
        assert all(type(r) is refused and r.details["peer_code"] == code for r in results[1:]), results

    def failing(path, entries):
        if path == INVOKES_PATH:
            raise PeerUnreachable("cut", url="http://b", sent=True)
        return 200, _ran(entries[0])

    provider = FakeProvider(failing)
    results = await _burst(InvokeBatcher(provider, stall=60), provider, 3)
    assert all(isinstance(r, PeerUnreachable) and r.details["sent"] is True for r in results[1:])


# --- two nodes ----------------------------------------------------------------------------------------------
PRICE = 1_000_000  # micro-credits per million fuel
MARKET_TERMS = {"compute_ask_floor": PRICE, "compute_ask_ceiling": PRICE, "compute_bid": PRICE}
QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def test_concurrent_remote_invokes_go_in_batches_and_are_paid_exactly(node_factory) -> None:
    provider = await node_factory("provider", **QUIET, market=MARKET_TERMS)
    gateway = await node_factory("gateway", **QUIET, market={**MARKET_TERMS, "offer_compute": False})
    await peer_with_provider(gateway, provider)
    module = await deploy(gateway, "add")
    payer, paid = gateway.app[CLIENT_IDENTITY].public_key, provider.app[IDENTITY].public_key
    answers = await asyncio.gather(*(invoke(gateway, module, "add", i, 1, fuel=FUEL) for i in range(24)))
    assert all(status == 200 for status, _ in answers), answers
    assert [body["results"][0]["value"] for _, body in answers] == [i + 1 for i in range(24)]
    assert {body["provider"] for _, body in answers} == {provider.app[NODE].peers.identity.id}
    batcher = gateway.app[NODE].paid.batcher
    assert batcher.batches >= 1 and batcher.batched >= 2  # the first calls lacked the module: pushed once
    records = {r["record"]["id"] for r in provider.app[NODE].compute.provenance_records.recent(1000)}
    assert {body["provenance"] for _, body in answers} <= records
    tabs = gateway.app[NODE].paid.gateway_tabs
    await tabs.close()
    await gateway.app[NODE].paid.payments.retry_all()
    # What the calls metered, and compiling the module pushed for the first of them (its tab has room for it).
    metered = sum(body["charge"] for _, body in answers) + compile_price(len(wasm("add")), PRICE)
    assert gateway.app[NODE].ledger.store.state(payer).balance == -metered
    assert provider.app[NODE].ledger.store.state(paid).balance == metered
    assert gateway.app[NODE].ledger.held(payer) == 0


async def test_lanes_to_providers_are_bounded_and_one_in_use_is_never_dropped(monkeypatch) -> None:
    """A lane per provider called (whoever the matching or a stranger's provider records name): past MOST_LANES
    the least recently used idle ones go, never one with a call in flight, whose callers still get their answers."""
    from xsc.net import compute

    class HoldsB(FakeProvider):
        async def request(self, url, method, path, **kwargs):
            if url == "http://b":
                await self.release.wait()
            return await super().request(url, method, path, **kwargs)

    monkeypatch.setattr(compute, "MOST_LANES", 8)
    provider = HoldsB(_honest)
    provider.held = set()
    provider.release.clear()
    batcher = InvokeBatcher(provider, stall=60)
    long = asyncio.create_task(batcher.invoke("http://b", "B", _body(0), lambda: b"", False))
    await asyncio.sleep(0)
    for n in range(100):
        assert (await batcher.invoke(f"http://p{n}", f"P{n}", _body(n), lambda: b"", False))["run"]["n"] == n
    assert batcher.lanes() == 8
    queued = asyncio.create_task(batcher.invoke("http://b", "B", _body(1), lambda: b"", False))  # B's lane kept
    await asyncio.sleep(0)
    provider.release.set()
    assert (await long)["run"]["n"] == 0 and (await queued)["run"]["n"] == 1
    assert batcher.lanes() == 8


async def test_a_push_waits_for_a_busy_providers_compile_longer_than_a_request_may_take() -> None:
    """A provider answers a push once it has compiled the module, in a child at a lower priority bounded by CPU time:
    on a busy provider that takes longer on the wall than the request timeout, and the push still gets its answer."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from xsc.net import PeerClient
    from xsc.net.compute import MODULES_PATH, push_module

    timeout = 0.2

    async def compiled(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(5 * timeout)  # the busy provider's compile
        return web.json_response({"module": "ab" * 32, "new": True}, status=201)

    app = web.Application()
    app.router.add_put(MODULES_PATH, compiled)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = PeerClient(Identity.generate(), session, timeout, tls=False)  # plaintext: loopback only
            try:
                await push_module(client, f"http://127.0.0.1:{server.port}", "P", lambda: b"\0asm\1\0\0\0", False)
            finally:
                client.close()
    finally:
        await server.close()
