"""Jobs on in-process nodes: run one over the user API, read what it stored, settle and check the ledgers."""

from __future__ import annotations

import json

from tests.support.compute import WASM, peer_with_provider, wasm
from xsc.compute.provider_tabs import compile_price
from tests.support.nodes import close_node
from tests.support.waiting import eventually_async
from xsc.node import CLIENT_IDENTITY, IDENTITY
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def network(node_factory, providers: int = 1, **sections):
    """A gateway that offers no compute, and `providers` nodes that do, each known to the gateway's market; `sections`
    over every node's config (its market section but the gateway's)."""
    nodes = [await node_factory(f"provider{i}", **QUIET, **sections) for i in range(providers)]
    gateway = await node_factory("gateway", **QUIET, **{**sections, "market": {"offer_compute": False}})
    for provider in nodes:
        await peer_with_provider(gateway, provider)
    return gateway, nodes


async def running_on(gateway, provider) -> dict:
    """The gateway's newest job (as its list shows it) once its provider runs a job."""
    async def spinning():
        jobs = (await (await gateway.get("/v1/compute/jobs")).json())["jobs"]
        busy = (await (await provider.get("/v1/node/status")).json())["compute"]["running"] >= 1
        return busy and jobs and jobs[0]

    return await eventually_async(spinning, "the job running on the provider", 30)


async def run_job(node, spec: dict, stdin: bytes = b"") -> tuple[int, dict]:
    """POST /v1/compute/jobs: the spec's JSON on one line, then the job's stdin; (status, answer)."""
    body = json.dumps(spec).encode() + b"\n" + stdin
    response = await node.post("/v1/compute/jobs", data=body, headers={"Content-Type": "application/x-xsc-job"})
    return response.status, await response.json()


def failing_after(storage, monkeypatch, puts: int, error: BaseException) -> None:
    """The node's put publishes `puts` files, then fails with `error` (as its disk, or the market, would)."""
    put = storage.put
    done = []

    async def failing(*args, **kwargs):
        if len(done) >= puts:
            raise error
        done.append(await put(*args, **kwargs))
        return done[-1]

    monkeypatch.setattr(storage, "put", failing)


def reading(data: bytes):
    """A job's stdin as JobService.run reads it (`data`, then its end)."""
    chunks = [b"", data]

    async def read(n: int) -> bytes:
        return chunks.pop() if chunks else b""

    return read


async def restarted(node_factory, gateway, jid: str):
    """The gateway of `network` stopped and started again from its data dir: it, and the job `jid` once its start
    has finished it."""
    await close_node(gateway)
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})

    async def finished():
        job = await (await gateway.get(f"/v1/compute/jobs/{jid}")).json()
        return job["state"] not in ("running", "storing") and job

    return gateway, await eventually_async(finished, "the job finished at the start", 60)


async def owed_paid(gateway, job: dict) -> None:
    """Until every tab the job's record says it owes (`paid_on`) is paid: a start pays them once it has stored the
    job, just after it wrote it done."""
    owed = {pay["authorization"] for pay in job["paid_on"]}
    await eventually_async(lambda: not owed & {a.id.hex() for a in gateway.app[NODE].ledger.pending()},
                           "the job's tabs paid", 30)


async def read_file(node, cap: str) -> bytes:
    response = await node.get(f"/v1/store/files/{cap}")
    assert response.status == 200, await response.text()
    return await response.read()


async def settle(gateway) -> None:
    """Close every open tab now: what the gateway owes each provider is paid (or refused)."""
    paid = gateway.app[NODE].paid
    await paid.gateway_tabs.close()
    await paid.payments.retry_all()
    paid.gateway_tabs.start()


async def settled(gateway) -> None:
    """settle, and until no tab is left pending: a gateway a test shares with others, handed to it with nothing owed
    from before, so that its balances move by that test's own jobs alone."""
    await settle(gateway)
    await eventually_async(lambda: gateway.app[NODE].ledger.pending() == [], "every tab paid or refused", 30)


