"""Packing differently sized images into one flat buffer so that one launch processes them all."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .arrays import Image, Pixels


def packed_size(images: Sequence[Image]) -> int:
    """Bytes the HWC uint8 images (host or device arrays) take back to back."""
    # math.prod, not np.prod: numpy turns a torch.Size into an array first (about 25 us a call on the H100 host).
    return sum(math.prod(img.shape) for img in images)


def pack_images(images: Sequence[Pixels]) -> Pixels:
    """Copy HWC uint8 images back to back into one flat uint8 buffer."""
    flat = np.empty(packed_size(images), np.uint8)
    start = 0
    for img in images:
        flat[start:start + img.size] = img.reshape(-1)
        start += img.size
    return flat
