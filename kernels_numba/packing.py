"""Packing differently sized images into one flat buffer so that one launch processes them all."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def image_sizes(images: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [N, 2]: (height, width) of each HWC image."""
    return np.array([img.shape[:2] for img in images], dtype=np.int64).reshape(len(images), 2)


def image_offsets(sizes: np.ndarray) -> np.ndarray:
    """int64 [N]: start of each image in the flat buffer (3 bytes per pixel, images back to back)."""
    pixels = sizes[:, 0] * sizes[:, 1] * 3
    offsets = np.zeros(len(sizes), np.int64)
    np.cumsum(pixels[:-1], out=offsets[1:])
    return offsets


def pack_images(images: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Copy HWC uint8 images back to back into one flat uint8 buffer (``out`` if given, e.g. pinned)."""
    total = sum(img.size for img in images)
    flat = np.empty(total, np.uint8) if out is None else out[:total]
    start = 0
    for img in images:
        flat[start:start + img.size] = img.reshape(-1)
        start += img.size
    return flat
