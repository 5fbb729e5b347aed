"""The configuration's building blocks: each units parser as pydantic takes it, the checks that bound a key, the
constants the sections share, and a listen address."""

from __future__ import annotations

import re
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BeforeValidator

from ..errors import ConfigError, InvalidArgument
from .. import units
from ..units import is_whole_number


class _Refused(ValueError):
    """A parser's refusal as pydantic takes it (a ValueError, its text the message and hint), its message and the
    value it would take (`example`) kept apart: the line of a bad configuration value names, in one pair of
    parentheses, where it was set and the command that sets a good one."""

    def __init__(self, err: InvalidArgument | ConfigError) -> None:
        super().__init__(err.with_hint)
        self.message, self.hint, self.example = err.message, err.hint, err.details.get("example")


def _refused_as_value_error(parse: Callable[[Any], int]) -> Callable[[Any], int]:
    """A units parser whose refusal is a ValueError: pydantic then names the key the value was given for."""
    def parsed(v: Any) -> int:
        try:
            return parse(v)
        except InvalidArgument as err:
            raise _Refused(err) from None
    return parsed


parse_size = _refused_as_value_error(units.parse_size)
parse_duration = _refused_as_value_error(units.parse_duration)
parse_seconds = _refused_as_value_error(units.parse_seconds)  # type: ignore[arg-type]

DEFAULT_LISTEN = "127.0.0.1:7070"
EVENT_LOOPS = ("uvloop", "asyncio")  # node.event_loop (xsc/tasks.py: run)
CONFIG_FILE = "config.toml"
MiB = 1024 * 1024
MAX_CAPACITY = 4 * 1024**6  # bytes (4 EiB): under 2**63, with room for what is summed with it
MAX_THREADS = 1024
MAX_FUEL_PER_SECOND = 10**10  # x MAX_THREADS x 7 days of a bucket stays under 2**63
DAY = 86400
REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?", re.ASCII)  # an S3 region's name: us-east-1, eu-central-2


def _check(ok: Callable[[Any], bool], message: str) -> AfterValidator:
    """Refuse a value `ok` does not take with `message` (pydantic's error names the key)."""
    def checked(v: Any) -> Any:
        if not ok(v):
            raise ValueError(message)
        return v
    return AfterValidator(checked)


def _within(low: float, high: float, message: str) -> AfterValidator:
    return _check(lambda v: low <= v <= high, message)


def _at_least(low: float, message: str) -> AfterValidator:
    return _check(lambda v: v >= low, message)


def _span(low: float, high: float | None = None, *, above: bool = False, why: str = "") -> AfterValidator:
    """A duration's bounds, said in the units a user writes it in ("must be from 50ms to 7d"); `above`: more than
    `low`, not `low` itself."""
    said = units.duration_argument
    first = f"more than {said(low)}" if above else f"from {said(low)}" if high is not None else f"at least {said(low)}"
    last = "" if high is None else f" and at most {said(high)}" if above else f" to {said(high)}"
    return _check(lambda v: (v > low if above else v >= low) and (high is None or v <= high),
                  f"must be {first}{last}{why}")


_SIZE = BeforeValidator(parse_size)  # 10GiB, 500MB, 4096
_DURATION = BeforeValidator(parse_duration)  # 30d, 1.5h, 3600: whole seconds
_SECONDS = BeforeValidator(parse_seconds)  # 10m, 250ms, 1.5h, 600, 600.0: seconds, a float
Seconds = Annotated[float, _SECONDS]  # a period a node waits or allows, taken in any unit a user writes it in
WholeSeconds = Annotated[int, _DURATION]  # a duration kept to the second (a lease, a record's retention)
_AT_LEAST_1 = _at_least(1, "must be at least 1")
_PER_SECOND = _within(1, 1_000_000, "must be between 1 and 1000000 requests per second")
_UP_TO_A_DAY = _span(0.05, DAY)
_UP_TO_A_WEEK = _span(0.05, 7 * DAY)
_UP_TO_AN_HOUR = _span(0, 3600, above=True)
_JITTER = _within(0, 0.9, "must be between 0 and 0.9 (a fraction of the interval)")
_UP_TO_10_YEARS = _span(1, 3650 * DAY)


def _listen_address(required: bool) -> AfterValidator:
    """HOST:PORT with a fixed port; empty where not `required` (then not served)."""
    def checked(v: str) -> str:
        if v or required:
            try:
                parse_listen(v)
            except ConfigError as err:  # pydantic's error names the setting
                raise _Refused(err) from None
        return v
    return AfterValidator(checked)


_LISTEN = _listen_address(required=False)
_CONNECTIONS = _within(16, 1_000_000, "must be from 16 to 1000000 connections")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not is_whole_number(port) or not 0 <= int(port) < 65536:
        raise ConfigError(f"not a listen address: {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:7070")
    if int(port) == 0:  # the system's pick, another each start: what the node says and records would be wrong
        raise ConfigError(f"port 0 is no fixed listen address: {text!r}", hint="give a port, e.g. 127.0.0.1:7070")
    return host.strip("[]"), int(port)
