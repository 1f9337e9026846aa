"""Giving start-up memory back once a half is serving (Linux, glibc).

Start-up (imports, planning, discovery) allocates and frees a lot; glibc keeps
the freed pages of its heap mapped for reuse, and a half then sits idle for
days with that memory counted against it. `malloc_trim` returns every whole
free page of the heap to the kernel (about 0.6 MB of a half's 30 MB here, see
docs/benchmarks.md). It is glibc's: on Windows, or a Linux without glibc, there
is nothing to call and nothing is done.
"""

import ctypes
import gc
import sys

__all__ = ["release_freed_heap"]


def release_freed_heap() -> None:
    """Collect garbage, then hand the heap's free pages back to the kernel."""
    if sys.platform != "linux":
        return
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    gc.collect()
    malloc_trim(0)
