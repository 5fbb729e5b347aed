"""Attacks on a provider's peer API, performed on a real node: one authorization buys one run, an expired one
none, no stranger can push modules into the node, and compiling a peer's module is bounded and paid before it
starts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.attacks import INVOKE_PRICE, empty_functions, invoke_body
from tests.support.compute import call, compiler_processes, deploy, module_id, values, wasm
from tests.support.waiting import eventually, eventually_async

from xsc.identity import Identity, sign_request
from xsc.ledger.core.model import authorize, encode_authorization
from xsc.net.compute import INVOKE_PATH, MODULES_PATH, TAB_CLOSE_PATH
from xsc.net.functions import FUNCTION_PATH
from xsc.node import IDENTITY
from xsc.compute.compiler import compile_artifact
from xsc.compute.provider_tabs import compile_price
from xsc.compute.pushes import MAX_PUSHED_FUNCTIONS
from xsc.compute.provider_tabs import MAX_TAB_TTL
from xsc.node.appkeys import NODE


async def _peer(node, attacker: Identity, method: str, path: str, body: bytes) -> tuple[int, dict]:
    headers = sign_request(attacker, method, path, body, receiver=node.app[IDENTITY].id)
    response = await node.request(method, path, data=body, headers={**headers, "Authorization": ""})
    return response.status, await response.json()


def _invoke_body(node, attacker: Identity, module: str, *, expires_in: int = 600) -> bytes:
    return invoke_body(attacker, node.app[IDENTITY].public_key, module, expires_in=expires_in)


async def test_one_authorization_buys_one_run(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    body = _invoke_body(node, attacker, module)
    status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, body)
    assert status == 200, answer
    for _ in range(3):  # the same authorization again: refused before anything runs
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body)
        assert problem["code"] == "authorization-replayed" and status >= 400, problem
    assert len(node.app[NODE].compute.provenance_records.recent(10)) == 1


async def test_an_expired_authorization_buys_no_run(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, _invoke_body(node, attacker, module,
                                                                                      expires_in=-10))
    assert problem["code"] == "authorization-expired" and status >= 400, problem
    assert node.app[NODE].compute.provenance_records.recent(10) == []


async def test_a_limit_spelled_with_more_digits_than_int_reads_is_refused_before_anything_runs(node_factory) -> None:
    """int() raises on a text of more than 4,300 digits: a stranger's fuel of 5,000 zeros was a 500."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    body = json.loads(_invoke_body(node, attacker, module))
    body["call"]["fuel"] = "0" * 4999 + "1"
    status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, json.dumps(body).encode())
    assert status == 400 and problem["code"] == "invalid-argument" and "fuel" in problem["detail"], problem
    assert node.app[NODE].compute.provenance_records.recent(10) == []
    status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, _invoke_body(node, attacker, module))
    assert status == 200, answer


