"""The dashboard in a real headless Chromium against a real 3-node network (node processes) with files,
deals and invokes: login through a one-time link, every page renders without a console error and shows what
the CLI shows, a repair started from the page completes, a killed peer turns red."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.support.browser import Console, login_url, missing, show
from tests.support.waiting import eventually
from xsc.ledger.core.model import format_credits

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=missing() or "")]

WASM = Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "add.wasm"
PROBE_INTERVAL = 1.0  # the gateway's: the peers page polls at half of it
PAGES = ["overview", "files", "peers", "market", "ledger", "compute"]


def cli_json(node, *args: str):
    done = node.xsc(*args, "--json")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from tests.support.peers import api, http, kill_all, start_star

    from tests.support.nodes import free_port

    tmp = tmp_path_factory.mktemp("ui")
    started: list = []
    web = f"127.0.0.1:{free_port()}"  # the gateway's web functions' listener: an origin apart from the dashboard's
    try:
        nodes, ids = start_star(tmp, 3, {"XSC_HEALTH_PROBE_INTERVAL": str(PROBE_INTERVAL), "XSC_AUDIT_INTERVAL": "1",
                                         "XSC_NODE_WEB_LISTEN": web}, {}, started)
        gateway = nodes[0]
        # Seeded through the API (quicker than the CLI); the tests compare the pages with the CLI.
        auth = {"Authorization": f"Bearer {gateway.token}"}
        files = []
        for i, size in enumerate((200_000, 5_000)):
            status, put = http(gateway.url, "POST", f"/v1/store/files?name=file-{i}",
                               bytes(range(256)) * (size // 256), auth)
            assert status == 201, put
            files.append(put["capability"])
        status, module = http(gateway.url, "POST", "/v1/modules", WASM.read_bytes(), auth)
        assert status in (200, 201), module
        for a in (1, 2, 3):
            status, run = api(gateway, "POST", "/v1/compute/invoke",
                              {"module": module["id"], "function": "add", "args": [str(a), "2"]})
            assert status == 200, run
        # The gateway pays for the invokes (and the puts) a moment after they answered: the tests compare what a page
        # read with what the CLI reads after it, so the ledger is left to hold still first.
        eventually(lambda: api(gateway, "GET", "/v1/node/status")[1]["payments"]["pending"] == 0,
                   "the gateway's payments for the invokes made", 60)
        yield {"nodes": nodes, "ids": ids, "files": files, "web": f"http://{web}"}
    finally:
        kill_all(started)


@pytest.fixture
def dash(net, browser):
    """A logged-in browser page on the gateway, whose console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.goto(login_url(net["nodes"][0]))
    page.wait_for_selector("body[data-ready=overview]")
    yield page
    context.close()
    assert console.take() == []


def figure(page, key: str) -> str:
    return page.locator(f"[data-k={key}]").first.inner_text().strip()


def test_a_login_link_works_once_and_leaves_no_secret_in_the_address(net, browser) -> None:
    gateway = net["nodes"][0]
    url = login_url(gateway)
    first = browser.new_context()
    page = first.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=overview]")
    assert page.url == gateway.url + "/ui/"
    cookie = next(c for c in first.cookies() if c["name"] == f"xsc_session_{gateway.port}")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "link=" not in page.evaluate("document.location.href")
    first.close()

    second = browser.new_context()
    page = second.new_page()
    response = page.goto(url)
    assert response.status == 401
    assert "does not work" in page.inner_text("h1")
    assert second.cookies() == []
    second.close()


def test_the_api_wants_the_session_cookie_the_pages_key_and_its_origin(net, browser, dash) -> None:
    gateway = net["nodes"][0]
    stranger = browser.new_context()
    assert stranger.request.get(gateway.url + "/v1/node/status").status == 401
    page = stranger.new_page()
    console = Console()
    console.watch(page)
    page.goto(gateway.url + "/ui/")
    page.wait_for_selector("body[data-state=logged-out]")
    assert "xsc ui" in page.inner_text("main")
    assert any("401" in e for e in console.take())  # the browser reports the refused request, as it should
    stranger.close()

    logged_in = dash.context.request  # the session cookie, without the page's key: nothing
    assert logged_in.get(gateway.url + "/v1/node/status").status == 401
    assert logged_in.post(gateway.url + "/v1/health/probe").status == 401
    key = dash.evaluate("localStorage.getItem('xsc-session-key')")  # what only the page's origin can read
    assert key and "key=" not in dash.evaluate("document.location.href")
    assert logged_in.get(gateway.url + "/v1/node/status", headers={"X-XSC-CSRF": key}).status == 200
    assert logged_in.post(gateway.url + "/v1/health/probe", headers={"X-XSC-CSRF": key}).status == 403  # no Origin
    assert logged_in.post(gateway.url + "/v1/health/probe",
                          headers={"X-XSC-CSRF": key, "Origin": gateway.url}).status == 200


