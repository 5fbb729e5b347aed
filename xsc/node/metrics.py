"""Prometheus metrics of one node (a registry per app, so tests can run several nodes in one process)."""

from __future__ import annotations

import gc
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("xsc_http_requests", "HTTP requests answered", ["method", "status"], registry=r)
        self.errors = Counter("xsc_http_errors", "HTTP requests answered with a 4xx or 5xx status", ["status"], registry=r)
        self.bytes_received = Counter("xsc_storage_bytes_received", "Bytes of plaintext accepted by put", registry=r)
        self.bytes_served = Counter("xsc_storage_bytes_served", "Bytes of plaintext served by get", registry=r)
        self.bytes_stored = Gauge("xsc_storage_bytes_stored", "Bytes of block data held in published shares", registry=r)
        self.shares_held = Gauge("xsc_storage_shares_held", "Published shares held", registry=r)
        # One count per refusal, not a log line each: a flood of a stranger's requests shows here.
        self.peer_refusals = Counter("xsc_peer_refusals", "Peer requests refused, by problem code", ["code"],
                                     registry=r)
        self.invocations = Counter("xsc_compute_invocations", "Wasm invocations", ["outcome"], registry=r)
        memory = Gauge("xsc_process_memory_bytes", "Resident memory of the node process: anonymous (its own "
                       "heap) and file (mapped LevelDB tables and libraries: page cache the kernel can drop)",
                       ["kind"], registry=r)
        memory.labels("anonymous").set_function(lambda: resident_memory()["anonymous"])
        memory.labels("file").set_function(lambda: resident_memory()["file"])
        collections = Gauge("xsc_process_gc_collections", "Garbage collections of each generation so far (2: full "
                            "ones, which pause the node)", ["generation"], registry=r)
        for generation in range(3):
            collections.labels(str(generation)).set_function(lambda g=generation: gc.get_stats()[g]["collections"])
        Gauge("xsc_process_gc_frozen_objects", "Objects out of the collector's sight (node/collector.py: what "
              "survived the last full collection)", registry=r).set_function(gc.get_freeze_count)
        Gauge("xsc_process_gil_switch_interval_seconds", "How long a thread may keep the GIL once another asks for it "
              "(node/app.py: GIL_SWITCH_INTERVAL)", registry=r).set_function(sys.getswitchinterval)
        self.peer_bytes = Counter("xsc_peer_bytes", "Bytes of requests to peers", ["direction", "route"], registry=r)
        self._children: dict[tuple, object] = {}  # label children, looked up once each (labels() costs a lock)

    def child(self, metric, *labels: str):
        """`metric.labels(*labels)`, cached: on the hot path of every request and invoke."""
        key = (metric._name, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self, *, public: bool = False) -> bytes:
        """The Prometheus text; `public` (a scrape without the token): only PUBLIC_METRICS, not what the user
        stores, holds or runs (scrape with `Authorization: Bearer <token>` for everything)."""
        from prometheus_client import generate_latest

        if public:
            return generate_latest(_Only(self.registry, PUBLIC_METRICS))  # type: ignore[arg-type]
        return generate_latest(self.registry)


# What anyone may scrape: how the node serves, never how much the user stores, holds, runs or has.
PUBLIC_METRICS = frozenset({"xsc_http_requests", "xsc_http_errors", "xsc_process_memory_bytes"})


class _Only:
    """A registry's metric families of the given names (what generate_latest needs: collect())."""

    def __init__(self, registry: CollectorRegistry, names: frozenset[str]) -> None:
        self._registry = registry
        self._names = names

    def collect(self):
        return [family for family in self._registry.collect() if family.name in self._names]


def resident_memory() -> dict[str, int]:
    """This process's resident memory in bytes: anonymous (heap, buffers) and file-backed (mapped files),
    from /proc/self/status (zeros where the system has no such file)."""
    fields = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in fields:
                    fields[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return {"anonymous": fields["RssAnon"], "file": fields["RssFile"] + fields["RssShmem"]}