async def test_a_price_past_any_the_market_takes_is_refused_before_anything_runs(node_factory) -> None:
    """A call's budget is its price times its fuel: a stranger's price of 4,300 digits made one int() cannot print
    into the refusal, a 500."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    for field, value in (("price", 10**12 + 1), ("price", 10**4299), ("memory_price", 10**4299)):
        body = {**json.loads(_invoke_body(node, attacker, module)), field: value}
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, json.dumps(body).encode())
        assert status == 400 and problem["code"] == "invalid-argument" and field in problem["detail"], problem
    assert node.app[NODE].compute.provenance_records.recent(10) == []


async def test_no_stranger_can_push_modules(node_factory) -> None:
    """An unsolicited push is refused before its body is read, and the refusal says nothing of what would get
    one accepted."""
    node = await node_factory()
    attacker = Identity.generate()
    status, problem = await _peer(node, attacker, "PUT", MODULES_PATH, wasm("fibonacci"))
    assert status == 403 and problem["code"] == "forbidden", problem
    said = json.dumps(problem).lower()
    assert "hint" not in problem and not any(word in said for word in ("invoke", "call", "fund")), problem
    assert node.app[NODE].compute.registry.modules() == []


async def test_a_call_nobody_pays_for_opens_no_push(node_factory) -> None:
    """A stranger's self-signed "funded" call, on a node that extends it no credit, is 402 before the module is
    looked up: no push window opens, and its push is refused."""
    node = await node_factory(ledger={"stranger_credit": 0})
    attacker = Identity.generate()
    status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, _invoke_body(node, attacker, module_id("add")))
    assert status == 402 and problem["code"] == "prepayment-required", problem
    status, problem = await _peer(node, attacker, "PUT", MODULES_PATH, wasm("add"))
    assert status == 403, problem
    assert node.app[NODE].compute.registry.modules() == []


async def test_a_peers_module_is_bounded_and_its_compile_paid_before_it_starts(node_factory) -> None:
    """A module of more functions than a peer's module may define is refused before it compiles; a module within
    the bounds compiles at a price reserved on the gateway's line first, and used."""
    node = await node_factory()
    gateway = Identity.generate()
    bomb = empty_functions(MAX_PUSHED_FUNCTIONS + 1)
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH,
                                  _invoke_body(node, gateway, hashlib.sha256(bomb).hexdigest()))
    assert status == 404 and problem["code"] == "module-not-found", problem
    status, problem = await _peer(node, gateway, "PUT", MODULES_PATH, bomb)
    assert status == 422 and problem["code"] == "invalid-module" and "functions" in problem["detail"], problem
    assert node.app[NODE].compute.registry.modules() == [] and node.app[NODE].compute.registry.stats["compiled"] == 0
    assert node.app[NODE].trust.line(gateway.id)["used"] == 0

    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH, _invoke_body(node, gateway, module_id("add")))
    assert status == 404, problem
    status, answer = await _peer(node, gateway, "PUT", MODULES_PATH, wasm("add"))
    assert status == 201, answer
    assert node.app[NODE].trust.line(gateway.id)["used"] == compile_price(len(wasm("add")), INVOKE_PRICE)


async def test_a_peers_compile_is_bounded_by_its_cpu_time_not_by_the_childs_start(node_factory) -> None:
    """The compile budget counts the CPU the compile uses: a small module compiles within a budget shorter than
    the child compiling it takes to start (its interpreter and wasmtime loaded at a lower priority, longer still
    on a busy machine), which is the node's cost, not the module's."""
    node = await node_factory(compute={"peer_compile_timeout": 0.1})
    status, answer = await _push_asked(node, Identity.generate(), wasm("add"))
    assert status == 201, answer
    assert len(node.app[NODE].compute.registry.modules()) == 1


async def test_a_peers_compile_after_the_compiler_process_ended_starts_it_again(node_factory) -> None:
    """Peers' modules compile in children of one compiler process, started with the first compile: one that has
    ended (killed, or out of memory) is started again by the next compile, which is not refused for it."""
    node = await node_factory()
    status, answer = await _push_asked(node, Identity.generate(), wasm("add"))
    assert status == 201, answer
    (compiler,) = compiler_processes(os.getpid())
    os.kill(compiler, signal.SIGKILL)
    await eventually_async(lambda: compiler not in compiler_processes(os.getpid()), "the compiler process ended")
    status, answer = await _push_asked(node, Identity.generate(), wasm("arith"))
    assert status == 201, answer
    assert len(node.app[NODE].compute.registry.modules()) == 2 and len(compiler_processes(os.getpid())) == 1


def test_a_compile_that_reaches_the_compiler_process_as_it_is_killed_is_sent_to_a_new_one() -> None:
    """A compiler process killed as a compile is sent to it (already gone from the process table's view, its sockets
    not yet closed) loses that request: the compile is sent again to a compiler process started for it."""
    compile_artifact(wasm("add"), 10)
    for _ in range(5):
        (compiler,) = compiler_processes(os.getpid())
        os.kill(compiler, signal.SIGKILL)
        assert compile_artifact(wasm("arith"), 10)
    assert compiler not in compiler_processes(os.getpid())


