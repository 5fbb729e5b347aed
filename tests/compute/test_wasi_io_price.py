"""Bytes through WASI cost fuel (compute/wasi_io.py): the fuel held before a call covers what its writes do; streams
the host cannot open refuse the run, busy."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.compute import WASM, prepared_wasi
from xsc.compute import sandbox
from xsc.compute.engine import make_engine
from xsc.compute.limits import Limits
from xsc.compute.values import Signature
from xsc.compute.wasi_io import Streams, io_fuel
from xsc.errors import ComputeBusy

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


def test_streams_the_host_cannot_open_refuse_the_run_as_busy_and_leak_nothing(tmp_path):
    engine = make_engine()
    prepared = prepared_wasi(engine, "cgi")
    reading, writing = os.pipe()
    streams = Streams(stdin=str(tmp_path / "gone"), stdout_pipe=writing)  # a stdin file no longer there
    with pytest.raises(ComputeBusy) as err:
        sandbox.run(engine, prepared, "_start", Signature((), ()), [], Limits(10**7, 1 << 20, 1.0), ["cgi"],
                    streams=streams)
    assert "streams" in err.value.message and streams.stdout_pipe is None  # its pipe's writing end closed
    assert os.read(reading, 10) == b""  # nobody writes it any more: the reader sees its end
    os.close(reading)
