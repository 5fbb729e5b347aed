"""The dashboard's routes on an in-process node: login links, the session cookie on the user API, CSRF,
and the static pages (xsc/node/ui_routes.py, xsc/node/auth.py)."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import ClientSession, CookieJar, TCPConnector

from xsc.node.appkeys import NODE, TOKEN, UI_SESSIONS
from xsc.node.auth import FAILURE_BURST
from xsc.ui.core.session import CSRF_HEADER

from tests.support.waiting import eventually_async

ADD_WASM = Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "add.wasm"


async def _login(node) -> tuple[ClientSession, str, str, str]:
    """A browser-like session (no token) logged in through a fresh link: (session, cookie, base URL, the key the
    page is given in the redirect's fragment)."""
    answer = await node.post("/v1/ui/login-link")
    assert answer.status == 200, await answer.text()
    link = await answer.json()
    base = str(node.make_url("")).rstrip("/")
    browser = ClientSession(cookie_jar=CookieJar(unsafe=True))  # unsafe: keeps cookies of an IP address
    response = await browser.get(base + link["path"], allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/ui/#key="), response.headers
    name = node.app[UI_SESSIONS].cookie
    morsel = response.cookies[name]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    return browser, morsel.value, base, response.headers["Location"].removeprefix("/ui/#key=")


async def test_a_login_link_works_once(node) -> None:
    link = await (await node.post("/v1/ui/login-link")).json()
    assert link["path"].startswith("/ui/login?link=") and link["url"].endswith(link["path"])
    base = str(node.make_url("")).rstrip("/")
    async with ClientSession() as browser:
        assert (await browser.head(base + link["path"], allow_redirects=False)).status == 200  # a preview
        first = await browser.get(base + link["path"], allow_redirects=False)
        assert first.status == 303
    async with ClientSession() as other:
        again = await other.get(base + link["path"], allow_redirects=False, headers={"Accept": "text/html"})
        assert again.status == 401 and again.content_type == "text/html"
        assert "does not work" in await again.text()
        assert not other.cookie_jar.filter_cookies(base)
        script = await other.get(base + link["path"], allow_redirects=False)  # not a browser: a problem body
        assert script.status == 401 and (await script.json())["code"] == "unauthorized"


async def test_the_session_opens_the_user_api_with_its_key_and_nothing_else_does(node) -> None:
    browser, _, base, key = await _login(node)
    try:
        ok = await browser.get(base + "/v1/node/status", headers={CSRF_HEADER: key})
        assert ok.status == 200 and (await ok.json())["id"]
        session = await (await browser.get(base + "/v1/ui/session", headers={CSRF_HEADER: key})).json()
        assert session["csrf_header"] == CSRF_HEADER and "csrf" not in session
        async with ClientSession() as stranger:
            refused = await stranger.get(base + "/v1/node/status")
            assert refused.status == 401 and (await refused.json())["code"] == "unauthorized"
            forged = await stranger.get(base + "/v1/node/status",
                                        cookies={node.app[UI_SESSIONS].cookie: "abc.99999999999.def"})
            assert forged.status == 401
    finally:
        await browser.close()


async def test_a_service_on_another_port_holding_the_cookie_can_do_nothing_with_it(node) -> None:
    """Cookies are per host, not per port: a service on another loopback port receives the session cookie.  It
    cannot read the session's key (the page holds it in its own origin's storage), so it reads nothing, learns
    no key from /v1/ui/session, and prepays nothing with or without an Origin."""
    browser, cookie, base, key = await _login(node)
    await browser.close()
    jar = {node.app[UI_SESSIONS].cookie: cookie}
    async with ClientSession(cookies=jar) as other_port:
        assert (await other_port.get(base + "/v1/node/status")).status == 401
        assert (await other_port.get(base + "/v1/ui/session")).status == 401
        prepay = {"node": "a" * 52, "amount": 1}
        for headers in ({}, {"Origin": base}, {"Origin": "http://127.0.0.1:1"}):
            refused = await other_port.post(base + "/v1/ledger/prepay", json=prepay, headers=headers)
            assert refused.status == 401, await refused.text()
        # Even holding the key, a change without this node's Origin is refused.
        for headers in ({CSRF_HEADER: key}, {CSRF_HEADER: key, "Origin": "http://127.0.0.1:1"}):
            refused = await other_port.post(base + "/v1/ledger/prepay", json=prepay, headers=headers)
            assert refused.status == 403, await refused.text()


async def test_changes_need_the_sessions_key_and_this_nodes_origin(node) -> None:
    browser, _, base, key = await _login(node)
    try:
        without = await browser.post(base + "/v1/health/probe", headers={"Origin": base})
        assert without.status == 401 and CSRF_HEADER in (await without.json())["detail"]
        other = ("y" if key[0] == "x" else "x") + key[1:]
        wrong = await browser.post(base + "/v1/health/probe", headers={CSRF_HEADER: other, "Origin": base})
        assert wrong.status == 403
        elsewhere = await browser.post(base + "/v1/health/probe",
                                       headers={CSRF_HEADER: key, "Origin": "http://evil.example"})
        assert elsewhere.status == 403
        no_origin = await browser.post(base + "/v1/health/probe", headers={CSRF_HEADER: key})
        assert no_origin.status == 403
        good = await browser.post(base + "/v1/health/probe", headers={CSRF_HEADER: key, "Origin": base})
        assert good.status == 200, await good.text()
    finally:
        await browser.close()


async def test_failed_authentications_are_limited_per_address_and_do_not_lock_out_another(node_factory) -> None:
    """A stranger (at 127.0.0.2) guessing tokens, sessions and login links is answered 429 with a problem body and
    Retry-After once past its failures, even for the right token (a right guess must not get in); /health shows it
    no more than anyone.  The user at another address (127.0.0.1) is not locked out: its token, a login link and its
    own mistakes are answered as ever."""
    node = await node_factory(node={"auth_failure_limit": 0.001})  # no failure forgiven within the test
    base, cookie = str(node.make_url("")).rstrip("/"), node.app[UI_SESSIONS].cookie
    guesses = [("/v1/node/status", {"Authorization": "Bearer wrong"}, {}),
               ("/v1/node/status", {}, {cookie: "abc.99999999999.def"}),
               ("/ui/login?link=abc.99999999999.def", {}, {}),
               ("/health", {"Authorization": "Bearer wrong"}, {})]
    async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.2", 0))) as stranger:
        for i in range(FAILURE_BURST):
            path, headers, cookies = guesses[i % len(guesses)]
            answer = await stranger.get(base + path, headers=headers, cookies=cookies, allow_redirects=False)
            assert answer.status == (200 if path == "/health" else 401), (i, path, answer.status)
        for path, headers, cookies in [*guesses[:3], ("/v1/node/status", {"Authorization": f"Bearer {node.app[TOKEN]}"},
                                                      {})]:
            refused = await stranger.get(base + path, headers=headers, cookies=cookies, allow_redirects=False)
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1, (path, refused.status)
            problem = await refused.json()
            assert problem["code"] == "quota-exceeded" and "failed authentications" in problem["detail"], problem
        health = await (await stranger.get(base + "/health", headers={"Authorization": f"Bearer {node.app[TOKEN]}"}
                                           )).json()
        assert "observedValue" not in health["checks"]["disk:free"][0], health  # anyone's answer
    assert (await node.get("/v1/node/status")).status == 200  # the user, at 127.0.0.1
    browser, _, _, key = await _login(node)
    try:
        assert (await browser.get(base + "/v1/node/status", headers={CSRF_HEADER: key})).status == 200
    finally:
        await browser.close()
    assert (await node.get("/v1/node/status", headers={"Authorization": "Bearer wrong"})).status == 401


async def test_a_session_cannot_mint_login_links_and_logout_ends_it(node) -> None:
    browser, _, base, key = await _login(node)
    try:
        headers = {CSRF_HEADER: key, "Origin": base}
        refused = await browser.post(base + "/v1/ui/login-link", headers=headers)
        assert refused.status == 403
        for empty in ("", " "):  # an empty Authorization header is no token
            refused = await browser.post(base + "/v1/ui/login-link", headers={**headers, "Authorization": empty})
            assert refused.status in (401, 403), await refused.text()
        out = await browser.post(base + "/v1/ui/logout", headers=headers)
        assert out.status == 200
        assert (await browser.get(base + "/v1/node/status", headers={CSRF_HEADER: key})).status == 401
    finally:
        await browser.close()


async def test_the_token_still_works_and_a_bad_token_is_not_rescued_by_a_cookie(node) -> None:
    browser, cookie, base, _ = await _login(node)
    await browser.close()
    assert (await node.get("/v1/node/status")).status == 200
    async with ClientSession() as other:
        bad = await other.get(base + "/v1/node/status", headers={"Authorization": "Bearer nope"},
                              cookies={node.app[UI_SESSIONS].cookie: cookie})
        assert bad.status == 401


async def test_pages_are_served_with_a_strict_content_security_policy(node) -> None:
    base = str(node.make_url("")).rstrip("/")
    async with ClientSession() as browser:
        index = await browser.get(base + "/ui/")
        assert index.status == 200 and index.content_type == "text/html"
        policy = dict(d.strip().split(" ", 1) for d in index.headers["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == "'self'" and policy["default-src"] == "'self'"  # no inline script, no eval
        assert "unsafe" not in index.headers["Content-Security-Policy"]
        assert "/ui/app.js" in await index.text()
        script = await browser.get(base + "/ui/app.js")
        assert script.status == 200 and "javascript" in script.content_type
        cached = await browser.get(base + "/ui/app.js", headers={"If-None-Match": script.headers["ETag"]})
        assert cached.status == 304
        assert (await browser.get(base + "/ui/../api-token")).status == 404
        assert (await browser.get(base + "/ui/nothing.js")).status == 404
        for path in ("/ui", "/"):  # the node's own URL, opened in a browser, too
            redirect = await browser.get(base + path, allow_redirects=False)
            assert redirect.status == 302 and redirect.headers["Location"] == "/ui/", path


async def test_api_answers_carry_what_the_pages_show(node) -> None:
    """Balance after each entry (the ledger chart), recent needs (market explain), signature status."""
    status = await (await node.get("/v1/market/status")).json()
    assert status["recent_needs"] == [] and status["ended_deals"] == []
    module = (await (await node.post("/v1/modules", data=ADD_WASM.read_bytes())).json())["id"]
    for a in (1, 2, 3):
        run = await node.post("/v1/compute/invoke", json={"module": module, "function": "add", "args": [str(a), "2"]})
        assert run.status == 200, await run.text()

    async def settled() -> dict | None:
        history = await (await node.get("/v1/ledger/accounts/client/history")).json()
        return history if history["entries"] else None

    # invokes are paid by a later settlement (aggregated per payee and interval)
    history = await eventually_async(settled, "the invokes' settlement", 20)
    entries = history["entries"]
    assert entries and [e["seq"] for e in entries] == list(range(len(entries), 0, -1))
    assert entries[0]["balance_after"] == history["account"]["balance"] < 0
    assert all(a["balance_after"] - a["delta"] == b["balance_after"] for a, b in zip(entries, entries[1:]))
    assert entries[-1]["balance_after"] == entries[-1]["delta"]  # the first entry started from zero
    records = (await (await node.get("/v1/compute/provenance")).json())["records"]
    assert len(records) == 3 and all(r["signature_valid"] for r in records)
    cut = await (await node.get("/v1/compute/provenance?limit=1&minutes=30")).json()
    assert len(cut["records"]) == 1 and "per_minute" not in records[0]
    per_minute = cut["per_minute"]  # every run counted, not only the records answered
    assert len(per_minute["counts"]) == 30 and sum(per_minute["counts"]) == 3 and per_minute["complete"]
    assert per_minute["since_ms"] % 60_000 == 0
    status = await (await node.get("/v1/market/status")).json()
    assert status["recent_needs"] and all(n.startswith("invoke-") for n in status["recent_needs"])
    explained = await node.get(f"/v1/market/explain/{status['recent_needs'][0]}")
    assert explained.status == 200


async def test_each_peer_in_the_health_table_has_its_sparklines(node_factory) -> None:
    gateway = await node_factory("gateway", health={"probe_interval": 3600})
    other = await node_factory("other")
    added = await gateway.post("/v1/peers", json={"url": str(other.make_url("")).rstrip("/")})
    assert added.status in (200, 201), await added.text()
    assert (await gateway.post("/v1/health/probe")).status == 200
    peers = (await (await gateway.get("/v1/health/peers")).json())["peers"]
    assert len(peers) == 1
    for name, buckets in (("sparkline_1h", 12), ("sparkline_24h", 24)):
        # The peer was probed as it was added and again just now: both in the newest bucket, or in the two newest
        # where a bucket's boundary (5 minutes, an hour) fell between the two probes.
        line = peers[0][name]
        assert len(line) == buckets and line[-1] == 1.0 and line[-2] in (None, 1.0), line
        assert line[:-2] == [None] * (buckets - 2), line


async def test_the_file_list_counts_shares_per_node_and_can_be_cut_to_the_newest(node) -> None:
    caps = []
    for i in range(3):
        put = await node.post(f"/v1/store/files?name=f{i}", data=b"x" * (100 + i))
        assert put.status == 201, await put.text()
        caps.append((await put.json())["capability"])
    every = await (await node.get("/v1/store/files")).json()
    me = (await (await node.get("/v1/node/status")).json())["id"]
    assert every["count"] == 3 and sorted(f["capability"] for f in every["files"]) == sorted(caps)
    assert every["shares_per_node"] == {me: 18}
    newest = await (await node.get("/v1/store/files?limit=2")).json()
    assert newest["count"] == 3 and [f["capability"] for f in newest["files"]] == [
        f["capability"] for f in every["files"]][1:]
    assert (await node.get("/v1/store/files?limit=0")).status == 400


async def test_the_history_can_be_cut_to_the_fields_a_page_charts(node) -> None:
    """The ledger page's chart asks for three small fields of hundreds of entries: the same entries, fewer bytes."""
    module = (await (await node.post("/v1/modules", data=ADD_WASM.read_bytes())).json())["id"]
    node.app[NODE].tabs.max_refs = 1  # each invoke its own entry
    for a in (1, 2, 3):
        run = await node.post("/v1/compute/invoke", json={"module": module, "function": "add", "args": [str(a), "2"]})
        assert run.status == 200, await run.text()

    async def all_settled() -> dict | None:  # the account stays as it is from then on
        full = await (await node.get("/v1/ledger/accounts/client/history?limit=10&encoded=false")).json()
        return full if len(full["entries"]) == 3 and full["account"]["held"] == 0 else None

    full = await eventually_async(all_settled, "three settled entries, nothing held", 20)
    assert len(full["entries"]) == 3
    cut = await (await node.get("/v1/ledger/accounts/client/history?limit=10&fields=settled_at,kind")).json()
    assert cut["account"] == full["account"]
    assert cut["entries"] == [{"seq": e["seq"], "settled_at": e["settled_at"], "kind": e["kind"],
                               "balance_after": e["balance_after"]} for e in full["entries"]]
    again = await (await node.get("/v1/ledger/accounts/client/history?limit=10&encoded=false")).json()
    assert again == full  # the views kept between answers are copies: cutting one changed none
    for bad in ("nope", "settled_at,nope", ","):
        answer = await node.get(f"/v1/ledger/accounts/client/history?fields={bad}")
        assert answer.status == 400 and "fields=" in (await answer.json())["hint"]


async def test_another_origin_is_given_no_cors_leave(node) -> None:
    """No answer tells a browser that a page of another origin may read it or send it the page's header."""
    browser, _, base, key = await _login(node)
    try:
        foreign = {"Origin": "http://evil.example"}
        for method, path, headers in (("GET", "/v1/node/status", {CSRF_HEADER: key}), ("GET", "/v1/ui/session", {}),
                                      ("POST", "/v1/ui/logout", {CSRF_HEADER: key}), ("GET", "/ui/", {}),
                                      ("OPTIONS", "/v1/node/status", {"Access-Control-Request-Method": "GET",
                                                                      "Access-Control-Request-Headers": CSRF_HEADER})):
            answer = await browser.request(method, base + path, headers={**foreign, **headers})
            assert not [h for h in answer.headers if h.lower().startswith("access-control-")], (method, path)
            if method == "POST":
                assert answer.status == 403  # a change from another origin
    finally:
        await browser.close()


SCRIPTS = Path(__file__).resolve().parents[2] / "xsc" / "ui" / "static"
# What would parse a string as markup or run it as code, and the attributes that would make it a link or a fetch.
SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser|"
                   r"\beval\(|new Function|setTimeout\(\s*['\"`]|setInterval\(\s*['\"`]|srcdoc|"
                   r"['\"]?\b(?:href|src|action|formaction|xlink:href)['\"]?\s*:")


def test_the_pages_scripts_put_strings_into_the_page_only_as_text() -> None:
    """The pages show strangers' strings (peers' URLs, file and bucket names, exports, messages): every one goes in
    as a text node or an attribute's value (`h()` in app.js, `svg()` in charts.js), never as markup or a URL."""
    found = [f"{script.name}:{n}: {line.strip()}" for script in sorted(SCRIPTS.glob("*.js"))
             for n, line in enumerate(script.read_text().splitlines(), 1) if SINKS.search(line)]
    assert found == []


async def test_a_sessions_refusals_count_against_its_address_as_wrong_tokens_do(node_factory) -> None:
    """A session's request without its CSRF key, a change without the dashboard's Origin, a session asking for a login
    link (each 403) count against its address as a wrong token does: past the burst even its right key is 429.  /health
    asked so is anyone's answer, not a 403, and counts too; the user at another address is not locked out."""
    node = await node_factory(node={"auth_failure_limit": 0.001})  # no failure forgiven within the test
    link = await (await node.post("/v1/ui/login-link")).json()
    base = str(node.make_url("")).rstrip("/")
    async with ClientSession(cookie_jar=CookieJar(unsafe=True),
                             connector=TCPConnector(local_addr=("127.0.0.2", 0))) as browser:
        logged = await browser.get(base + link["path"], allow_redirects=False)
        key = logged.headers["Location"].removeprefix("/ui/#key=")
        tries = [("GET", "/v1/node/status", {CSRF_HEADER: "0" * len(key)}, 403),
                 ("POST", "/v1/ui/login-link", {CSRF_HEADER: key, "Origin": base}, 403),
                 ("DELETE", "/v1/s3/buckets/b", {CSRF_HEADER: key, "Origin": "http://elsewhere"}, 403),
                 ("GET", "/health", {CSRF_HEADER: "0" * len(key)}, 200)]
        for i in range(FAILURE_BURST):
            method, path, headers, status = tries[i % len(tries)]
            answer = await browser.request(method, base + path, headers=headers)
            assert answer.status == status, (i, path, answer.status, await answer.text())
        refused = await browser.get(base + "/v1/node/status", headers={CSRF_HEADER: key})
        assert refused.status == 429 and (await refused.json())["code"] == "quota-exceeded"
    assert (await node.get("/v1/node/status")).status == 200  # the user, at 127.0.0.1
