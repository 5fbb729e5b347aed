"""Strings strangers choose, on the dashboard in a real headless Chromium: a stranger's descriptor whose URL is
markup, a file name, a module's export and the function a call named. Each is shown as its text, never parsed:
no script runs, nothing is fetched, and a long one wraps inside its card. The page's Content-Security-Policy is
the second wall: markup slipped into the page runs nothing."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from xsc.identity import Identity
from xsc.peers import make_descriptor
from xsc.peers.core.descriptors import MAX_TEXT

from tests.support.attacks import now_ms, signed, wasm_of
from tests.support.browser import Console, login_url, missing, show
from tests.support.peers import api, http, kill_all, start_star
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=missing() or "")]

PAGES = ["overview", "files", "peers", "market", "ledger", "compute"]
# Markup that closes an attribute and opens an element whose handler sets a flag: parsed anywhere, it either runs
# or (held back by the policy) fetches /ui/x and reports a violation.
MARKUP = '"><img src=x onerror=window.__pwned=1>'
# What watches the page: the flag, every policy violation, every request, every dialog.
WATCH = """window.__violations = [];
document.addEventListener('securitypolicyviolation',
                          e => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));"""


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    started: list = []
    try:
        nodes, ids = start_star(tmp_path_factory.mktemp("ui-strangers"), 2, {}, {}, started)
        gateway = nodes[0]
        # A stranger's descriptor: its URL's host is markup, as long as a descriptor's text may be.
        stranger = Identity.generate()
        url = "http://" + MARKUP + "h" * (MAX_TEXT - len("http://:1") - len(MARKUP)) + ":1"
        raw = json.dumps({"descriptors": [make_descriptor(stranger, url=url, capacity=1, free=1, version=MARKUP,
                                                          timestamp=now_ms()).to_json()]}).encode()
        status, answer = http(gateway.url, "POST", "/v1/peer/descriptors", raw,
                              signed(stranger, "POST", "/v1/peer/descriptors", raw, ids[0]))
        assert status == 200, answer
        # A file name (an S3 user's key becomes one) and a module's export, each markup and long.
        name = MARKUP + "n" * 300
        status, put = http(gateway.url, "POST", f"/v1/store/files?name={quote(name)}", b"x" * 5000,
                           {"Authorization": f"Bearer {gateway.token}"})
        assert status == 201, put
        export = MARKUP + "f" * 200
        wat = '(module (func (export "%s") (result i32) i32.const 7))' % export.replace('"', '\\"')
        for node in nodes:
            status, module = http(node.url, "POST", "/v1/modules", wasm_of(wat),
                                  {"Authorization": f"Bearer {node.token}"})
            assert status in (200, 201), module

        def ran_here() -> list:
            """The gateway's records, once a call of the export (the market places each where it clears) ran there."""
            for node in nodes:
                status, run = api(node, "POST", "/v1/compute/invoke", {"module": module["id"], "function": export,
                                                                        "args": []})
                assert status == 200, run
            return api(gateway, "GET", "/v1/compute/provenance")[1]["records"]

        eventually(ran_here, "a call run on the gateway", poll=0.5)
        yield {"gateway": gateway, "stranger": stranger.id, "url": url, "name": name, "export": export}
    finally:
        kill_all(started)


class Watched:
    """A logged-in page whose requests and dialogs are noted, with the page's own violation reports."""

    def __init__(self, browser, node, width: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 800})
        self.context.add_init_script(WATCH)
        self.page = self.context.new_page()
        self.console, self.requests, self.dialogs = Console(), [], []
        self.console.watch(self.page)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(login_url(node))
        self.page.wait_for_selector("body[data-ready=overview]")

    def ran_nothing(self) -> None:
        assert self.page.evaluate("window.__pwned") is None
        assert self.page.evaluate("window.__violations") == []
        assert self.dialogs == []
        assert [u for u in self.requests if u.endswith("/x")] == []
        assert self.page.locator("main img").count() == 0

    def close(self) -> None:
        self.context.close()
        assert self.console.take() == []


def test_strangers_strings_are_shown_as_text_and_run_nothing(net, browser) -> None:
    gateway = net["gateway"]
    eventually(lambda: any(p["url"] == net["url"] for p in api(gateway, "GET", "/v1/health/peers")[1]["peers"]),
               "the stranger's descriptor to be listed")
    watched = Watched(browser, gateway, 1280)
    page = watched.page
    show(page, "peers")
    assert net["url"] in page.locator(f"tr[data-peer='{net['stranger']}']").inner_text()
    show(page, "files")
    assert page.locator("tr[data-cap] button.link").first.inner_text() == "▸ " + net["name"]
    show(page, "compute")
    assert net["export"] in page.locator("tr[data-module]").inner_text()
    assert page.locator("tr[data-record] td").nth(2).inner_text() == net["export"]
    watched.ran_nothing()
    # A page name that is a property of every object is no page: the overview, not an error.
    for name in ("constructor", "__proto__"):
        page.goto(page.url.split("#")[0] + "#" + name)
        page.wait_for_selector("body[data-ready=overview]")
    watched.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_a_strangers_long_string_wraps_inside_its_card(net, browser, width: int) -> None:
    watched = Watched(browser, net["gateway"], width)
    page = watched.page
    for name in PAGES:
        show(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, name
        assert not re.search(r"\bnull\b|\bundefined\b|\[object ", page.inner_text("main")), name
        # No table scrolls sideways inside its card (the share map, a matrix, may).
        wide = page.evaluate("""[...document.querySelectorAll('.scroll')].filter(s => !s.querySelector('table.map')
            && s.scrollWidth > s.clientWidth + 1).map(s => s.querySelector('table').className || 'a table')""")
        assert wide == [], (name, wide)
    watched.ran_nothing()
    watched.close()


def test_markup_slipped_into_the_page_runs_nothing(net, browser) -> None:
    """Were a string ever parsed as HTML, the policy runs none of it: no inline handler, no javascript: link, no
    inline script, and a script of the page's own cannot eval."""
    watched = Watched(browser, net["gateway"], 1280)
    page = watched.page
    # A script from the page's origin (as the dashboard's own are) trying eval and new Function.
    page.route("**/ui/probe.js", lambda route: route.fulfill(content_type="text/javascript", body="""
        window.__evals = [() => eval('1'), () => new Function('return 1')()].map(f => {
          try { f(); return 'ran'; } catch (e) { return e.name; } });"""))
    page.evaluate("""() => {
        document.querySelector('main').insertAdjacentHTML('beforeend', '<img src="data:," onerror="window.__pwned=1">'
            + '<a id=slip href="javascript:window.__pwned=2">x</a>');
        for (const [k, v] of [['textContent', 'window.__pwned = 3'], ['src', '/ui/probe.js']]) {
          const s = document.createElement('script'); s[k] = v; document.body.appendChild(s);
        }
    }""")
    page.click("#slip")
    # Asked from here: wait_for_function evals its expression in the page after the first try, which the policy
    # refuses as it refuses the page's own eval.
    eventually(lambda: page.evaluate("window.__evals && window.__violations.length >= 5"),
               "the probe's two tries and five violations")
    assert page.evaluate("window.__evals") == ["EvalError", "EvalError"]
    assert page.evaluate("window.__pwned") is None
    directives = {d.split()[0] for d in page.evaluate("window.__violations")}
    assert directives == {"script-src-attr", "script-src-elem", "script-src"}, directives
    watched.context.close()
