"""Keep freed memory in the process for reuse (glibc `mallopt`), for CPU training.

A training step allocates and frees the same tens of large tensors every time (activations of
[256, 32, 47, 47] floats are 72 MB each; robot-size critic gradients ~300 MB). glibc serves every
block above its mmap threshold (at most 32 MB) with a fresh `mmap` and returns it with `munmap`
on free, so each step page-faults and zeroes gigabytes of new pages again. Telling malloc never
to mmap and never to trim the heap keeps those pages (bench/learner_memory.py counts the page
faults, bench/learner_update.py times a robot-size update with the setting). The cost is that the
learner's resident memory stays at its peak, which it reaches again every step anyway.

CUDA tensors are unaffected (PyTorch's caching allocator already reuses device memory); other
C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

_TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MB steps rather than per block
_NO_TRIM = -1  # mallopt(3): a trim threshold of -1 disables trimming completely


def keep_freed_memory() -> bool:
    """Configure glibc malloc to reuse freed blocks instead of unmapping them; True if applied.

    Call once at start, before the big allocations (later calls are harmless)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt: leaving malloc as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_MAX, 0),
            (M_TRIM_THRESHOLD, _NO_TRIM),
            (M_TOP_PAD, _TOP_PAD_BYTES),
        )
    )
    if not ok:
        log.warning("mallopt refused a setting: CPU training may spend time page-faulting")
    return ok
