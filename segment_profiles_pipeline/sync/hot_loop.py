"""Garbage-collector pacing for the sync's chunk loop.

Why: a first sync makes a few short-lived, acyclic Python objects per record (the row, its
planned message, its acknowledgement), hundreds of thousands per sync. CPython's cyclic
collector runs a young collection every 700 allocations and promotes whatever is alive at that
moment, so the rows of the chunk being sent are traversed again and again and end up in full
collections of the whole heap: measured at ~30% of the sync process's CPU on a 100k first sync
(README, Performance). Reference counting frees those objects anyway; the collector finds
nothing in them. Raising the young threshold while the loop runs cuts that cost to about nothing
and still collects cycles (made elsewhere in the process) in bounded time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

SYNC_GC_THRESHOLD = (50_000, 20, 100)
"""Allocations before a young collection, and the young/middle collections before an older one.

50,000 is a few chunks' worth of objects between collections instead of 700; the older
generations are spaced out in proportion. Collections still happen: memory held in cycles stays
bounded while a sync runs."""


@contextmanager
def fewer_collections(threshold: tuple[int, int, int] = SYNC_GC_THRESHOLD) -> Iterator[None]:
    """Run the block with the collector's thresholds at ``threshold``; restore them afterwards
    (also when the block raises), so the rest of the process keeps its own policy."""
    before = gc.get_threshold()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)
