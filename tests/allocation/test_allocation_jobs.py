"""Jobs placed from the converged allocation, on in-process nodes with real HTTP between them: a gateway that
offers no compute, whose standing compute need three providers allocate to.  A job or replica placed from a
provider's part holds its fuel budget of it until it ends; one whose provider fails it, or that is passed over,
gives it back, so the part serves the next job."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace

from tests.support.allocation import FORK_WAIT, following, in_step, joining
from tests.support.compute import deploy, peer_with_provider
from tests.support.jobs import QUIET, run_job
from tests.support.waiting import eventually_async
from xsc.compute import job_placing, sent_jobs
from xsc.errors import PeerUnreachable
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE
from xsc.storage.strangers import PassingOver

FUEL = 10_000_000  # each job's fuel limit: it holds 2^24 of a provider's part while it is placed there
BUDGET = 1 << FUEL.bit_length()


async def _allocated(node_factory, monkeypatch):
    """The gateway of three providers, once each provider's part of its standing compute need holds a few
    jobs' budgets."""
    in_step(monkeypatch)  # each provider's part is its share of the gap the three asked for together
    market = {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT}
    providers = [await node_factory("provider0", **QUIET, market=market)]  # it seeds the ITC id; the others fork
    providers += [await joining(node_factory, providers[0], f"provider{i}", **QUIET, market=market) for i in (1, 2)]
    gateway = await joining(node_factory, providers[0], "gateway", **QUIET, market={**market, "offer_compute": False})
    for provider in providers:
        await peer_with_provider(gateway, provider)
        gateway.app[NODE].market.set_recognition(provider.app[IDENTITY].id, Decimal(1))
        provider.app[NODE].market.set_recognition(gateway.app[IDENTITY].id, Decimal(1))
    await eventually_async(lambda: following(gateway, providers, "compute"), "the providers to follow the gateway")
    response = await gateway.post("/v1/allocation/needs",
                                  json={"kind": "compute", "quantity": 12 * BUDGET, "seconds": 600})
    assert response.status == 201
    allocation = gateway.app[NODE].allocation

    def parts() -> bool:
        given = allocation.allocated("compute")
        return len(given) == 3 and all(units >= 2 * BUDGET for units in given.values())

    try:
        await eventually_async(parts, "the three providers to allocate the gateway's need")
    except AssertionError as err:  # which link stalled: a node without its ITC id, rounds not run, parts too small
        raise AssertionError(f"{err}; allocated {allocation.allocated('compute')}; "
                             + "; ".join(_id_state(node) for node in (*providers, gateway))) from None
    return gateway


def _id_state(node) -> str:
    status = node.app[NODE].allocation.status()
    return (f"{node.app[IDENTITY].id}: {'an id' if status['stamp'] else 'no id'}, forks asked of "
            f"{status['forks_asked']}, {status['rounds']} rounds, converged {status['converged']}")


def _held(gateway) -> dict:
    return gateway.app[NODE].dealing.status()["held_from_allocation"]


