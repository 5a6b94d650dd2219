"""CUDA path: the shared per-pixel math in one launch over every output pixel of a ragged batch."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numba import config, cuda

from .arrays import CudaArray, CudaStream, Image
from .phase_timing import NULL_TIMER, Timer
from .geometry import batch_params, max_row_count, row_buffer_size
from .packing import packed_size
from .pixel_math import PARAM_COLUMNS, filter_column_pixel, filter_row_pixel, write_output_pixel
from .spec import PreprocessSpec

BLOCK = (32, 8, 1)


# numba.cuda has no type information (see build/mypy.ini), so its decorator leaves the kernels untyped.
@cuda.jit(cache=True)  # type: ignore[untyped-decorator]
def _bilinear(src: CudaArray, params: CudaArray, norm: CudaArray, swap_rb: bool, out: CudaArray) -> None:
    ox, oy, n = cuda.grid(3)
    if n < out.shape[0] and oy < out.shape[2] and ox < out.shape[3]:
        write_output_pixel(src, params, norm, swap_rb, out, n, oy, ox)


@cuda.jit(cache=True)  # type: ignore[untyped-decorator]
def _antialias_rows(src: CudaArray, params: CudaArray, rows: CudaArray, out_w: int) -> None:
    ox, r, n = cuda.grid(3)
    if n < params.shape[0] and ox < out_w:
        filter_row_pixel(src, params, rows, out_w, n, r, ox)


@cuda.jit(cache=True)  # type: ignore[untyped-decorator]
def _antialias_columns(rows: CudaArray, params: CudaArray, norm: CudaArray, swap_rb: bool, out: CudaArray) -> None:
    ox, oy, n = cuda.grid(3)
    if n < out.shape[0] and oy < out.shape[2] and ox < out.shape[3]:
        filter_column_pixel(rows, params, norm, swap_rb, out, n, oy, ox)


def _blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


def launch_grid(n_images: int, spec: PreprocessSpec) -> tuple[int, int, int]:
    """Blocks per axis so that every output pixel of every image has one thread."""
    return _blocks(spec.out_width, BLOCK[0]), _blocks(spec.out_height, BLOCK[1]), n_images


def row_bucket(rows: int) -> int:
    """Rows the horizontal pass is launched for: the next power of two, so that few graphs cover all sizes."""
    return 1 << max(0, rows - 1).bit_length()


def _is_device_array(obj: Image) -> bool:
    return not isinstance(obj, np.ndarray)  # host images are numpy; anything else is a CUDA array


def _device_pointer(array: CudaArray) -> int:
    if hasattr(array, "data_ptr"):  # torch: much cheaper than building its __cuda_array_interface__
        return array.data_ptr()  # type: ignore[no-any-return]
    return array.__cuda_array_interface__["data"][0]  # type: ignore[no-any-return]


def _nbytes(array: CudaArray) -> int:
    itemsize: int = array.element_size() if hasattr(array, "element_size") else array.dtype.itemsize
    return int(math.prod(array.shape)) * itemsize


def _grown(capacity: int, needed: int) -> int:
    """A buffer's new capacity: unchanged when it holds ``needed``, else at least doubled (few growth steps)."""
    return capacity if needed <= capacity else max(needed, 2 * capacity)


