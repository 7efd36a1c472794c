"""glibc malloc settings for a node process whose frames allocate and free the same large buffers every frame.

By default glibc hands large freed blocks back to the kernel (``munmap`` of blocks above the mmap threshold, trimming
of the heap top above the trim threshold), so the next frame's buffers of the same size are fresh pages again: the
perception node's worker thread took ~22,000 minor page faults a second at 30 Hz (about 740 a frame, 3 MB of pages
zeroed by the kernel). :func:`keep_freed_memory` raises both thresholds, so freed memory stays in the process for the
next frame (~30 faults a second); the resident size then stays at its high-water mark instead of breathing with
every frame. Pure ctypes; a no-op where the C library is not glibc.

The high-water mark itself is reached over the first frames: in the node, the worker's heap still grew by ~27 MB
over its first eight grounded frames after the warm-up (6,700 page faults; the first frame took 58 ms, 51 of them in
a forward pass that costs 19). :func:`reserve_heap` grows the calling thread's heap by that much at once, at
activation, so the first frames find their pages there (22 faults, 24 ms).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["keep_freed_memory", "reserve_heap", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "RESERVE_MB"]

LOG = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20
"""Blocks smaller than this come from the heap, not from their own ``mmap`` (glibc's largest allowed value on
64-bit, ``HEAP_MAX_SIZE / 2``; an image-sized buffer is 1-4 MB)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the top of a heap is handed back to the kernel only beyond this."""
RESERVE_MB = 48
"""What :func:`reserve_heap` adds to a thread's heap by default: the node's worker grew by ~27 MB over its first
frames of a one-entity instruction (measured); the rest is margin, not a measured need."""
_RESERVE_BLOCK = 4 << 20  # below MMAP_THRESHOLD: the blocks come from the thread's heap, not their own mmap

_kept = False  # keep_freed_memory() has set the thresholds in this process


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (None where there is none to load)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this process;
    True when both were set, False where ``mallopt`` is missing (not glibc) or refused them."""
    global _kept
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        LOG.debug("no mallopt in the C library (%s): allocator left as it is", ctypes.util.find_library("c"))
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        LOG.debug("mallopt refused the thresholds: allocator left as it is")
    _kept = _kept or ok
    return ok


def reserve_heap(mb: int = RESERVE_MB) -> int:
    """Grow the calling thread's malloc heap by ``mb`` MiB of touched pages and free them again: they stay in the
    process (:func:`keep_freed_memory`'s trim threshold), so that thread's next allocations up to that size fault
    no fresh pages. Call it in the thread that will allocate (each thread has its own arena). Returns the bytes
    reserved: 0 when :func:`keep_freed_memory` has not set the thresholds in this process (freed blocks would go
    straight back to the kernel) or ``mb`` is 0. Raises ValueError for a negative ``mb``."""
    if mb < 0:
        raise ValueError(f"reserve_heap needs mb >= 0, got {mb}")
    libc = _libc() if _kept and mb else None
    if libc is None:
        return 0
    malloc, free = libc.malloc, libc.free
    malloc.argtypes, malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    free.argtypes, free.restype = [ctypes.c_void_p], None
    blocks = []
    try:
        for _ in range(-(-(mb << 20) // _RESERVE_BLOCK)):
            b = malloc(_RESERVE_BLOCK)
            if not b:  # out of memory: keep what was reserved
                break
            ctypes.memset(b, 0, _RESERVE_BLOCK)  # touch every page
            blocks.append(b)
    finally:
        for b in reversed(blocks):  # the top of the heap first: the blocks merge back into one free top chunk
            free(b)
    return len(blocks) * _RESERVE_BLOCK
