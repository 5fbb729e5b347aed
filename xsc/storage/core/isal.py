"""zfec's blocks computed by Intel's ISA-L (Debian's libisal2), where it is installed: a put's parity blocks, and a
segment's missing data blocks from any k of its blocks.

zfec multiplies byte by byte through a table; ISA-L's `ec_encode_data` multiplies in GF(2^8) with SIMD, from the
coefficients it is given.  Given zfec's (erasure.parity_rows), in the same field (x^8 + x^4 + x^3 + x^2 + 1), it makes
the same blocks at about a twentieth of zfec's CPU.  ctypes lets the GIL go for the call.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

LIBRARY = "libisal.so.2"  # by its soname: ctypes.util.find_library runs `ldconfig -p` in a child process


class _Coder:
    """`ec_encode_data` over `k` blocks into at most `m`, written into buffers each thread keeps and copied out as
    bytes (what LevelDB, the holders and the cipher take)."""

    def __init__(self, lib: ctypes.CDLL, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._lib = lib
        self._encode = lib.ec_encode_data
        self._encode.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p]
        self._encode.restype = None
        self._local = threading.local()

    def _tables(self, rows: list[list[int]]) -> ctypes.Array:
        """ISA-L's tables for these coefficient rows (each of k)."""
        coefficients = (ctypes.c_ubyte * (self.k * len(rows)))(*(c for row in rows for c in row))
        tables = (ctypes.c_ubyte * (32 * self.k * len(rows)))()
        self._lib.ec_init_tables(self.k, len(rows), coefficients, tables)
        return tables

    def _run(self, tables: ctypes.Array, count: int, blocks: Sequence[bytes], size: int) -> list[bytes]:
        """The `count` blocks `tables` make of `blocks`, k of `size` bytes each."""
        local = self._local
        if getattr(local, "size", 0) < size:
            local.size, local.out = size, [bytearray(size) for _ in range(self.m)]
            local.coding = (ctypes.c_void_p * self.m)(
                *(ctypes.addressof(ctypes.c_char.from_buffer(block)) for block in local.out))
        # c_char_p takes bytes alone: a block from another node may come as a view of the body it came in.
        given = (ctypes.c_char_p * self.k)(*(block if type(block) is bytes else bytes(block) for block in blocks))
        self._encode(size, self.k, count, tables, given, local.coding)
        return [bytes(memoryview(block)[:size]) for block in local.out[:count]]


class Parity(_Coder):
    """The parity blocks of `k` data blocks, one row of `rows` each."""

    def __init__(self, lib: ctypes.CDLL, rows: list[list[int]]) -> None:
        super().__init__(lib, len(rows[0]), len(rows))
        self._parity = self._tables(rows)

    def __call__(self, data: Sequence[bytes], size: int) -> list[bytes]:
        """The parity blocks of `data`, k blocks of `size` bytes each."""
        assert len(data) == self.k and all(len(block) == size for block in data), "k blocks of one size"
        return self._run(self._parity, self.m, data, size)


class Data(_Coder):
    """The k data blocks of a segment from any k of its k + m blocks, where block k + r is the data blocks times row r
    of `rows`: the matrix of the present blocks' rows (identity rows for data blocks), inverted, gives the missing data
    blocks' rows.  Their tables are kept for each set of present blocks (C(k+m, k) of them)."""

    def __init__(self, lib: ctypes.CDLL, rows: list[list[int]]) -> None:
        super().__init__(lib, len(rows[0]), len(rows))
        self._rows = rows
        self._invert = lib.gf_invert_matrix
        self._invert.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self._invert.restype = ctypes.c_int
        self._solved: dict[tuple[int, ...], ctypes.Array] = {}  # made twice by two threads at worst: the same tables

    def __call__(self, present: Sequence[int], blocks: Sequence[bytes], size: int) -> list[bytes]:
        """The k data blocks, in order, given k distinct block numbers `present` (each below k + m) and their blocks
        of `size` bytes each."""
        assert len(present) == len(blocks) == self.k and all(len(block) == size for block in blocks), \
            "k blocks of one size"
        missing = [i for i in range(self.k) if i not in present]
        if not missing:
            return [blocks[present.index(i)] for i in range(self.k)]
        key = tuple(present)
        tables = self._solved.get(key)
        if tables is None:
            tables = self._solved[key] = self._tables(self._solve(key, missing))
        rebuilt = iter(self._run(tables, len(missing), blocks, size))
        return [blocks[present.index(i)] if i in present else next(rebuilt) for i in range(self.k)]

    def _solve(self, present: tuple[int, ...], missing: list[int]) -> list[list[int]]:
        """The rows that make the `missing` data blocks of the `present` ones."""
        k = self.k
        matrix = (ctypes.c_ubyte * (k * k))(*(
            c for p in present for c in ([int(p == j) for j in range(k)] if p < k else self._rows[p - k])))
        inverse = (ctypes.c_ubyte * (k * k))()
        if self._invert(matrix, inverse, k) != 0:
            raise ValueError(f"blocks {list(present)} do not determine the data blocks")
        return [list(inverse[i * k:(i + 1) * k]) for i in missing]


def _library(library: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(library)
    except OSError:
        return None


def load(rows: list[list[int]], library: str = LIBRARY) -> Parity | None:
    """ISA-L's parity coder for these coefficient rows, or None where `library` is not installed."""
    lib = _library(library)
    return None if lib is None else Parity(lib, rows)


def load_data(rows: list[list[int]], library: str = LIBRARY) -> Data | None:
    """ISA-L's decoder of the code these parity rows make, or None where `library` is not installed."""
    lib = _library(library)
    return None if lib is None else Data(lib, rows)
