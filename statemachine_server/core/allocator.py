"""The C allocator, set for a server's large short-lived buffers (glibc only).

A server allocates and frees large buffers on every read and write: asyncio reads
into a fresh 256 KiB ``bytes`` and shrinks it, a read of long lines decodes into
one large ``str``, a tick's replies are joined and encoded. glibc's ``malloc``
serves a block above its ``mmap`` threshold (128 KiB at first) with a mapping of
its own, and gives the top of its heap back to the system once more than the trim
threshold (twice that) is free there. Its dynamic rule raises both when such a
mapped block is freed, but a read buffer shrunk before it is freed never raises
them: a process can stay in the state where every read maps, remaps and unmaps
256 KiB, with its page faults. Measured (docs/performance.md): a 64 KiB line's
echo cost 3.3x more in process without these settings (67.5 against 20.3 µs), and
with 5,000 idle connections the echo server could stay there for whole runs, at
2.3-2.4x the CPU per line.

:func:`tune_malloc` fixes both thresholds at values glibc's own rule may reach
(its ceiling for the mmap threshold is 32 MiB on 64-bit): blocks below 4 MiB come
from the heap, and up to 32 MiB of free heap is kept for the next reads rather
than returned and faulted in again. The cost is memory a burst leaves mapped, at
most that much. It runs once, for programs (``statemachine-server run`` and
:meth:`Kernel.run`), never on import: a library does not change its host
process's allocator. Settings from the environment win: with any of
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or a
``glibc.malloc`` tunable in ``GLIBC_TUNABLES`` set, nothing is changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20
# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OWN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_outcome: str | None = None


def tune_malloc(environ: Mapping[str, str] = os.environ) -> str:
    """Set glibc's thresholds as above, once per process; what was done, in words."""
    global _outcome
    if _outcome is not None:
        return _outcome
    if any(name in environ for name in _OWN_SETTINGS) or "glibc.malloc." in environ.get(
        "GLIBC_TUNABLES", ""
    ):
        _outcome = "left as the environment sets it"
    elif not sys.platform.startswith("linux"):
        _outcome = "left: not Linux"
    else:
        import ctypes  # only here: importing it costs a few milliseconds

        try:
            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version  # noqa: B018  # glibc's (musl has a mallopt that does nothing)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            _outcome = "left: not glibc"
        else:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
                _M_TRIM_THRESHOLD, TRIM_THRESHOLD
            ):
                _outcome = (
                    f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
                    f"trim threshold {TRIM_THRESHOLD >> 20} MiB"
                )
            else:
                _outcome = "left: mallopt refused"
    return _outcome
