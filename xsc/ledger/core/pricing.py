"""Prices of what the node already does, in micro-credits, with integer math only.

Each price is the exact rational cost rounded UP to a whole micro-credit, once, at the end
(so a provider is never paid less than its price, and splitting work never makes it cheaper
by more than one micro-credit per piece).  The periods a storage lease is paid in are priced so that they add up to
the lease's price, rounded once: `price_storage_period`.
"""

from __future__ import annotations

from ...errors import InvalidArgument

SECONDS_PER_HOUR = 3600
GIB = 1024**3  # storage prices are per GiB-hour: a micro-credit per byte-hour would be far too coarse
FUEL_UNIT = 1_000_000  # compute prices are per million units of fuel
MICROS = 1_000_000  # memory is priced per page-second and timed in microseconds
PAGE = 65536  # a wasm page: memory is priced per 64 KiB page-second


def _non_negative(value: int, name: str) -> int:
    if type(value) is int and value >= 0:  # the common case, first (a bool's type is bool)
        return value
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


def price_storage_period(size_bytes: int, start: int, end: int, price_per_gib_hour: int) -> int:
    """What holding `size_bytes` from second `start` to second `end` (since the epoch) is paid, as one period of a
    lease paid in several: the price of the time up to `end` less the price of the time up to `start`, each rounded
    up.  The periods of a lease add up to its price rounded once, whatever their number (each rounded up on its own
    would pay a share whose period costs under a micro-credit one micro-credit a period: 720 over 30 days of hourly
    payments, for a lease priced at 1); a period may be paid 0."""
    if _non_negative(end, "end") < _non_negative(start, "start"):
        raise InvalidArgument(f"a period must not end ({end}) before it starts ({start})")
    return price_storage(size_bytes, end, price_per_gib_hour) - price_storage(size_bytes, start, price_per_gib_hour)


def storage_given_back(size_bytes: int, duration_seconds: int, price_per_gib_hour: int) -> int:
    """What a lease cut short by `duration_seconds` gives back: its price rounded DOWN, so that what was held and
    what is given back never add up to more than the lease was charged."""
    return (_non_negative(size_bytes, "size") * _non_negative(duration_seconds, "duration")
            * _non_negative(price_per_gib_hour, "price_per_gib_hour")) // (SECONDS_PER_HOUR * GIB)


def price_compute(fuel: int, price_per_fuel_million: int, pages: int = 0, micros: int = 0,
                  price_per_page_second: int = 0) -> int:
    """THE price of a call: its fuel plus its peak memory pages times its time, in micro-credits.

        ceil((fuel * price_per_fuel_million + pages * micros * price_per_page_second) / 1,000,000)

    `price_per_fuel_million` is the deal's price (micro-credits per million fuel), `pages` the call's peak
    linear memory in 64 KiB pages, `micros` how long it ran (microseconds), `price_per_page_second` the node's
    `compute.memory_price`.  Both terms share the denominator (a million fuel, a million microseconds), so
    the sum is rounded up once.  The worst case of a call (what is held before it runs) is this price of its
    whole fuel budget, its memory limit in pages and its timeout (`price_budget`)."""
    used = _non_negative(fuel, "fuel") * _non_negative(price_per_fuel_million, "price_per_fuel_million")
    used += _non_negative(pages, "pages") * _non_negative(micros, "micros") \
        * _non_negative(price_per_page_second, "price_per_page_second")
    return _ceil_div(used, FUEL_UNIT)


def price_budget(fuel_limit: int, price_per_fuel_million: int, memory_limit: int, timeout_micros: int,
                 price_per_page_second: int) -> int:
    """The most a call may cost: its whole fuel budget, and its memory limit held for its whole timeout."""
    return price_compute(fuel_limit, price_per_fuel_million, _non_negative(memory_limit, "memory") // PAGE,
                         timeout_micros, price_per_page_second)
