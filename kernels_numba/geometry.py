"""Where each output pixel samples its source image: one affine map and one valid window per image."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .spec import PreprocessSpec

# Columns of the per-image geometry row (float64).
SCALE_Y, SCALE_X, OFFSET_Y, OFFSET_X, Y0, Y1, X0, X1 = range(8)
GEOMETRY_COLUMNS = 8


def shorter_side_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size after torchvision ``Resize(target)``: shorter side = target, longer side truncated."""
    if height <= width:
        return target, int(target * width / height)
    return int(target * height / width), target


def image_geometry(height: int, width: int, spec: PreprocessSpec) -> np.ndarray:
    """float64 [8] geometry row for one image.

    An output pixel (oy, ox) inside the window [Y0, Y1) x [X0, X1) samples the source at
    ``sy = (oy - Y0 + 0.5) * SCALE_Y + OFFSET_Y - 0.5`` (half-pixel centres, like OpenCV and
    torch ``align_corners=False``); outside the window it is padding.
    """
    out_h, out_w = spec.out_height, spec.out_width
    row = np.zeros(GEOMETRY_COLUMNS, np.float64)
    if spec.resize_mode == "stretch":
        row[[SCALE_Y, SCALE_X]] = height / out_h, width / out_w
        row[[Y1, X1]] = out_h, out_w
    elif spec.resize_mode == "shorter_side_crop":
        target = int(round(min(out_h, out_w) / spec.crop_fraction))
        new_h, new_w = shorter_side_size(height, width, target)
        top = int(round((new_h - out_h) / 2.0))
        left = int(round((new_w - out_w) / 2.0))
        row[[SCALE_Y, SCALE_X]] = height / new_h, width / new_w
        row[[OFFSET_Y, OFFSET_X]] = top * height / new_h, left * width / new_w
        row[[Y1, X1]] = out_h, out_w
    else:  # letterbox
        new_h, new_w = letterbox_size(height, width, spec)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        row[[SCALE_Y, SCALE_X]] = height / new_h, width / new_w
        row[[Y0, Y1, X0, X1]] = top, top + new_h, left, left + new_w
    return row


def letterbox_size(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """Size of the image inside the letterbox: aspect kept, fits the output, at least 1x1."""
    scale = min(spec.out_height / height, spec.out_width / width)
    new_h = min(spec.out_height, max(1, int(round(height * scale))))
    new_w = min(spec.out_width, max(1, int(round(width * scale))))
    return new_h, new_w


def batch_geometry(shapes: Sequence[tuple[int, int]], spec: PreprocessSpec) -> np.ndarray:
    """float64 [N, 8] geometry rows for images of the given (height, width)."""
    out = np.empty((len(shapes), GEOMETRY_COLUMNS), np.float64)
    for i, (h, w) in enumerate(shapes):
        out[i] = image_geometry(h, w, spec)
    return out