def test_every_page_renders_and_shows_what_the_cli_shows(net, dash) -> None:
    gateway = net["nodes"][0]
    status = cli_json(gateway, "node", "status")
    assert figure(dash, "id") == status["id"]
    assert figure(dash, "shares") == str(status["storage"]["shares"])
    assert figure(dash, "shares_unanswered").startswith(f"{status['audits']['shares_unanswered']} rebuilt")
    balance = cli_json(gateway, "ledger", "balance")
    assert figure(dash, "balance") == f"{balance['balance_credits']} credits"
    assert figure(dash, "promised") == f"{format_credits(balance['promised'])} credits"  # what `available` leaves out

    show(dash, "files")
    listed = cli_json(gateway, "store", "ls")
    assert figure(dash, "file-count") == str(len(listed))
    for f in listed:
        assert dash.locator(f"tr[data-cap='{f['capability']}']").count() == 1

    show(dash, "peers")
    health = cli_json(gateway, "health", "status")
    recognition = cli_json(gateway, "market", "recognition")["recognition"]
    for peer in health["peers"]:
        assert peer["up"]
        assert dash.locator(f"tr[data-peer='{peer['id']}'] [data-k=state]").inner_text() == "up"
        weight = next(r["weight"] for r in recognition if r["peer"] == peer["id"])
        assert dash.locator(f"tr[data-peer='{peer['id']}'] [data-k=weight]").inner_text().startswith(weight)
    assert dash.locator("tr[data-peer]").count() == len(health["peers"]) == 2
    assert dash.locator("svg.spark").count() == 4

    show(dash, "market")
    market = cli_json(gateway, "market", "status")
    assert figure(dash, "live-deals") == str(len(market["deals"]))
    offer = cli_json(gateway, "market", "offer")
    assert figure(dash, "storage-ask").startswith(f"{offer['storage']['ask']} per GiB-hour")
    assert dash.locator("svg.chart").count() == 2  # depth and clearing prices
    need = market["recent_needs"][0]
    dash.fill("#need", need)
    dash.click("form button[type=submit]")
    dash.wait_for_selector("[data-k=explain-code]")
    assert figure(dash, "need") == need

    show(dash, "ledger")
    assert figure(dash, "balance") == f"{balance['balance_credits']} credits"
    assert figure(dash, "entries") == str(balance["seq"])
    dash.click("#verify")
    dash.wait_for_selector("[data-k=verify]")
    verify = cli_json(gateway, "ledger", "verify")
    assert figure(dash, "verify") == "ok: the ledger verifies" and verify["ok"]
    assert figure(dash, "verify-entries") == str(verify["entries"])

    from tests.support.peers import api

    modules = cli_json(gateway, "compute", "modules")
    for bucket in ("ui-watched", "ui-written"):
        assert api(gateway, "PUT", f"/v1/s3/buckets/{bucket}")[0] == 201
    status, made = api(gateway, "POST", "/v1/compute/watches", {"name": "ui", "spec": {"module": modules[0]["id"]},
                                                                "on": "s3://ui-watched/", "to": "s3://ui-written/"})
    assert status == 201, made
    show(dash, "compute")
    assert figure(dash, "module-count") == str(len(modules))
    for m in modules:
        assert dash.locator(f"tr[data-module='{m['id']}'] [data-k=invocations]").inner_text() == str(m["invocations"])
    watches = cli_json(gateway, "compute", "watches")["watches"]
    assert figure(dash, "watch-count") == str(len(watches)) == "1"
    assert dash.locator("tr[data-watch=ui] [data-k=backlog]").inner_text() == "0"
    functions = cli_json(gateway, "compute", "functions")["functions"]
    assert figure(dash, "function-count") == str(len(functions))
    for f in functions:
        assert dash.locator(f"tr[data-function={f['name']}] [data-k=requests]").inner_text() == f"{f['requests']:,}"


