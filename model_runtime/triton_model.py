"""What every Python-backend model of this repository does around its own work, written once.

``TritonModel`` reads the config and its parameters, sets up the phase timer, the slow log, the garbage-collector
pauses and the metrics flusher, wraps ``execute`` and ``finalize``, and turns a bad request or a failed batch
into error responses. ``ImageModel`` adds what a model taking images does: each request's raw pixels checked or
its one encoded file decoded, a bad request answered alone, the good ones run as one batch.

A model's ``model.py`` subclasses one of them and says only what it does: ``setup`` (what it loads), ``answer``
(or, for an ImageModel, ``process`` and ``output_tensor``) and, if it holds more, ``release``. Imported only inside
Triton's Python-backend stub, which provides ``triton_python_backend_utils``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from ..kernels_numba import ImageError, PreprocessSpec, check_batch_shape, check_image
from .cuda_host_wait import host_wait_parameter, set_host_wait
from .decoding import DecodeError
from .encoded_images import ImageDecoder, one_encoded_image
from .garbage import GcPauses
from .image_metrics import ImageMetrics
from .metrics_flush import MetricsFlusher, interval_from_parameters
from .parameters import RESERVE_PARAMETER, config_parameters, image_size_parameter
from .phases import PhaseTimer
from .slow_log import SlowLog, threshold_from_parameters

# Set to 1 to charge queued GPU work to the phase that queued it (profiling; adds a sync per phase).
PROFILE_SYNC_ENV = "PIXELSERVE_PROFILE_SYNC"

# (request index, first image in the batch, images in the request)
Owner = tuple[int, int, int]


def error_response(message: str, invalid_input: bool = False) -> Any:
    """A Triton error response: INVALID_ARG for bad input, INTERNAL for a failure of ours."""
    code = pb_utils.TritonError.INVALID_ARG if invalid_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonModel:
    """A Python-backend model: settings, metrics, slow log, per-request errors and finalize around its own work."""

    name = "model"  # label of its metrics and prefix of its log lines
    stages: dict[str, str] | None = None  # PhaseTimer phases grouped into stages
    build_hint = "run `pixelserve-build`"  # how to regenerate a config this code cannot use

    def initialize(self, args: dict[str, str]) -> None:
        """Triton's load hook: parse the config, run ``setup``, start the timer and the metrics."""
        self.config = json.loads(args["model_config"])
        self.parameters = config_parameters(self.config)
        self.max_batch: int = self.config["max_batch_size"]
        self.on_gpu = args["model_instance_kind"] == "GPU"
        self.device_id = int(args["model_instance_device_id"]) if self.on_gpu else None
        try:
            interval_s = interval_from_parameters(self.parameters)
            slow_s = threshold_from_parameters(self.parameters)
            host_wait = host_wait_parameter(self.parameters)
            waits = None
            if self.on_gpu and host_wait != "auto":  # before setup: torch, numba and nvImageCodec share the context
                assert self.device_id is not None
                waits = set_host_wait(self.device_id, host_wait)
            self.setup(args)
        except ValueError as exc:  # a setting this code cannot use: a config from another build
            raise pb_utils.TritonModelException(f"{self.name}: {exc}; {self.build_hint}") from None
        if waits is not None:
            flag, was_active = waits
            self.log_info(f"GPU waits: {host_wait} (context scheduling flag {flag}"
                          f"{'; the context was already active' if was_active else ''})")
        sync = self.synchronize if os.environ.get(PROFILE_SYNC_ENV) == "1" else None
        self.timer = PhaseTimer(self.name, pb_utils.MetricFamily, sync=sync, stages=self.stages,
                                slow_log=SlowLog(self.name, slow_s, pb_utils.Logger.log_warn))
        self.gc_pauses = GcPauses(self.name, pb_utils.MetricFamily)
        self.metrics = MetricsFlusher(self.flushers() + [self.timer.flush, self.gc_pauses.flush], interval_s,
                                      on_error=self.log_error)

    def setup(self, args: dict[str, str]) -> None:
        """Load what the model needs (engines, buffers); raise ValueError for a setting it cannot use."""

    def answer(self, requests: Sequence[Any]) -> list[Any]:
        """One response per request, in order."""
        raise NotImplementedError

    def flushers(self) -> list[Any]:
        """The model's own metric flushers, besides the timer's and the garbage collector's."""
        return []

    def synchronize(self) -> None:
        """Wait for the model's queued GPU work (profiling only)."""

    def release(self) -> None:
        """Let go of what ``setup`` loaded."""

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        """Triton's execute hook: ``answer``, timed, then the metrics flushed when due."""
        with self.timer.execute(len(requests)):
            responses = self.answer(requests)
        self.metrics.after_execute()
        return responses

    def finalize(self) -> None:
        """Triton's unload hook."""
        self.metrics.close()
        self.gc_pauses.close()
        self.release()

    def batch_failed(self, exc: Exception, images: int, requests: int) -> list[Any]:
        """The error responses of the requests of a batch whose run failed as a whole (the failure is logged)."""
        self.log_error(f"failed on a batch of {images} images: {exc!r}")
        return [error_response(f"{self.name} failed on a batch of {images} images: {exc}") for _ in range(requests)]

    def log_info(self, message: str) -> None:
        pb_utils.Logger.log_info(f"{self.name}: {message}")

    def log_warn(self, message: str) -> None:
        pb_utils.Logger.log_warn(f"{self.name}: {message}")

    def log_error(self, message: str) -> None:
        pb_utils.Logger.log_error(f"{self.name}: {message}")