def _check(result: Any) -> Any:
    """Unpack a cuda.bindings driver call result, raising on an error code."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA driver call failed: {error!r}")
    return values[0] if len(values) == 1 else values


class CudaPreprocessor:
    """Preprocessing on the current GPU for one spec, built for serving.

    Images are packed back to back in one reusable device buffer: host images through a reusable
    pinned buffer, one image at a time, each followed by its asynchronous host-to-device copy (so
    packing image i+1 overlaps copying image i); images already on the GPU by device-to-device copies.
    On a real GPU the parameter upload and the kernel of a batch size are captured once into a CUDA
    graph, so a call costs a few driver calls instead of numba's per-launch argument handling; the
    result is then copied into the caller's output. Work is queued on ``self.stream``; ``run`` does
    not wait for it, and device images may still be in the making by work queued earlier on that stream
    (a GPU decode). Under the CUDA simulator the same steps run through numba's own API. Buffers are
    sized for ``max_images`` (the serving runner passes the model's max_batch_size) and grow if need be.
    """

    def __init__(self, spec: PreprocessSpec, stream: CudaStream | None = None, max_images: int = 1,
                 input_bytes: int = 1 << 24) -> None:
        self.spec = spec
        self.stream = stream if stream is not None else cuda.stream()
        self._swap_rb = spec.input_order == "BGR"
        self._norm = cuda.to_device(spec.normalisation(), stream=self.stream)
        self._use_driver = not config.ENABLE_CUDASIM  # type: ignore[attr-defined]  # set from the environment at import
        self._graphs: dict[tuple[int, int], Any] = {}  # (images, row bucket) -> CUgraphExec
        # Recorded after each batch's last use of the page-locked buffers: the next batch waits for it, not for
        # everything on the stream (a GPU decode queued ahead on this stream goes on while the batch is staged).
        self._buffers_released = cuda.event()
        self._allocate(max_images, input_bytes)

    # -- buffers -------------------------------------------------------------------------------
    def _allocate(self, max_images: int, input_bytes: int, row_elements: int = 0) -> None:
        self._graphs.clear()  # graphs captured the old buffer addresses
        spec = self.spec
        self._host_params = cuda.pinned_array((max_images, PARAM_COLUMNS), np.float64)
        self._dev_params = cuda.device_array((max_images, PARAM_COLUMNS), np.float64)
        self._host_src = cuda.pinned_array(input_bytes, np.uint8)
        self._dev_src = cuda.device_array(input_bytes, np.uint8)
        self._graph_out = cuda.device_array((max_images, 3, spec.out_height, spec.out_width), spec.numpy_dtype)
        self._dev_rows = cuda.device_array(max(1, row_elements), np.float32)  # antialiased path only
        self._image_out_bytes = 3 * spec.out_height * spec.out_width * np.dtype(spec.numpy_dtype).itemsize

    def reserve(self, shapes: Sequence[tuple[int, ...]]) -> None:
        """Size the buffers now for a batch of HWC images of these shapes, so that no such batch waits for them.

        Growing while serving allocates page-locked and device memory and drops every captured graph: on the
        H100 with 8 instances sharing the GPU a growth step stalled its batch for 35-420 ms
        (perf/results/README.md, "Buffers sized at load")."""
        params = batch_params(shapes, self.spec)
        self._reserve(len(shapes), sum(math.prod(shape) for shape in shapes), row_buffer_size(params, self.spec))

    def _reserve(self, n_images: int, n_bytes: int, row_elements: int) -> None:
        if n_images > self._host_params.shape[0] or n_bytes > self._dev_src.size or row_elements > self._dev_rows.size:
            self.synchronize()  # queued copies may still read the old buffers
            self._allocate(max(n_images, self._host_params.shape[0]), _grown(self._dev_src.size, n_bytes),
                           _grown(self._dev_rows.size, row_elements))

    # -- driver-level helpers (real GPU only) --------------------------------------------------------
    @property
    def stream_handle(self) -> int:
        """``self.stream`` as a raw CUDA stream (CUstream), for driver calls and other libraries."""
        handle = self.stream.handle
        return int(handle.value or 0) if hasattr(handle, "value") else int(handle)

    def _driver(self) -> Any:
        from cuda.bindings import driver

        return driver

    def _copy(self, dst_ptr: int, src_ptr: int, nbytes: int, kind: str) -> None:
        drv = self._driver()
        if kind == "h2d":
            _check(drv.cuMemcpyHtoDAsync(dst_ptr, src_ptr, nbytes, self.stream_handle))
        else:
            _check(drv.cuMemcpyDtoDAsync(dst_ptr, src_ptr, nbytes, self.stream_handle))

    def synchronize(self) -> None:
        """Wait for everything queued on this preprocessor's stream."""
        self.stream.synchronize()

    # -- the work --------------------------------------------------------------------------------------
    def _stage(self, images: Sequence[Image]) -> dict[str, int]:
        """Queue the copies that put every image, back to back, into the device input buffer.

        Returns how many images came from the GPU and how many from the host (through the pinned staging
        buffer: the Python backend hands host inputs to the model in ordinary pageable memory)."""
        counts = {"images_from_gpu": 0, "images_h2d_staged": 0}
        start = 0
        dev_base = self._dev_src.device_ctypes_pointer.value if self._use_driver else 0
        for img in images:
            size = math.prod(img.shape)
            if _is_device_array(img):
                counts["images_from_gpu"] += 1
                if self._use_driver:
                    self._copy(dev_base + start, _device_pointer(img), size, "d2d")
                else:
                    self._dev_src[start:start + size].copy_to_device(cuda.as_cuda_array(img).reshape(size))
            else:
                counts["images_h2d_staged"] += 1
                staged = self._host_src[start:start + size]
                staged[:] = np.asarray(img).reshape(size)
                if self._use_driver:
                    self._copy(dev_base + start, staged.ctypes.data, size, "h2d")
                else:
                    self._dev_src[start:start + size].copy_to_device(staged, stream=self.stream)
            start += size
        return counts

    def _launch_kernels(self, n: int, rows: int, out: CudaArray) -> None:
        """Queue the kernels for n staged images: one bilinear pass, or the two antialias passes."""
        params, stream = self._dev_params[:n], self.stream
        if self.spec.antialias:
            row_grid = (_blocks(self.spec.out_width, BLOCK[0]), _blocks(rows, BLOCK[1]), n)
            _antialias_rows[row_grid, BLOCK, stream](self._dev_src, params, self._dev_rows, self.spec.out_width)
            _antialias_columns[launch_grid(n, self.spec), BLOCK, stream](self._dev_rows, params, self._norm,
                                                                         self._swap_rb, out)
        else:
            _bilinear[launch_grid(n, self.spec), BLOCK, stream](self._dev_src, params, self._norm, self._swap_rb, out)

    def _graph(self, n: int, rows: int) -> Any:
        """The executable graph (parameter upload + kernels into the internal output) for n images."""
        graph_exec = self._graphs.get((n, rows))
        if graph_exec is not None:
            return graph_exec
        drv = self._driver()

        def upload_params() -> None:
            self._copy(self._dev_params.device_ctypes_pointer.value, self._host_params.ctypes.data,
                       n * PARAM_COLUMNS * 8, "h2d")

        upload_params()
        self._launch_kernels(n, rows, self._graph_out[:n])  # compile (or load from cache) outside the capture
        self.synchronize()
        _check(drv.cuStreamBeginCapture(self.stream_handle, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL))
        try:
            upload_params()
            self._launch_kernels(n, rows, self._graph_out[:n])
        finally:
            graph = _check(drv.cuStreamEndCapture(self.stream_handle))
        graph_exec = _check(drv.cuGraphInstantiate(graph, 0))
        self._graphs[(n, rows)] = graph_exec
        return graph_exec

    def launch(self, n: int, out: CudaArray, graph: bool = True) -> None:
        """Queue the kernels on the first ``n`` images staged by the last ``run``, writing ``out``: through the
        CUDA graph of that batch where the CUDA driver API is available, or (``graph=False``, and always without
        the driver API) through numba's dispatcher, as a user calling the kernels would."""
        rows = row_bucket(max_row_count(self._host_params[:n])) if self.spec.antialias else 0
        if not self._use_driver or not graph:
            self._dev_params[:n].copy_to_device(self._host_params[:n], stream=self.stream)
            self._launch_kernels(n, rows, out)
            return
        _check(self._driver().cuGraphLaunch(self._graph(n, rows), self.stream_handle))
        self._copy(_device_pointer(out), self._graph_out.device_ctypes_pointer.value, n * self._image_out_bytes, "d2d")

    def run(self, images: Sequence[Image], out: CudaArray, timer: Timer = NULL_TIMER) -> None:
        """Queue preprocessing of HWC uint8 images (host numpy or C-contiguous CUDA arrays) into ``out`` [N, 3, H, W]."""
        n = len(images)
        if n == 0:
            return
        if tuple(out.shape) != (n, 3, self.spec.out_height, self.spec.out_width) or _nbytes(out) != n * self._image_out_bytes:
            raise ValueError(f"out must be [{n}, 3, {self.spec.out_height}, {self.spec.out_width}] {self.spec.output_dtype}")
        with timer.phase("params"):
            self._buffers_released.synchronize()  # the previous batch's copies out of the pinned buffers are done
            params = batch_params([img.shape for img in images], self.spec)
            self._reserve(n, max(1, packed_size(images)), row_buffer_size(params, self.spec))
            self._host_params[:n] = params
        with timer.phase("stage_h2d"):
            counts = self._stage(images)
        for name, calls in counts.items():
            timer.count(name, calls)
        with timer.phase("kernel"):
            self.launch(n, out)
            self._buffers_released.record(self.stream)


def preprocess_cuda(images: Sequence[Image], spec: PreprocessSpec, out: CudaArray | None = None,
                    stream: CudaStream | None = None) -> CudaArray:
    """Preprocess HWC uint8 images of any sizes (host or device) into one [N, 3, H, W] device batch.

    ``out`` may be any C-contiguous CUDA array (numba device array, CuPy, torch) of the right shape and
    dtype; without it a numba device array is allocated. Returns once the result is complete.
    """
    n_bytes = max(1, packed_size(images))
    pre = CudaPreprocessor(spec, stream=stream, max_images=max(1, len(images)), input_bytes=n_bytes)
    if out is None:
        out = cuda.device_array((len(images), 3, spec.out_height, spec.out_width), spec.numpy_dtype)
    pre.run(images, out)
    pre.synchronize()
    return out
