"""A remote call from its send to its end, its caller gone or not (compute/remote_sends.py: CallSends), against a fake
provider: taken back and its budget given back at once while it is not sent (queued, or waiting for its module's
push); accounted when its answer comes once it is sent; lost at a node stop.  And no call starts a task of its own."""

from __future__ import annotations

import asyncio
import json

from tests.support.waiting import eventually_async

from xsc.compute.remote_sends import CallEnd, CallSends
from xsc.errors import PeerRefused, PeerUnreachable
from xsc.net.compute import INVOKE_PATH, INVOKES_PATH, MODULES_PATH, InvokeBatcher
from xsc.net.peer_client import PeerResponse

BUDGET, CHARGE, FUEL = 1_000, 7, 3_000
MODULE = "ab" * 32


class Provider:
    """A PeerClient whose provider runs every call it has the module of; requests on the paths in `held` wait for
    `release`; every request is recorded."""

    timeout = 10.0

    def __init__(self, has_module: bool = True) -> None:
        self.has_module = has_module
        self.sent: list[tuple[str, int]] = []  # (path, calls in it)
        self.held: set[str] = {INVOKE_PATH, INVOKES_PATH, MODULES_PATH}
        self.release = asyncio.Event()

    async def request(self, url, method, path, *, json=None, data=None, to=None, **_):
        entries = [] if path.startswith(MODULES_PATH) else _entries(path, json)
        self.sent.append((path.split("?")[0], len(entries)))
        await asyncio.sleep(0)
        if path.split("?")[0] in self.held:
            await self.release.wait()
        if path.startswith(MODULES_PATH):
            self.has_module = True
            return _response({"id": MODULE, "new": True}, to)
        if not self.has_module:
            raise PeerRefused(f"peer {url} refused", url=url, peer_status=404, peer_code="module-not-found")
        answers = [_ran() for _ in entries]
        return _response(answers[0] if path == INVOKE_PATH else
                         {"results": [{"status": 200, "answer": a} for a in answers]}, to)

    def invokes(self) -> list[tuple[str, int]]:
        return [sent for sent in self.sent if sent[0] != MODULES_PATH]


def _entries(path: str, body) -> list:
    decoded = json.loads(bytes(body))
    return decoded["calls"] if path == INVOKES_PATH else [decoded]


def _ran() -> dict:
    return {"run": {"charge": CHARGE, "fuel_consumed": FUEL}, "tab": {"authorization": "00", "total": 1, "count": 1}}


def _response(answer: dict, to) -> PeerResponse:
    return PeerResponse(200, {}, json.dumps(answer).encode(), node=to)


class Tabs:
    """What CallSends tells a gateway's tabs, in order."""

    def __init__(self) -> None:
        self.told: list[tuple] = []

    def answered(self, tab, budget: int, amount) -> None:
        self.told.append(("answered", tab, budget, amount))

    def lost(self, tab, budget: int) -> None:
        self.told.append(("lost", tab, budget))

    @staticmethod
    def compile_on(tab, module: str, wasm: bytes) -> None:
        """The push of a call's module names no tab (its compile is not what these tests count)."""


class Dealing:
    def __init__(self) -> None:
        self.used: list[int] = []

    def invoked(self, assignment, used: int) -> None:
        self.used.append(used)


def _sends(provider: Provider) -> tuple[CallSends, InvokeBatcher, Tabs]:
    batcher = InvokeBatcher(provider, stall=3600)  # a queued call waits for the request in flight
    tabs = Tabs()
    return CallSends(batcher, tabs), batcher, tabs


def _send(sends: CallSends, n: int, end: CallEnd | None = None) -> asyncio.Task:
    body = {"call": {"module": MODULE, "function": "add", "args": [n, 0]}, "tab": True}
    tab = f"tab{n}"

    def taken(answer: dict) -> int | None:  # as the gateway takes an answer into its tab (SpotChecks.taken)
        tabs, run = sends.tabs, answer["run"]
        if type(run.get("charge")) is not int or not 0 <= run["charge"] <= BUDGET:
            tabs.lost(tab, BUDGET)
            raise PeerRefused(f"a run charging {run.get('charge')!r}")
        tabs.answered(tab, BUDGET, run["charge"])
        return run.get("fuel_consumed")

    return asyncio.create_task(sends.send("http://b", "B", body, lambda: b"\0asm", False, tab, BUDGET, taken, end))


async def _sent(provider: Provider, *expected: tuple[str, int]) -> None:
    await eventually_async(lambda: provider.sent == list(expected), f"the provider to be sent {expected}")


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled()


async def _sent_then_cancelled(provider: Provider):
    """A call sent to `provider` (its answer held there), then cancelled by its caller: the sends, the batcher, the
    tabs, the dealing and the call's end."""
    dealing = Dealing()
    sends, batcher, tabs = _sends(provider)
    end = CallEnd(dealing, "assignment", 10 * FUEL)
    call = _send(sends, 0, end)
    await _sent(provider, (INVOKE_PATH, 1))
    await _cancelled(call)
    return sends, batcher, tabs, dealing, end


