"""The hash table at sizes one machine cannot run as processes: lookups in hops, and what a node sends.

    python -m bench.bench_dht [--sizes 100,1000,10000] [--lookups 300] [--files 200]

Each size N is a simulated network of N nodes in this process, on the real code paths of xsc/dht: the `kademlia`
package's lookups with xsc's protocol, routing table and store (every store checked, bundles merged, lookups
counted), only the datagrams handed from node to node in memory instead of over UDP (each one still encoded as
rpcudp encodes it, to count its bytes).  Nodes join one after the other through one node already in, as a node does
through a peer it knows, and each publishes its signed node record and its storage provider record.  Then --files
puts, each from a random node: six distinct storage providers found through the table (`collect_providers`, as
`DhtService.find_providers`), and the put's holders record published.  Then, from random nodes, --lookups node
lookups (the record of the id looked up must come back, signed by that node) and --lookups holders lookups (the
placement must come back as its placer signed it).  Reported per size: hops (rounds of up to ALPHA=3 parallel
requests) of each kind of lookup at p50, p99 and max against log2(N) + 2; the lookups and puts that failed;
routing table contacts per node; the bytes a node sent to join and publish its own records (the same work per
node at every size: a flat figure is what "cost independent of the size" means), and the bytes per node over the
whole run (the puts and lookups are a fixed total, so that figure falls as N grows).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import time

import umsgpack
from kademlia.node import Node

from xsc.dht import table
from xsc.dht.core import records
from xsc.dht.service import collect_providers
from xsc.identity import Identity
from xsc.peers import NodeDescriptor, make_descriptor

from .report import Report


class Quota:
    def check(self, *args) -> None:
        pass


class SimProtocol(table.Protocol):
    """xsc's protocol with the network replaced by a dict of nodes: a call is the callee's rpc_* method."""

    network: dict[tuple[str, int], "SimProtocol"]

    def __init__(self, source: Node, network: dict, clock_ms) -> None:
        super().__init__(source, table.Store(ttl=86400), table.K, admit=lambda *_: True, quota=Quota(),
                         min_difficulty=0, now_ms=clock_ms)
        self.network = network
        self.bytes_sent = 0
        self.address = (source.ip, source.port)

    def _deliver(self, name: str, address: tuple, *args):
        self.sent += 1
        self.bytes_sent += 21 + len(umsgpack.packb([name, list(args)]))
        callee = self.network.get(tuple(address))
        if callee is None:
            return False, None
        callee.received += 1
        answer = getattr(callee, f"rpc_{name}")(self.address, *args)
        callee.bytes_sent += 21 + len(umsgpack.packb(answer))
        return True, answer

    async def ping(self, address, nodeid):
        return self._deliver("ping", address, nodeid)

    async def find_node(self, address, nodeid, key):
        return self._deliver("find_node", address, nodeid, key)

    async def find_value(self, address, nodeid, key):
        return self._deliver("find_value", address, nodeid, key)

    async def store(self, address, nodeid, key, value):
        return self._deliver("store", address, nodeid, key, value)


def percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0


async def simulate(n: int, lookups: int, files: int, rng: random.Random) -> dict:
    network: dict[tuple[str, int], SimProtocol] = {}
    now_ms = lambda: int(time.time() * 1000)  # noqa: E731
    identities = [Identity.generate() for _ in range(n)]
    nodes: list[SimProtocol] = []
    started = time.perf_counter()
    for i, identity in enumerate(identities):
        me = Node(records.table_id(identity.id), "10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255), 4000)
        protocol = SimProtocol(me, network, now_ms)
        network[protocol.address] = protocol
        if nodes:
            entry = rng.choice(nodes)
            ok, answer = await protocol.ping(entry.address, me.id)
            protocol.welcome_if_new(Node(answer, *entry.address))
            await table.find_nodes(protocol, me.id, table.Lookup())
        nodes.append(protocol)
    for identity, protocol in zip(identities, nodes):  # each node's own records, as DhtService publishes them
        url = f"http://{protocol.address[0]}:4000"
        descriptor = make_descriptor(identity, url=url, capacity=1, free=1, version="sim", timestamp=now_ms())
        await table.store(protocol, protocol.storage, records.node_key(identity.id), records.encode([descriptor]),
                          table.Lookup())
        provider = records.make_provider(identity, "storage", url, now_ms())
        slot = records.providers_key("storage", records.provider_slot(identity.id))
        await table.store(protocol, protocol.storage, slot, records.encode([provider]), table.Lookup())
    joined = time.perf_counter() - started
    join_bytes = [p.bytes_sent for p in nodes]
    hops: dict[str, list[int]] = {"node": [], "holders": [], "providers": []}
    failed = {"node": 0, "holders": 0, "put": 0}

    async def look_up(asker: SimProtocol, key: bytes, kind: str) -> list[records.Record]:
        lookup = table.Lookup()
        value = asker.storage.get(key) or await table.find_value(asker, key, lookup)
        hops[kind].append(lookup.hops)
        return records.parse_bundle(value, key, now_ms=now_ms(), min_difficulty=0) if value else []

    placements = {}
    for _ in range(files):  # a put: six distinct storage providers found in the table, then its holders published
        placer, si = rng.randrange(n), os.urandom(32)
        found = await collect_providers(lambda key: look_up(nodes[placer], key, "providers"), "storage", 6,
                                        exclude=identities[placer].id)
        placement = [p.node for p in found[:6]]
        if len(set(placement)) < 6:
            failed["put"] += 1
            continue
        record = records.make_holders(identities[placer], si, placement, now_ms())
        await table.store(nodes[placer], nodes[placer].storage, records.holders_key(si), records.encode([record]),
                          table.Lookup())
        placements[si] = placement
    for _ in range(lookups):
        asker, wanted = rng.sample(range(n), 2)
        got = await look_up(nodes[asker], records.node_key(identities[wanted].id), "node")
        failed["node"] += [r.id for r in got if isinstance(r, NodeDescriptor)] != [identities[wanted].id]
    sis = list(placements)
    for _ in range(lookups if sis else 0):
        si = rng.choice(sis)
        newest = records.newest(await look_up(nodes[rng.randrange(n)], records.holders_key(si), "holders"),
                                lambda r: isinstance(r, records.Holders))
        failed["holders"] += newest is None or list(newest.placement) != placements[si]
    contacts = [sum(len(b) for b in p.router.buckets) for p in nodes]
    return {"n": n, "bound": math.floor(math.log2(n)) + 2, "hops": hops, "failed": failed,
            "contacts": sum(contacts) / n, "join_bytes": sum(join_bytes) / n,
            "bytes": sum(p.bytes_sent for p in nodes) / n, "seconds": time.perf_counter() - started,
            "join_seconds": joined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = Report("dht")
    rows = []
    print(f"{'nodes':>6} {'bound':>5} {'node':>9} {'holders':>9} {'providers':>9} {'failed':>6} {'contacts':>8} "
          f"{'join B':>7} {'all B':>7} {'s':>5}")
    print(f"{'':>12} {'(hops p50/p99/max)':>29}")
    for n in (int(s) for s in args.sizes.split(",")):
        row = asyncio.run(simulate(n, args.lookups, args.files, random.Random(args.seed)))
        rows.append(row)
        spread = {k: f"{percentile(v, .5)}/{percentile(v, .99)}/{max(v, default=0)}" for k, v in row["hops"].items()}
        print(f"{n:>6} {row['bound']:>5} {spread['node']:>9} {spread['holders']:>9} {spread['providers']:>9} "
              f"{sum(row['failed'].values()):>6} {row['contacts']:>8.1f} {row['join_bytes']:>7.0f} "
              f"{row['bytes']:>7.0f} {row['seconds']:>5.0f}", flush=True)
        for kind, values in row["hops"].items():
            report.add(f"{kind} lookup hops p99, {n} nodes", percentile(values, .99), target=row["bound"], op="<=")
        report.add(f"failed lookups and puts, {n} nodes", sum(row["failed"].values()), target=0, op="<=")
        report.add(f"bytes sent per node to join and publish, {n} nodes", row["join_bytes"], "B")
    first, last = rows[0], rows[-1]
    within = all(percentile(v, .99) <= r["bound"] for r in rows for v in r["hops"].values())
    print(f"p99 hops within log2(N)+2 at every size, for every kind: {within}")
    growth = last["join_bytes"] / first["join_bytes"]
    print(f"bytes a node sends to join and publish its records, {last['n']} vs {first['n']} nodes: {growth:.2f}x "
          f"(target at most 2x)")
    report.add(f"join bytes per node, {last['n']} vs {first['n']} nodes", growth, "x", target=2, op="<=")
    report.write()


if __name__ == "__main__":
    main()
