"""A slow-request log for a model process: which ``execute()``, and which phase of it, took longer than a limit.

Percentiles say that some requests are slow, not where they waited. A line per slow ``execute()`` in Triton's
log, with the phases that made it slow and the wall-clock time, lets a stall be placed inside the model
(a phase), around it (the Python backend, the server) or on the GPU shared with other processes.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from .parameters import milliseconds_parameter

THRESHOLD_PARAMETER = "slow_log_ms"


def wall_clock(unix_seconds: float) -> str:
    """HH:MM:SS.mmm in local time, as Triton's log writes it."""
    return time.strftime("%H:%M:%S", time.localtime(unix_seconds)) + f".{int(unix_seconds * 1e3) % 1000:03d}"


def threshold_from_parameters(parameters: dict[str, str]) -> float:
    """Seconds from the model's ``slow_log_ms`` parameter (0: off); a missing parameter means off."""
    return milliseconds_parameter(parameters, THRESHOLD_PARAMETER, default="0")


class SlowLog:
    """Collects the phases of one ``execute()`` and writes one line when it took longer than ``threshold_s``.

    At most one line per ``every_s`` seconds is written; the next line says how many slow executions were left
    out in between, so that a stall that slows everything cannot flood the log.
    """

    def __init__(self, model: str, threshold_s: float, write: Callable[[str], None], every_s: float = 1.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.model = model
        self.threshold_s = threshold_s
        self._write = write
        self._every_s = every_s
        self._clock = clock
        self._phases: list[tuple[str, float]] | None = None  # of the execute() in progress (one at a time)
        self._started = 0.0
        self._last_line = -float("inf")
        self._left_out = 0

    @property
    def enabled(self) -> bool:
        return self.threshold_s > 0

    def start(self) -> None:
        """An ``execute()`` begins."""
        if self.enabled:
            self._phases, self._started = [], self._clock()

    def phase(self, name: str, seconds: float) -> None:
        """A phase of the current ``execute()`` took ``seconds``."""
        if self._phases is not None:
            self._phases.append((name, seconds))

    @contextmanager
    def watching(self, requests: int) -> Iterator[None]:
        """Around one ``execute()`` of ``requests`` requests: ``start`` before, ``finish`` after, even on error."""
        self.start()
        try:
            yield
        finally:
            self.finish(requests)

    def finish(self, requests: int) -> float | None:
        """The ``execute()`` of ``requests`` requests ends; returns its seconds when it was slow and logged."""
        phases, self._phases = self._phases, None
        if phases is None:
            return None
        now = self._clock()
        seconds = now - self._started
        if seconds <= self.threshold_s:
            return None
        if now - self._last_line < self._every_s:
            self._left_out += 1
            return None
        slowest = sorted(phases, key=lambda item: -item[1])[:4]
        inside = sum(s for _, s in phases)
        text = (f"{self.model}: slow execute() at {wall_clock(time.time())}: {seconds * 1e3:.1f} ms for {requests} request(s); "
                f"phases {', '.join(f'{name} {s * 1e3:.1f}' for name, s in slowest)} ms; "
                f"outside the timed phases {(seconds - inside) * 1e3:.1f} ms")
        if self._left_out:
            text += f"; {self._left_out} slow execute() left out of the log since the last line"
        self._last_line, self._left_out = now, 0
        self._write(text)
        return seconds
