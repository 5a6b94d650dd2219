"""Packing differently sized images into one flat buffer so that one launch processes them all."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pack_images(images: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Copy HWC uint8 images back to back into one flat uint8 buffer (``out`` if given, e.g. pinned)."""
    total = sum(img.size for img in images)
    flat = np.empty(total, np.uint8) if out is None else out[:total]
    start = 0
    for img in images:
        flat[start:start + img.size] = img.reshape(-1)
        start += img.size
    return flat
