"""Bytes through WASI cost fuel (compute/wasi_io.py): the fuel held before a call covers what its writes do."""

from __future__ import annotations

import json

import pytest

from tests.support.compute import WASM
from xsc.compute.wasi_io import io_fuel

FLOOD = str(WASM / "flood.wasm")


@pytest.fixture
def xsc_node(cli_node):
    return cli_node()


def test_each_byte_written_costs_fuel(xsc_node):
    result = xsc_node.xsc("compute", "invoke", FLOOD, "flood", "40", "--wasi", "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    # 40 writes of 64 KiB: the bytes and the calls are charged, beyond the loop's few hundred instructions.
    assert run["fuel_consumed"] >= io_fuel(40 * 65536, 40)
    assert run["stdout_truncated"] == 40 * 65536 - 65536


def test_writes_the_fuel_cannot_pay_end_the_call_out_of_fuel(xsc_node):
    # 3,000 writes of 64 KiB under 50,000 fuel: the first write already costs more than the whole budget.
    result = xsc_node.xsc("compute", "invoke", FLOOD, "flood", "3000", "--wasi", "--fuel", "50000", "--json")
    assert result.returncode == 1
    line = result.stderr.decode().strip().splitlines()[-1]
    assert "out of fuel" in line, line
