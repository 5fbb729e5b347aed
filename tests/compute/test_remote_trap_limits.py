"""A run on a provider names the limit that cut it short as a run here does (`limit`, `limit_value`, `raised_by`, and
its line's hint), on real nodes: an invoke out of fuel, a job over its memory, its time or its bytes_out; the values
this node's own (what the call asked, the provider's checked record), never what the provider's answer says of them;
and a provider whose record signs a run out of fuel that had fuel left is struck, as any record its answer does not
hold to."""

from __future__ import annotations

import asyncio

from tests.support.cli import error_line, xsc_in_process
from tests.support.compute import answering, deploy, invoke, peer_with_provider
from tests.support.jobs import QUIET, balances, network, run_job, settle
from xsc.compute import provenance, sent_jobs
from xsc.node import IDENTITY, TOKEN
from xsc.node.appkeys import NODE
from xsc.units import format_size

FUEL = 100_000


async def _xsc(node, *args: str) -> str:
    """The error line of `xsc ARGS` against `node`."""
    return error_line(await asyncio.to_thread(xsc_in_process, "--node", str(node.make_url("")), *args,
                                              env={"XSC_TOKEN": node.app[TOKEN]}))


def _named(answer: dict) -> tuple:
    return answer.get("limit"), answer.get("limit_value"), answer.get("raised_by")


async def test_a_remote_invoke_out_of_fuel_names_its_limit_in_its_answer_and_its_line(node_factory) -> None:
    gateway, (provider,) = await network(node_factory)
    fib = await deploy(gateway, "fibonacci")
    raised = "--fuel (at most its provider's compute.fuel)"
    for verify in (False, True):  # its record checked after its answer, or before
        status, problem = await invoke(gateway, fib, "fib", "30", fuel=FUEL, verify=verify)
        assert (status, problem["kind"], problem["provider"]) == (422, "out-of-fuel", provider.app[IDENTITY].id)
        assert _named(problem) == ("fuel", FUEL, raised), problem
        ceiling = f"{gateway.app[NODE].compute.ceiling.fuel:,}"  # the most this node lets a call ask for
        assert problem["hint"] == (f"ask for more with --fuel (its limit was 100,000), up to {ceiling} (this node's "
                                   "compute.fuel; its provider's may allow less)"), problem["hint"]
    line = await _xsc(gateway, "compute", "invoke", fib, "fib", "30", "--fuel", str(FUEL))
    assert "out of fuel" in line and f"(ask for more with --fuel (its limit was 100,000), up to {ceiling} (this " \
        "node's compute.fuel; its provider's may allow less))" in line, line


async def test_a_remote_invoke_that_names_no_fuel_names_the_fuel_it_used_all_of(node_factory) -> None:
    provider = await node_factory("provider", **QUIET, compute={"fuel": 300_000})  # its ceiling, not the gateway's
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False})
    await peer_with_provider(gateway, provider)
    fib = await deploy(gateway, "fibonacci")
    status, problem = await invoke(gateway, fib, "fib", "30")
    assert (status, problem["kind"]) == (422, "out-of-fuel"), problem
    assert _named(problem) == ("fuel", 300_000, "--fuel (at most its provider's compute.fuel)"), problem


async def test_a_remote_invoke_out_of_fuel_offers_no_more_fuel_than_this_nodes_ceiling(node_factory) -> None:
    provider = await node_factory("provider", **QUIET, compute={"fuel": 300_000})
    gateway = await node_factory("gateway", **QUIET, market={"offer_compute": False}, compute={"fuel": 200_000})
    await peer_with_provider(gateway, provider)
    fib = await deploy(gateway, "fibonacci")
    status, problem = await invoke(gateway, fib, "fib", "30")  # under the provider's ceiling, above this node's
    assert (status, problem["kind"], problem["limit_value"]) == (422, "out-of-fuel", 300_000), problem
    assert problem["hint"] == ("its limit, 300,000, is more than this node's most (200,000, compute.fuel): to ask for "
                               "more, raise it (xsc config set compute.fuel ...) and restart the node"), problem["hint"]


