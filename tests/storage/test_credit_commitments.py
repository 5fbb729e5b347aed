"""Long leases are promised credit: six 10-year puts never
commit the user past its credit limit; the ones past it are refused 402 before anything is stored."""

from __future__ import annotations

from xsc.node.appkeys import NODE

TEN_YEARS = 3650 * 86400
LIMIT = 120_000  # micro-credits: a few of these puts (about 30,000 each at the default asks), never six


async def test_six_ten_year_puts_past_the_credit_limit_are_refused(node_factory) -> None:
    a = await node_factory("a", ledger={"credit_limit": LIMIT}, health={"probe_interval": 3600})
    b = await node_factory("b", ledger={"credit_limit": LIMIT}, health={"probe_interval": 3600})
    await a.post("/v1/peers", json={"url": f"http://{b.server.host}:{b.server.port}"})
    statuses, codes = [], []
    for n in range(6):
        response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=bytes([n]) * 100_000)
        body = await response.json()
        statuses.append(response.status)
        codes.append(body.get("code"))
        assert response.status in (201, 402), body
    assert statuses[:2] == [201, 201] and 402 in statuses, statuses
    assert all(code == "insufficient-credit" for status, code in zip(statuses, codes) if status == 402), codes
    first_refused = statuses.index(402)
    assert all(s == 402 for s in statuses[first_refused:])  # nothing frees credit meanwhile: all later ones too
    # What the accepted puts promise stays within the limit: the user is never committed past it.
    promised = a.app[NODE].deals.outstanding()
    account = a.app[NODE].ledger.account_view(a.app[NODE].payments.payer.public_key)
    assert 0 < promised and promised - account["balance"] <= LIMIT, (promised, account)
    files = (await (await a.get("/v1/store/files")).json())["files"]
    assert len(files) == first_refused


async def test_the_balance_keeps_aside_what_puts_leases_promise_and_a_put_may_spend_what_it_shows(node_factory) -> None:
    a = await node_factory("a", ledger={"credit_limit": LIMIT}, health={"probe_interval": 3600})
    b = await node_factory("b", ledger={"credit_limit": LIMIT}, health={"probe_interval": 3600})
    await a.post("/v1/peers", json={"url": f"http://{b.server.host}:{b.server.port}"})
    response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=b"f" * 200_000)
    first = await response.json()
    assert response.status == 201 and b.app[NODE].me in first["placement"], first
    view = await (await a.get("/v1/ledger/accounts/client")).json()
    promised = a.app[NODE].deals.outstanding()
    assert promised > 0 and view.get("promised") == promised, (promised, view)
    assert view["available"] == view["balance"] + view["credit_limit"] - view["held"] - promised, view
    # Sized from the first put's cost per byte: one costs more than the balance shows available though less than it
    # would without the promise, the other less.
    per_byte = first["cost"] / 200_000
    over = int((view["available"] + promised // 2) / per_byte)
    response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=b"o" * over)
    refused = await response.json()
    assert (response.status, refused["code"]) == (402, "insufficient-credit"), refused
    assert refused["available"] == view["available"] and refused["promised"] == promised, (refused, view)
    assert view["available"] < refused["needed"] <= view["available"] + promised, (refused, view)
    response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=b"u" * int(view["available"] / 2 / per_byte))
    assert response.status == 201, await response.json()


async def test_a_stream_past_what_the_balance_shows_available_is_refused_and_not_kept(node_factory) -> None:
    a = await node_factory("a", ledger={"credit_limit": LIMIT}, health={"probe_interval": 3600})

    async def chunks(size: int):  # chunked: a stream, its size unknown until it ends, paid once stored
        for start in range(0, size, 65_536):
            yield b"s" * min(65_536, size - start)

    response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=chunks(400_000))
    first = await response.json()
    assert response.status == 201, first
    view = await (await a.get("/v1/ledger/accounts/client")).json()
    assert view["promised"] > 0, view
    # One that costs more than the balance shows available, though less than the credit left without what the first
    # one's leases promise.
    size = int((view["available"] + view["promised"] // 2) / (first["cost"] / 400_000))
    response = await a.post(f"/v1/store/files?duration={TEN_YEARS}", data=chunks(size))
    refused = await response.json()
    assert (response.status, refused.get("code")) == (402, "insufficient-credit"), (refused, view)
    assert refused["available"] == view["available"] < refused["needed"], (refused, view)
    files = (await (await a.get("/v1/store/files")).json())["files"]
    assert [f["capability"] for f in files] == [first["capability"]]