def compiled(job: dict, name: str) -> int:
    """What a provider that lacked the fixture module `name` charges for compiling it when it is pushed for `job`, at
    the job's price (its run's `cost`, or what it was sent at: its `sent`, or `job` is a replica's `replicating`
    entry): the job's tab pays it with the run."""
    if "cost" in job:
        return compile_price(len(wasm(name)), job["cost"]["fuel_price"])
    return compile_price(len(wasm(name)), job.get("sent", job)["price"])


async def compiled_for(provider, run: str, name: str) -> int:
    """`compiled`, at the price the provider's own record of the run was made at (`run`: the record's id, or the id
    of the job it ran): a replica's, or a job's whose answer names no cost."""
    records = (await (await provider.get("/v1/compute/provenance?limit=1000")).json())["records"]
    [record] = [r["record"] for r in records if run in (r["record"]["id"], r["record"].get("job", {}).get("id"))]
    return compile_price(len(wasm(name)), record["fuel_price"])


def compiled_in(provider, run: str, name: str) -> int:
    """`compiled_for` of a node process (tests/support/peers.py)."""
    from tests.support.peers import api

    records = api(provider, "GET", "/v1/compute/provenance?limit=1000")[1]["records"]
    [record] = [r["record"] for r in records if run in (r["record"]["id"], r["record"].get("job", {}).get("id"))]
    return compile_price(len(wasm(name)), record["fuel_price"])


def balances(gateway, provider) -> tuple[int, int]:
    """The gateway's user's balance (it pays) and the provider's node's (it is paid)."""
    return (gateway.app[NODE].ledger.store.state(gateway.app[CLIENT_IDENTITY].public_key).balance,
            provider.app[NODE].ledger.store.state(provider.app[IDENTITY].public_key).balance)


def balances_of(gateway, providers) -> dict[str, tuple[int, int]]:
    """`balances` with each of `providers`, by its node id: what `paid_since` counts from."""
    return {p.app[IDENTITY].id: balances(gateway, p) for p in providers}


def paid_since(gateway, providers, before: dict[str, tuple[int, int]]) -> dict[str, int]:
    """What each of `providers` was paid since `before` (`balances_of` then), by its node id."""
    return {node: now[1] - before[node][1] for node, now in balances_of(gateway, providers).items()}


async def verified(node) -> None:
    response = await node.get("/v1/ledger/verify")
    report = await response.json()
    assert response.status == 200 and report["ok"], report


def countersigning_the_cap(provider) -> None:
    """The provider, asked to close a tab, countersigns its whole cap, whatever ran under it."""
    node = provider.app[NODE]

    async def close_once(auth, sender=None, closer=None, count=None, written=None):
        return await node.ledger.countersign(node.identity, auth, auth.cap, {"fuel": 1, "invokes": 1},
                                             verified=True, sender=sender, count=count, written=written), True

    node.paid.provider_tabs.close_once = close_once


def provider_pair(tmp_path, wasm: str, started: list, env: dict[str, str]):
    """Two node processes, `env` over both: a gateway that offers no compute and a provider that offers no storage (a
    job's outputs are stored on the gateway, and the provider is paid for its run and compiling the module pushed to
    it alone), `wasm` deployed on the gateway: (gateway, provider, id)."""
    from tests.support.peers import api, start_star
    from tests.support.waiting import eventually

    (gateway, provider), _ = start_star(tmp_path, 2, {**env, "XSC_MARKET_OFFER_COMPUTE": "false"},
                                        {**env, "XSC_MARKET_OFFER_STORAGE": "false"}, started)
    eventually(lambda: api(gateway, "GET", "/v1/market/status")[1]["participants"] == 2, "the market")
    deployed = gateway.xsc("compute", "deploy", str(WASM / wasm), "--wasi")
    assert deployed.returncode == 0, deployed.stderr
    return gateway, provider, deployed.stdout.decode().strip()
