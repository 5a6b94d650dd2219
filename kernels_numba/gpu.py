"""CUDA path: the shared per-pixel math in one launch over every output pixel of a ragged batch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import cuda

from .geometry import batch_geometry
from .packing import image_offsets, image_sizes, pack_images
from .pixel_math import write_output_pixel
from .spec import PreprocessSpec

BLOCK = (32, 8, 1)


@cuda.jit
def _preprocess_batch(src, offsets, sizes, geometry, norm, pad, swap_rb, antialias, out):
    ox, oy, n = cuda.grid(3)
    if n < out.shape[0] and oy < out.shape[2] and ox < out.shape[3]:
        write_output_pixel(src, offsets, sizes, geometry, norm, pad, swap_rb, antialias, out, n, oy, ox)


def launch_grid(n_images: int, spec: PreprocessSpec) -> tuple[int, int, int]:
    """Blocks per axis so that every output pixel of every image has one thread."""
    return (
        (spec.out_width + BLOCK[0] - 1) // BLOCK[0],
        (spec.out_height + BLOCK[1] - 1) // BLOCK[1],
        n_images,
    )


def preprocess_cuda(images: Sequence[np.ndarray], spec: PreprocessSpec, out=None, stream=0):
    """Preprocess host HWC uint8 images of any sizes into one [N, 3, H, W] device batch in one launch.

    ``out`` may be any CUDA array (numba device array, CuPy array) of the right shape and dtype;
    without it a numba device array is allocated. The launch is asynchronous on ``stream``.
    """
    n = len(images)
    if out is None:
        out = cuda.device_array((n, 3, spec.out_height, spec.out_width), spec.numpy_dtype, stream=stream)
    if n == 0:
        return out
    sizes = image_sizes(images)
    args = [
        pack_images(images),
        image_offsets(sizes),
        sizes,
        batch_geometry([tuple(s) for s in sizes], spec),
        spec.normalisation(),
        spec.normalised_pad(),
    ]
    d_args = [cuda.to_device(a, stream=stream) for a in args]
    _preprocess_batch[launch_grid(n, spec), BLOCK, stream](*d_args, spec.input_order == "BGR", spec.antialias, out)
    return out
