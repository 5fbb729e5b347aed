"""docs/openapi.yaml says exactly what the node serves: every registered method and path, no more."""

from __future__ import annotations

import aiohttp

from xsc.node import create_app
from xsc.node.http.openapi import load

METHODS = {"get", "put", "post", "delete", "patch", "options", "trace"}


def registered(app) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app registers; HEAD is aiohttp's automatic twin of each GET."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        out.add((route.method, route.resource.canonical))
    return out


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item
            if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists(make_config):
    app = create_app(make_config())
    served, written = registered(app), documented(load())
    assert not served - written, f"routes the node serves but docs/openapi.yaml lacks: {sorted(served - written)}"
    assert not written - served, f"operations docs/openapi.yaml lists but the node lacks: {sorted(written - served)}"


def test_every_get_also_answers_head(make_config):
    app = create_app(make_config())
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    gets = {path for method, path in routes if method == "GET"}
    assert gets == {path for method, path in routes if method == "HEAD"}


def test_document_is_openapi_3_1_with_unique_operation_ids_and_problem_answers():
    document = load()
    assert document["openapi"].startswith("3.1")
    ids = [op["operationId"] for item in document["paths"].values() for m, op in item.items() if m in METHODS]
    assert len(ids) == len(set(ids))
    public = {"/", "/health", "/metrics", "/openapi.json"} | {p for p in document["paths"] if p.split("/")[1] == "ui"}
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            if path.startswith("/v1/peer/"):
                assert op.get("security") == [{"peerSignature": []}], (method, path)
            elif path in public:
                assert op.get("security") == [], (method, path)
            else:
                assert "security" not in op, (method, path)  # the document's default: the token
                assert op["responses"]["default"] == {"$ref": "#/components/responses/Problem"}, (method, path)
                # every user request may meet the node's stop (serve/stop.py): 503 node-stopping, with Retry-After
                assert op["responses"]["503"] == {"$ref": "#/components/responses/NodeStopping"}, (method, path)
    stopping = document["components"]["responses"]["NodeStopping"]
    assert "node-stopping" in stopping["description"] and "Retry-After" in stopping["headers"], stopping


def test_the_document_loads_in_schemathesis():
    import schemathesis

    schema = schemathesis.openapi.from_dict(load())
    assert len(list(schema.get_all_operations())) == len(documented(load()))


async def test_openapi_json_is_served_without_a_token(node):
    async with aiohttp.ClientSession() as session:  # no Authorization header
        async with session.get(f"{node.make_url('/openapi.json')}") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            body = await response.json()
    assert body == load()
    response = await node.get("/openapi.json")  # and with one
    assert response.status == 200
