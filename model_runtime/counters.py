"""Prometheus counters of a Python-backend model, buffered per ``execute`` and flushed through Triton.

Each ``increment`` of a ``pb_utils.Metric`` is a message to the server, so values are summed per label set
in the model process and sent once per ``execute`` (``flush``).
"""
from __future__ import annotations

from typing import Any


class CounterFamily:
    """One counter family (a name, a description, fixed label names) and its buffered increments."""

    def __init__(self, metric_family: Any, name: str, description: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.label_names = label_names
        self._family = None if metric_family is None else metric_family(
            name=name, description=description, kind=metric_family.COUNTER)
        self._metrics: dict[tuple[str, ...], Any] = {}  # pb_utils.Metric by label values
        self._pending: dict[tuple[str, ...], float] = {}

    def add(self, value: float, *labels: str) -> None:
        """Add ``value`` to the series with these label values (in ``label_names`` order)."""
        self._pending[labels] = self._pending.get(labels, 0.0) + value

    def pending(self) -> dict[tuple[str, ...], float]:
        """What was added since the last flush, per label values."""
        return dict(self._pending)

    def flush(self) -> None:
        """Send the pending sums to Triton (nothing outside Triton) and start again from zero."""
        if self._family is not None:
            for labels, value in self._pending.items():
                if labels not in self._metrics:
                    self._metrics[labels] = self._family.Metric(labels=dict(zip(self.label_names, labels)))
                self._metrics[labels].increment(value)
        self._pending.clear()
