"""The dashboard's compute page in a real headless Chromium shows a web function placed on the market with what its
owner paid for it, the compile of its module on the provider that lacked it included, as `xsc compute functions`
shows it: an owner node process that offers no compute, and a provider with a web listener."""

from __future__ import annotations

import json

import pytest

from tests.support.browser import Console, login_url, missing, show
from tests.support.compute import WASM
from tests.support.nodes import free_port
from tests.support.waiting import eventually
from xsc.compute.provider_tabs import compile_price

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=missing() or "")]


def test_a_placed_functions_spend_on_the_dashboard_counts_its_modules_compile(tmp_path, browser) -> None:
    from tests.support.peers import api, http, kill_all, start_star

    started: list = []
    try:
        (owner, provider), _ = start_star(
            tmp_path, 2, {"XSC_MARKET_OFFER_COMPUTE": "false", "XSC_NODE_PLACEMENT_INTERVAL": "0.25"},
            {"XSC_NODE_WEB_LISTEN": f"127.0.0.1:{free_port()}"}, started)
        served = owner.xsc("compute", "serve", "hello", str(WASM / "cgi.wasm"), "--on-market")
        assert served.returncode == 0, served.stderr.decode()

        def listed() -> dict:
            done = owner.xsc("compute", "functions", "--json")
            assert done.returncode == 0, done.stderr.decode()
            return {f["name"]: f for f in json.loads(done.stdout)["functions"]}.get("hello", {})

        url = eventually(lambda: listed().get("url"), "the function placed on the provider", 60)
        base, _, path = url.partition("/fn/")
        assert http(base, "GET", "/fn/" + path)[0] == 200

        def runs() -> list[dict]:
            records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
            return [r["record"] for r in records if r["record"].get("deal", {}).get("function") == "hello"]

        [record] = eventually(runs, "the request's run recorded")
        # The provider lacked the module: the owner pushed it, and paid its compile with the function's tab.
        owed = record["charge"] + compile_price(len((WASM / "cgi.wasm").read_bytes()), record["fuel_price"])
        eventually(lambda: listed()["spend"] == owed, "the tab's receipt paid and counted in the spend", 60)

        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        console = Console()
        console.watch(page)
        page.goto(login_url(owner))
        page.wait_for_selector("body[data-ready=overview]")
        show(page, "compute")
        row = page.locator("tr[data-function=hello]")
        assert row.locator("[data-k=spend]").inner_text().strip() == f"{owed:,}"
        assert row.locator("[data-k=spent-this-hour]").inner_text().strip() == f"{owed:,}"  # (this hour's)
        context.close()
        assert console.take() == []
    finally:
        kill_all(started)
