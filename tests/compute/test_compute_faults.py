"""Bad input and faults: each has its own error kind and message, and the node keeps serving.

The tests share one node (file_node): each checks, once it is done, that the node still serves."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.support.compute import deploy, invoke, module_id, wasm


@pytest_asyncio.fixture(loop_scope="module")
async def client(file_node):
    node = file_node
    yield node
    # Whatever the test did, the node still answers.
    health = await node.get("/health")
    assert health.status == 200
    assert (await health.json())["checks"]["compute:epoch-ticker"][0]["status"] == "pass"
    add = await deploy(node, "add")
    status, body = await invoke(node, add, "add", "20", "22")
    assert (status, body["results"][0]["value"]) == (200, 42)


async def problem(response) -> dict:
    body = await response.json()
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return {**body, "http": response.status}


async def test_bytes_that_are_not_wasm(client):
    body = await problem(await client.post("/v1/modules", data=b"hello, I am not wasm"))
    assert (body["http"], body["code"]) == (422, "invalid-module")
    assert "does not start with the wasm magic bytes" in body["detail"]


async def test_wasm_text_gets_a_hint(client):
    body = await problem(await client.post("/v1/modules", data=b"(module)"))
    assert (body["http"], body["code"]) == (422, "invalid-module") and ".wat module" in body["detail"]
    assert "xsc compute deploy FILE.wat" in body["hint"] and "wat2wasm" in body["hint"]


async def test_invalid_wasm_after_the_magic(client):
    body = await problem(await client.post("/v1/modules", data=b"\0asm\x01\0\0\0\x01\xff\xff"))
    assert (body["http"], body["code"]) == (422, "invalid-module")
    assert body["detail"].startswith("not a valid WebAssembly module:")


async def test_empty_module(client):
    body = await problem(await client.post("/v1/modules", data=b""))
    assert body["code"] == "invalid-module" and "empty" in body["detail"]


async def test_module_over_the_size_limit(client):
    limit = 16 * 1024 * 1024
    body = await problem(await client.post("/v1/modules", data=wasm("add") + bytes(limit)))
    assert (body["http"], body["code"]) == (413, "module-too-large")
    assert "over this node's limit of 16.0 MiB" in body["detail"]


async def test_missing_export(client):
    add = await deploy(client, "add")
    status, body = await invoke(client, add, "mul", "1", "2")
    assert (status, body["code"]) == (404, "export-not-found")
    assert "no export named 'mul'" in body["detail"] and "add, sub" in body["hint"]


@pytest.mark.parametrize("export,kind", [("memory", "memory"), ("answer", "global"), ("table", "table")])
async def test_export_that_is_not_a_function(client, export, kind):
    module = await deploy(client, "exports")
    status, body = await invoke(client, module, export)
    assert (status, body["code"]) == (422, "export-not-a-function")
    assert body["detail"] == f"export {export!r} is a {kind}, not a function"
    assert "answer_fn" in body["hint"]


@pytest.mark.parametrize("args", [["1"], ["1", "2", "3"]])
async def test_wrong_number_of_arguments(client, args):
    add = await deploy(client, "add")
    status, body = await invoke(client, add, "add", *args)
    assert (status, body["code"]) == (400, "wrong-argument-count")
    assert body["detail"] == f"add takes 2 arguments (i32, i32), got {len(args)}"


async def test_non_numeric_argument(client):
    add = await deploy(client, "add")
    status, body = await invoke(client, add, "add", "1", "two")
    assert (status, body["code"]) == (400, "bad-argument")
    assert body["detail"] == "argument 2 of add is not an i32: 'two'"


async def test_out_of_range_i32(client):
    add = await deploy(client, "add")
    status, body = await invoke(client, add, "add", "4294967296", "1")
    assert (status, body["code"]) == (400, "argument-out-of-range")
    assert "out of range for an i32" in body["detail"]


async def test_an_integer_past_64_bits_in_json_is_out_of_range_not_a_float(client):
    add = await deploy(client, "add")
    status, body = await invoke(client, add, "add", 123456789012345678901234, 1)  # a JSON number, not text
    assert (status, body["code"]) == (400, "argument-out-of-range"), body
    assert "123456789012345678901234" in body["detail"]


async def test_imports_without_wasi(client):
    body = await problem(await client.post("/v1/modules", data=wasm("imports")))
    assert (body["http"], body["code"]) == (422, "imports-not-allowed")
    assert body["imports"] == ["env.log (func)", "env.memory (memory)"]
    assert "env.log (func), env.memory (memory)" in body["detail"]
    # --wasi does not let non-WASI imports through either
    body = await problem(await client.post("/v1/modules", data=wasm("imports"), params={"wasi": "true"}))
    assert body["code"] == "imports-not-allowed" and "WASI profile does not provide" in body["detail"]


async def test_wasi_module_invoked_without_wasi(client):
    body = await problem(await client.post("/v1/modules", data=wasm("wasi_hello")))
    assert body["code"] == "imports-not-allowed" and "wasi_snapshot_preview1.fd_write (func)" in body["detail"]
    module = await deploy(client, "wasi_hello", wasi=True)
    status, body = await invoke(client, module, "_start")
    assert (status, body["code"]) == (422, "imports-not-allowed")


async def test_fuel_exhausted(client):
    fib = await deploy(client, "fibonacci")
    status, body = await invoke(client, fib, "fib", "30", fuel=100_000)
    assert (status, body["code"], body["kind"]) == (422, "trap", "out-of-fuel")
    assert "out of fuel: it used all 100,000 units of its fuel limit;" in body["detail"], body["detail"]
    assert body["fuel_consumed"] == body["fuel_limit"] == 100_000
    assert (body["limit"], body["limit_value"], body["raised_by"]) == ("fuel", 100_000, "--fuel (at most compute.fuel)")


async def test_a_fuel_traps_hint_offers_no_more_than_the_nodes_ceiling(node_factory):
    node = await node_factory(compute={"fuel": 200_000})
    fib = await deploy(node, "fibonacci")
    status, body = await invoke(node, fib, "fib", "30", fuel=100_000)
    assert (status, body["kind"]) == (422, "out-of-fuel"), body
    assert body["hint"] == "ask for more with --fuel, up to 200,000 (this node's compute.fuel)"
    for asked in ({}, {"fuel": 200_000}):  # the ceiling itself: no --fuel asks for more, the ceiling raised does
        status, body = await invoke(node, fib, "fib", "30", **asked)
        assert (status, body["kind"], body["limit_value"]) == (422, "out-of-fuel", 200_000), body
        assert body["detail"].startswith("out of fuel: it used all 200,000 units of its fuel limit;"), body["detail"]
        assert body["hint"] == ("its fuel limit is this node's most, compute.fuel: to ask for more, raise it (xsc config "
                                "set compute.fuel ...) and restart the node")
    status, body = await invoke(node, fib, "fib", "30", fuel=300_000)
    assert (status, body["detail"]) == (400, "fuel 300,000 is more than this node allows per call (200,000)"), body


async def test_deadline_with_plenty_of_fuel(client):
    spin = await deploy(client, "loop")
    status, body = await invoke(client, spin, "spin", timeout=0.3)  # fuel: the node's maximum
    assert (status, body["kind"]) == (422, "deadline")
    assert (body["limit"], body["limit_value"]) == ("timeout", 0.3), body
    assert body["raised_by"] == "--timeout (at most compute.timeout)", body
    assert "past its wall-clock limit of 0.3 s" in body["detail"]
    assert body["fuel_limit"] == 10_000_000_000


async def test_memory_growth_refused(client):
    hog = await deploy(client, "memory_hog")
    status, body = await invoke(client, hog, "hog", memory="1MiB")
    assert (status, body["kind"]) == (422, "memory-limit")
    assert "grew its memory to 1.0 MiB of its 1.0 MiB limit, was refused more" in body["detail"]
    # A module that checks memory.grow's answer sees the refusal and carries on.
    status, body = await invoke(client, hog, "grow", "100", memory="1MiB")
    assert (status, body["results"][0]["value"]) == (200, -1)


async def test_initial_memory_over_the_limit(client):
    big = await deploy(client, "big_memory")
    status, body = await invoke(client, big, "size")
    assert (status, body["kind"]) == (422, "memory-limit")
    assert body["detail"].startswith("memory limit: the module needs 128.0 MiB (2048 pages) of initial memory, "
                                     "over its limit of 64.0 MiB; charged ")


async def test_stack_overflow(client):
    module = await deploy(client, "recursion")
    status, body = await invoke(client, module, "down", "0")
    assert (status, body["kind"]) == (422, "stack-overflow")
    assert body["detail"].startswith("stack overflow:")


async def test_unreachable(client):
    module = await deploy(client, "traps")
    status, body = await invoke(client, module, "unreachable")
    assert (status, body["kind"]) == (422, "unreachable")
    assert "`unreachable` instruction" in body["detail"]


async def test_divide_by_zero(client):
    module = await deploy(client, "traps")
    status, body = await invoke(client, module, "div", "1", "0")
    assert (status, body["kind"]) == (422, "divide-by-zero")
    assert body["detail"].startswith("the module trapped: integer divide by zero; charged ")


async def test_out_of_bounds_memory_access(client):
    module = await deploy(client, "traps")
    status, body = await invoke(client, module, "out_of_bounds")
    assert (status, body["kind"]) == (422, "memory-out-of-bounds")
    assert "out of bounds memory access" in body["detail"]


async def test_limits_over_the_node_maximum(client):
    add = await deploy(client, "add")
    for option, value in (("fuel", 10**11), ("memory", "1GiB"), ("timeout", 60)):
        status, body = await invoke(client, add, "add", "1", "2", **{option: value})
        assert (status, body["code"]) == (400, "limit-too-high"), body
        assert "more than this node allows per call" in body["detail"] and f"compute.{option}" in body["hint"]
        assert (body["limit"], body["raised_by"]) == (option, f"compute.{option}"), body  # and its value, the most
        assert body["limit_value"] == {"fuel": 10**10, "memory": 64 * 1024**2, "timeout": 5.0}[option], body
        if option == "memory":  # in the unit it was refused in, and one --memory takes
            assert body["hint"].startswith("ask for at most 64.0 MiB,"), body


async def test_unknown_module_and_bad_ids(client):
    status, body = await invoke(client, "0" * 64, "add")
    assert (status, body["code"]) == (404, "module-not-found")
    status, body = await invoke(client, "not-an-id", "add")
    assert (status, body["code"]) == (400, "invalid-argument")
    response = await client.get("/v1/modules/" + "1" * 64)
    assert (await problem(response))["code"] == "module-not-found"


async def test_malformed_invoke_requests(client):
    response = await client.post("/v1/compute/invoke", data=b"{not json")
    assert (await problem(response))["detail"] == "the request body is not JSON"
    response = await client.post("/v1/compute/invoke", json=[1, 2])
    assert (await problem(response))["code"] == "invalid-argument"
    response = await client.post("/v1/compute/invoke", json={"module": "0" * 64, "function": "f", "colour": "red"})
    assert "unknown field in the request: colour" in (await problem(response))["detail"]
    response = await client.post("/v1/compute/invoke", json={"module": "0" * 64, "function": "f", "args": "1 2"})
    assert (await problem(response))["detail"] == "args must be a list of numbers or strings"


async def test_streamed_module_over_the_size_limit(file_compute_node):
    node = await file_compute_node(max_module_size="1KiB")

    async def chunks():
        for _ in range(4):
            yield wasm("add") + bytes(1000)

    body = await problem(await node.post("/v1/modules", data=chunks()))  # chunked: no Content-Length
    assert (body["http"], body["code"]) == (413, "module-too-large")
    assert "over this node's limit of 1.0 KiB" in body["detail"]
    assert (await deploy(node, "add")) == module_id("add")
