"""Python's garbage collector in a model process: how long it paused the process, per generation.

Measured on the H100 (perf/results/README.md, "The collector"): while serving, the model processes ran only
young-generation collections, a few dozen in minutes of load at about 0.15 ms each; freezing the start-up
objects (gc.freeze) changed nothing measurable and was left out. These counters keep that visible.
"""
from __future__ import annotations

import gc
import time
from typing import Any

from .counters import CounterFamily

PAUSE_METRIC = "pixelserve_gc_pause_seconds_total"
COLLECTIONS_METRIC = "pixelserve_gc_collections_total"
GENERATIONS = 3


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
        # Running totals, written only by the callback (collections never overlap): it may run in the middle of
        # any allocation, on any thread, even inside flush(). flush() sends what they gained since it last looked.
        self._seconds_total = [0.0] * GENERATIONS
        self._collections_total = [0] * GENERATIONS
        self._flushed = [(0.0, 0)] * GENERATIONS
        self._started = 0.0
        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self._seconds_total[generation] += time.perf_counter() - self._started
        self._collections_total[generation] += 1

    def pending(self) -> list[tuple[float, int]]:
        """Seconds and collections per generation since the last flush."""
        totals = zip(list(self._seconds_total), list(self._collections_total))
        return [(seconds - s0, count - c0) for (seconds, count), (s0, c0) in zip(totals, self._flushed)]

    def flush(self) -> None:
        """Send what was counted since the last flush."""
        totals = list(zip(list(self._seconds_total), list(self._collections_total)))
        for generation, ((seconds, count), (s0, c0)) in enumerate(zip(totals, self._flushed)):
            # zeros too: every series exists from the first flush on, so that rates start from it
            self._seconds.add(seconds - s0, self.model, str(generation))
            self._collections.add(count - c0, self.model, str(generation))
        self._flushed = totals
        self._seconds.flush()
        self._collections.flush()

    def close(self) -> None:
        """Stop counting."""
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