def test_the_compiler_process_ends_with_the_process_that_started_it() -> None:
    """A node killed with kill -9 leaves no compiler process behind: it ends as its end of the pair closes."""
    script = ("import os, signal, sys; from xsc.compute.compiler import compile_artifact; "
              "from tests.support.compute import compiler_processes, wasm; compile_artifact(wasm('add'), 10); "
              "print(*compiler_processes(os.getpid()), flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (compiler,) = [int(pid) for pid in done.stdout.split()]
    eventually(lambda: not _running(compiler), "the compiler process to end")


def test_what_the_compiler_process_writes_is_logged_attributed_to_it() -> None:
    """A crash's message from the compiler process (Python's fatal error, as its faulthandler writes it on SIGSEGV)
    is logged by the node's process as the compiler process's, never written to the node's own output as it came."""
    script = ("import logging, os, signal, sys, threading; from xsc.compute.compiler import compile_artifact; "
              "from tests.support.compute import compiler_processes, wasm; "
              "logging.basicConfig(format='%(name)s %(levelname)s: %(message)s'); crashed = threading.Event(); "
              "handler = logging.Handler(); handler.emit = lambda r: 'Segmentation fault' in r.getMessage() "
              "and crashed.set(); logging.getLogger('xsc.compute.compiler').addHandler(handler); "
              "os.environ['PYTHONFAULTHANDLER'] = '1'; compile_artifact(wasm('add'), 10); "
              "(compiler,) = compiler_processes(os.getpid()); os.kill(compiler, signal.SIGSEGV); "
              "print(compiler, crashed.wait(60), flush=True)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    compiler, crashed = done.stdout.split()
    assert crashed == b"True", done.stderr
    lines = done.stderr.decode().splitlines()
    assert f"xsc.compute.compiler WARNING: compiler process {compiler.decode()}: Fatal Python error: Segmentation " \
           "fault" in lines, lines
    assert not any(line.startswith(("Fatal Python error", "Current thread")) for line in lines), lines


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _push_asked(node, gateway: Identity, module: bytes) -> tuple[int, dict]:
    """A funded call for `module` (404: this node lacks it), then the push of it that the call opened."""
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH,
                                  _invoke_body(node, gateway, hashlib.sha256(module).hexdigest()))
    assert status == 404 and problem["code"] == "module-not-found", problem
    return await _peer(node, gateway, "PUT", MODULES_PATH, module)


async def test_a_peers_compile_past_its_deadline_is_stopped_and_still_paid(node_factory) -> None:
    """Compiling a peer's module is bounded by the CPU time it uses, not only by its size: the child compiling it
    is killed once it has used its budget, nothing is kept, and the work done is charged as priced."""
    node = await node_factory(compute={"peer_compile_timeout": 0.5})
    gateway = Identity.generate()
    slow = empty_functions(MAX_PUSHED_FUNCTIONS)  # within every size bound; compiles in seconds on one core
    status, problem = await _push_asked(node, gateway, slow)
    assert status == 422 and problem["code"] == "compile-timeout" and problem["limit"] == 0.5, problem
    compute = node.app[NODE].compute
    assert compute.registry.modules() == [] and compute.registry.compiling == 0
    assert node.app[NODE].trust.line(gateway.id)["used"] == compile_price(len(slow), INVOKE_PRICE)
    assert values(await call(node, "add", "add", 1, 2)) == [3]


async def test_the_operator_never_waits_for_a_peers_compile(node_factory) -> None:
    """While a peer's module compiles (in a child process, at a lower priority), the operator deploys and calls
    a module of its own, and both finish before that compile does."""
    node = await node_factory()
    compute = node.app[NODE].compute
    gateway = Identity.generate()
    push = asyncio.ensure_future(_push_asked(node, gateway, empty_functions(MAX_PUSHED_FUNCTIONS)))
    await eventually_async(lambda: compute.registry.compiling == 1 or push.done(), "the peer's compile to start")
    assert not push.done(), push.result()
    assert values(await call(node, "add", "add", 2, 3)) == [5]
    assert compute.registry.compiling == 1 and not push.done()  # the operator did not wait for it
    status, answer = await push
    # Done or stopped at its deadline (a loaded machine): either way it was never the operator's wait.
    assert status == 201 or answer["code"] == "compile-timeout", answer


async def test_a_module_is_taken_for_a_funded_call_and_removed_when_unused(node_factory) -> None:
    node = await node_factory()
    gateway = Identity.generate()
    module = module_id("add")
    status, problem = await _peer(node, gateway, "POST", INVOKE_PATH, _invoke_body(node, gateway, module))
    assert status == 404 and problem["code"] == "module-not-found", problem
    # Another peer may not push it on the strength of that call.
    status, _ = await _peer(node, Identity.generate(), "PUT", MODULES_PATH, wasm("add"))
    assert status == 403
    status, answer = await _peer(node, gateway, "PUT", MODULES_PATH, wasm("add"))
    assert status == 201 and answer["module"] == module, answer
    status, _ = await _peer(node, gateway, "PUT", MODULES_PATH, wasm("add"))
    assert status == 403  # once per call that needed it
    status, answer = await _peer(node, gateway, "POST", INVOKE_PATH, _invoke_body(node, gateway, module))
    assert status == 200, answer
    [info] = node.app[NODE].compute.registry.modules()
    assert info.pushed_by == gateway.id
    pushes = node.app[NODE].paid.pushes
    assert await pushes.sweep(time.time()) == []  # just used
    assert await pushes.sweep(time.time() + 2 * 3600) == [module]
    compute = node.app[NODE].compute
    assert compute.registry.modules() == [] and len(compute.provenance_records.recent(10)) == 1


async def test_a_tab_authorization_is_verified_once_and_a_forged_one_is_refused_every_time(node_factory) -> None:
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()

    def body(authorization: str) -> bytes:
        return json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                           "price": INVOKE_PRICE, "authorization": authorization, "deal": {}, "tab": True}).encode()

    expires = int(time.time()) + 600
    genuine = encode_authorization(authorize(attacker, node.app[IDENTITY].public_key, 10**12, "compute:rtab:1",
                                             expires, os.urandom(16))).hex()
    forged = genuine[:-2] + ("00" if genuine[-2:] != "00" else "01")  # its signature changed in one byte
    elsewhere = encode_authorization(authorize(attacker, Identity.generate().public_key, 10**12, "compute:rtab:2",
                                               expires, os.urandom(16))).hex()  # pays another node
    for _ in range(2):
        status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, body(genuine))
        assert status == 200 and answer["tab"]["count"] >= 1, answer
        for bad in (forged, elsewhere, forged.upper()):
            status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body(bad))
            assert status == 403 and problem["code"] == "forbidden", problem
    assert len(node.app[NODE].compute.provenance_records.recent(10)) == 2  # only the genuine calls ran


