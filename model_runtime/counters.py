"""Prometheus counters of a Python-backend model, summed in the model process and sent to Triton in batches.

Each ``increment`` of a ``pb_utils.Metric`` is a round trip to the server process, so values are summed per
label set here and only the change since the last ``flush`` is sent. ``add`` and ``flush`` may run on two
threads (``execute`` adds, ``MetricsFlusher`` flushes): the totals only grow, and a flush sends the difference
between a copy of them and what it sent before, so nothing is lost or sent twice.
"""
from __future__ import annotations

from typing import Any


class CounterFamily:
    """One counter family (a name, a description, fixed label names) and what was added to each series."""

    def __init__(self, metric_family: Any, name: str, description: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.label_names = label_names
        self._family = None if metric_family is None else metric_family(
            name=name, description=description, kind=metric_family.COUNTER)
        self._metrics: dict[tuple[str, ...], Any] = {}  # pb_utils.Metric by label values
        self._totals: dict[tuple[str, ...], float] = {}  # written by one thread only (the adder)
        self._sent: dict[tuple[str, ...], float] = {}  # written by the flushing thread only

    def add(self, value: float, *labels: str) -> None:
        """Add ``value`` to the series with these label values (in ``label_names`` order)."""
        self._totals[labels] = self._totals.get(labels, 0.0) + value

    def _changed(self) -> dict[tuple[str, ...], float]:
        totals = dict(self._totals)  # one C-level copy: consistent while another thread adds
        return {labels: total for labels, total in totals.items() if self._sent.get(labels) != total}

    def pending(self) -> dict[tuple[str, ...], float]:
        """What was added since the last flush, per label values (series added to since, zeros included)."""
        return {labels: total - self._sent.get(labels, 0.0) for labels, total in self._changed().items()}

    def flush(self) -> None:
        """Send what was added since the last flush to Triton (nothing outside Triton)."""
        for labels, total in self._changed().items():
            if self._family is not None:
                if labels not in self._metrics:
                    self._metrics[labels] = self._family.Metric(labels=dict(zip(self.label_names, labels)))
                self._metrics[labels].increment(total - self._sent.get(labels, 0.0))
            self._sent[labels] = total  # the total itself: a sum of differences would drift in floating point
