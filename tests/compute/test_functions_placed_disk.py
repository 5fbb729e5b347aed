"""A provider's disk and caps against the functions other nodes place on it (compute/placed_functions.py,
compute/functions.py): an answer or body with no room on disk, two placements of one name at once, a withdrawal while
a placement is being made, a placement that hangs, a placement kept from before the caps were lowered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time

import aiohttp

from tests.support.compute import deploy, peer_with_provider
from tests.support.disks import tmpfs
from tests.support.jobs import QUIET
from tests.support.nodes import free_port
from tests.support.waiting import eventually_async
from xsc.compute import functions as functions_module
from xsc.compute import placed_functions as placed_functions_module
from xsc.compute import provenance, web_output
from xsc.compute.placed_functions import function_job, mount_price
from xsc.compute.remote_tabs import TAB_METERS
from xsc.compute.service import InvokeCall
from xsc.errors import PeerRefused
from xsc.identity import Identity
from xsc.ledger.core.model import encode_authorization
from xsc.ledger.receipts import check_receipt
from xsc.net.compute import close_tab
from xsc.net import functions as wire
from xsc.net.functions import FUNCTION_ANSWER, FUNCTIONS_PATH
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE

ANSWER = b"Content-Type: application/octet-stream\n\n" + b"x" * (5 << 20)  # `raw` answers it as it is


async def _get(url: str, method: str = "GET", **kwargs) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            try:
                return response.status, dict(response.headers), await response.read()
            except aiohttp.ClientPayloadError:  # a streamed answer cut short
                return response.status, dict(response.headers), b""


async def _owner_and_provider(node_factory, **compute):
    provider = await node_factory("provider", **QUIET, compute=compute,
                                  node={"web_listen": f"127.0.0.1:{free_port()}", "web_rate_limit": 1000})
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    wasm_bytes = owner.app[NODE].compute.store.wasm(bytes.fromhex(module))
    await provider.app[NODE].compute.registry.deploy(wasm_bytes, wasi=True)
    return owner, provider, module, provider.app[NODE].market.offer.honoured_ask("compute")


def _budget(provider, module: str, price: int) -> int:
    return provider.app[NODE].compute.budget(InvokeCall(module, "_start", [], None, None, None, True), price)


async def _place(owner, provider, function: dict, price: int, authorization) -> tuple[int, dict]:
    """A placement sent as the owner's node (signed); (status, answer)."""
    body = {"function": function, "price": price, "deal": {}, "memory_price": provider.app[NODE].compute.memory_price,
            "authorization": encode_authorization(authorization).hex()}
    try:
        answer = await owner.app[NODE].client.request(provider.app[NODE].peers.url, "POST", FUNCTIONS_PATH, json=body,
                                                      to=provider.app[IDENTITY].id, max_size=FUNCTION_ANSWER)
        return answer.status, answer.json()
    except PeerRefused as err:
        return err.details["peer_status"], {"code": err.details["peer_code"], "detail": err.message}


@contextlib.asynccontextmanager
async def _raw_on_a_small_disk(owner, provider, module: str, price: int, runs: int, monkeypatch):
    """`raw` placed on `provider` on an authorization for `runs` runs, the provider's work dir an 8 MiB tmpfs of which
    it keeps a MiB free: (the authorization, the placement's answer)."""
    functions = provider.app[NODE].functions
    monkeypatch.setattr(functions.room, "margin", 1 << 20)
    authorization = await owner.app[NODE].payments.authorize(
        provider.app[IDENTITY].id, runs * _budget(provider, module, price), function_job(owner.app[IDENTITY].id, "raw"),
        ttl=3600)
    shutil.rmtree(functions.work_dir, ignore_errors=True)
    with tmpfs(functions.work_dir, "8m"):
        status, answer = await _place(owner, provider, {"name": "raw", "module": module, "entrypoint": "raw"}, price,
                                      authorization)
        assert status == 201, answer
        yield authorization, answer


