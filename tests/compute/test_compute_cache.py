"""The module registry and the compiled-artifact cache: compile once, load sealed artifacts, never a tampered one."""

from __future__ import annotations

import stat

import plyvel

from tests.support.compute import deploy, invoke, module_id, wasm
from xsc import keys
from xsc.compute import artifacts
from xsc.compute import engine as eng
from xsc.node import CONFIG
from xsc.node.appkeys import NODE
from xsc.node.datadir import DB_DIR


def stats(client) -> dict:
    return client.server.app[NODE].compute.registry.stats


async def test_deploy_compiles_once_and_hot_invokes_never_recompile(compute_node):
    node = await compute_node()
    fib = await deploy(node, "fibonacci")
    assert stats(node) == {"compiled": 1, "loaded": 0, "rejected_artifacts": 0}
    for _ in range(10):
        status, _ = await invoke(node, fib, "fib", "10")
        assert status == 200
    response = await node.post("/v1/modules", data=wasm("fibonacci"))  # deploying again is a no-op
    assert response.status == 200 and (await response.json())["created"] is False
    assert stats(node) == {"compiled": 1, "loaded": 0, "rejected_artifacts": 0}


async def test_restarted_node_loads_the_cached_artifact(compute_node):
    node = await compute_node("n")
    fib = await deploy(node, "fibonacci")
    await node.close()
    node = await compute_node("n")
    status, body = await invoke(node, fib, "fib", "15")
    assert (status, body["results"][0]["value"]) == (200, 610)
    assert stats(node) == {"compiled": 0, "loaded": 1, "rejected_artifacts": 0}


def tamper(data_dir, module_hash: bytes) -> None:
    db = plyvel.DB(str(data_dir / DB_DIR))
    try:
        key = keys.artifact(module_hash, eng.fingerprint())
        sealed = bytearray(db.get(key))
        sealed[len(sealed) // 2] ^= 0xFF  # one flipped bit pattern in the native code
        db.put(key, bytes(sealed), sync=True)
    finally:
        db.close()


async def test_tampered_artifact_is_never_loaded(compute_node):
    node = await compute_node("n")
    fib = await deploy(node, "fibonacci")
    data_dir = node.server.app[CONFIG].data_dir
    await node.close()
    tamper(data_dir, bytes.fromhex(fib))

    node = await compute_node("n")
    status, body = await invoke(node, fib, "fib", "15")
    assert (status, body["results"][0]["value"]) == (200, 610)
    assert stats(node) == {"compiled": 1, "loaded": 0, "rejected_artifacts": 1}
    await node.close()

    node = await compute_node("n")  # the recompiled artifact replaced the tampered one
    status, _ = await invoke(node, fib, "fib", "15")
    assert status == 200
    assert stats(node) == {"compiled": 0, "loaded": 1, "rejected_artifacts": 0}


async def test_artifacts_are_keyed_by_engine_settings(compute_node, monkeypatch):
    node = await compute_node("n")
    add = await deploy(node, "add")
    await node.close()
    monkeypatch.setitem(eng.SETTINGS, "cranelift_opt_level", "speed_and_size")
    node = await compute_node("n")
    status, _ = await invoke(node, add, "add", "1", "2")
    assert status == 200
    assert stats(node) == {"compiled": 1, "loaded": 0, "rejected_artifacts": 0}


async def test_artifact_secret_is_private(compute_node):
    node = await compute_node()
    path = node.server.app[CONFIG].data_dir / artifacts.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32


def test_seal_binds_the_key():
    secret = b"s" * 32
    sealed = artifacts.seal(secret, b"key-1", b"native code")
    assert artifacts.unseal(secret, b"key-1", sealed) == b"native code"
    assert artifacts.unseal(secret, b"key-2", sealed) is None  # not movable to another module or engine
    assert artifacts.unseal(b"t" * 32, b"key-1", sealed) is None
    assert artifacts.unseal(secret, b"key-1", sealed[:10]) is None


async def test_module_registry(compute_node):
    node = await compute_node()
    response = await node.post("/v1/modules", data=wasm("multi"))
    first = await response.json()
    assert response.status == 201 and first["created"] is True
    assert first["id"] == module_id("multi") and first["size"] == len(wasm("multi"))
    assert [e["signature"] for e in first["exports"]] == [
        "divmod(i32, i32) -> (i32, i32)", "swap(i64, f64) -> (f64, i64)", "triple(i32) -> (i32, i64, f32)"]
    await invoke(node, first["id"], "divmod", "7", "2")
    await invoke(node, first["id"], "divmod", "7", "0")  # a trap is an invocation too
    await invoke(node, first["id"], "divmod", "7")  # bad arguments are not

    again = await (await node.post("/v1/modules", data=wasm("multi"))).json()
    assert again["first_deployed"] == first["first_deployed"]
    one = await (await node.get(f"/v1/modules/{first['id']}")).json()
    assert one["invocations"] == 2
    listed = await (await node.get("/v1/modules")).json()
    assert [m["id"] for m in listed["modules"]] == [first["id"]]
    assert listed["modules"][0]["invocations"] == 2


async def test_a_module_called_on_the_loop_is_the_last_dropped_from_memory(compute_node, monkeypatch):
    """Modules in memory are dropped least recently used first: a call tried on the event loop uses its module too."""
    from xsc.compute import registry
    from xsc.compute.service import InvokeCall

    node = await compute_node()
    compute = node.app[NODE].compute
    monkeypatch.setattr(registry, "MODULE_CACHE_SIZE", 2)
    add, fib = await deploy(node, "add"), await deploy(node, "fibonacci")  # in memory: add, then fib
    run = await compute.invoke(InvokeCall(add, "add", [1, 2]), requester="r" * 64, rate=0, together=True)
    assert run.ok and compute.inline["inline"] == 1  # tried on the loop (it comes with others)
    arith = await deploy(node, "arith")  # one too many: the least recently used goes
    in_memory = {h.hex() for h in compute.registry._cache}
    assert in_memory == {add, arith}, in_memory
    assert fib not in in_memory
