"""The tabs of aggregated settlement take their bounds from the config (ledger.tab_interval, .tab_threshold,
.tab_max_refs): with tab_max_refs = 1 every invoke is settled as its own transfer (bench/bench_ui.py seeds a
ledger that way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xsc.config import load_config
from xsc.errors import ConfigError
from xsc.node.appkeys import NODE

from tests.support.waiting import eventually_async

ADD_WASM = Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "add.wasm"


def test_the_tab_bounds_are_config_keys_with_environment_overrides(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"XSC_LEDGER_TAB_MAX_REFS": "1", "XSC_LEDGER_TAB_INTERVAL": "5"})
    assert (config.ledger.tab_max_refs, config.ledger.tab_interval, config.ledger.tab_threshold) == (1, 5.0, 1_000_000)
    for bad in ({"XSC_LEDGER_TAB_MAX_REFS": "0"}, {"XSC_LEDGER_TAB_MAX_REFS": "5000"},
                {"XSC_LEDGER_TAB_INTERVAL": "0"}, {"XSC_LEDGER_TAB_THRESHOLD": "0"}):
        with pytest.raises(ConfigError):
            load_config(tmp_path, environ=bad)


async def test_one_ref_per_tab_settles_every_invoke_as_its_own_transfer(node_factory) -> None:
    node = await node_factory(ledger={"tab_max_refs": 1, "tab_interval": 3600})
    tabs = node.app[NODE].tabs
    assert (tabs.max_refs, tabs.interval) == (1, 3600)
    module = (await (await node.post("/v1/modules", data=ADD_WASM.read_bytes())).json())["id"]
    for a in range(3):
        run = await node.post("/v1/compute/invoke", json={"module": module, "function": "add", "args": [str(a), "2"]})
        assert run.status == 200, await run.text()

    async def three_entries() -> list | None:
        entries = (await (await node.get("/v1/ledger/accounts/client/history")).json())["entries"]
        return entries if len(entries) == 3 else None

    # settled by the tabs' task, woken at once by a full tab (not after the hour)
    entries = await eventually_async(three_entries, "three settlements of the tab", 20)
    assert [e["usage"]["invokes"] for e in entries] == [1, 1, 1]
    assert all(e["job"].startswith("compute:tab:1:") for e in entries)
    report = await (await node.get("/v1/ledger/verify")).json()
    assert report["ok"] and report["violations"] == []
