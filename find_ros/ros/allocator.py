"""glibc malloc settings for a node process whose frames allocate and free the same large buffers every frame.

By default glibc hands large freed blocks back to the kernel (``munmap`` of blocks above the mmap threshold, trimming
of the heap top above the trim threshold), so the next frame's buffers of the same size are fresh pages again: the
perception node's worker thread took ~22,000 minor page faults a second at 30 Hz (about 740 a frame, 3 MB of pages
zeroed by the kernel). :func:`keep_freed_memory` raises both thresholds, so freed memory stays in the process for the
next frame (~30 faults a second); the resident size then stays at its high-water mark instead of breathing with
every frame. Pure ctypes; a no-op where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

LOG = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20
"""Blocks smaller than this come from the heap, not from their own ``mmap`` (glibc's largest allowed value on
64-bit, ``HEAP_MAX_SIZE / 2``; an image-sized buffer is 1-4 MB)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the top of a heap is handed back to the kernel only beyond this."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this process;
    True when both were set, False where ``mallopt`` is missing (not glibc) or refused them."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        LOG.debug("no mallopt in the C library (%s): allocator left as it is", name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        LOG.debug("mallopt refused the thresholds: allocator left as it is")
    return ok
