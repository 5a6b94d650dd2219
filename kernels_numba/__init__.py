"""Image preprocessing kernels (resize + normalise + HWC->CHW) for CUDA (numba.cuda) and the CPU (numba njit)."""
from typing import Any

from .cpu import preprocess_cpu
from .spec import PreprocessSpec
from .validation import ImageError, check_batch_shape, check_image

__all__ = ["PreprocessSpec", "preprocess_cpu", "ImageError", "check_batch_shape", "check_image"]  # + preprocess_cuda, on demand


def __getattr__(name: str) -> Any:
    # The CUDA path is imported on demand so that CPU-only hosts never initialise numba.cuda.
    if name == "preprocess_cuda":
        from .gpu import preprocess_cuda

        return preprocess_cuda
    raise AttributeError(name)