async def test_a_call_cancelled_while_queued_is_given_back_at_once_and_never_sent() -> None:
    provider = Provider()
    sends, _, tabs = _sends(provider)
    first = _send(sends, 0)
    await _sent(provider, (INVOKE_PATH, 1))
    queued = _send(sends, 1)
    await asyncio.sleep(0)
    await _cancelled(queued)
    assert tabs.told == [("answered", "tab1", BUDGET, None)]
    provider.release.set()
    assert (await first)["run"]["charge"] == CHARGE
    assert provider.sent == [(INVOKE_PATH, 1)] and tabs.told == [("answered", "tab1", BUDGET, None)]


async def test_a_call_cancelled_once_sent_is_accounted_when_its_answer_comes() -> None:
    provider = Provider()
    _, _, tabs, dealing, end = await _sent_then_cancelled(provider)
    end()  # its caller is done with it: it holds its part of the allocation until its answer comes
    assert tabs.told == [] and dealing.used == []
    provider.release.set()
    await eventually_async(lambda: tabs.told == [("answered", "tab0", BUDGET, CHARGE)], "the late answer taken")
    assert dealing.used == [FUEL]


async def test_a_call_answered_just_as_its_caller_is_cancelled_is_accounted_at_once() -> None:
    provider = Provider()
    sends, batcher, tabs = _sends(provider)
    sent, send = [], batcher.send
    batcher.send = lambda *args: sent.append(send(*args)) or sent[-1]
    call = _send(sends, 0)
    await _sent(provider, (INVOKE_PATH, 1))
    sent[0].future.set_result(_ran())  # the batcher answers it in the loop turn its caller is cancelled in
    await _cancelled(call)
    assert tabs.told == [("answered", "tab0", BUDGET, CHARGE)]
    provider.release.set()
    await batcher.close()
    assert tabs.told == [("answered", "tab0", BUDGET, CHARGE)]


async def test_a_call_cancelled_while_its_module_is_pushed_is_given_back_at_once_and_not_sent_again() -> None:
    provider = Provider(has_module=False)
    provider.held = {MODULES_PATH}
    sends, _, tabs = _sends(provider)
    call = _send(sends, 0)
    await _sent(provider, (INVOKE_PATH, 1), (MODULES_PATH, 0))  # refused: it ran nothing
    await _cancelled(call)
    assert tabs.told == [("answered", "tab0", BUDGET, None)]
    provider.release.set()
    await eventually_async(lambda: provider.has_module, "the module pushed")
    assert (await _send(sends, 1))["run"]["charge"] == CHARGE
    assert provider.invokes() == [(INVOKE_PATH, 1), (INVOKE_PATH, 1)]
    assert tabs.told == [("answered", "tab0", BUDGET, None)]


async def test_a_call_cancelled_once_sent_to_a_provider_lacking_its_module_is_pushed_sent_again_and_accounted() \
        -> None:
    provider = Provider(has_module=False)
    provider.held = {INVOKE_PATH}
    sends, _, tabs = _sends(provider)
    call = _send(sends, 0)
    await _sent(provider, (INVOKE_PATH, 1))
    await _cancelled(call)
    provider.release.set()
    await eventually_async(lambda: tabs.told == [("answered", "tab0", BUDGET, CHARGE)], "the late answer taken")
    assert provider.sent == [(INVOKE_PATH, 1), (MODULES_PATH, 0), (INVOKE_PATH, 1)]


async def test_a_node_stop_counts_a_call_sent_for_a_caller_gone_as_lost() -> None:
    sends, batcher, tabs, dealing, _ = await _sent_then_cancelled(Provider())
    await batcher.close()
    await sends.close()
    assert tabs.told == [("lost", "tab0", BUDGET)] and dealing.used == [0]


async def test_a_node_stop_while_a_call_waits_for_its_modules_push_fails_it_as_not_sent() -> None:
    provider = Provider(has_module=False)
    provider.held = {MODULES_PATH}
    sends, batcher, tabs = _sends(provider)
    call = _send(sends, 0)
    await _sent(provider, (INVOKE_PATH, 1), (MODULES_PATH, 0))
    await batcher.close()
    await asyncio.wait([call])
    assert isinstance(call.exception(), PeerUnreachable) and call.exception().details["sent"] is False
    assert tabs.told == [("answered", "tab0", BUDGET, None)]


async def test_calls_sent_start_no_task_of_their_own() -> None:
    provider = Provider()
    sends, _, tabs = _sends(provider)
    before = len(asyncio.all_tasks())
    callers = [_send(sends, 0)]
    await _sent(provider, (INVOKE_PATH, 1))
    callers += [_send(sends, n) for n in range(1, 8)]
    await asyncio.sleep(0)  # each queued behind the one in flight
    assert len(asyncio.all_tasks()) - before == len(callers) + 1  # theirs, and the request's
    provider.release.set()
    await asyncio.gather(*callers)
    assert provider.sent == [(INVOKE_PATH, 1), (INVOKES_PATH, 7)] and tabs.told == []
