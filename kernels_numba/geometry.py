"""Where each output pixel samples its source image: one affine map, one valid window and the image's
place in the packed input, as one row of per-image parameters."""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .arrays import Params
from .pixel_math import (
    HEIGHT, OFFSET_X, OFFSET_Y, PARAM_COLUMNS, ROW_COUNT, ROW_LO, ROWS_START, SCALE_X, SCALE_Y, START, WIDTH, X0, X1, Y0,
    Y1, antialias_window,
)
from .spec import PreprocessSpec


def shorter_side_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size after torchvision ``Resize(target)``: shorter side = target, longer side truncated."""
    if height <= width:
        return target, int(target * width / height)
    return int(target * height / width), target


def letterbox_size(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """Size of the image inside the letterbox: aspect kept, fits the output, at least 1x1."""
    scale = min(spec.out_height / height, spec.out_width / width)
    new_h = min(spec.out_height, max(1, int(round(height * scale))))
    new_w = min(spec.out_width, max(1, int(round(width * scale))))
    return new_h, new_w


def image_params(height: int, width: int, start: int, spec: PreprocessSpec, row: Params) -> None:
    """Fill one parameter row for an image of height x width stored at byte ``start`` of the packed input.

    An output pixel (oy, ox) inside the window [Y0, Y1) x [X0, X1) samples the source around
    ``(oy - Y0 + 0.5) * SCALE_Y + OFFSET_Y`` (pixel-area centres, like PIL, OpenCV and torch
    ``align_corners=False``); outside the window it is padding.
    """
    out_h, out_w = spec.out_height, spec.out_width
    row[:] = 0.0
    row[[START, HEIGHT, WIDTH]] = start, height, width
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


def source_rows(row: Params) -> tuple[int, int]:
    """(first, end) of the source rows the antialias filter reads for the output rows in the window."""
    first = antialias_window(row[Y0], row[Y0], row[SCALE_Y], row[OFFSET_Y], int(row[HEIGHT]))[0]
    end = antialias_window(row[Y1] - 1, row[Y0], row[SCALE_Y], row[OFFSET_Y], int(row[HEIGHT]))[1]
    return first, end


@functools.lru_cache(maxsize=1024)
def _placed_at_zero(height: int, width: int, spec: PreprocessSpec) -> Params:
    """The parameter row of a height x width image stored at offset 0 (traffic repeats a few camera sizes)."""
    row = np.empty(PARAM_COLUMNS, np.float64)
    image_params(height, width, 0, spec, row)
    if spec.antialias:
        first, end = source_rows(row)
        row[[ROW_LO, ROW_COUNT]] = first, end - first
    row.flags.writeable = False
    return row


def batch_params(shapes: Sequence[tuple[int, ...]], spec: PreprocessSpec) -> Params:
    """float64 [N, PARAM_COLUMNS] parameter rows for HWC images of the given shapes, packed back to back."""
    params = np.empty((len(shapes), PARAM_COLUMNS), np.float64)
    start = rows_start = 0
    for i, shape in enumerate(shapes):
        height, width = int(shape[0]), int(shape[1])
        row = params[i]
        row[:] = _placed_at_zero(height, width, spec)
        row[START] = start
        start += height * width * 3
        if spec.antialias:
            row[ROWS_START] = rows_start
            rows_start += int(row[ROW_COUNT]) * spec.out_width * 3
    return params


def row_buffer_size(params: Params, spec: PreprocessSpec) -> int:
    """float32 elements the antialiased path's row buffer needs for these parameter rows."""
    if len(params) == 0 or not spec.antialias:
        return 0
    last = params[-1]
    return int(last[ROWS_START] + last[ROW_COUNT] * spec.out_width * 3)


def max_row_count(params: Params) -> int:
    """The most source rows any image of the batch needs filtered (antialiased path)."""
    return int(params[:, ROW_COUNT].max()) if len(params) else 0