def test_pages_fit_a_phone(net, browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.goto(login_url(net["nodes"][0]))
    for name in PAGES:
        show(page, name)
        # Ids are shown whole, wrapped inside their cells: a user copies them into commands.
        assert page.inner_text("#node-id") == net["ids"][0]
        if name == "peers":
            for peer in net["ids"][1:]:
                assert page.locator(f"tr[data-peer='{peer}'] code.id").inner_text() == peer
        # The page never scrolls sideways, and no table does inside its card: a wide table lays each row out as a
        # small card (only the share map, a matrix, may scroll).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
        wide = page.evaluate("""[...document.querySelectorAll('.scroll')].filter(s => !s.querySelector('table.map')
            && s.scrollWidth > s.clientWidth + 1).map(s => s.querySelector('table').className || 'a table')""")
        assert wide == [], (name, wide)
    context.close()
    assert console.take() == []


def test_a_killed_peer_turns_red_and_a_repair_from_the_page_completes(net, dash) -> None:
    gateway, victim, victim_id = net["nodes"][0], net["nodes"][2], net["ids"][2]
    show(dash, "peers")
    row = dash.locator(f"tr[data-peer='{victim_id}']")
    assert row.locator("[data-k=state]").inner_text() == "up"
    victim.stop(signal.SIGKILL)
    # The page polls at half the probe interval; the deadline only guards against a hang.
    dash.wait_for_selector(f"tr.down[data-peer='{victim_id}'] .dot.down", timeout=30_000)
    assert re.match(r"DOWN \(\d+ failed\)", row.locator("[data-k=state]").inner_text())
    assert dash.locator(f"tr.down[data-peer='{net['ids'][1]}']").count() == 0
    show(dash, "overview")
    assert "1 of 2 peer(s) down" in figure(dash, "alerts")

    show(dash, "files")
    dash.evaluate(RECORD_PROGRESS)
    dash.evaluate(ONE_LINE_PER_READ)
    cap = net["files"][0]
    row = dash.locator(f"tr[data-cap='{cap}']")
    row.locator("button", has_text="Repair").click()
    dash.wait_for_selector("[data-k=result]:has-text('repaired shares')", timeout=60_000)
    result = figure(dash, "result")
    assert result.startswith("repair: repaired shares ") and "[" not in result and result.endswith("6 of 6 shares intact: healthy"), result
    # While it ran, the page showed how far it was, from the node's progress lines (its blocks read here, then the
    # segments it rebuilt), each drawn as the page read it.
    told = dash.evaluate("window.__progress")
    assert any(re.search(r"^repair running… [\d.]+ s; (check: \d+ of \d+ blocks|rebuild: \d+ of \d+ segments)", t)
               for t in told), told
    # The other file: found damaged by "Check all" (a verify of every file), mended by "Repair damaged", each a run of
    # the node's whose lines the page draws: files and bytes done, and the file a line is about with how far it is.
    dash.evaluate("window.__progress.length = 0")
    dash.click("#check-all")
    dash.wait_for_selector("[data-k=batch]:not(.running):has-text('checked 2 of 2')", timeout=60_000)
    assert re.fullmatch(r"checked 2 of 2 \(([\d.]+ KiB) of \1\): 1 healthy, 1 damaged, 0 not recoverable",
                        figure(dash, "batch")), figure(dash, "batch")
    told = dash.evaluate("window.__progress")
    assert any(re.search(r"^verifying file-\d: verify: \d+ of \d+ blocks", t) for t in told), told
    dash.evaluate("window.__progress.length = 0")
    dash.click("#repair-damaged")
    dash.wait_for_selector("[data-k=batch]:not(.running):has-text('checked and repaired 2 of 2')", timeout=60_000)
    assert re.fullmatch(r"checked and repaired 2 of 2 \(([\d.]+ KiB) of \1\): 1 healthy, 1 repaired, 0 damaged, "
                        r"0 not recoverable", figure(dash, "batch")), figure(dash, "batch")
    told = dash.evaluate("window.__progress")
    assert any(re.search(r"^repairing file-1: (check: \d+ of \d+ blocks|rebuild: \d+ of \d+ segments)", t)
               for t in told), told
    assert dash.locator("[data-k=batch-progress]").count() == 0  # once done, only the outcome is left
    for cap in net["files"]:
        check = cli_json(gateway, "store", "check", cap)
        assert check["healthy"] and victim_id not in [s.get("node") for s in check["shares"]]


def test_a_repair_that_fails_once_its_lines_began_shows_how_far_it_got_then_the_problem(net, dash) -> None:
    """The node's lines end with a problem when a repair fails mid-way (too few shares left to rebuild from): the
    answer is that of tests/storage/test_storage_progress.py, served to the page as the node would."""
    problem = {"type": "about:blank", "status": 503, "code": "not-enough-shares", "title": "Service Unavailable",
               "detail": "only 2 of the 3 shares a segment needs could be read", "hint": "xsc store check CAP"}
    lines = [{"progress": {"stage": "check", "done": 0, "total": 8}},
             {"progress": {"stage": "check", "done": 8, "total": 8}}, {"problem": problem}]
    dash.route("**/v1/store/files/*/repair", lambda route: route.fulfill(
        status=200, content_type="application/x-ndjson", body="".join(json.dumps(line) + "\n" for line in lines)))
    show(dash, "files")
    dash.evaluate(RECORD_PROGRESS)
    dash.locator(f"tr[data-cap='{net['files'][1]}'] button", has_text="Repair").click()
    dash.wait_for_selector("[data-k=action-error]")
    assert figure(dash, "action-error") == f"repair failed: {problem['detail']} ({problem['hint']})"
    told = dash.evaluate("window.__progress")
    assert any(t.endswith("; check: 8 of 8 blocks") for t in told), told
    assert dash.locator("[data-k=progress]").count() == 0
    dash.unroute("**/v1/store/files/*/repair")


def test_a_repair_going_on_leaves_the_page_the_user_opened_meanwhile_alone(net, dash) -> None:
    """The files page redraws a file's run four times a second to show how long it has gone; on another page that
    timer draws nothing (a redraw there would throw away what the user was doing on it)."""
    held = []  # the repair's answer, held until the test has looked at the other page
    dash.route("**/v1/store/files/*/repair", lambda route: held.append(route))
    show(dash, "files")
    dash.evaluate(COUNT_TIMER_DRAWS)
    dash.locator(f"tr[data-cap='{net['files'][1]}'] button", has_text="Repair").click()
    dash.wait_for_selector("[data-k=progress]")
    show(dash, "ledger")
    dash.evaluate("window.__ticks = 0; window.__drawnByTimer = 0")
    dash.wait_for_function("() => window.__ticks >= 4")
    assert dash.evaluate("window.__drawnByTimer") == 0
    show(dash, "files")  # the run still going, drawn again from the page's state
    assert figure(dash, "progress").startswith("repair running… ")
    lines = [{"progress": {"stage": "check", "done": 8, "total": 8}}, {"problem": {
        "status": 503, "code": "not-enough-shares", "detail": "only 2 of the 3 shares could be read", "hint": "none"}}]
    held[0].fulfill(status=200, content_type="application/x-ndjson",
                    body="".join(json.dumps(line) + "\n" for line in lines))
    dash.wait_for_selector("[data-k=action-error]")
    dash.unroute("**/v1/store/files/*/repair")


def test_check_all_while_another_run_over_every_file_goes_says_so_and_starts_nothing(net, browser) -> None:
    """The node refuses a second run over every file (`xsc store verify --all` going: tests/storage/test_deep_check.py)
    with a 409 before any line, served to the page as the node would."""
    problem = {"type": "about:blank", "status": 409, "code": "deep-check-running", "title": "Conflict",
               "detail": "a repair of every file is running already (started 3 s ago)",
               "hint": "wait for it to end, then start this run again", "running": "repair", "since": 1.0}
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/v1/store/verify", lambda route: route.fulfill(
        status=409, content_type="application/problem+json", body=json.dumps(problem)))
    page.goto(login_url(net["nodes"][0]))
    page.wait_for_selector("body[data-ready=overview]")
    show(page, "files")
    page.click("#check-all")
    page.wait_for_selector("[data-k=batch-busy]")
    assert figure(page, "batch-busy") == f"check all not started: {problem['detail']} ({problem['hint']})"
    assert page.locator("[data-k=batch]").count() == 0 and page.locator("[data-k=batch-error]").count() == 0
    assert page.locator("#check-all").is_enabled()  # it may be asked again once the other run ended
    context.close()
    # the browser notes the refused request itself; the page adds no error of its own
    assert console.take() == ["console: Failed to load resource: the server responded with a status of 409 (Conflict)"]


