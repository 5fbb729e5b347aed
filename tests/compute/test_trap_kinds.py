"""Trap kinds say what happened: an out-of-bounds access in a module that never grew its memory is
not a memory-limit trap, even when its memory is all its limit allows (found by bench/wasm_fuzz.py)."""

from __future__ import annotations

from tests.support.compute import deploy, invoke


async def test_out_of_bounds_at_the_limit_without_growth_is_out_of_bounds(compute_node):
    client = await compute_node()
    traps = await deploy(client, "traps")  # one page of memory, never grown; loads at 70000
    status, body = await invoke(client, traps, "out_of_bounds", memory=65536)
    assert (status, body["kind"]) == (422, "memory-out-of-bounds"), body
    assert "grew" not in body["detail"]
    assert "all its 64.0 KiB limit allows" in body["hint"]
    # what it was charged for names its one page as one page
    assert body["memory_pages"] == 1 and " and 1 page of memory for " in body["detail"], body
    status, body = await invoke(client, traps, "out_of_bounds", memory=131072)
    assert (status, body["kind"]) == (422, "memory-out-of-bounds"), body
    assert "limit" not in (body.get("hint") or "")


async def test_growth_refused_at_the_limit_is_still_memory_limit(compute_node):
    client = await compute_node()
    hog = await deploy(client, "memory_hog")
    status, body = await invoke(client, hog, "hog", memory="1MiB")
    assert (status, body["kind"]) == (422, "memory-limit")
    assert "was refused more" in body["detail"]
