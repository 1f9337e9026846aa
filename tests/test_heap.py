"""Start-up memory goes back to the system once a half serves (Linux, glibc)."""

import os
import sys

import pytest

from tailscale_wsl2.heap import release_freed_heap
from tests.procstats import rss_bytes

MiB = 1 << 20


@pytest.mark.skipif(sys.platform != "linux", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_kernel() -> None:
    # Blocks below glibc's mmap threshold come from the heap; freeing every other
    # one leaves free pages between live blocks, which glibc keeps until trimmed.
    blocks = [bytearray(100_000) for _ in range(400)]
    del blocks[::2]
    before = rss_bytes(os.getpid())
    release_freed_heap()
    after = rss_bytes(os.getpid())
    assert before - after > 10 * MiB, f"only {(before - after) / MiB:.1f} MiB released"
    assert len(blocks) == 200  # the live half is untouched
