"""zfec's parity blocks computed by Intel's ISA-L (Debian's libisal2), where it is installed.

zfec multiplies byte by byte through a table; ISA-L's `ec_encode_data` multiplies in GF(2^8) with SIMD, from the
coefficients it is given.  Given zfec's (erasure.parity_rows), in the same field (x^8 + x^4 + x^3 + x^2 + 1), it makes
the same blocks at about a twentieth of zfec's CPU.  ctypes lets the GIL go for the call.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

LIBRARY = "libisal.so.2"  # by its soname: ctypes.util.find_library runs `ldconfig -p` in a child process


class Parity:
    """The parity blocks of `k` data blocks, one row of `rows` each, written into buffers each thread keeps and copied
    out as bytes (what LevelDB and the holders take)."""

    def __init__(self, lib: ctypes.CDLL, rows: list[list[int]]) -> None:
        self.k, self.m = len(rows[0]), len(rows)
        self._encode = lib.ec_encode_data
        self._encode.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p]
        self._encode.restype = None
        coefficients = (ctypes.c_ubyte * (self.k * self.m))(*(c for row in rows for c in row))
        self._tables = (ctypes.c_ubyte * (32 * self.k * self.m))()
        lib.ec_init_tables(self.k, self.m, coefficients, self._tables)
        self._local = threading.local()

    def __call__(self, data: Sequence[bytes], size: int) -> list[bytes]:
        """The parity blocks of `data`, k blocks of `size` bytes each."""
        assert len(data) == self.k and all(len(block) == size for block in data), "k blocks of one size"
        local = self._local
        if getattr(local, "size", 0) < size:
            local.size, local.out = size, [bytearray(size) for _ in range(self.m)]
            local.coding = (ctypes.c_void_p * self.m)(
                *(ctypes.addressof(ctypes.c_char.from_buffer(block)) for block in local.out))
        self._encode(size, self.k, self.m, self._tables, (ctypes.c_char_p * self.k)(*data), local.coding)
        return [bytes(memoryview(block)[:size]) for block in local.out]


def load(rows: list[list[int]], library: str = LIBRARY) -> Parity | None:
    """ISA-L's coder for these coefficient rows, or None where `library` is not installed."""
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None
    return Parity(lib, rows)
