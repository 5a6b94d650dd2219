"""The do-nothing phase timer the kernels use when nobody times them."""
from contextlib import nullcontext


class NullTimer:
    """Same ``phase(name)`` interface as pixelserve.runtime.phases.PhaseTimer, timing nothing."""

    def phase(self, name: str):
        """A context that does nothing."""
        return nullcontext()

    def count(self, name: str, calls: int) -> None:
        """Count nothing."""


NULL_TIMER = NullTimer()