def host_view(tensor: Any) -> np.ndarray[Any, Any]:
    """A numpy array over a host input tensor's bytes where they lie, in the stub's shared-memory region.

    ``as_numpy()`` copies: the stub builds its array without a base object, which makes pybind11 copy the data.
    DLPack hands out the region's own pointer, and the array keeps the tensor alive. The view is valid while the
    request is being executed; every reader here (the CPU kernels, the copy into page-locked memory) has finished
    with it before ``execute`` returns.
    """
    return np.from_dlpack(tensor)


def _numpy_dtype(array: Any) -> np.dtype[Any]:
    """numpy dtype of a host array or of a CUDA array (torch, CuPy) through its array interface."""
    if isinstance(array, np.ndarray):
        host: np.dtype[Any] = array.dtype
        return host
    typestr: str = array.__cuda_array_interface__["typestr"]
    return np.dtype(typestr)


class _Refused(Exception):
    """A request answered with a bad-input error: the input it names and the metric's reason."""

    def __init__(self, input_name: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.input_name, self.reason = input_name, reason


class ImageModel(TritonModel):
    """A model whose requests carry images: raw HWC uint8 pixels (``raw_input``, a batch per request) or one
    JPEG/PNG file (``encoded_input``). Bad requests are refused one by one; the rest run as one batch."""

    raw_input: str | None = None
    encoded_input: str | None = None

    def load_images(self, spec: PreprocessSpec, warm_batch: int = 1) -> None:
        """Set up the kernels' runner (CUDA on a GPU instance) and the decoder for ``spec``, warmed up."""
        self.spec = spec
        reserve_size = image_size_parameter(self.parameters, RESERVE_PARAMETER)
        if self.device_id is not None:
            from ..kernels_numba.serving import CudaRunner

            self.runner: Any = CudaRunner(spec, self.device_id, self.max_batch, reserve_size=reserve_size)
        else:
            from ..kernels_numba.serving import CpuRunner

            self.runner = CpuRunner(spec)
        self.runner.warm_up(warm_batch)  # compile now, not on the first request
        self.decoder: ImageDecoder | None = None
        if self.encoded_input:
            self.decoder = ImageDecoder(self.parameters, self.device_id, warn=self.log_warn)
            self.decoder.warm_up(self.max_batch, reserve_size)
            self.log_info(f"encoded images decoded with {self.decoder.description}")
        self.image_metrics = ImageMetrics(pb_utils.MetricFamily)
        self.log_info(f"{type(self.runner).__name__} with {spec}")

    def flushers(self) -> list[Any]:
        return [self.image_metrics.flush]

    def synchronize(self) -> None:
        self.runner.synchronize()

    def release(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        self.runner = None

    def process(self, images: list[Any]) -> Any:
        """The batch's output for the checked images, indexable by image."""
        raise NotImplementedError

    def output_tensor(self, rows: Any) -> Any:
        """The Triton output tensor of one request's slice of ``process``'s output."""
        raise NotImplementedError

    def answer(self, requests: Sequence[Any]) -> list[Any]:
        responses, images, owners = self.read_images(requests)
        if not images:
            return responses
        try:
            outputs = self.process(images)
            with self.timer.phase("outputs"):
                for index, start, count in owners:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[self.output_tensor(outputs[start:start + count])])
            self.image_metrics.accepted(image.shape for image in images)
        except Exception as exc:  # a failure of the whole batch still answers every request
            self.image_metrics.failed(len(images))
            for (index, _, _), failure in zip(owners, self.batch_failed(exc, len(images), len(owners))):
                responses[index] = failure
        return responses

    def read_images(self, requests: Sequence[Any]) -> tuple[list[Any], list[Any], list[Owner]]:
        """(responses with the refusals filled in, the batch's images, who owns which images)."""
        responses: list[Any] = [None] * len(requests)
        images: list[Any] = []
        owners: list[Owner] = []
        files: list[bytes] = []
        file_owners: list[int] = []
        with self.timer.phase("read_inputs"):
            for index, request in enumerate(requests):
                try:
                    file, pixels = self._read_request(request)
                except _Refused as refused:
                    responses[index] = self.refuse(refused.input_name, refused.reason, str(refused))
                    continue
                if file is not None:
                    files.append(file)
                    file_owners.append(index)
                else:
                    owners.append((index, len(images), len(pixels)))
                    images.extend(pixels)
        if files:
            assert self.decoder is not None
            with self.timer.phase("decode"):  # on a GPU: queued on the kernels' stream, not waited for
                decoded = self.decoder.decode_each(files, lambda exc: self.log_error(f"decoding failed: {exc!r}"),
                                                   cuda_stream=getattr(self.runner, "stream_handle", None))
            for index, image in zip(file_owners, decoded):
                if isinstance(image, DecodeError):
                    assert self.encoded_input is not None
                    responses[index] = self.refuse(self.encoded_input, "undecodable", str(image))
                else:
                    owners.append((index, len(images), 1))
                    images.append(image)
        return responses, images, owners

    def refuse(self, input_name: str, reason: str, message: str) -> Any:
        """The bad-input error response naming the input, counted under ``reason``."""
        self.image_metrics.rejected(reason)
        return error_response(f"input '{input_name}': {message}", invalid_input=True)

    def _read_request(self, request: Any) -> tuple[bytes | None, list[Any]]:
        """(the request's file, []) or (None, its checked images); _Refused for a bad request."""
        raw = pb_utils.get_input_tensor_by_name(request, self.raw_input) if self.raw_input else None
        encoded = pb_utils.get_input_tensor_by_name(request, self.encoded_input) if self.encoded_input else None
        if raw is not None and encoded is not None:
            raise _Refused(str(self.encoded_input), "both_inputs",
                           f"send either '{self.raw_input}' or '{self.encoded_input}', not both")
        if encoded is not None:
            try:
                return one_encoded_image(encoded.as_numpy()), []
            except DecodeError as exc:
                raise _Refused(str(self.encoded_input), "undecodable", str(exc)) from None
        if raw is None:
            names = [f"'{self.raw_input}' (raw pixels)"] * bool(self.raw_input) + \
                    [f"'{self.encoded_input}' (one JPEG or PNG file)"] * bool(self.encoded_input)
            raise _Refused(str(self.raw_input or self.encoded_input), "missing", "send " + " or ".join(names))
        try:
            check_batch_shape(raw.shape(), self.spec, self.max_batch)  # before any view of the data is made
            batch = host_view(raw) if raw.is_cpu() else self.runner.from_dlpack(raw.to_dlpack())
            dtype = _numpy_dtype(batch)
            for image in batch:
                check_image(tuple(image.shape), dtype, self.spec)
        except ImageError as exc:
            raise _Refused(str(self.raw_input), exc.reason, str(exc)) from None
        return None, list(batch)
