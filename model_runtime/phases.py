"""Time spent per phase of a model's request path, exported as Prometheus counters through Triton."""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Mapping

from .counters import CounterFamily
from .slow_log import SlowLog

METRIC_NAME = "pixelserve_phase_seconds_total"
COUNT_NAME = "pixelserve_phase_calls_total"
STAGE_METRIC_NAME = "pixelserve_stage_seconds_total"
# The phase that is the whole execute(): the other phases are parts of it, so it is left out of their sum.
EXECUTE_PHASE = "execute"


class PhaseTimer:
    """Wall-clock seconds and calls per named phase of ``execute``, flushed to Triton's metrics endpoint.

    ``stages`` (optional) maps phase names onto coarser stages (e.g. copy_in, kernel, hand_off), whose
    seconds are exported as ``pixelserve_stage_seconds_total{model,stage}``; unmapped phases only count
    in the per-phase counters.
    ``slow_log`` (optional) is told each phase's seconds, to name the phases of a slow ``execute``.
    ``sync`` (profiling only) is called at the end of every phase so that queued GPU work is charged to
    the phase that queued it; in normal serving it is None and a phase costs two ``perf_counter`` calls.
    """

    def __init__(self, model: str, metric_family: Any = None, sync: Callable[[], None] | None = None,
                 stages: Mapping[str, str] | None = None, slow_log: SlowLog | None = None) -> None:
        self.model = model
        self.slow_log = slow_log
        self.sync = sync
        self.stages = dict(stages or {})
        self._seconds = CounterFamily(metric_family, METRIC_NAME, "Seconds spent in each phase of execute()", ("model", "phase"))
        self._calls = CounterFamily(metric_family, COUNT_NAME, "Times each phase of execute() ran", ("model", "phase"))
        self._stage_seconds = CounterFamily(
            metric_family if self.stages else None, STAGE_METRIC_NAME,
            "Seconds spent in each stage of execute() (phases grouped)", ("model", "stage"))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the time spent inside the block to phase ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            seconds = time.perf_counter() - start
            self._seconds.add(seconds, self.model, name)
            self._calls.add(1, self.model, name)
            if name in self.stages:
                self._stage_seconds.add(seconds, self.model, self.stages[name])
            if self.slow_log is not None:
                self.slow_log.phase(name, seconds)

    @contextmanager
    def execute(self, requests: int) -> Iterator[None]:
        """Around one ``execute()`` of ``requests`` requests: charged whole to phase ``EXECUTE_PHASE``, and watched
        by the slow log. Its time minus the other phases' is the model's own code between them; Triton's compute
        time minus it is the Python backend's handling around ``execute()``."""
        with self.slow_log.watching(requests) if self.slow_log is not None else nullcontext():
            start = time.perf_counter()
            try:
                yield
            finally:
                self._seconds.add(time.perf_counter() - start, self.model, EXECUTE_PHASE)
                self._calls.add(1, self.model, EXECUTE_PHASE)

    def count(self, name: str, calls: int) -> None:
        """Add ``calls`` occurrences of an event that takes no time of its own (e.g. images copied one way)."""
        if calls:
            self._seconds.add(0.0, self.model, name)
            self._calls.add(calls, self.model, name)

    def totals(self) -> dict[str, tuple[float, int]]:
        """Seconds and calls per phase since the last flush."""
        calls = {phase: n for (_, phase), n in self._calls.pending().items()}
        return {phase: (seconds, int(calls[phase])) for (_, phase), seconds in self._seconds.pending().items()}

    def flush(self) -> None:
        """Add the accumulated totals to the Prometheus counters and start again from zero."""
        for family in (self._seconds, self._calls, self._stage_seconds):
            family.flush()
