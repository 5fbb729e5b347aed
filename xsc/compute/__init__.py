"""Sandboxed WebAssembly compute: the engine and sandbox, the module registry and compiled-module
cache, argument and result marshalling, and signed provenance records.

The public API, loaded lazily so that light callers (the CLI checking a provenance
signature) do not pay for importing wasmtime:

- `ComputeService`, `InvokeCall`, `parse_invoke`, `Run`: the node side (xsc.compute.service); its `registry`
  deploys, compiles and keeps the modules (xsc.compute.registry)
- `PaidCompute`: invokes matched on the market and paid, here or on another node (xsc.compute.paid)
- `ModuleInfo`, `parse_module_id`, `module_id`, `module_too_large`: modules (xsc.compute.modules)
- `Limits`: per-call limits (xsc.compute.limits)
- `check_provenance`, `provenance_is_valid`, `provenance_rule`, `provenance_validity`: signed records (xsc.compute.provenance)
- `parse_value`, `format_value`, `Signature`: values (xsc.compute.values)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ComputeService": ("service", "ComputeService"),
    "InvokeCall": ("service", "InvokeCall"),
    "parse_invoke": ("service", "parse_invoke"),
    "Run": ("service", "Run"),
    "PaidCompute": ("paid", "PaidCompute"),
    "ModuleInfo": ("modules", "ModuleInfo"),
    "parse_module_id": ("modules", "parse_module_id"),
    "module_id": ("modules", "module_id"),
    "module_too_large": ("modules", "too_large"),
    "Limits": ("limits", "Limits"),
    "check_provenance": ("provenance", "check"),
    "provenance_is_valid": ("provenance", "is_valid"),
    "provenance_rule": ("provenance", "rule"),
    "provenance_validity": ("provenance", "validity"),
    "parse_value": ("values", "parse_value"),
    "format_value": ("values", "format_value"),
    "Signature": ("values", "Signature"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xsc.compute' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value
