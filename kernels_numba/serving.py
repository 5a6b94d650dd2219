"""Runners that the `preprocess` model drives: one per device kind, same interface."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .arrays import CudaArray, Image, Output, Pixels
from .cpu import preprocess_cpu
from .phase_timing import NULL_TIMER, Timer
from .spec import PreprocessSpec


def _warm_up_images() -> list[Pixels]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (37, 53, 3), np.uint8), rng.integers(0, 256, (64, 48, 3), np.uint8)]


class CpuRunner:
    """Preprocessing on the CPU with the njit kernel; returns numpy batches."""

    on_gpu = False
    stream_handle = None  # no CUDA stream: images come decoded on the host

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def warm_up(self, batch: int = 1) -> None:
        """Compile the kernel (or load it from numba's cache); ``batch`` is the GPU runner's (nothing to hold here)."""
        self.run(_warm_up_images())

    def synchronize(self) -> None:
        """Nothing to wait for: the CPU path is synchronous."""

    def from_dlpack(self, capsule: object) -> Pixels:
        """A host copy of a tensor that arrived on the GPU."""
        library, module = _device_array_library()
        device_array = module.from_dlpack(capsule)
        host: Pixels = module.asnumpy(device_array) if library == "cupy" else device_array.cpu().numpy()
        return host

    def run(self, images: Sequence[Pixels], timer: Timer = NULL_TIMER) -> Output:
        """[N, 3, H, W] batch of the given HWC uint8 images."""
        with timer.phase("kernel"):
            return preprocess_cpu(images, self.spec)


def _device_array_library() -> tuple[str, Any]:
    """CuPy when installed (the light DLPack exporter), else torch: the output tensors must export DLPack,
    which numba's own device arrays do not."""
    try:
        import cupy

        return "cupy", cupy
    except ImportError:
        import torch

        return "torch", torch


class CudaRunner:
    """Preprocessing on one GPU with the numba.cuda kernel; returns DLPack-exportable device batches."""

    on_gpu = True

    def __init__(self, spec: PreprocessSpec, device_id: int, max_batch_size: int = 1,
                 reserve_size: tuple[int, int] | None = None) -> None:
        """``reserve_size`` (height, width): size the buffers for ``max_batch_size`` images of it now."""
        from numba import cuda

        from .gpu import CudaPreprocessor

        cuda.select_device(device_id)
        self.spec = spec
        self.device_id = device_id
        self._library, self._module = _device_array_library()
        if self._library == "cupy":
            self._module.cuda.Device(device_id).use()
        self._preprocessor = CudaPreprocessor(spec, max_images=max_batch_size)
        if reserve_size is not None:
            self._preprocessor.reserve([(*reserve_size, 3)] * max_batch_size)

    def warm_up(self, batch: int = 1) -> None:
        """Compile the kernel for this GPU before the first request; with ``batch``, also hand a batch of that
        many (small) images to the host once, so that the page-locked output block is held from the start."""
        self.run(_warm_up_images())
        if batch > 1:
            self.to_host(self.run((_warm_up_images() * batch)[:batch]))

    def from_dlpack(self, capsule: object) -> CudaArray:
        """A device view of a tensor that arrived on the GPU (no copy)."""
        return self._module.from_dlpack(capsule)

    def _empty(self, n: int) -> CudaArray:
        shape = (n, 3, self.spec.out_height, self.spec.out_width)
        if self._library == "cupy":
            return self._module.empty(shape, self.spec.numpy_dtype)
        dtype = getattr(self._module, np.dtype(self.spec.numpy_dtype).name)
        return self._module.empty(shape, dtype=dtype, device=f"cuda:{self.device_id}")

    @property
    def stream_handle(self) -> int:
        """The raw CUDA stream (CUstream) this runner queues its work on: device images made by work queued there
        before ``run`` (a GPU decode) need no wait, and a next step on another stream waits for it."""
        return self._preprocessor.stream_handle

    def run(self, images: Sequence[Image], timer: Timer = NULL_TIMER, out: CudaArray | None = None,
            wait: bool = True) -> CudaArray:
        """[N, 3, H, W] device batch of the given HWC uint8 images (host or device), written into ``out`` (a
        C-contiguous CUDA array of that shape and the output dtype) where given, else into a new one. Complete on
        return, or with ``wait=False`` queued on ``stream_handle``."""
        if out is None:
            out = self._empty(len(images))
        self._preprocessor.run(images, out, timer)
        if wait:
            with timer.phase("sync"):
                self._preprocessor.synchronize()  # the next step reads the buffer as soon as we return it
        return out

    def synchronize(self) -> None:
        """Wait for this runner's GPU work (profiling: charge queued work to the phase that queued it)."""
        self._preprocessor.synchronize()

    def to_host(self, batch: CudaArray) -> Output:
        """A host copy of a device batch from ``run``, in page-locked memory: one DMA for the whole batch."""
        if self._library == "cupy":
            memory = self._module.cuda.alloc_pinned_memory(batch.nbytes)  # from CuPy's page-locked pool
            host: Output = np.frombuffer(memory, batch.dtype, batch.size).reshape(batch.shape)
            batch.get(out=host)  # synchronous: no stream given
            return host
        torch = self._module
        # torch's caching host allocator hands the page-locked block back once the numpy view is gone.
        pinned = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
        pinned.copy_(batch)  # synchronous: not non_blocking
        return pinned.numpy()  # type: ignore[no-any-return]
