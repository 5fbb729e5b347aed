"""/health without the token says whether each check passes, never the figures behind it (the user's
available credit, free disk, peer counts); the token holder still sees them."""

from __future__ import annotations

from xsc.node.http.node import PUBLIC_CHECK_FIELDS


async def test_anonymous_health_has_statuses_but_no_figures(node) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-the-token"}):
        resp = await node.session.get(node.make_url("/health"), headers=headers)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/health+json")
        body = await resp.json(content_type=None)
        assert body["status"] in ("pass", "warn")
        assert {"database:responsive", "disk:free", "ledger:balance"} <= set(body["checks"])
        for name, (check,) in body["checks"].items():
            assert set(check) <= PUBLIC_CHECK_FIELDS and check["status"] in ("pass", "warn", "fail"), (name, check)
        text = await resp.text()
        assert "observedValue" not in text and "micro-credits" not in text

    full = await (await node.get("/health")).json(content_type=None)  # the test client sends the token
    assert full["checks"]["ledger:balance"][0]["observedUnit"] == "micro-credits"
    assert full["checks"]["ledger:balance"][0]["observedValue"] > 0
    assert full["checks"]["disk:free"][0]["observedValue"] > 0


async def test_anonymous_metrics_show_how_the_node_serves_not_what_the_user_stores(node) -> None:
    """/metrics without the token: requests, errors and memory (Prometheus can scrape them); the storage and
    compute figures only with `Authorization: Bearer <token>`."""
    response = await node.post("/v1/store/files", data=b"figures" * 1000)
    assert response.status == 201
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-the-token"}):
        resp = await node.session.get(node.make_url("/metrics"), headers=headers)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert "xsc_http_requests_total" in text and "xsc_process_memory_bytes" in text
        assert "xsc_storage" not in text and "xsc_compute" not in text and "xsc_lease" not in text, text
    full = await (await node.get("/metrics")).text()  # the test client sends the token
    assert "xsc_storage_bytes_received_total 7000.0" in full and "xsc_storage_shares_held" in full
