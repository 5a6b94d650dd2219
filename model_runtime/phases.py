"""Time spent per phase of a model's request path, exported as Prometheus counters through Triton."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

METRIC_NAME = "pixelserve_phase_seconds_total"
COUNT_NAME = "pixelserve_phase_calls_total"


class PhaseTimer:
    """Wall-clock seconds and calls per named phase of ``execute``, flushed to Triton's metrics endpoint.

    ``sync`` (profiling only) is called at the end of every phase so that queued GPU work is charged to
    the phase that queued it; in normal serving it is None and a phase costs two ``perf_counter`` calls.
    """

    def __init__(self, model: str, metric_family: Any = None, sync: Callable[[], None] | None = None) -> None:
        self.model = model
        self.sync = sync
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._metrics: dict[str, tuple[Any, Any]] = {}  # pb_utils.Metric: seconds, calls
        self._families: tuple[Any, Any] | None = None
        if metric_family is not None:  # pb_utils.MetricFamily inside Triton
            counter = metric_family.COUNTER
            self._families = (
                metric_family(name=METRIC_NAME, description="Seconds spent in each phase of execute()", kind=counter),
                metric_family(name=COUNT_NAME, description="Times each phase of execute() ran", kind=counter),
            )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the time spent inside the block to phase ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start
            self._calls[name] = self._calls.get(name, 0) + 1

    def count(self, name: str, calls: int) -> None:
        """Add ``calls`` occurrences of an event that takes no time of its own (e.g. images copied one way)."""
        if calls:
            self._seconds[name] = self._seconds.get(name, 0.0)
            self._calls[name] = self._calls.get(name, 0) + calls

    def totals(self) -> dict[str, tuple[float, int]]:
        """Seconds and calls per phase since the last flush."""
        return {name: (self._seconds[name], self._calls[name]) for name in self._seconds}

    def flush(self) -> None:
        """Add the accumulated totals to the Prometheus counters and start again from zero."""
        if self._families is not None:
            for name, (seconds, calls) in self.totals().items():
                if name not in self._metrics:
                    labels = {"model": self.model, "phase": name}
                    self._metrics[name] = (self._families[0].Metric(labels=labels), self._families[1].Metric(labels=labels))
                seconds_metric, calls_metric = self._metrics[name]
                seconds_metric.increment(seconds)
                calls_metric.increment(calls)
        self._seconds.clear()
        self._calls.clear()
