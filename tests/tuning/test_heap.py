"""Once a half serves: start-up memory goes back to the system, the collector is tuned."""

import gc
import os
import sys
from collections.abc import Iterator

import pytest

from tailscale_wsl2.tuning.heap import GC_THRESHOLDS, settle_after_start_up
from tests.support.procstats import rss_bytes

MiB = 1 << 20


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """The test process keeps its own collector settings."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.skipif(sys.platform != "linux", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_kernel() -> None:
    # Blocks below glibc's mmap threshold come from the heap; freeing every other
    # one leaves free pages between live blocks, which glibc keeps until trimmed.
    blocks = [bytearray(100_000) for _ in range(400)]
    del blocks[::2]
    before = rss_bytes(os.getpid())
    settle_after_start_up()
    after = rss_bytes(os.getpid())
    assert before - after > 10 * MiB, f"only {(before - after) / MiB:.1f} MiB released"
    assert len(blocks) == 200  # the live half is untouched


def _watched_by_the_collector(thing: object) -> bool:
    generations = range(3)
    return any(thing is tracked for g in generations for tracked in gc.get_objects(g))


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    survivor = [object()]
    assert _watched_by_the_collector(survivor)
    settle_after_start_up()
    assert not _watched_by_the_collector(survivor)  # frozen: no collection walks it again
    assert gc.get_threshold() == GC_THRESHOLDS
    garbage_cycle: list[object] = []
    garbage_cycle.append(garbage_cycle)
    del garbage_cycle
    assert gc.collect() >= 1  # cycles made after start-up are still collected
