"""Web functions served on the market (compute/functions.py, `on_market`): the owner's node offers no compute, so
each request runs on a provider, over the request's body and the function's stored files sent to it; the provider
is paid for each run, and once it is gone the function is served by another."""

from __future__ import annotations

import aiohttp

from tests.support.compute import deploy, peer_with_provider
from tests.support.jobs import QUIET, balances, settle, verified
from tests.support.nodes import close_node, free_port
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE


async def _get(url: str, method: str = "GET", **kwargs) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


async def _json(node, method: str, path: str, **kwargs) -> dict:
    response = await node.request(method, path, **kwargs)
    answer = await response.json()
    assert response.status < 300, answer
    return answer


def _runs_of(provider) -> int:
    """The runs a provider has signed of jobs it hosted (each request of a function on the market is one)."""
    return sum(1 for r in provider.app[NODE].compute.recent_provenance(1000) if r["record"].get("job"))


async def test_a_function_on_the_market_is_run_and_paid_on_a_provider_and_outlives_it(node_factory) -> None:
    providers = [await node_factory(f"provider{i}", **QUIET) for i in range(2)]
    port = free_port()
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 1000})
    for provider in providers:
        await peer_with_provider(owner, provider)
    base = f"http://127.0.0.1:{port}"
    module = await deploy(owner, "cgi", wasi=True)
    page = b"<html><p>stored here, served elsewhere</p></html>\n" * 50
    cap = (await _json(owner, "POST", "/v1/store/files", data=page))["capability"]
    for name, entrypoint, inputs in (("hello", "_start", []), ("site", "files", [f"{cap}:/in/index.html"])):
        served = await _json(owner, "POST", "/v1/compute/functions",
                             json={"name": name, "module": module, "entrypoint": entrypoint, "inputs": inputs,
                                   "on_market": True})
        assert served["on_market"] is True
    before = {p.app[IDENTITY].id: balances(owner, p) for p in providers}

    # A request's variables and body reach the provider's run; its answer comes back with its headers.
    body = b"posted body\n" * 1000
    status, headers, answer = await _get(f"{base}/fn/hello/world?x=1", "POST", data=body,
                                         headers={"X-Caller": "me"})
    assert status == 200 and headers["X-Hello"] == "yes", (status, answer[:300])
    text = answer.decode()
    for line in ("REQUEST_METHOD=POST", "PATH_INFO=/world", "QUERY_STRING=x=1", "HTTP_X_CALLER=me",
                 f"CONTENT_LENGTH={len(body)}"):
        assert line in text.splitlines(), text[:1000]
    assert answer.endswith(body)
    status, _, answer = await _get(f"{base}/fn/hello/plain")  # no body, no files: nothing but the request is sent
    assert status == 200 and "REQUEST_METHOD=GET" in answer.decode().splitlines()
    # A stored file the function mounts is sent with the request; a range is cut from what the provider answered.
    status, headers, answer = await _get(f"{base}/fn/site/index.html")
    assert status == 200 and answer == page and headers["Content-Type"].startswith("text/html")
    status, headers, answer = await _get(f"{base}/fn/site/index.html", headers={"Range": "bytes=6-20"})
    assert status == 206 and answer == page[6:21]
    assert (await _get(f"{base}/fn/site/missing.html"))[0] == 404

    # Nothing ran on the owner's node; the providers that ran the requests were paid what their runs cost.
    assert not [r for r in owner.app[NODE].compute.recent_provenance(100) if r["record"].get("job")]
    ran = {p.app[IDENTITY].id: _runs_of(p) for p in providers}
    assert sum(ran.values()) == 5, ran
    listed = {f["name"]: f for f in (await _json(owner, "GET", "/v1/compute/functions"))["functions"]}
    spent = listed["hello"]["spend"] + listed["site"]["spend"]
    assert spent > 0 and listed["site"]["requests"] == 3 and listed["hello"]["errors"] == 0
    await settle(owner)
    received = sum(balances(owner, p)[1] - before[p.app[IDENTITY].id][1] for p in providers)
    assert received == spent
    for node in (owner, *providers):
        await verified(node)

    # The provider that served the last request goes away: the next requests are served by the other one.
    last = max(providers, key=lambda p: max((r["record"]["timestamp"] for r in p.app[NODE].compute
                                             .recent_provenance(100) if r["record"].get("job")), default=""))
    other = next(p for p in providers if p is not last)
    await close_node(last)
    had = _runs_of(other)
    for _ in range(3):
        status, _, answer = await _get(f"{base}/fn/site/index.html")
        assert status == 200 and answer == page
    assert _runs_of(other) == had + 3


async def test_a_function_on_the_market_with_no_provider_left_answers_a_problem(node_factory) -> None:
    provider = await node_factory("provider", **QUIET)
    port = free_port()
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"web_listen": f"127.0.0.1:{port}"})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    await _json(owner, "POST", "/v1/compute/functions", json={"name": "hello", "module": module, "on_market": True})
    await close_node(provider)
    status, headers, answer = await _get(f"http://127.0.0.1:{port}/fn/hello/")
    assert status >= 500 and headers["Content-Type"].startswith("application/problem+json"), (status, answer)
    listed = (await _json(owner, "GET", "/v1/compute/functions"))["functions"]
    assert listed[0]["errors"] == 1 and listed[0]["spend"] == 0
    response = await owner.post("/v1/compute/functions", json={"name": "x", "module": module, "on_market": "yes"})
    assert response.status == 400 and "on_market" in (await response.json())["detail"]