async def test_a_tab_whose_cap_no_json_reader_holds_exactly_runs_nothing_and_cannot_be_closed(node_factory) -> None:
    """A tab's receipt publishes its authorization's cap and expiry in JSON: past 2^53 - 1 a reader holding numbers as
    doubles (the dashboard) reads another number than the one signed."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    me, soon = node.app[IDENTITY].public_key, int(time.time()) + 600
    for cap, expires, named in ((2**53, soon, "cap is 9,007,199,254,740,992"),
                                (10**12, 2**53, "expires_at is 9,007,199,254,740,992")):
        auth = encode_authorization(authorize(attacker, me, cap, "compute:rtab:1", expires, os.urandom(16))).hex()
        call_body = json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                                "price": INVOKE_PRICE, "authorization": auth, "deal": {}, "tab": True}).encode()
        for path, body in ((INVOKE_PATH, call_body), (TAB_CLOSE_PATH, json.dumps({"authorization": auth}).encode())):
            status, problem = await _peer(node, attacker, "POST", path, body)
            assert (status, problem["code"]) == (422, "invalid-entry") and named in problem["detail"], (path, problem)
    assert node.app[NODE].compute.provenance_records.recent(10) == []


async def test_a_tab_nothing_ran_under_gets_no_receipt_and_leaves_nothing_behind(node_factory) -> None:
    """Any key signs a tab's authorization, for nothing.  Closing a tab no call ran under is refused (404
    nothing-owed) with nothing written: a receipt of 0 would be an entry on this node's chain for good (a synced
    write and a signature each).  A tab whose calls were refused or failed is not kept in memory either."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    me = node.app[IDENTITY].public_key
    chain, tabs, trust = node.app[NODE].ledger.store, node.app[NODE].paid.provider_tabs, node.app[NODE].paid.trust

    def tab(cap: int = 10**12) -> str:
        return encode_authorization(authorize(attacker, me, cap, "compute:rtab:1", int(time.time()) + 600,
                                              os.urandom(16))).hex()

    def body(authorization: str, args: list[int]) -> bytes:
        return json.dumps({"call": {"module": module, "function": "add", "args": args, "fuel": 1_000_000},
                           "price": INVOKE_PRICE, "authorization": authorization, "deal": {}, "tab": True}).encode()

    def closing(authorization: str) -> bytes:
        return json.dumps({"authorization": authorization}).encode()

    seq, lines = chain.state(me).seq, trust.lines()
    for _ in range(20):
        emptied = tab()
        status, problem = await _peer(node, attacker, "POST", TAB_CLOSE_PATH, closing(emptied))
        assert status == 404 and problem["code"] == "nothing-owed", problem
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body(emptied, [1, 2]))  # closed
        assert status == 409 and problem["code"] == "authorization-replayed", problem
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body(tab(cap=1), [1, 2]))
        assert status == 403 and problem["code"] == "deal-refused", problem
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body(tab(), [1]))
        assert status == 400 and problem["code"] == "wrong-argument-count", problem
    assert chain.state(me).seq == seq and trust.lines() == lines and tabs.kept == 0
    assert node.app[NODE].compute.provenance_records.recent(10) == []
    # A tab a call ran under is kept while it is open, and closed for its receipt.
    ran = tab()
    status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, body(ran, [1, 2]))
    assert status == 200 and answer["tab"]["count"] == 1 and tabs.kept == 1, answer
    status, answer = await _peer(node, attacker, "POST", TAB_CLOSE_PATH, closing(ran))
    assert status == 200 and answer["receipt"], answer
    assert chain.state(me).seq == seq + 1 and tabs.kept == 0


