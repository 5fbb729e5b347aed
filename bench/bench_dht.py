"""The hash table at sizes one machine cannot run as processes: lookups in hops, and what a node sends.

    python -m bench.bench_dht [--sizes 100,1000,10000] [--lookups 300] [--files 200]

Each size N is a simulated network of N nodes in this process, on the real code paths of xsc/dht: the `kademlia`
package's routing tables and lookups with xsc's protocol (every store checked, bundles merged, lookups counted),
only the datagrams handed from node to node in memory instead of over UDP (each one still encoded as rpcudp
encodes it, to count its bytes).  Nodes join one after the other through one node that is already in, as a node
does through a peer it knows, and each publishes its signed node record.  Then --files holders records (real Ed25519 signatures) are published from random
nodes, and from other random nodes --lookups node lookups (the node record of the id looked up must come back,
signed by that node) and --lookups holders lookups (the placement must come back as signed).  Reported per size: hops (rounds of
up to ALPHA=3 parallel requests) at p50, p99 and max against log2(N) + 2, the lookups that failed, routing table
contacts per node, and the bytes a node sent for the joins and lookups, per node.  The join and lookups are the
same work per node at every size, so a flat figure per node is what "cost independent of the size" means.
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

from xsc.dht import records, table
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
    for identity, protocol in zip(identities, nodes):  # each node's own record, as DhtService publishes it
        descriptor = make_descriptor(identity, url=f"http://{protocol.address[0]}:4000", capacity=1, free=1,
                                     version="sim", timestamp=now_ms())
        await table.store(protocol, protocol.storage, records.node_key(identity.id), records.encode([descriptor]),
                          table.Lookup())
    joined = time.perf_counter() - started
    join_bytes = [p.bytes_sent for p in nodes]

    placements = {}
    for _ in range(files):
        placer, si = rng.choice(range(n)), os.urandom(32)
        placement = [identities[j].id for j in rng.sample(range(n), 6)]
        record = records.make_holders(identities[placer], si, placement, now_ms())
        await table.store(nodes[placer], nodes[placer].storage, records.holders_key(si), records.encode([record]),
                          table.Lookup())
        placements[si] = placement
    node_hops, holder_hops, failed = [], [], {"node": 0, "holders": 0}
    async def look_up(asker: SimProtocol, key: bytes, hops: list[int]) -> list[records.Record]:
        lookup = table.Lookup()
        value = asker.storage.get(key) or await table.find_value(asker, key, lookup)
        hops.append(lookup.hops)
        return records.parse_bundle(value, key, now_ms=now_ms(), min_difficulty=0) if value else []

    for _ in range(lookups):
        asker, wanted = rng.sample(range(n), 2)
        got = await look_up(nodes[asker], records.node_key(identities[wanted].id), node_hops)
        failed["node"] += [r.id for r in got if isinstance(r, NodeDescriptor)] != [identities[wanted].id]
    sis = list(placements)
    for _ in range(lookups):
        si = rng.choice(sis)
        newest = records.newest(await look_up(nodes[rng.randrange(n)], records.holders_key(si), holder_hops),
                                lambda r: isinstance(r, records.Holders))
        failed["holders"] += newest is None or list(newest.placement) != placements[si]
    contacts = [sum(len(b) for b in p.router.buckets) for p in nodes]
    return {"n": n, "bound": math.floor(math.log2(n)) + 2, "node_hops": node_hops, "holder_hops": holder_hops,
            "failed": failed, "contacts": sum(contacts) / n, "join_bytes": sum(join_bytes) / n,
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
    print(f"{'nodes':>6} {'bound':>5} {'node p50/p99/max':>16} {'holders p50/p99/max':>19} {'failed':>7} "
          f"{'contacts':>8} {'B/node':>8} {'s':>6}")
    for n in (int(s) for s in args.sizes.split(",")):
        row = asyncio.run(simulate(n, args.lookups, args.files, random.Random(args.seed)))
        rows.append(row)
        nh, hh = row["node_hops"], row["holder_hops"]
        print(f"{n:>6} {row['bound']:>5} {percentile(nh, .5):>6}/{percentile(nh, .99)}/{max(nh):<6} "
              f"{percentile(hh, .5):>9}/{percentile(hh, .99)}/{max(hh):<6} "
              f"{row['failed']['node'] + row['failed']['holders']:>7} {row['contacts']:>8.1f} "
              f"{row['bytes']:>8.0f} {row['seconds']:>6.1f}", flush=True)
        report.add(f"node lookup hops p99, {n} nodes", percentile(nh, .99), target=row["bound"], op="<=")
        report.add(f"holders lookup hops p99, {n} nodes", percentile(hh, .99), target=row["bound"], op="<=")
        report.add(f"failed lookups, {n} nodes", row["failed"]["node"] + row["failed"]["holders"], target=0, op="<=")
        report.add(f"bytes sent per node, {n} nodes", row["bytes"], "B")
    first, last = rows[0], rows[-1]
    print(f"p99 hops within log2(N)+2 at every size: "
          f"{all(percentile(r['node_hops'], .99) <= r['bound'] and percentile(r['holder_hops'], .99) <= r['bound'] for r in rows)}")
    growth = last["bytes"] / first["bytes"]
    print(f"bytes sent per node, {last['n']} vs {first['n']} nodes: {growth:.2f}x (target at most 2x)")
    report.add(f"bytes per node, {last['n']} vs {first['n']} nodes", growth, "x", target=2, op="<=")
    report.write()


if __name__ == "__main__":
    main()