def test_a_file_whose_shares_are_all_on_one_node_shows_at_risk_and_why_as_the_cli_does(net, browser) -> None:
    """The node's check of a whole file whose every share is on one node says why it is at risk (`at_risk`:
    tests/cli/test_cli_check_verify.py makes one): added here to the gateway's own answer, as the node would."""
    why = f"all 6 shares are on node {net['ids'][1]}: the file does not survive its loss, while 2 other nodes are up"

    def at_risk(route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "at_risk": why})

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = Console()
    console.watch(page)
    page.route("**/v1/store/files/*/check", at_risk)
    page.goto(login_url(net["nodes"][0]))
    page.wait_for_selector("body[data-ready=overview]")
    show(page, "files")
    row = page.locator(f"tr[data-cap='{net['files'][1]}']")
    row.locator("button.link").click()
    page.wait_for_selector("[data-k=at-risk]")
    assert figure(page, "result").endswith(" shares intact: at risk"), figure(page, "result")
    assert figure(page, "at-risk") == f"{why}; put it again from a file to spread its shares (then remove this " \
        "capability)"
    assert row.locator(".pill.warn").inner_text() == "at risk"  # the word beside its name, as a damaged file's
    assert page.locator("#repair-damaged").is_disabled()  # no repair spreads it
    context.close()
    assert console.take() == []


