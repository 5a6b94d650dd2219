"""Checks on one incoming image, with messages that name the problem."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from .spec import PreprocessSpec


class ImageError(ValueError):
    """An input image the preprocessing cannot accept; ``reason`` is a short fixed word for metrics
    (dtype, rank, channels, empty, oversized)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_batch_shape(shape: Sequence[int], spec: PreprocessSpec, max_batch: int) -> None:
    """Raise ImageError unless ``shape`` (as Triton reports it, before any array is made) is a sane [N, H, W, 3] batch.

    Plain Python integers, so absurd, negative or overflowing dimensions are caught here instead of in a
    numpy or DLPack view, and the byte size (N*H*W*3) is bounded by ``max_batch`` images of the largest side.
    """
    dims = [int(d) for d in shape]
    if len(dims) != 4:
        raise ImageError(f"expected [batch, height, width, 3], got shape {dims}", "rank")
    if any(d < 0 for d in dims):
        raise ImageError(f"negative dimension in shape {dims}", "negative")
    count, height, width, channels = dims
    if not 1 <= count <= max_batch:
        raise ImageError(f"{count} images in one request, expected 1..{max_batch} (shape {dims})", "batch")
    check_image((height, width, channels), np.dtype(np.uint8), spec)


def check_image(shape: tuple[int, ...], dtype: npt.DTypeLike, spec: PreprocessSpec) -> None:
    """Raise ImageError unless (shape, dtype) is a non-empty HWC uint8 image with 3 channels within the size limit."""
    if np.dtype(dtype) != np.uint8:
        raise ImageError(f"image dtype must be uint8, got {np.dtype(dtype).name}", "dtype")
    if len(shape) != 3:
        raise ImageError(f"image must have rank 3 (height, width, channels), got rank {len(shape)} shape {list(shape)}", "rank")
    height, width, channels = shape
    if channels != 3:
        raise ImageError(f"image must have 3 channels ({spec.input_order}), got {channels}", "channels")
    if height == 0 or width == 0:
        raise ImageError(f"image is empty: {height}x{width}", "empty")
    if max(height, width) > spec.max_image_side:
        raise ImageError(
            f"image {height}x{width} exceeds the maximum side of {spec.max_image_side} pixels (parameter max_image_side)",
            "oversized",
        )
