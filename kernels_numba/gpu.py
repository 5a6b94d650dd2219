"""CUDA path: the shared per-pixel math in one launch over every output pixel of a ragged batch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import cuda

from .geometry import PARAM_COLUMNS, batch_params
from .pixel_math import write_output_pixel
from .spec import PreprocessSpec

BLOCK = (32, 8, 1)


@cuda.jit(cache=True)
def _preprocess_batch(src, params, norm, swap_rb, antialias, out):
    ox, oy, n = cuda.grid(3)
    if n < out.shape[0] and oy < out.shape[2] and ox < out.shape[3]:
        write_output_pixel(src, params, norm, swap_rb, antialias, out, n, oy, ox)


def launch_grid(n_images: int, spec: PreprocessSpec) -> tuple[int, int, int]:
    """Blocks per axis so that every output pixel of every image has one thread."""
    return (
        (spec.out_width + BLOCK[0] - 1) // BLOCK[0],
        (spec.out_height + BLOCK[1] - 1) // BLOCK[1],
        n_images,
    )


def _is_device_array(obj) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


class CudaPreprocessor:
    """Preprocessing on the current GPU for one spec, built for serving.

    Host images are packed into a reusable pinned buffer, one image at a time, each followed by its
    asynchronous host-to-device copy, so that packing image i+1 overlaps the copy of image i; images
    already on the GPU are packed by device-to-device copies. Buffers only grow; the kernel is compiled
    (or loaded from numba's cache) at construction, and later launches skip numba's argument typing.
    Everything is queued on ``self.stream``; ``run`` does not wait for it.
    """

    def __init__(self, spec: PreprocessSpec, stream=None, max_images: int = 64, input_bytes: int = 1 << 24) -> None:
        self.spec = spec
        self.stream = stream if stream is not None else cuda.stream()
        self._swap_rb = spec.input_order == "BGR"
        self._norm = cuda.to_device(spec.normalisation(), stream=self.stream)
        self._host_params = cuda.pinned_array((max_images, PARAM_COLUMNS), np.float64)
        self._dev_params = cuda.device_array((max_images, PARAM_COLUMNS), np.float64)
        self._host_src = cuda.pinned_array(input_bytes, np.uint8)  # grows on demand
        self._dev_src = cuda.device_array(input_bytes, np.uint8)
        self._kernels: dict = {}

    def _reserve(self, n_images: int, n_bytes: int) -> None:
        if n_images > self._host_params.shape[0]:
            self._host_params = cuda.pinned_array((n_images, PARAM_COLUMNS), np.float64)
            self._dev_params = cuda.device_array((n_images, PARAM_COLUMNS), np.float64)
        if n_bytes > self._dev_src.size:
            self.stream.synchronize()  # the old buffers may still be in use by queued copies
            capacity = max(n_bytes, int(self._dev_src.size * 1.5))
            self._host_src = cuda.pinned_array(capacity, np.uint8)
            self._dev_src = cuda.device_array(capacity, np.uint8)

    def _stage(self, images: Sequence) -> None:
        """Queue the copies that put every image, back to back, into the device input buffer."""
        start = 0
        for img in images:
            size = int(np.prod(img.shape))
            target = self._dev_src[start:start + size]
            if _is_device_array(img):
                target.copy_to_device(cuda.as_cuda_array(img).reshape(size), stream=self.stream)
            else:
                staged = self._host_src[start:start + size]
                staged[:] = img.reshape(size)
                target.copy_to_device(staged, stream=self.stream)
            start += size

    def launch(self, n: int, out) -> None:
        """Queue the kernel on the first ``n`` images staged by the last ``run`` (benchmarks re-launch it)."""
        args = (self._dev_src, self._dev_params[:n], self._norm, self._swap_rb, self.spec.antialias, out)
        grid = launch_grid(n, self.spec)
        dtype_key = out.__cuda_array_interface__["typestr"]  # numba, CuPy and torch arrays all expose it
        kernel = self._kernels.get(dtype_key)
        if kernel is not None:
            kernel.launch(list(args), grid, BLOCK, self.stream, 0)
            return
        _preprocess_batch[grid, BLOCK, self.stream](*args)  # compiles, or loads numba's cache
        typeof = getattr(_preprocess_batch, "typeof_pyval", None)  # absent under the CUDA simulator
        if typeof is not None:
            # Later launches go straight to the compiled kernel: numba's per-call argument typing
            # costs more host time than the kernel takes at batch 1.
            self._kernels[dtype_key] = _preprocess_batch.overloads.get(tuple(map(typeof, args)))

    def run(self, images: Sequence, out) -> None:
        """Queue preprocessing of HWC uint8 images (host numpy or CUDA arrays) into ``out`` [N, 3, H, W]."""
        n = len(images)
        if n == 0:
            return
        n_bytes = sum(int(np.prod(img.shape)) for img in images)
        self._reserve(n, max(n_bytes, 1))
        params = batch_params([img.shape for img in images], self.spec, out=self._host_params)
        self._dev_params[:n].copy_to_device(params, stream=self.stream)
        self._stage(images)
        self.launch(n, out)


def preprocess_cuda(images: Sequence, spec: PreprocessSpec, out=None, stream=None):
    """Preprocess HWC uint8 images of any sizes (host or device) into one [N, 3, H, W] device batch.

    ``out`` may be any CUDA array (numba device array, CuPy, torch) of the right shape and dtype;
    without it a numba device array is allocated. Returns once the result is complete.
    """
    n_bytes = max(1, sum(int(np.prod(img.shape)) for img in images))
    pre = CudaPreprocessor(spec, stream=stream, max_images=max(1, len(images)), input_bytes=n_bytes)
    if out is None:
        out = cuda.device_array((len(images), 3, spec.out_height, spec.out_width), spec.numpy_dtype)
    pre.run(images, out)
    pre.stream.synchronize()
    return out