def test_check_all_counts_a_file_whose_shares_are_all_on_one_node_at_risk_as_verify_all_does(net, dash) -> None:
    """A file put from a stream keeps all 6 shares on the gateway while its peers are up: the node's run over every
    file says it is at risk, and Check all counts it so, not with the healthy ones, as `xsc store verify --all` does;
    no repair spreads it, so Repair damaged does not count it either."""
    gateway = net["nodes"][0]
    put = gateway.xsc("store", "put", "-", "--name", "alone", input=b"kept on one node\n" * 100)
    assert put.returncode == 0, put.stderr
    alone = put.stdout.decode().strip()
    try:
        verified = cli_json(gateway, "store", "verify", "--all")
        states = ["at risk" if f.get("at_risk") else f["state"] for f in verified["files"]]
        assert states[[f["capability"] for f in verified["files"]].index(alone)] == "at risk", verified
        show(dash, "files")
        dash.click("#check-all")
        done = f"checked {len(states)} of {len(states)}"
        dash.wait_for_selector(f"[data-k=batch]:not(.running):has-text('{done}')", timeout=60_000)
        counts = [f"{states.count('healthy')} healthy", f"{states.count('at risk')} at risk",
                  f"{states.count('damaged')} damaged", f"{states.count('not recoverable')} not recoverable"]
        assert figure(dash, "batch").endswith(": " + ", ".join(counts)), (figure(dash, "batch"), states)
        assert dash.locator("[data-k=batch].warn").count() == 1  # not all well, as a damaged file's run is not
        row = dash.locator(f"tr[data-cap='{alone}']")
        assert row.locator(".pill.warn").inner_text() == "at risk"
        damaged = states.count("damaged") + states.count("not recoverable")
        assert dash.locator("#repair-damaged").inner_text() == f"Repair damaged ({damaged})"
    finally:
        assert gateway.xsc("store", "rm", alone).returncode == 0


# Notes each text the page shows of an operation's progress, as it is drawn (a repair may be over between two polls
# of a test).
RECORD_PROGRESS = """window.__progress = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll('[data-k=progress], [data-k=batch-progress]')) {
    if (window.__progress[window.__progress.length - 1] !== el.textContent) window.__progress.push(el.textContent);
  }
}).observe(document.body, {childList: true, subtree: true, characterData: true});"""

# Counts the ticks of the page's timers and what each tick changed in the page's main part.
COUNT_TIMER_DRAWS = """() => {
  const seen = new MutationObserver(() => {});
  seen.observe(document.querySelector('#main'), {childList: true, subtree: true, characterData: true});
  window.__ticks = 0; window.__drawnByTimer = 0;
  const plain = window.setInterval;
  window.setInterval = (fn, ms, ...args) => plain(() => {
    seen.takeRecords();
    fn();
    window.__ticks++;
    window.__drawnByTimer += seen.takeRecords().length;
  }, ms, ...args);
}"""

# Hands the page each line of a node's streamed answer in a read of its own, so that RECORD_PROGRESS sees what the page
# draws for every line. A browser that reads a quick run's answer in one piece draws only its last line (a file's
# state, for a run over every file: the page then rightly shows no file at hand), and the observer, which runs between
# reads, would see none of the lines before it.
ONE_LINE_PER_READ = """() => {
  const fetched = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetched(...args);
    if (!(response.headers.get('Content-Type') || '').startsWith('application/x-ndjson')) return response;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = '';
    const lines = new ReadableStream({async pull(out) {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) { if (rest) out.enqueue(rest); return out.close(); }
        const whole = (rest + value).split('\\n');
        rest = whole.pop();
        if (whole.length) return whole.forEach(line => out.enqueue(line + '\\n'));
      }
    }});
    return new Response(lines.pipeThrough(new TextEncoderStream()), {status: response.status, headers: response.headers});
  };
}"""


