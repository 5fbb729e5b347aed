"""An emulated wide-area network for a devnet on this machine: Linux network namespaces, delay and loss.

- `namespaces.NetnsNetwork`: one network namespace per node, each joined by a veth pair to a bridge in the
  devnet's own hub namespace, and the host joined to that bridge too (so the CLI reaches the nodes); addresses
  from 198.18.0.0/15 (the range set aside for network benchmarks) on those veths only, no route anywhere else.
  Delay and loss apply to every packet entering a node's namespace from the bridge: loss by an iptables
  `statistic` rule, delay by queueing the packet (NFQUEUE) to the delay line.
- `delayline`: the process that holds each queued packet for the delay and then lets it through.
- `nfqueue`: the kernel's queue protocol (metadata only: no payload is ever copied out of the kernel).

Needs root and the `ip` and `iptables` commands; `NetnsNetwork.check()` says which is missing in one line."""
