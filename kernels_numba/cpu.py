"""CPU path: the shared per-pixel math in parallel njit loops (serves CPU-only hosts and CI)."""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from .arrays import Norm, Output, Params, Pixels, Rows
from .geometry import batch_params, max_row_count, row_buffer_size
from .packing import pack_images
from .pixel_math import filter_column_pixel, filter_row_pixel, write_output_pixel
from .spec import PreprocessSpec


@numba.njit(parallel=True, cache=True)
def _bilinear(src: Pixels, params: Params, norm: Norm, swap_rb: bool, out: Output) -> None:
    n_images, _, out_h, out_w = out.shape
    for row in numba.prange(n_images * out_h):
        n = row // out_h
        oy = row - n * out_h
        for ox in range(out_w):
            write_output_pixel(src, params, norm, swap_rb, out, n, oy, ox)


@numba.njit(parallel=True, cache=True)
def _antialias_rows(src: Pixels, params: Params, rows: Rows, out_w: int, max_rows: int) -> None:
    for i in numba.prange(params.shape[0] * max_rows):
        n = i // max_rows
        r = i - n * max_rows
        for ox in range(out_w):
            filter_row_pixel(src, params, rows, out_w, n, r, ox)


@numba.njit(parallel=True, cache=True)
def _antialias_columns(rows: Rows, params: Params, norm: Norm, swap_rb: bool, out: Output) -> None:
    n_images, _, out_h, out_w = out.shape
    for row in numba.prange(n_images * out_h):
        n = row // out_h
        oy = row - n * out_h
        for ox in range(out_w):
            filter_column_pixel(rows, params, norm, swap_rb, out, n, oy, ox)


def preprocess_cpu(images: Sequence[Pixels], spec: PreprocessSpec, out: Output | None = None) -> Output:
    """Preprocess HWC uint8 images of any sizes into one [N, 3, H, W] batch on the CPU."""
    if out is None:
        out = np.empty((len(images), 3, spec.out_height, spec.out_width), spec.numpy_dtype)
    if len(images) == 0:
        return out
    # float16 output: numba's CPU target has no half type, so compute in float32 and cast once.
    target = out if out.dtype != np.float16 else np.empty(out.shape, np.float32)
    params = batch_params([img.shape for img in images], spec)
    src, norm, swap_rb = pack_images(images), spec.normalisation(), spec.input_order == "BGR"
    if spec.antialias:
        rows = np.empty(row_buffer_size(params, spec), np.float32)
        _antialias_rows(src, params, rows, spec.out_width, max_row_count(params))
        _antialias_columns(rows, params, norm, swap_rb, target)
    else:
        _bilinear(src, params, norm, swap_rb, target)
    if target is not out:
        out[...] = target
    return out