async def _place_site(owner, provider, module: str, price: int, cap: str) -> tuple[int, dict]:
    """`files` placed as "site" on `provider`, the stored file `cap` at /in/page, on an authorization of its own."""
    authorization = await owner.app[NODE].payments.authorize(
        provider.app[IDENTITY].id, 4 * _budget(provider, module, price), function_job(owner.app[IDENTITY].id, "site"),
        ttl=3600)
    return await _place(owner, provider, {"name": "site", "module": module, "entrypoint": "files",
                                          "limits": {"fuel": 10_000_000}, "inputs": [f"{cap}:/in/page"]},
                        price, authorization)


def _runs(provider, owner_id: str) -> list[dict]:
    return [r["record"] for r in provider.app[NODE].compute.provenance_records.recent(1000)
            if r["record"].get("deal", {}).get("gateway") == owner_id]


async def test_a_placed_functions_answer_with_no_room_on_disk_is_charged_as_an_answer_over_its_cap(
        node_factory, monkeypatch):
    """The provider ran the function, whether its answer found no room on disk or went over its cap: each run is
    charged what it ran, every time, on its record, the tab's total, what the provider lists as earned and the
    receipt the owner pays."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, node, pid = owner.app[IDENTITY].id, owner.app[NODE], provider.app[IDENTITY].id
    work_dir = provider.app[NODE].functions.work_dir

    async def emptied() -> None:  # each request's body takes 5 of the 7 MiB: the last one's files removed first
        await eventually_async(lambda: shutil.disk_usage(work_dir).used < 1 << 20, "the last request's files removed")

    async with _raw_on_a_small_disk(owner, provider, module, price, 12, monkeypatch) as (authorization, answer):
        for _ in range(3):  # refused whole (a range waits for the whole answer), then streamed and cut short
            await emptied()
            status, _, problem = await _get(answer["url"], "POST", data=ANSWER, headers={"Range": "bytes=0-"})
            assert status == 507 and json.loads(problem)["code"] == "storage-full", problem[:300]
            await emptied()
            status, _, body = await _get(answer["url"], "POST", data=ANSWER)
            assert (status, len(body)) != (200, len(ANSWER) - 40), status  # never a whole-looking answer
        await emptied()
        # room on disk, but past its cap: a cap below what an answer keeps in memory is met before any of it is
        # written to the disk (whose room a loaded run's larger pipe reads could otherwise find short first)
        monkeypatch.setattr(functions_module, "MAX_RESPONSE", web_output.SPILL // 2)
        status, _, problem = await _get(answer["url"], "POST", data=ANSWER, headers={"Range": "bytes=0-"})
        assert status == 502 and "cap" in json.loads(problem)["detail"], problem[:300]
    tabs = provider.app[NODE].paid.provider_tabs

    async def written():
        tab = await tabs.standing(authorization)
        return tab.count == 7 and not tab.in_flight and tab

    tab = await eventually_async(written, "every run's record written, with what it owes on the tab")
    runs = _runs(provider, owner_id)
    assert len(runs) == 7 and all(run["charge"] > 0 and run["fuel_consumed"] > 0 for run in runs), runs
    # each run's signed record says how its answer ended, as its caller was told: never "ok"
    assert sorted((run["outcome"], run["trap"]["kind"]) for run in runs) == \
        [("trap", "output-limit")] + [("trap", "storage-full")] * 6, runs
    # the owner is shown the provider's signed record of such a run (`compute provenance ID --provider`), checked
    full = next(run for run in runs if run["trap"]["kind"] == "storage-full")
    response = await owner.get(f"/v1/compute/provenance/{full['id']}", params={"provider": pid})
    assert response.status == 200 and provenance.check(await response.json()) == full
    charged = sum(run["charge"] for run in runs)
    assert tab.total == charged
    (hosted,) = provider.app[NODE].placed_functions.hosted()
    assert (hosted["requests"], hosted["errors"], hosted["earned"]) == (7, 7, charged), hosted
    receipt = check_receipt(pid, await close_tab(node.client, provider.app[NODE].peers.url, pid,
                                                 encode_authorization(authorization).hex()),
                            authorization, meters=TAB_METERS)
    assert (receipt.amount, dict(receipt.usage)["invokes"]) == (charged, 7)


async def test_a_chunked_body_that_finds_no_room_on_the_providers_disk_is_refused_and_nothing_of_it_is_kept(
        node_factory, monkeypatch):
    """A body of no declared length cannot be refused before it is read: it is written a MiB at a time while the
    provider's disk keeps its margin free, then refused (507, a problem body), its part written removed, and nothing
    charged: the function never ran."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, functions, paid = owner.app[IDENTITY].id, provider.app[NODE].functions, provider.app[NODE].paid
    async with _raw_on_a_small_disk(owner, provider, module, price, 4, monkeypatch) as (authorization, _):
        free = shutil.disk_usage(functions.work_dir).free
        host, port = provider.app[NODE].config.node.web_listen.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"POST /fn/{owner_id}/raw/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         .encode())
            chunk = b"%x\r\n" % (256 << 10) + b"y" * (256 << 10) + b"\r\n"
            answered = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
            sent = 0
            while not answered.done() and sent < 64 << 20:  # far past the disk: it is answered first
                writer.write(chunk)
                await writer.drain()
                sent += 256 << 10
            head = await asyncio.wait_for(answered, 10)
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                         .split(b":")[1])
            problem = json.loads(await reader.readexactly(length))
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 507 ") and b"application/problem+json" in head, head
        assert problem["code"] == "storage-full" and "body" in problem["detail"], problem
        assert shutil.disk_usage(functions.work_dir).free == free  # its part written removed
        assert not list(functions.work_dir.glob("std*-*"))
    assert _runs(provider, owner_id) == []  # it never ran: nothing recorded, nothing owed
    tab = await paid.provider_tabs.standing(authorization)
    assert (tab.count, tab.total, tab.reserved, tab.in_flight) == (0, 0, 0, 0)
    assert paid.trust.line(owner_id)["reserved"] == 0
    (hosted,) = provider.app[NODE].placed_functions.hosted()
    assert (hosted["requests"], hosted["errors"], hosted["earned"]) == (1, 1, 0), hosted


