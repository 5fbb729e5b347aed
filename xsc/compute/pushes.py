"""Modules gateways push to this node, the provider, for the calls they matched here (compute/paid.py).

A call (or a job, or a placed function) for a module this node lacks is answered 404 `module-not-found`, and its
gateway may then push that module, once, for a while (`expect`, `receive`): content-addressed, bounded in bytes and
in functions, compiled one at a time beside the operator's calls.  Compiling it is work done for the gateway, priced
(provider_tabs.py: `compile_price`) and reserved on its trust line before it starts; a push that names the tab whose
call asked for the module is charged on that tab, once, and paid with it.  Modules no call used for PUSHED_TTL
seconds are removed (`sweep`).  Route: PUT /v1/peer/modules (node/http/compute.py).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

from ..errors import Forbidden, InvalidModule
from ..ledger.core.model import Authorization
from . import modules as mods
from .provider_tabs import ProviderTabs, compile_price
from .service import ComputeService
from .shape import defined_functions

PUSH_WINDOW = 60.0  # seconds a gateway may push the module a funded call of its lacked
MAX_PUSHED_BYTES = 4 * 1024 * 1024  # a peer's module, at most (the operator's own: compute.max_module_size)
MAX_PUSHED_FUNCTIONS = 20_000  # functions a peer's module may define: what compiling it costs grows with them
PUSHED_TTL = 3600  # seconds a module pushed by a peer is kept unused before it is removed
# Modules awaited from gateways at once, at most (the oldest asked forgotten first): a gateway names any module id
# in its calls, and each one this node lacks is awaited PUSH_WINDOW seconds.
AWAITED_MODULES = 1024
ASKING_TABS = 4  # tabs whose calls asked for one module, kept (the newest): a push names one of them to be charged on


class ModulePushes:
    """The modules this node, the provider, awaits from gateways and takes from them (module docstring)."""

    def __init__(self, *, compute: ComputeService, provider_tabs: ProviderTabs, trust: Any = None) -> None:
        self.compute, self.provider_tabs = compute, provider_tabs
        self.trust = trust  # xsc.ledger.trust.TrustLines: a compile is reserved on its gateway's line (None: no limit)
        # (gateway, module id) -> until when it may push it, the price per million fuel its call was matched at, and
        # the tabs whose calls asked for it (authorization id hex -> its authorization and its call's price)
        # (oldest first: each is awaited PUSH_WINDOW seconds from when it was asked)
        self._awaited: OrderedDict[tuple[str, str], tuple[float, int, dict[str, tuple[Authorization, int]]]] = \
            OrderedDict()

    async def receive(self, gateway: str, wasm: bytes, *, wasi: bool, tab: str | None = None) -> tuple[dict, bool]:
        """A gateway sends the module of a call it matched here (content-addressed: the id is the hash).

        Only a module this node asked that gateway for (it answered `module-not-found` to a call from it that its
        trust line could pay, within the last PUSH_WINDOW seconds) is taken, at most MAX_PUSHED_BYTES defining at
        most MAX_PUSHED_FUNCTIONS functions; compiling it is priced (COMPILE_FUEL_PER_BYTE at its call's price)
        and reserved on the gateway's line before it starts, and used whether or not it compiles.  A push that names
        `tab` (an authorization id) is charged on that tab, once (compute/provider_tabs.py: the tab's receipt pays
        it): only a tab whose call asked for the module, at that call's price.  Peers' modules compile one at a time,
        beside the operator's calls (ModuleRegistry.deploy).  A pushed module is removed once unused for PUSHED_TTL
        seconds (`sweep`)."""
        self._expire()
        module = hashlib.sha256(wasm).hexdigest()
        awaited = self._awaited.pop((gateway, module), None)
        if awaited is None:
            raise Forbidden("this node did not ask for this module")
        if len(wasm) > MAX_PUSHED_BYTES:
            raise mods.too_large(len(wasm), MAX_PUSHED_BYTES)
        functions = defined_functions(wasm)
        if functions > MAX_PUSHED_FUNCTIONS:
            raise InvalidModule(f"the module defines {functions} functions; a peer's module may define at most "
                                f"{MAX_PUSHED_FUNCTIONS}", limit=MAX_PUSHED_FUNCTIONS)
        price, on_tab = compile_price(len(wasm), awaited[1]), None
        if tab is not None:
            asked = awaited[2].get(tab)
            if asked is None:
                raise Forbidden(f"no call of node {gateway} under the tab of authorization {tab} asked for module "
                                f"{module}", hint="name the tab of the call that found it lacking, or none")
            auth, call_price = asked
            price = compile_price(len(wasm), call_price)
            on_tab = await self.provider_tabs.reserve_compile(auth, module, price, gateway)
        try:
            if self.trust is not None:
                self.trust.reserve(gateway, price, "compiling its module")
        except BaseException:
            if on_tab is not None:
                self.provider_tabs.ran(on_tab, price, None)
            raise
        # A compile charged on a tab is written with the module (a kill -9 between the two would leave the module
        # here, found by the next call, and its compile on no tab), and again once it is over (`compiled`).
        charge = None if on_tab is None else self.provider_tabs.compile_record(on_tab, module, price, gateway)
        try:
            info, created = await self.compute.registry.deploy(wasm, wasi=wasi, pushed_by=gateway,
                                                               also=() if charge is None else (charge,))
        finally:  # the work was done, whatever came of it
            if self.trust is not None:
                self.trust.use(gateway, price, reserved=price)
            if on_tab is not None:
                await self.provider_tabs.compiled(on_tab, module, price, gateway, charge)
        answer = {"module": info.id, "created": created}
        if on_tab is not None:
            answer["charged"] = {"tab": tab, "amount": price}
        return answer, created

    def awaits(self, gateway: str) -> bool:
        """Whether this node asked `gateway` for a module (its push may be read)."""
        self._expire()
        return any(g == gateway for g, _ in self._awaited)

    def expect(self, gateway: str, module: str, price: int, tab: Authorization | None = None) -> None:
        """`gateway` matched work for `module` here, which this node lacks: it may push it (once) for a while,
        charged on `tab` (the call's, if it came on one) or on another tab whose call asked for it lately."""
        self._expire()
        old = self._awaited.pop((gateway, module), None)
        tabs = {} if old is None else old[2]
        if tab is not None:
            tabs.pop(tab.id.hex(), None)
            tabs[tab.id.hex()] = (tab, price)
            while len(tabs) > ASKING_TABS:
                del tabs[next(iter(tabs))]
        self._awaited[(gateway, module)] = (time.monotonic() + PUSH_WINDOW, price, tabs)
        while len(self._awaited) > AWAITED_MODULES:
            self._awaited.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._awaited and next(iter(self._awaited.values()))[0] < now:
            self._awaited.popitem(last=False)

    async def sweep(self, now: float | None = None) -> list[str]:
        """Remove modules peers pushed that no call used for PUSHED_TTL seconds; their ids."""
        return await self.compute.registry.remove_unused_pushed(PUSHED_TTL, time.time() if now is None else now)


__all__ = ["MAX_PUSHED_BYTES", "MAX_PUSHED_FUNCTIONS", "ModulePushes", "PUSHED_TTL", "PUSH_WINDOW"]
