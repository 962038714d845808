"""How a serving process holds memory: the garbage collector's young threshold and the C heap's thresholds."""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger("polyroute")

# Objects the collector tracks, allocated and not yet freed, before it runs a young collection (Python's default: 700).
# A proxied request frees what it allocates when it ends (it makes no reference cycles), but sixteen requests in
# flight hold more than 700 at once, so with the default the collector ran every few dozen requests and found
# nothing: about 3% of a worker's CPU. Cycles that do form (a closed connection's protocol objects) are still found.
GC_YOUNG_THRESHOLD = 10_000

# glibc's heap. By default it hands back to the kernel any free memory over 128 KiB at the top of the heap, and
# serves blocks of 128 KiB and more with a mapping of their own (both thresholds then move with what is freed). A
# coding agent's body, its parsed history and the body sent upstream are blocks of that size, allocated and freed by
# every request: the heap shrank and grew again each time, and every page taken back cost a page fault (4-12 per
# 100 KiB request; about 0.1 with these settings). Blocks up to MMAP_THRESHOLD (above the largest request body by
# default) now come from the heap, and up to TRIM_THRESHOLD of free memory stays with the process for the next
# request instead of going back to the kernel.
M_TRIM_THRESHOLD = -1  # mallopt(3) parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_for_serving() -> None:
    """Set the collector's and the C heap's thresholds for a process that serves requests (once, at startup)."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    tune_heap()


def tune_heap() -> bool:
    """glibc's heap thresholds (above); False where the C library is not glibc (musl, macOS), left as it is."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # one without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("the C library refused the heap thresholds; its defaults stay")
    return done