async def test_closing_tabs_made_up_or_another_gateways_flushes_no_journal(node_factory, monkeypatch) -> None:
    """A tab's close waits for the journal to write the runs answered under it (a web function's are answered
    before their records are written): a flush is a synced write at once.  Closes of tabs made up (any key signs
    one) or another gateway's, sent again and again, were one flush a request: they flush nothing."""
    node = await node_factory()
    module = await deploy(node, "add")
    journal = node.app[NODE].compute.journal
    flushes: list[None] = []
    flush = journal.flush
    monkeypatch.setattr(journal, "flush", lambda: (flushes.append(None), flush())[1])
    gateway, attacker = Identity.generate(), Identity.generate()

    def tab(payer: Identity) -> str:
        return encode_authorization(authorize(payer, node.app[IDENTITY].public_key, 10**12, "compute:rtab:1",
                                              int(time.time()) + 600, os.urandom(16))).hex()

    def closing(authorization: str) -> bytes:
        return json.dumps({"authorization": authorization}).encode()

    for _ in range(10):
        status, problem = await _peer(node, attacker, "POST", TAB_CLOSE_PATH, closing(tab(attacker)))
        assert status == 404 and problem["code"] == "nothing-owed", problem
    theirs = tab(gateway)
    status, answer = await _peer(node, gateway, "POST", INVOKE_PATH, json.dumps(
        {"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000}, "price": INVOKE_PRICE,
         "authorization": theirs, "deal": {}, "tab": True}).encode())
    assert status == 200 and answer["tab"]["count"] == 1, answer
    status, problem = await _peer(node, attacker, "POST", TAB_CLOSE_PATH, closing(theirs))
    assert status == 403 and problem["code"] == "forbidden", problem
    assert flushes == []
    status, answer = await _peer(node, gateway, "POST", TAB_CLOSE_PATH, closing(theirs))
    assert status == 200 and answer["receipt"], answer


