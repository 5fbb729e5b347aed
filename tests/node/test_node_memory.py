"""The node's memory, reported apart: its own (anonymous) and mapped table files."""

from __future__ import annotations


async def test_status_and_metrics_report_anonymous_and_mapped_memory(node) -> None:
    status = await (await node.get("/v1/node/status")).json()
    memory = status["memory"]
    assert memory["anonymous"] > 10 * 1024**2 and memory["file"] > 0
    metrics = (await (await node.get("/metrics")).text()).splitlines()
    kinds = {line.split('"')[1] for line in metrics if line.startswith("xsc_process_memory_bytes{")}
    assert kinds == {"anonymous", "file"}