async def test_a_name_placed_again_while_its_placement_is_being_made_is_refused_and_loses_no_files(
        node_factory, monkeypatch):
    """Two placements of one function at once, with other files: the second is refused (409, a problem body) while
    the first's files are read, so neither removes the files the other staged; placed again once the first is
    answered, it takes the first's place and its files are served."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id = owner.app[IDENTITY].id
    functions = provider.app[NODE].functions
    caps = []
    for text in (b"the first's page\n", b"the second's page\n"):
        response = await owner.post("/v1/store/files", data=text)
        caps.append((await response.json())["capability"])
    stage, reading, go_on = functions._stage, asyncio.Event(), asyncio.Event()

    async def held(item, path, *counted):  # the first placement's file is being read while the second comes
        if item.cap == caps[0]:
            reading.set()
            await go_on.wait()
        return await stage(item, path, *counted)

    monkeypatch.setattr(functions, "_stage", held)

    def place(cap: str):
        return _place_site(owner, provider, module, price, cap)

    first = asyncio.ensure_future(place(caps[0]))
    try:
        await asyncio.wait_for(reading.wait(), 30)
        status, answer = await place(caps[1])
    finally:
        go_on.set()
    assert (status, answer["code"]) == (409, "conflict") and "being placed" in answer["detail"], answer
    status, answer = await first
    assert status == 201, answer
    assert (await _get(answer["url"] + "page"))[::2] == (200, b"the first's page\n")
    status, again = await place(caps[1])
    assert status == 201 and again["url"] == answer["url"], again
    assert (await _get(answer["url"] + "page"))[::2] == (200, b"the second's page\n")
    placed = functions.work_dir / functions_module.PLACED_DIR / owner_id / "site"
    assert len(list(placed.iterdir())) == 1  # the first's files removed
    kept = functions.store.placements()
    assert [p["function"]["inputs"] for _, p in kept] == [[f"{caps[1]}:/in/page"]]


def _held_mid_read(monkeypatch, functions, size: int) -> asyncio.Event:
    """The provider's reads of a stored file of `size` bytes give the first half of its first chunk, then hang: the
    event is set once that half is read."""
    open_file, reading = functions.storage.open, asyncio.Event()

    async def opened(cap, *args, **kwargs):
        length, chunks = await open_file(cap, *args, **kwargs)
        if cap.size != size:
            return length, chunks

        async def half():
            async with contextlib.aclosing(chunks):
                first = await anext(aiter(chunks))
                yield first[:len(first) // 2]
                reading.set()
                await asyncio.Event().wait()

        return length, half()

    monkeypatch.setattr(functions.storage, "open", opened)
    return reading


async def _two_pages(owner) -> list[str]:
    """Two stored pages: a short one, and one of a MiB (`_held_mid_read` holds its reads)."""
    caps = []
    for text in (b"the first's page\n", b"x" * (1 << 20)):
        response = await owner.post("/v1/store/files", data=text)
        caps.append((await response.json())["capability"])
    return caps


async def test_a_function_withdrawn_while_it_is_placed_again_is_answered_at_once_and_that_placement_cut_short(
        node_factory, monkeypatch):
    """The owner's withdrawal of a function that comes while the function is being placed again (with other files,
    their reading held mid-way) cuts that placement short and is answered without waiting for its reading: once it
    is answered "withdrawn", nothing of the function is served, kept or on disk, its staged files among them, and the
    owner's line is charged for the part of the files read, not the rest.  The sweep of a function whose tab ended
    leaves it to the placement (on its next tab) under way."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, node, pid = owner.app[IDENTITY].id, owner.app[NODE], provider.app[IDENTITY].id
    functions, placed_functions = provider.app[NODE].functions, provider.app[NODE].placed_functions
    caps = await _two_pages(owner)
    reading = _held_mid_read(monkeypatch, functions, 1 << 20)

    def place(cap: str):
        return _place_site(owner, provider, module, price, cap)

    status, answer = await place(caps[0])
    assert status == 201, answer
    used = provider.app[NODE].paid.trust.line(owner_id)["used"]
    second = asyncio.ensure_future(place(caps[1]))
    await asyncio.wait_for(reading.wait(), 30)
    assert await placed_functions.sweep(time.time() + 7200) == []  # the first tab has expired by then
    # its reading still held: not waited for
    await asyncio.wait_for(wire.withdraw(node.client, provider.app[NODE].peers.url, pid, "site"), 30)
    status, cut = await second
    assert (status, cut["code"]) == (409, "conflict") and "withdrawn while" in cut["detail"], cut
    assert (await _get(answer["url"] + "page"))[0] == 404
    assert placed_functions.hosted() == [] and functions.store.placements() == []
    assert not (functions.work_dir / functions_module.PLACED_DIR / owner_id / "site").exists()
    assert not list(functions.work_dir.glob("in-*"))  # its staged part removed
    line = provider.app[NODE].paid.trust.line(owner_id)
    half = mount_price((1 << 20) // 2, price)  # (the first chunk is the whole MiB or less: at most half read)
    assert 0 < line["used"] - used <= half < mount_price(1 << 20, price) and line["reserved"] == 0, line
    # the part read is charged on the cut placement's tab too, as its reading apart: its receipt pays it
    [cut_auth] = [x for x in node.ledger.pending()
                  if x.job == function_job(owner_id, "site") and x.id.hex() != answer["authorization"]]
    cut_tab = await provider.app[NODE].paid.provider_tabs.standing(cut_auth)
    assert cut_tab.mounts == cut_tab.total == line["used"] - used and cut_tab.reserved == 0, cut_tab


async def test_a_function_withdrawn_while_its_files_are_moved_into_place_leaves_none_of_them(
        node_factory, monkeypatch):
    """A withdrawal that cuts a placement short while its staged files are renamed into place (on a worker thread,
    which a cancellation does not stop) waits for that rename, and the files moved are removed: once answered,
    nothing of the function is on disk, neither where it would be served from nor where it was staged."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id, pid = owner.app[IDENTITY].id, provider.app[IDENTITY].id
    functions, placed_functions = provider.app[NODE].functions, provider.app[NODE].placed_functions
    cap = (await _two_pages(owner))[0]
    swap, moved, go_on = functions_module._swap, threading.Event(), threading.Event()

    def held(staged, mounted) -> None:  # the rename made, its worker held before it returns
        swap(staged, mounted)
        moved.set()
        go_on.wait(30)

    withdraw, withdrawing = placed_functions.withdraw, asyncio.Event()

    async def cutting(*args):  # (the placement is cut before the withdrawal's first wait)
        withdrawing.set()
        return await withdraw(*args)

    monkeypatch.setattr(functions_module, "_swap", held)
    monkeypatch.setattr(placed_functions, "withdraw", cutting)
    placing = asyncio.ensure_future(_place_site(owner, provider, module, price, cap))
    try:
        assert await asyncio.to_thread(moved.wait, 30)
        withdrawn = asyncio.ensure_future(wire.withdraw(owner.app[NODE].client, provider.app[NODE].peers.url, pid,
                                                        "site"))
        await asyncio.wait_for(withdrawing.wait(), 30)
    finally:
        go_on.set()
    await asyncio.wait_for(withdrawn, 30)
    status, cut = await placing
    assert (status, cut["code"]) == (409, "conflict") and "withdrawn while" in cut["detail"], cut
    assert placed_functions.hosted() == [] and functions.store.placements() == []
    assert not (functions.work_dir / functions_module.PLACED_DIR / owner_id / "site").exists()
    assert not list(functions.work_dir.glob("in-*"))


async def test_a_placement_sent_while_its_function_is_withdrawn_is_refused_and_placed_once_that_is_answered(
        node_factory, monkeypatch):
    """A placement of a function whose withdrawal is under way (held here as it removes the function's files) is
    refused, 409, a problem body: the two would each remove the files the other moves.  Sent again once the
    withdrawal is answered, it is placed and served."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    pid, functions = provider.app[IDENTITY].id, provider.app[NODE].functions
    caps = await _two_pages(owner)
    status, answer = await _place_site(owner, provider, module, price, caps[0])
    assert status == 201, answer
    drop, dropping, go_on = functions.placed_here.drop, asyncio.Event(), asyncio.Event()

    async def held(*args):
        dropping.set()
        await go_on.wait()
        return await drop(*args)

    monkeypatch.setattr(functions.placed_here, "drop", held)
    withdrawn = asyncio.ensure_future(wire.withdraw(owner.app[NODE].client, provider.app[NODE].peers.url, pid, "site"))
    try:
        await asyncio.wait_for(dropping.wait(), 30)
        status, refused = await _place_site(owner, provider, module, price, caps[0])
    finally:
        go_on.set()
    assert (status, refused["code"]) == (409, "conflict") and "being placed or withdrawn" in refused["detail"], refused
    await asyncio.wait_for(withdrawn, 30)
    assert (await _get(answer["url"] + "page"))[0] == 404
    status, again = await _place_site(owner, provider, module, price, caps[0])
    assert status == 201 and again["url"] == answer["url"], again
    assert (await _get(again["url"] + "page"))[::2] == (200, b"the first's page\n")


async def test_a_function_whose_placement_hangs_is_swept_once_that_placement_times_out(node_factory, monkeypatch):
    """The sweep leaves a function whose tab ended to the placement of it under way, which may bring its next tab
    (`::test_a_function_withdrawn_while_it_is_placed_again_is_answered_at_once_and_that_placement_cut_short`); a
    placement whose files' reading hangs is bounded by what its owner waits for its answer (503, nothing of it kept),
    and the next sweep withdraws the function."""
    owner, provider, module, price = await _owner_and_provider(node_factory)
    owner_id = owner.app[IDENTITY].id
    functions, placed_functions = provider.app[NODE].functions, provider.app[NODE].placed_functions
    caps = await _two_pages(owner)
    status, answer = await _place_site(owner, provider, module, price, caps[0])
    assert status == 201, answer
    _held_mid_read(monkeypatch, functions, 1 << 20)
    monkeypatch.setattr(placed_functions_module, "PLACE_TIMEOUT", 1.0)  # (the owner's wait: 120 s)
    status, refused = await asyncio.wait_for(_place_site(owner, provider, module, price, caps[1]), 30)
    assert (status, refused["code"]) == (503, "function-unavailable") and "not read within" in refused["detail"], \
        refused
    assert not list(functions.work_dir.glob("in-*"))  # its staged part removed
    assert await placed_functions.sweep(time.time() + 7200) == [(owner_id, "site")]  # its first tab expired by then
    assert placed_functions.hosted() == [] and functions.store.placements() == []
    assert (await _get(answer["url"] + "page"))[0] == 404


async def test_placements_past_caps_lowered_since_are_dropped_at_start_and_their_owner_is_told(node_factory):
    """A provider started again with lower compute.placed_max_body and placed_concurrency drops each placement
    kept from before that asks for more (its files with it) and serves the others again at the same URL; the owner's
    next check finds the dropped ones gone, and its list says why the provider no longer takes them."""
    web_listen = f"127.0.0.1:{free_port()}"
    web = {"web_listen": web_listen, "web_rate_limit": 1000}
    provider = await node_factory("provider", **QUIET, node=web)
    owner = await node_factory("owner", **QUIET, market={"offer_compute": False},
                               node={"placement_interval": 0.25})
    await peer_with_provider(owner, provider)
    module = await deploy(owner, "cgi", wasi=True)
    asked = {"big": {"max_body": 2 << 20}, "many": {"concurrency": 12, "max_body": 1 << 20},
             "fits": {"max_body": 1 << 20}}
    for name, caps in asked.items():
        response = await owner.post("/v1/compute/functions", json={"name": name, "module": module, "on_market": True,
                                                                   **caps})
        assert response.status < 300, await response.text()

    async def listed() -> dict[str, dict]:
        response = await owner.get("/v1/compute/functions")
        return {f["name"]: f for f in (await response.json())["functions"]}

    urls = await eventually_async(lambda: _all_served(listed), "the three functions placed", 30)
    owner_id = owner.app[IDENTITY].id
    placed = provider.app[NODE].functions.work_dir / functions_module.PLACED_DIR / owner_id
    assert sorted(p.name for p in placed.iterdir()) == ["big", "fits", "many"]
    await provider.close()
    again = await node_factory("provider", **QUIET, node=web,
                               compute={"placed_max_body": 1 << 20, "placed_concurrency": 8})
    assert [name for (_, name), _ in again.app[NODE].functions.store.placements()] == ["fits"]
    assert sorted(p.name for p in placed.iterdir()) == ["fits"]  # the dropped ones' files removed
    assert (await _get(urls["fits"] + "after"))[0] == 200  # the same URL, not placed again
    for name in ("big", "many"):
        status, headers, problem = await _get(urls[name] + "after")
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), problem
    await peer_with_provider(owner, again)  # at its new peer address

    async def told():
        found = await listed()
        said = {name: found[name].get("not_placed") or "" for name in ("big", "many")}
        return "max_body" in said["big"] and "concurrency" in said["many"] and said
    said = await eventually_async(told, "the owner told why the provider no longer takes them", 30)
    assert all("over-cap" in text or "takes placed functions of at most" in text for text in said.values()), said
    assert (await listed())["fits"]["url"] == urls["fits"]


async def _all_served(listed) -> dict[str, str] | None:
    found = await listed()
    urls = {name: f.get("url") for name, f in found.items()}
    return urls if all(urls.values()) else None