async def test_a_job_or_replica_whose_provider_fails_or_is_passed_over_gives_back_what_it_held(node_factory,
                                                                                               monkeypatch) -> None:
    """Each placed from a provider's part (it held the budget there when it failed or was passed over), each done
    on another provider, and nothing held once it is done."""
    gateway = await _allocated(node_factory, monkeypatch)
    module = await deploy(gateway, "sha256", wasi=True)
    spec = {"module": module, "stdin": "-", "limits": {"fuel": FUEL}}
    run, failing, held_then = sent_jobs.wire.run, [], []

    async def first_fails(client, url, provider, *args, **kwargs):
        failing[:] = failing or [provider]
        if provider == failing[0]:  # the first provider asked fails its work, holding the work's budget
            held_then.append(_held(gateway).get("compute", {}).get(provider, 0))
            raise PeerUnreachable(f"provider {url}: connection refused", url=url, reason="connection refused",
                                  sent=True)
        return await run(client, url, provider, *args, **kwargs)

    monkeypatch.setattr(sent_jobs.wire, "run", first_fails)
    # A job whose provider fails it goes to another; the budget it held of the first's part is given back.
    status, job = await run_job(gateway, spec, stdin=b"bytes")
    assert status == 201 and job["state"] == "done" and job["provider"] != failing[0], job
    assert held_then == [BUDGET] and _held(gateway) == {}, (held_then, _held(gateway))

    # A replica lost with its provider is placed again on the third; the lost one's budget is given back.
    failing.clear()
    status, job = await run_job(gateway, {**spec, "deterministic": True, "replicas": 2}, stdin=b"bytes")
    assert status == 201 and job["state"] == "done", job
    assert held_then[1:] == [BUDGET] and _held(gateway) == {}, (held_then, _held(gateway))

    # A replica's provider passed over (it said lately it takes nothing from the gateway): its budget is given back.
    monkeypatch.setattr(sent_jobs.wire, "run", run)
    terms, passed = gateway.app[NODE].jobs.provider_terms, []

    async def refuses(provider: str) -> bool:
        if not passed:
            passed.append((provider, _held(gateway).get("compute", {}).get(provider, 0)))
        return provider == passed[0][0]

    monkeypatch.setattr(terms, "refuses", refuses)
    status, job = await run_job(gateway, {**spec, "deterministic": True, "replicas": 2}, stdin=b"other bytes")
    assert status == 201 and job["state"] == "done", job
    assert passed[0][0] not in {r["provider"] for r in job["replicas"]}, (passed, job["replicas"])
    assert passed[0][1] == BUDGET and _held(gateway) == {}, (passed, _held(gateway))

    # As does a job's provider passed over.
    passed.clear()
    status, job = await run_job(gateway, spec, stdin=b"still other bytes")
    assert status == 201 and job["state"] == "done" and job["provider"] != passed[0][0], (passed, job)
    assert passed[0][1] == BUDGET and _held(gateway) == {}, (passed, _held(gateway))


async def test_replicas_being_chosen_when_their_job_is_cancelled_hold_nothing_of_the_allocation(node_factory,
                                                                                                monkeypatch) -> None:
    """A replicated job cancelled while its replicas' providers are chosen (the second one's terms being asked): the
    replica already chosen and the one being asked give back what they held of the providers' parts."""
    gateway = await _allocated(node_factory, monkeypatch)
    node, asked, blocked = gateway.app[NODE], [], asyncio.Event()

    async def second_never_answered(self, provider: str) -> bool:
        asked.append(provider)
        if len(asked) == 2:
            blocked.set()
            await asyncio.Event().wait()  # its terms never come: the job is cancelled meanwhile
        return False

    monkeypatch.setattr(PassingOver, "passes", second_never_answered)
    choosing = asyncio.create_task(job_placing.providers(node.dealing, gateway.app[IDENTITY].id,
                                                         SimpleNamespace(fuel=FUEL), node.paid.default_bid, 2,
                                                         frozenset(), node.provider_terms.passing_over()))
    await asyncio.wait_for(blocked.wait(), 30)
    assert sum(_held(gateway)["compute"].values()) == 2 * BUDGET  # one chosen, one being asked
    choosing.cancel()
    await asyncio.wait([choosing])
    assert _held(gateway) == {}


async def test_a_job_cancelled_while_its_providers_terms_are_asked_holds_nothing_of_the_allocation(node_factory,
                                                                                                   monkeypatch) -> None:
    """A single job cancelled while the terms of the provider it was placed on are asked (before its bytes are sent)
    gives back the budget it held of that provider's part."""
    gateway = await _allocated(node_factory, monkeypatch)
    node, asked = gateway.app[NODE], asyncio.Event()

    async def never_answered(self, provider: str) -> bool:
        asked.set()
        await asyncio.Event().wait()  # its terms never come: the job is cancelled meanwhile
        return False

    monkeypatch.setattr(PassingOver, "passes", never_answered)
    placing = asyncio.create_task(node.jobs.placing.on_provider(SimpleNamespace(), None, SimpleNamespace(fuel=FUEL),
                                                                node.paid.default_bid, None, {"id": "job-cancelled"},
                                                                here=False))
    await asyncio.wait_for(asked.wait(), 30)
    assert sum(_held(gateway)["compute"].values()) == BUDGET  # placed, its provider's terms being asked
    placing.cancel()
    await asyncio.wait([placing])
    assert placing.cancelled() and _held(gateway) == {}
