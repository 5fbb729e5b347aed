"""Prices of what the node already does, in micro-credits, with integer math only.

Each price is the exact rational cost rounded UP to a whole micro-credit, once, at the end
(so a provider is never paid less than its price, and splitting work never makes it cheaper
by more than one micro-credit per piece).
"""

from __future__ import annotations

from ..errors import InvalidArgument

SECONDS_PER_HOUR = 3600
GIB = 1024**3  # storage prices are per GiB-hour: a micro-credit per byte-hour would be far too coarse
FUEL_UNIT = 1_000_000  # compute prices are per million units of fuel


def _non_negative(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, not {value!r}")
    return value


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def byte_hours(size_bytes: int, duration_seconds: int) -> int:
    """Metered storage usage: bytes held times hours held, rounded up."""
    return _ceil_div(_non_negative(size_bytes, "size") * _non_negative(duration_seconds, "duration"),
                     SECONDS_PER_HOUR)


def price_storage(size_bytes: int, duration_seconds: int, price_per_gib_hour: int) -> int:
    """ceil(size_bytes * duration_seconds * price_per_gib_hour / (3600 * 2**30)) micro-credits."""
    return _ceil_div(_non_negative(size_bytes, "size") * _non_negative(duration_seconds, "duration")
                     * _non_negative(price_per_gib_hour, "price_per_gib_hour"), SECONDS_PER_HOUR * GIB)


def price_compute(fuel: int, price_per_fuel_million: int) -> int:
    """ceil(fuel * price_per_fuel_million / 1,000,000) micro-credits."""
    return _ceil_div(_non_negative(fuel, "fuel") * _non_negative(price_per_fuel_million, "price_per_fuel_million"),
                     FUEL_UNIT)
