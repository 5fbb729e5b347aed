"""Per-call limits: the node's config sets the defaults and the ceilings; a request may ask for less."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, LimitTooHigh
from ..units import duration_argument, format_size, is_whole_number, parse_seconds, parse_size


@dataclass(frozen=True)
class Limits:
    fuel: int  # units of wasmtime fuel (about one per wasm instruction)
    memory: int  # bytes of linear memory (all memories of the instance together)
    timeout: float  # wall-clock seconds

    def to_json(self) -> dict[str, Any]:
        return {"fuel": self.fuel, "memory": self.memory, "timeout": self.timeout}


# Tables are small in real modules; a cap keeps a hostile module from allocating gigabytes of them.
TABLE_ELEMENTS = 100_000
INSTANCES = 1  # one module, no linking
TABLES = 4
MEMORIES = 1
# More fuel than one thread can burn in a second (about one unit per wasm instruction): what a trapped call
# whose fuel count wasmtime under-reports is charged for the time it ran, at most.
MAX_FUEL_PER_SECOND = 4_000_000_000


def fuel_bound(duration_ns: int, limit: int) -> int:
    """The most fuel a call could have used in `duration_ns`: ceil(duration * MAX_FUEL_PER_SECOND), at most `limit`."""
    return min(limit, -(-duration_ns * MAX_FUEL_PER_SECOND // 1_000_000_000))


def resolve(ceiling: Limits, fuel: Any = None, memory: Any = None, timeout: Any = None) -> Limits:
    """The limits of one call: each one asked for (and no more than the ceiling), else the ceiling."""
    if fuel is None and memory is None and timeout is None:  # the common call asks for none: the ceiling (frozen)
        return ceiling
    return Limits(
        fuel=ceiling.fuel if fuel is None else _fuel(fuel, ceiling.fuel),
        memory=ceiling.memory if memory is None else _memory(memory, ceiling.memory),
        timeout=ceiling.timeout if timeout is None else _timeout(timeout, ceiling.timeout),
    )


def bounded_size(value: Any, name: str, most: int, taker: str) -> int:
    """A size given as bytes or as every size flag takes it (16MiB, 4096), at most `most`; a refusal names the field
    (`name`) and who may take no more (`taker`, e.g. "a function may take")."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{name} is a size, e.g. 16MiB, not {value!r}")
    try:
        size = parse_size(value)
    except InvalidArgument as err:  # which of a request's sizes it was (`--max-body huge` said only "not a size")
        raise InvalidArgument(f"{name}: {err.message}", hint=err.hint, **err.details) from None
    if size > most:
        raise LimitTooHigh(f"{name} {format_size(size)} is more than {taker} ({format_size(most)})",
                           hint=f"ask for at most {format_size(most)}")
    return size


def named(limit: str, value: int | float, raised_by: str) -> dict[str, Any]:
    """The fields of a problem (or a trap) that a limit refused or cut: which limit, its value (bytes, seconds, fuel)
    and the flag or config key that raises it, for a program to read as its user reads the words."""
    return {"limit": limit, "limit_value": value, "raised_by": raised_by}


def _fuel(value: Any, most: int) -> int:
    if isinstance(value, str) and is_whole_number(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"fuel must be a positive whole number, not {value!r}", hint="e.g. --fuel 1000000")
    if value > most:
        raise LimitTooHigh(f"fuel {value:,} is more than this node allows per call ({most:,})",
                           hint=f"ask for at most {most:,}, or raise compute.fuel in the node's config",
                           **named("fuel", most, "compute.fuel"))
    return value


def _memory(value: Any, most: int) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"memory: not a size: {value!r}", hint="e.g. --memory 16MiB")
    try:
        size = parse_size(value)
    except InvalidArgument as err:  # (a job spec's TOML or a request names no flag: the field is said)
        raise InvalidArgument(f"memory: {err.message}", hint="e.g. --memory 16MiB") from None
    if size > most:
        raise LimitTooHigh(f"memory {format_size(size)} is more than this node allows per call "
                           f"({format_size(most, down=True)})",
                           hint=f"ask for at most {format_size(most, down=True)}, or raise compute.memory in the "
                                "node's config", **named("memory", most, "compute.memory"))
    return size


def _timeout(value: Any, most: float) -> float:
    """Seconds, or a duration as --timeout and compute.timeout take it ("500ms", "1.5s": a job spec's TOML)."""
    try:
        seconds = math.nan if isinstance(value, bool) else parse_seconds(value) if isinstance(value, str) else \
            float(value)
    except (TypeError, ValueError, OverflowError, InvalidArgument):  # (an int of hundreds of digits is no float)
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgument(f"timeout must be a positive duration (seconds, or e.g. 500ms), not {value!r}",
                              hint="e.g. --timeout 500ms")
    if seconds > most:  # the hint's most in the units --timeout and compute.timeout are written in (1.5s, 2m)
        raise LimitTooHigh(f"timeout {seconds:g} s is more than this node allows per call ({most:g} s)",
                           hint=f"ask for at most {duration_argument(most)}, or raise compute.timeout in the node's "
                                "config",
                           **named("timeout", most, "compute.timeout"))
    return seconds
