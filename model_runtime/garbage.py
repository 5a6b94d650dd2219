"""Python's garbage collector in a model process: start-up objects frozen, and its pauses counted.

A model process holds a few hundred thousand long-lived objects once numba, torch and the codecs are loaded;
a full collection walks them all (about 200 ms on a 2-core CI host, with the request that triggered it
waiting). Freezing them after ``initialize`` leaves later full collections only the objects made while
serving. ``PIXELSERVE_GC_FREEZE=0`` keeps the default behaviour (for measuring the difference).
"""
from __future__ import annotations

import gc
import os
import time
from typing import Any

from .counters import CounterFamily

FREEZE_ENV = "PIXELSERVE_GC_FREEZE"
PAUSE_METRIC = "pixelserve_gc_pause_seconds_total"
COLLECTIONS_METRIC = "pixelserve_gc_collections_total"
GENERATIONS = 3


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now to the permanent generation; returns how many were
    frozen (0 when ``PIXELSERVE_GC_FREEZE=0``)."""
    if os.environ.get(FREEZE_ENV, "1") == "0":
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Seconds and collections of the garbage collector in this process, per generation, flushed as
    ``pixelserve_gc_pause_seconds_total`` / ``pixelserve_gc_collections_total{model,generation}``."""

    def __init__(self, model: str, metric_family: Any = None) -> None:
        self.model = model
        labels = ("model", "generation")
        self._seconds = CounterFamily(metric_family, PAUSE_METRIC,
                                      "Seconds the Python garbage collector paused this model's process", labels)
        self._collections = CounterFamily(metric_family, COLLECTIONS_METRIC,
                                          "Python garbage collections in this model's process", labels)
        # Plain lists, written by the callback: it may run in the middle of any allocation, even inside flush().
        self._pending_seconds = [0.0] * GENERATIONS
        self._pending_collections = [0] * GENERATIONS
        self._started = 0.0
        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self._pending_seconds[generation] += time.perf_counter() - self._started
        self._pending_collections[generation] += 1

    def pending(self) -> list[tuple[float, int]]:
        """Seconds and collections per generation since the last flush."""
        return list(zip(self._pending_seconds, self._pending_collections))

    def flush(self) -> None:
        """Send what was counted since the last flush."""
        for generation in range(GENERATIONS):
            seconds, self._pending_seconds[generation] = self._pending_seconds[generation], 0.0
            collections, self._pending_collections[generation] = self._pending_collections[generation], 0
            # zeros too: every series exists from the first flush on, so that rates start from it
            self._seconds.add(seconds, self.model, str(generation))
            self._collections.add(collections, self.model, str(generation))
        self._seconds.flush()
        self._collections.flush()

    def close(self) -> None:
        """Stop counting."""
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
