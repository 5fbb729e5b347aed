"""`python tests/support/ledger_node.py <xsc arguments>`: the real `xsc` CLI, whose nodes settle a
"test" job kind (a receipt check that accepts every claim) and have a test-only user route
`POST /v1/test/pay {"node", "amount", "usage", "job"}` calling `Payments.pay`, so the crash tests can
drive cross-node payments inside real node processes they stop or SIGKILL.

Where a settlement's write is caught, by what it writes: `owe`, a payment the node's user makes to another node;
`paid`, a receipt the node countersigns for another node.

- XSC_TEST_KILLED_WRITING=owe (or =paid): the node SIGKILLs itself in the ledger's writer thread just after that
  settlement's synced batch, before anything else of the node runs on.
- XSC_TEST_HELD_WRITING=owe (or =paid): the first such write is held in the writer thread, before its batch, and the
  file XSC_TEST_HELD_MARK is made; it goes on once the node's stop cancels the task that waits for it (the loop that
  pays, the request that asked for the receipt), or, for a receipt, once the connection that asked for it is lost.
  With XSC_TEST_HELD_KILLED=1 the node SIGKILLs itself there instead, the batch never written."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

import xsc.node.app as node_app
import xsc.serve.stop as serve_stop
import xsc.tasks as tasks
from xsc.cli import main
from xsc.errors import InvalidArgument
from xsc.ledger import LedgerService
from xsc.ledger.receipts import RECEIPTS_PATH
from xsc.ledger.store import LedgerStore
from xsc.node.appkeys import NODE

_create_app = node_app.create_app
# The methods whose write each kind is: LedgerStore's (the writer thread) and LedgerService's (the task waiting).
_WRITES = {"owe": "complete", "paid": "countersign"}


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


def _killed_after(write):
    def written(self, *args, **kwargs):
        result = write(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    return written


class _Hold:
    """The first write of one kind held in the writer thread until what the test waits for cuts its task short."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.mark = Path(os.environ["XSC_TEST_HELD_MARK"])
        self.killed = os.environ.get("XSC_TEST_HELD_KILLED") == "1"
        self.released = threading.Event()
        self.held_once = False
        self.waiting: set[asyncio.Task] = set()  # tasks waiting for such a write

    def install(self) -> None:
        name = _WRITES[self.kind]
        store_write, service_write = getattr(LedgerStore, name), getattr(LedgerService, name)
        hold = self

        def held(store, *args, **kwargs):
            if not hold.held_once:
                hold.held_once = True
                hold.mark.write_text(hold.kind)
                if hold.killed:
                    os.kill(os.getpid(), signal.SIGKILL)
                hold.released.wait(120)  # (a bound against a hang: the test releases it long before)
            return store_write(store, *args, **kwargs)

        async def waited(service, *args, **kwargs):
            hold.waiting.add(asyncio.current_task())
            return await service_write(service, *args, **kwargs)

        setattr(LedgerStore, name, held)
        setattr(LedgerService, name, waited)
        stop = tasks.stop

        async def stopping(*given, **kwargs):
            # The tasks cancelled first, the write let go after: the cancellation reaches the task while it waits.
            if hold.waiting & set(given):
                for task in given:
                    if task is not None:
                        task.cancel()
                hold.released.set()
            return await stop(*given, **kwargs)

        tasks.stop = stopping  # the Supervisor's (its services' loops)
        serve_stop.stop_tasks = stopping  # the stop's (the requests in flight it cuts short)
        if self.kind == "paid":
            lost = RequestHandler.connection_lost

            def connection_lost(handler, exc):
                request = handler._current_request
                if request is not None and request.path == RECEIPTS_PATH:
                    hold.released.set()
                return lost(handler, exc)

            RequestHandler.connection_lost = connection_lost


node_app.create_app = create_app
if os.environ.get("XSC_TEST_KILLED_WRITING") in _WRITES:  # before any node binds them
    _name = _WRITES[os.environ["XSC_TEST_KILLED_WRITING"]]
    setattr(LedgerStore, _name, _killed_after(getattr(LedgerStore, _name)))
if os.environ.get("XSC_TEST_HELD_WRITING") in _WRITES:
    _Hold(os.environ["XSC_TEST_HELD_WRITING"]).install()

if __name__ == "__main__":
    sys.argv[0] = "xsc"
    main()