async def test_a_provider_naming_another_limit_in_its_answer_is_not_believed_on_it(node_factory, monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    fib = await deploy(gateway, "fibonacci")

    def other_limit(answer: dict) -> dict:
        for said in (answer["run"], answer["trap"]):
            said.update(limit="memory", limit_value=1, raised_by="nothing: pay the provider more")
        return answer

    answering(provider, monkeypatch, other_limit)
    status, problem = await invoke(gateway, fib, "fib", "30", fuel=FUEL, verify=True)
    assert status == 422 and problem["verified"] is True, problem
    assert _named(problem) == ("fuel", FUEL, "--fuel (at most its provider's compute.fuel)"), problem


async def test_a_provider_saying_its_answer_was_verified_is_not_believed(node_factory, monkeypatch) -> None:
    """Only this node says an answer is verified, once it checked its provider's record: an answer the provider says
    so of, not asked to be verified, is not, and names its limit as any unverified answer does."""
    gateway, (provider,) = await network(node_factory)
    fib = await deploy(gateway, "fibonacci")

    def verified(answer: dict) -> dict:
        answer["run"].update(verified=True, **({"provenance": "not hex"} if "trap" in answer else {}))
        return answer

    answering(provider, monkeypatch, verified)
    status, body = await invoke(gateway, fib, "fib", "3", fuel=FUEL)
    assert status == 200 and "verified" not in body, body
    status, problem = await invoke(gateway, fib, "fib", "30", fuel=FUEL)
    assert (status, problem["kind"]) == (422, "out-of-fuel") and "verified" not in problem, problem
    assert _named(problem) == ("fuel", FUEL, "--fuel (at most its provider's compute.fuel)"), problem


async def test_a_provider_whose_record_signs_a_run_out_of_fuel_with_fuel_left_is_struck(node_factory,
                                                                                       monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    traps = await deploy(gateway, "traps")
    checks = provider.app[NODE].paid.checks
    served = checks.served

    def out_of_fuel(answer: dict) -> dict:
        answer["trap"]["kind"] = "out-of-fuel"  # it ran into `unreachable` long before its fuel ran out
        return answer

    def resigned(peer: str, pid: str) -> dict:
        record = served(peer, pid)["record"]
        return provenance.decode(provenance.sign(provider.app[IDENTITY], {**record, "trap": {
            **record["trap"], "kind": "out-of-fuel"}}))

    answering(provider, monkeypatch, out_of_fuel)
    monkeypatch.setattr(checks, "served", resigned)
    # (a trap's fuel is bounded by the time it ran, at most its limit: a limit far above what it ran leaves fuel)
    status, problem = await invoke(gateway, traps, "unreachable", fuel=10**9, verify=True)
    assert (status, problem["code"]) == (502, "forged-result"), problem
    assert "signs a run out of fuel that used" in problem["detail"] and "of its fuel limit of 1000000000" \
        in problem["detail"], problem
    assert gateway.app[NODE].paid.checks.status()["struck"] == 1


async def test_a_job_over_its_memory_time_or_bytes_out_names_its_limit_here_and_on_a_provider(node_factory) -> None:
    gateway, (provider,) = await network(node_factory)
    spin, hog = await deploy(gateway, "spin", wasi=True), await deploy(gateway, "memory_hog", wasi=True)
    outputs = await deploy(gateway, "outputs", wasi=True)
    cases = (({"module": spin, "limits": {"timeout": 0.2}}, "deadline", ("timeout", 0.2), "--timeout", "0.2 s"),
             ({"module": hog, "entrypoint": "hog", "limits": {"memory": "1MiB"}}, "memory-limit",
              ("memory", 1024 * 1024), "--memory", "1.0 MiB"))
    for runs_it in (gateway, provider):  # the gateway offers no compute: its jobs run on the provider
        for spec, kind, limit, flag, shown in cases:
            await deploy(runs_it, "spin" if spec["module"] == spin else "memory_hog", wasi=True)
            status, problem = await run_job(runs_it, spec)
            assert (status, problem["kind"], problem["provider"]) == (422, kind, provider.app[IDENTITY].id), problem
            here = runs_it is provider
            raised = f"{flag} (at most compute.{limit[0]})" if here else \
                f"{flag} (at most its provider's compute.{limit[0]})"
            assert _named(problem) == (*limit, raised), problem
            if not here:  # within the gateway's own ceiling: a job asking for more is refused there
                most = getattr(gateway.app[NODE].compute.ceiling, limit[0])
                most = f"{most:g} s" if limit[0] == "timeout" else format_size(most)
                assert problem["hint"] == f"ask for more with {flag} (its limit was {shown}), up to {most} (this " \
                    f"node's compute.{limit[0]}; its provider's may allow less)", problem
    status, problem = await run_job(gateway, {"module": outputs, "stdin": "-", "limits": {"bytes_out": 100}},
                                    stdin=b"x" * 1000)
    assert (status, problem["code"]) == (413, "over-cap") and "over its bytes_out (100)" in problem["detail"], problem
    assert _named(problem) == ("bytes_out", 100, "--bytes-out"), problem
    line = await _xsc(gateway, "compute", "run", spin, "--no-stdin", "--timeout", "0.2")
    most = gateway.app[NODE].compute.ceiling.timeout
    assert "deadline exceeded" in line and f"(ask for more with --timeout (its limit was 0.2 s), up to {most:g} s " \
        "(this node's compute.timeout; its provider's may allow less))" in line, line
    line = await _xsc(gateway, "compute", "run", hog, "--entrypoint", "hog", "--no-stdin", "--memory", "1MiB")
    assert "memory limit reached" in line and "--memory (its limit was 1.0 MiB)" in line, line



async def test_a_provider_whose_job_record_signs_a_run_out_of_fuel_with_fuel_left_is_struck(node_factory,
                                                                                           monkeypatch) -> None:
    gateway, (provider,) = await network(node_factory)
    spin = await deploy(gateway, "spin", wasi=True)
    struck: list[str] = []
    monkeypatch.setattr(gateway.app[NODE].quarantine, "strike", lambda node, why, **kw: struck.append(node) or False)
    real_run = sent_jobs.wire.run

    async def out_of_fuel(client, url, provider_id, job, timeout, most):  # its deadline, said to be its fuel
        answer = await real_run(client, url, provider_id, job, timeout=timeout, most=most)
        record = answer["provenance"]["record"]
        answer["trap"]["kind"] = "out-of-fuel"
        answer["provenance"] = provenance.decode(provenance.sign(provider.app[IDENTITY], {
            **record, "trap": {**record["trap"], "kind": "out-of-fuel"}}))
        return answer

    monkeypatch.setattr(sent_jobs.wire, "run", out_of_fuel)
    before = balances(gateway, provider)
    status, problem = await run_job(gateway, {"module": spin, "limits": {"timeout": 0.2}})
    assert (status, problem["code"]) == (502, "forged-result"), problem
    assert "signs a run out of fuel that used" in problem["detail"], problem
    assert struck == [provider.app[IDENTITY].id]
    await settle(gateway)
    assert balances(gateway, provider)[0] == before[0]  # not paid
