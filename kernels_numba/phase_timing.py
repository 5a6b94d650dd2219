"""The do-nothing phase timer the kernels use when nobody times them."""
from contextlib import nullcontext


class NullTimer:
    """Same ``phase(name)`` interface as model_runtime.phases.PhaseTimer, timing nothing."""

    def phase(self, name: str):
        """A context that does nothing."""
        return nullcontext()


NULL_TIMER = NullTimer()
