"""The node's HTTP routes, one module per feature.  Each only parses the request, calls one service
method (the services are in app[...] under node/appkeys.py) and encodes the answer; none imports another."""

from . import (allocation, compute, functions, health, hosted_jobs, ledger, market, modules, node, openapi, peers, receipts, s3,
               shares, storage, ui)

ROUTES = [node.routes, ledger.routes, storage.routes, shares.routes, compute.routes, peers.routes, health.routes,
          receipts.routes, market.routes, modules.routes, openapi.routes, s3.routes, ui.routes,
          allocation.routes, hosted_jobs.routes, functions.routes]

__all__ = ["ROUTES"]