# A page a web function serves, trying to read the dashboard's session (its CSRF token) with the browser's cookies.
THIEF = """<html><head><title>waiting</title></head><body><script>
fetch("DASHBOARD/v1/ui/session", {credentials: "include"})
  .then(r => r.text()).then(t => { document.title = "read: " + t; })
  .catch(() => { document.title = "blocked"; });
</script></body></html>"""


def test_a_page_a_function_serves_cannot_read_the_dashboards_session(net, browser) -> None:
    from playwright.sync_api import expect

    from tests.support.peers import api, http

    gateway = net["nodes"][0]
    context = browser.new_context()
    page = context.new_page()
    page.goto(login_url(gateway))  # logged in to the dashboard: its session cookie is in this browser
    page.wait_for_selector("body[data-ready=overview]")
    auth = {"Authorization": f"Bearer {gateway.token}"}
    status, put = http(gateway.url, "POST", "/v1/store/files", THIEF.replace("DASHBOARD", gateway.url).encode(), auth)
    assert status == 201, put
    status, module = http(gateway.url, "POST", "/v1/modules?wasi=true", (WASM.parent / "cgi.wasm").read_bytes(), auth)
    assert status in (200, 201), module
    status, served = api(gateway, "POST", "/v1/compute/functions", {"name": "thief", "module": module["id"],
                                                                     "entrypoint": "files",
                                                                     "inputs": [f"{put['capability']}:/in/index.html"]})
    assert status == 201, served
    page.goto(net["web"] + "/fn/thief/index.html")
    expect(page).not_to_have_title("waiting")  # the page's fetch has come back, or been refused
    assert page.title() == "blocked"  # another origin: the browser gives the page nothing of the dashboard's
    context.close()


def test_a_stored_site_is_served_to_curl_and_chromium_byte_exact(net, browser, tmp_path) -> None:
    """An index.html and a 5 MiB image put with `xsc store put`, served by a function with both mounted: curl and
    Chromium get them byte-exact, and a Range request on the image is 206."""
    import os
    import shutil
    import subprocess

    from playwright.sync_api import expect

    if shutil.which("curl") is None:
        pytest.skip("no curl (install it with scripts/ci-deps.sh, or apt-get install curl)")
    gateway, web = net["nodes"][0], net["web"]
    page_bytes = b'<html><head><title>site</title></head><body><img id=i src="image.png"></body></html>'
    image = _png(1024, 1710)  # noise: 5 MiB whatever the compression
    caps = {}
    for name, data in (("index.html", page_bytes), ("image.png", image)):
        (tmp_path / name).write_bytes(data)
        done = gateway.xsc("store", "put", str(tmp_path / name))
        assert done.returncode == 0, done.stderr.decode()
        caps[name] = done.stdout.decode().split()[-1]
    served = gateway.xsc("compute", "serve", "site", str(WASM.parent / "cgi.wasm"), "--entrypoint", "files",
                         *(a for name, cap in caps.items() for a in ("--input", f"{cap}:/in/{name}")))
    assert served.returncode == 0, served.stderr.decode()
    for name, data in (("index.html", page_bytes), ("image.png", image)):
        got = subprocess.run(["curl", "-sf", f"{web}/fn/site/{name}"], capture_output=True, check=True).stdout
        assert got == data
    ranged = subprocess.run(["curl", "-s", "-D", "-", "-H", "Range: bytes=1000-1999", f"{web}/fn/site/image.png"],
                            capture_output=True, check=True).stdout
    head, _, body = ranged.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and body == image[1000:2000], head
    context = browser.new_context()
    page = context.new_page()
    with page.expect_response(f"{web}/fn/site/image.png") as fetched:
        answer = page.goto(f"{web}/fn/site/index.html")
    assert answer.status == 200 and answer.body() == page_bytes and page.title() == "site"
    assert fetched.value.status == 200 and fetched.value.body() == image
    picture = page.locator("#i")
    expect(picture).to_have_js_property("complete", True)
    expect(picture).to_have_js_property("naturalWidth", 1024)  # Chromium decoded it whole
    context.close()


def _png(width: int, height: int) -> bytes:
    """An RGB PNG of random pixels, stored uncompressed."""
    import os
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b""))
