"""Real modules, real results: every value type, multi-value results, fuel-heavy calls, WASI programs.

The tests share one node of the default configuration (file_node): each deploys and calls what it checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.compute import WASM, call, deploy, invoke, values, wasm
from xsc.compute.modules import has_start_function


@pytest.fixture
def node(file_node):
    return file_node


async def test_add_and_negative_numbers(node):
    assert values(await call(node, "add", "add", "1", "2")) == [3]
    assert values(await call(node, "add", "sub", "-5", "3")) == [-8]
    assert values(await call(node, "add", "add", 1, -1)) == [0]  # JSON numbers work too
    assert values(await call(node, "add", "add", "0x7fffffff", "1")) == [-2147483648]  # wraps like wasm does


async def test_i64(node):
    assert values(await call(node, "arith", "add_i64", "9223372036854775807", "-1")) == [9223372036854775806]
    assert values(await call(node, "arith", "mul_i64", "-0x10", "0x10")) == [-256]
    assert values(await call(node, "arith", "id_i64", "18446744073709551615")) == [-1]


async def test_floats(node):
    assert values(await call(node, "arith", "add_f32", "0.1", "0.2")) == ["0.3"]
    assert values(await call(node, "arith", "add_f64", "0.1", "0.2")) == ["0.30000000000000004"]
    assert values(await call(node, "arith", "div_f64", "1", "0")) == ["inf"]
    assert values(await call(node, "arith", "div_f64", "-1", "0")) == ["-inf"]
    assert values(await call(node, "arith", "sqrt_f64", "2")) == ["1.4142135623730951"]
    assert values(await call(node, "arith", "id_f64", "-0.0")) == ["-0.0"]
    assert values(await call(node, "arith", "id_f32", "inf")) == ["inf"]
    assert values(await call(node, "arith", "id_f64", "0x1.8p1")) == ["3.0"]
    assert values(await call(node, "arith", "mul_f32", "1e30", "1e30")) == ["inf"]


async def test_nan_is_canonical(node):
    # 0/0 in wasm, and NaN arithmetic on a NaN argument with a payload, both give the one canonical NaN
    assert values(await call(node, "arith", "nan_f32")) == ["nan"]
    assert values(await call(node, "arith", "add_f64", "-nan", "1")) == ["nan"]
    assert values(await call(node, "arith", "sqrt_f64", "-1")) == ["nan"]


async def test_multi_value(node):
    body = await call(node, "multi", "divmod", "-7", "2")
    assert body["results"] == [{"type": "i32", "value": -3}, {"type": "i32", "value": -1}]
    body = await call(node, "multi", "swap", "5", "2.5")
    assert body["results"] == [{"type": "f64", "value": "2.5"}, {"type": "i64", "value": 5}]
    assert values(await call(node, "multi", "triple", "-3")) == [-3, -3, "-3.0"]


async def test_no_results(node):
    body = await call(node, "arith", "nothing")
    assert body["results"] == [] and body["fuel_consumed"] >= 0


async def test_factorial_and_fibonacci(node):
    assert values(await call(node, "factorial", "fac", "20")) == [2432902008176640000]
    fib = await call(node, "fibonacci", "fib", "25")
    assert values(fib) == [75025]
    iterative = await call(node, "fibonacci", "fib_iter", "25")
    assert values(iterative) == [75025]
    # the naive recursion burns far more fuel than the loop, and metering is exact for a returned call
    assert fib["fuel_consumed"] > 100 * iterative["fuel_consumed"] > 0
    assert fib["metering"] == "exact"


async def test_fuel_is_deterministic(node):
    fib = await deploy(node, "fibonacci")
    used = {(await invoke(node, fib, "fib", "20"))[1]["fuel_consumed"] for _ in range(3)}
    assert len(used) == 1
    # exactly that much fuel is enough; half of it is not (wasmtime checks fuel at calls and loop
    # heads, not after every instruction, so "one unit less" may still finish)
    (need,) = used
    status, _ = await invoke(node, fib, "fib", "20", fuel=need)
    assert status == 200
    status, body = await invoke(node, fib, "fib", "20", fuel=need // 2)
    assert body["kind"] == "out-of-fuel"


async def test_each_call_gets_a_fresh_store(node):
    hog = await deploy(node, "memory_hog")
    # memory.grow returns the old size: a fresh instance always starts at 1 page
    for _ in range(3):
        status, body = await invoke(node, hog, "grow", "10")
        assert body["results"][0]["value"] == 1


async def test_memory_limit_may_be_lowered_per_call(node):
    hog = await deploy(node, "memory_hog")
    status, body = await invoke(node, hog, "grow", "15", memory="1MiB")  # 1 + 15 pages = 1 MiB: allowed
    assert body["results"][0]["value"] == 1
    status, body = await invoke(node, hog, "grow", "16", memory="1MiB")  # one page over
    assert body["results"][0]["value"] == -1


# --- WASI -------------------------------------------------------------------------------
async def test_wasi_hello(node):
    body = await call(node, "wasi_hello", "_start", wasi=True)
    assert body["stdout"] == "hello, world\n"
    assert (body["stderr"], body["stdout_truncated"], body["exit_code"]) == ("", 0, None)


async def test_wasi_args_are_the_given_args(node):
    module = await deploy(node, "wasi_hello", wasi=True)
    status, body = await invoke(node, module, "args", "one", "-two", "3", wasi=True)
    assert body["stdout"] == f"{module}\none\n-two\n3\n"


async def test_wasi_output_is_capped_and_truncation_reported(node):
    body = await call(node, "wasi_hello", "spam", wasi=True)
    total = 1600 * 64
    assert len(body["stdout"]) == len(body["stderr"]) == 64 * 1024
    assert body["stdout_truncated"] == body["stderr_truncated"] == total - 64 * 1024


async def test_wasi_exit_status(node):
    module = await deploy(node, "wasi_hello", wasi=True)
    status, body = await invoke(node, module, "fail", wasi=True)
    assert (status, body["kind"], body["exit_code"]) == (422, "exit", 3)
    assert body["detail"].startswith("the program exited with status 3; charged ")
    assert body["stderr"] == "hello, world\n"  # what it wrote before exiting comes back with the error
    assert body["metering"] == "exact"


@pytest.mark.parametrize("function,expected", [("env_count", 0), ("prestat3", 8)])
async def test_wasi_profile_has_no_environment_and_no_preopens(node, function, expected):
    module = await deploy(node, "wasi_hello", wasi=True)
    status, body = await invoke(node, module, function, wasi=True)
    assert (status, body["results"][0]["value"]) == (200, expected)  # 8 = EBADF: no directory at fd 3


async def test_node_config_sets_defaults_and_maxima(file_compute_node):
    node = await file_compute_node(fuel=50_000, memory="2MiB", timeout=5.0)  # calls end by their fuel or memory first
    fib = await deploy(node, "fibonacci")
    status, body = await invoke(node, fib, "fib", "25")
    assert (body["kind"], body["fuel_limit"]) == ("out-of-fuel", 50_000)
    hog = await deploy(node, "memory_hog")
    status, body = await invoke(node, hog, "hog")
    assert "of its 2.0 MiB limit" in body["detail"]
    status, body = await invoke(node, hog, "grow", "1", memory="3MiB")
    assert (status, body["code"]) == (400, "limit-too-high")
    status, body = await invoke(node, await deploy(node, "loop"), "spin_calls", fuel=50_000)
    assert body["kind"] == "out-of-fuel"
    status = await (await node.get("/v1/node/status")).json()
    assert status["compute"]["limits"] == {"fuel": 50_000, "memory": 2 * 1024 * 1024, "timeout": 5.0}


def test_committed_wasm_fixtures_match_their_sources():
    result = subprocess.run([sys.executable, "-m", "fixtures.wasm.build", "--check"], cwd=WASM.parents[1],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_start_function_runs_and_is_bounded_by_the_deadline(node):
    assert values(await call(node, "start", "get")) == [7]
    module = await deploy(node, "start_loop")
    status, body = await invoke(node, module, "f", timeout=0.3)
    assert (status, body["kind"]) == (422, "deadline")
    info = await (await node.get(f"/v1/modules/{module}")).json()
    assert info["start"] is True


def test_start_section_detection():
    assert has_start_function(wasm("start")) and has_start_function(wasm("start_loop"))
    assert not any(has_start_function(wasm(name)) for name in ("add", "wasi_hello", "memory_hog", "big_memory"))
