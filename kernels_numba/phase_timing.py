"""The do-nothing phase timer the kernels use when nobody times them."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Protocol


class Timer(Protocol):
    """What the kernels need of a phase timer (pixelserve.model_runtime.phases.PhaseTimer, or NULL_TIMER)."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        """A context whose time is charged to phase ``name``."""

    def count(self, name: str, calls: int) -> None:
        """Count ``calls`` occurrences of event ``name``."""


class NullTimer:
    """Same ``phase(name)`` interface as pixelserve.model_runtime.phases.PhaseTimer, timing nothing."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        """A context that does nothing."""
        return nullcontext()

    def count(self, name: str, calls: int) -> None:
        """Count nothing."""


NULL_TIMER = NullTimer()
