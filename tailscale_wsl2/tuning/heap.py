"""A half's memory once it serves: start-up's garbage gone, the collector tuned.

Start-up (imports, planning, discovery) allocates and frees a lot; glibc keeps
the freed pages of its heap mapped for reuse, and a half then sits idle for
days with that memory counted against it. `malloc_trim` returns every whole
free page of the heap to the kernel. It is glibc's: on Windows, or a Linux without glibc, that
step is skipped.

Python's cyclic garbage collector runs a young collection whenever container
objects allocated outnumber those freed by 700. A relay frees what a connection
allocated by reference counting alone, so the collector finds next to nothing,
but with a few hundred connections in flight their objects cross that mark again
and again, and each full collection walks every object start-up left: a stall
for every connection in flight. So once serving, the half freezes what start-up
left (no collection looks at it again) and collects young objects every 20,000
allocations instead (what that bought is in bench/NOTEBOOK.md).
"""

import ctypes
import gc
import sys

__all__ = ["GC_THRESHOLDS", "settle_after_start_up"]

# Young collections every 20,000 net allocations (not 700); the older generations
# every 20 of the one below (not 10). Measured in bench/NOTEBOOK.md.
GC_THRESHOLDS = (20_000, 20, 20)


def settle_after_start_up() -> None:
    """Collect start-up's garbage, freeze the rest, tune the collector, trim the heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    _trim_malloc_heap()


def _trim_malloc_heap() -> None:
    """Hand the heap's free pages back to the kernel (glibc only)."""
    if sys.platform != "linux":
        return
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    malloc_trim(0)
