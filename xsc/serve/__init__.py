"""The node's sockets: one port that answers TLS (peers) and plain HTTP (the user), and open connections bounded.

    listener:    NodeRunner, GuardedNodeRunner, NodeSite, TlsOnlySite (aiohttp's runner and sites, sniffing TLS
                 with net/sniff.py); TLS_CONTEXT, TLS_SERVED (the app keys they read and set)
    connections: GuardedRunner, connection_cap, raise_fd_limit (per-address and total caps, idle timeouts);
                 DrainingRunner (one that stops as the node does: `xsc s3 serve`'s); ProblemRunner (a request
                 aiohttp cannot parse answered with a problem body)
    stop:        the node's one way to stop, its runners' cleanup (leave, stop listening on every listener, let
                 the requests in flight on all of them end; forced, cut them and the leave short); Draining,
                 on_signals, InFlight, IN_FLIGHT, LEAVE, CUT_SHORT, LISTENERS

Below the node's routes and services: nothing here knows a route or a service; xsc/node/app.py puts the app
under these runners.
"""
