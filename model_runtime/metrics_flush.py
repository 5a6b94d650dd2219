"""When a model process sends its counters to Triton: on a timer thread, or at the end of every ``execute``.

Each counter increment is a round trip to the server process. Sent at the end of every ``execute``, the
few dozen increments of a batch added milliseconds to every request under load (H100: perf/results/README.md,
"Counters off the request path"); a daemon thread sends them once per interval instead.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from .parameters import milliseconds_parameter

INTERVAL_PARAMETER = "metrics_interval_ms"


def interval_from_parameters(parameters: dict[str, str]) -> float:
    """Seconds between flushes from the model's ``metrics_interval_ms`` parameter (0: every execute)."""
    return milliseconds_parameter(parameters, INTERVAL_PARAMETER)


class MetricsFlusher:
    """Calls ``flushes`` every ``interval_s`` seconds on a daemon thread, or, with an interval of 0, on each
    ``after_execute``; ``close`` stops the thread and flushes what is left."""

    def __init__(self, flushes: Sequence[Callable[[], None]], interval_s: float,
                 on_error: Callable[[str], None] = lambda message: None) -> None:
        self._flushes = tuple(flushes)
        self._interval_s = interval_s
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
            self._thread.start()

    def _flush(self) -> None:
        for flush in self._flushes:
            try:
                flush()
            except Exception as exc:  # a failed send must not stop the others or the thread
                self._on_error(f"sending counters to Triton failed: {exc!r}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._flush()

    def after_execute(self) -> None:
        """Flush now when there is no timer thread (interval 0); otherwise nothing."""
        if self._thread is None:
            self._flush()

    def close(self) -> None:
        """Stop the timer thread and send what is still pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._flush()
