"""`hub.core.heap.settle`: what a process loaded at start-up leaves the collector's view."""

from __future__ import annotations

import gc
import weakref

from hub.core import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can reclaim it


def test_settle_collects_the_garbage_then_freezes_what_lives() -> None:
    gc.unfreeze()
    garbage, kept = Node(), Node()
    gone = weakref.ref(garbage)
    del garbage
    try:
        heap.settle()
        assert gone() is None  # collected before the freeze, not frozen with the rest
        assert gc.get_freeze_count() > 0
        assert all(o is not kept for o in gc.get_objects())  # frozen: no collection walks it
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())  # back in view once unfrozen
