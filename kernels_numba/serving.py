"""Runners that the `preprocess` model drives: one per device kind, same interface."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .cpu import preprocess_cpu
from .spec import PreprocessSpec


def _warm_up_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (37, 53, 3), np.uint8), rng.integers(0, 256, (64, 48, 3), np.uint8)]


class CpuRunner:
    """Preprocessing on the CPU with the njit kernel; returns numpy batches."""

    on_gpu = False

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def warm_up(self) -> None:
        """Compile the kernel (or load it from numba's cache)."""
        self.run(_warm_up_images())

    def from_dlpack(self, capsule):
        """A host copy of a tensor that arrived on the GPU."""
        import cupy

        return cupy.asnumpy(cupy.from_dlpack(capsule))

    def run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, 3, H, W] batch of the given HWC uint8 images."""
        return preprocess_cpu(images, self.spec)


class CudaRunner:
    """Preprocessing on one GPU with the numba.cuda kernel; returns CuPy batches (DLPack-exportable)."""

    on_gpu = True

    def __init__(self, spec: PreprocessSpec, device_id: int) -> None:
        import cupy
        from numba import cuda

        self.spec = spec
        self.device_id = device_id
        cuda.select_device(device_id)
        self._cupy = cupy
        self._device = cupy.cuda.Device(device_id)
        self._device.use()

    def warm_up(self) -> None:
        """Compile the kernel for this GPU before the first request."""
        self.run(_warm_up_images())
        self._device.synchronize()

    def from_dlpack(self, capsule):
        """A CuPy view of a tensor that arrived on the GPU (no copy)."""
        return self._cupy.from_dlpack(capsule)

    def run(self, images: Sequence) -> "object":
        """[N, 3, H, W] CuPy batch of the given HWC uint8 images (host or device), complete on return."""
        from .gpu import preprocess_cuda

        cp = self._cupy
        out = cp.empty((len(images), 3, self.spec.out_height, self.spec.out_width), self.spec.numpy_dtype)
        host = [img if isinstance(img, np.ndarray) else cp.asnumpy(img) for img in images]
        preprocess_cuda(host, self.spec, out=out)
        self._device.synchronize()  # the next step reads the buffer as soon as we return it
        return out