async def test_withdrawing_a_function_never_placed_is_refused_before_anything_is_written(node_factory,
                                                                                          monkeypatch) -> None:
    """Withdrawing a placed function is a synced write: a name never placed, sent again and again, was one fsync a
    request at the sender's rate.  It is refused (404) and writes nothing."""
    node = await node_factory()
    placed = node.app[NODE].placed_functions
    writes: list[tuple[str, str]] = []
    remove = placed.store.remove_placement
    monkeypatch.setattr(placed.store, "remove_placement", lambda *key: (writes.append(key), remove(*key))[1])
    attacker = Identity.generate()
    for name in ("never", "placed", "here"):
        status, problem = await _peer(node, attacker, "DELETE", FUNCTION_PATH.format(name=name), b"")
        assert status == 404 and problem["code"] == "not-found", problem
    assert writes == []


async def test_a_tab_its_gateway_lets_expire_unclosed_is_forgotten_with_its_run_records(node_factory) -> None:
    """A gateway that runs calls on tabs and never closes them (none can be closed once its authorization has
    expired: no receipt is signed under it) left each tab in memory and its run records (`c/t/`) on disk for good.
    An expired tab is forgotten with its records, by the sweep as the node runs and at a start; an authorization
    of a longer life than MAX_TAB_TTL is refused at its first call."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker, me = Identity.generate(), node.app[IDENTITY].public_key
    paid, tabs = node.app[NODE].paid, node.app[NODE].paid.provider_tabs

    def call(expires_in: int) -> bytes:
        auth = authorize(attacker, me, 10**12, "compute:rtab:1", int(time.time()) + expires_in, os.urandom(16))
        return json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                           "price": INVOKE_PRICE, "authorization": encode_authorization(auth).hex(), "deal": {},
                           "tab": True}).encode()

    status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, call(MAX_TAB_TTL + 60))
    assert status == 403 and problem["code"] == "deal-refused", problem
    for _ in range(3):  # three tabs, a call each, never closed
        status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, call(600))
        assert status == 200, answer
    await node.app[NODE].compute.journal.flush()
    assert tabs.kept == 3 and tabs.records() == 3
    assert await paid.expire_tabs(time.time() + 60) == 0  # not expired yet: kept
    assert await paid.expire_tabs(time.time() + 601) == 3
    assert tabs.kept == 0 and tabs.records() == 0
    # What a stop left on disk: dropped at the next start once the first run is older than MAX_TAB_TTL.
    status, answer = await _peer(node, attacker, "POST", INVOKE_PATH, call(600))
    assert status == 200, answer
    await node.app[NODE].compute.journal.flush()
    assert tabs.sweep(time.time() + 60) == 0 and tabs.records() == 1
    assert tabs.sweep(time.time() + MAX_TAB_TTL + 1) == 1 and tabs.records() == 0


async def test_a_call_on_a_tab_under_the_ask_is_refused_before_it_runs(node_factory) -> None:
    """A tab call's price is the gateway's word, as a single call's is: under this node's ask (0: compute for
    nothing) it is refused before anything runs, and with the node offering no compute, at any price."""
    node = await node_factory()
    module = await deploy(node, "add")
    attacker = Identity.generate()
    expires = int(time.time()) + 600
    authorization = encode_authorization(authorize(attacker, node.app[IDENTITY].public_key, 10**12,
                                                   "compute:rtab:1", expires, os.urandom(16))).hex()
    for price in (0, 1):
        body = json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                           "price": price, "authorization": authorization, "deal": {}, "tab": True}).encode()
        status, problem = await _peer(node, attacker, "POST", INVOKE_PATH, body)
        assert status == 403 and problem["code"] == "deal-refused" and "under this node's ask" in problem["detail"]
    assert node.app[NODE].compute.provenance_records.recent(10) == []


async def test_modules_awaited_from_gateways_are_bounded_the_oldest_asked_forgotten_first(node_factory) -> None:
    """Each call naming a module this node lacks opens a push window for it: a gateway names any module ids, so the
    windows open at once are at most AWAITED_MODULES; the oldest asked is forgotten first and its push refused."""
    from xsc.compute.pushes import AWAITED_MODULES

    node = await node_factory()
    pushes = node.app[NODE].paid.pushes
    first, later = Identity.generate(), Identity.generate()
    pushes.expect(first.id, module_id("add"), INVOKE_PRICE)
    assert pushes.awaits(first.id)
    for n in range(AWAITED_MODULES - 1):
        pushes.expect(later.id, hashlib.sha256(b"%d" % n).hexdigest(), INVOKE_PRICE)
    assert pushes.awaits(first.id)  # still within the bound
    pushes.expect(later.id, hashlib.sha256(b"one more").hexdigest(), INVOKE_PRICE)
    assert not pushes.awaits(first.id)
    status, problem = await _peer(node, first, "PUT", MODULES_PATH, wasm("add"))
    assert status == 403, problem


async def test_a_tab_is_its_gateways_alone_to_call_under_and_to_close(node_factory) -> None:
    """A node that learns another gateway's tab authorization (it names no caller) neither runs calls on it nor
    closes it: the close would count the receipt's amount as paid by the closer on its trust line here."""
    node = await node_factory()
    module = await deploy(node, "add")
    gateway, stranger = Identity.generate(), Identity.generate()
    trust = node.app[NODE].paid.trust
    auth = encode_authorization(authorize(gateway, node.app[IDENTITY].public_key, 10**12, "compute:rtab:1",
                                          int(time.time()) + 600, os.urandom(16))).hex()
    call_body = json.dumps({"call": {"module": module, "function": "add", "args": [1, 2], "fuel": 1_000_000},
                            "price": INVOKE_PRICE, "authorization": auth, "deal": {}, "tab": True}).encode()
    closing = json.dumps({"authorization": auth}).encode()
    status, answer = await _peer(node, gateway, "POST", INVOKE_PATH, call_body)
    assert status == 200 and answer["tab"]["count"] == 1, answer
    lines = trust.lines()
    for path, body in ((INVOKE_PATH, call_body), (TAB_CLOSE_PATH, closing)):
        status, problem = await _peer(node, stranger, "POST", path, body)
        assert status == 403 and problem["code"] == "forbidden", problem
    assert trust.lines() == lines and len(node.app[NODE].compute.provenance_records.recent(10)) == 1
    status, answer = await _peer(node, gateway, "POST", TAB_CLOSE_PATH, closing)
    assert status == 200 and answer["receipt"], answer
    assert stranger.id not in {line["peer"] for line in trust.lines()}


def test_a_providers_word_of_what_is_missing_never_asks_a_prepayment_past_the_works_budget() -> None:
    """A provider that refuses a call for want of prepayment says what is missing; the command the user is told to
    run names at most the most the work may cost, whatever a hostile provider says."""
    from xsc.compute.paid import relayed
    from xsc.errors import PeerRefused
    from xsc.units import MAX_MICRO_CREDITS, credits_argument

    provider = "p" * 52
    for said, named in ((MAX_MICRO_CREDITS, 5_000), (4_999, 4_999)):
        refusal = PeerRefused("peer answered 402: must prepay", peer_code="prepayment-required", peer_missing=said)
        hint = relayed(provider, refusal, budget=5_000).hint
        assert hint.endswith(f"xsc ledger prepay {provider} {credits_argument(named)}"), hint
