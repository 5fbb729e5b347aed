"""`python tests/support/ledger_node.py <xsc arguments>`: the real `xsc` CLI, whose nodes settle a
"test" job kind (a receipt check that accepts every claim) and have a test-only user route
`POST /v1/test/pay {"node", "amount", "usage", "job"}` calling `Payments.pay`, so the crash tests can
drive cross-node payments inside real node processes they SIGKILL.

With XSC_TEST_KILLED_BEFORE_COUNTING=owe (or =paid) the node SIGKILLs itself where its trust line would count a
payment its user made to another node (a receipt it countersigned): a kill -9 just after the settlement's synced
ledger write, before anything counts it."""

from __future__ import annotations

import os
import signal
import sys

from aiohttp import web

import xsc.node.app as node_app
from xsc.cli import main
from xsc.errors import InvalidArgument
from xsc.ledger.trust import TrustLines
from xsc.node.appkeys import NODE

_create_app = node_app.create_app


async def _accept(sender, authorization, amount, usage) -> None:
    return None


async def _pay(request: web.Request) -> web.Response:
    body = await request.json()
    if not isinstance(body, dict):
        raise InvalidArgument("send a JSON object")
    entry = await request.app[NODE].payments.pay(body["node"], body["amount"], body["usage"], body["job"])
    return web.json_response({"entry": entry})


async def _settles_tests(app: web.Application):
    app[NODE].payments.add_check("test", _accept)
    yield


def create_app(config):
    app = _create_app(config)
    app.cleanup_ctx.append(_settles_tests)  # after the node's own: its services exist by then
    app.router.add_post("/v1/test/pay", _pay)
    return app


def _killed(*args, **kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


node_app.create_app = create_app
if os.environ.get("XSC_TEST_KILLED_BEFORE_COUNTING") in ("owe", "paid"):
    setattr(TrustLines, os.environ["XSC_TEST_KILLED_BEFORE_COUNTING"], _killed)  # before any node binds it

if __name__ == "__main__":
    sys.argv[0] = "xsc"
    main()
