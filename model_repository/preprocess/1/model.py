"""Triton Python-backend model `preprocess`: uint8 HWC images or encoded JPEG/PNG files -> normalised CHW batch.

A request sends either `images` (raw pixels, the `image_classifier` ensemble) or `encoded` (one file's
bytes, the `image_classifier_encoded` ensemble). Encoded files are decoded first, on a GPU instance with
nvImageCodec, all of a batch in one call; the pixels then go through the same kernel launch as raw images.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.kernels_numba import ImageError, PreprocessSpec, check_batch_shape, check_image
from pixelserve.model_runtime.decoding import DecodeError
from pixelserve.model_runtime.encoded_images import ImageDecoder, one_encoded_image
from pixelserve.model_runtime.garbage import GcPauses
from pixelserve.model_runtime.image_metrics import PREPROCESS_STAGES, ImageMetrics
from pixelserve.model_runtime.metrics_flush import MetricsFlusher, interval_from_parameters
from pixelserve.model_runtime.parameters import config_parameters, image_size_parameter
from pixelserve.model_runtime.phases import PhaseTimer
from pixelserve.model_runtime.slow_log import SlowLog, threshold_from_parameters

INPUT, ENCODED_INPUT, OUTPUT = "images", "encoded", "pixels"
RESERVE_PARAMETER = "reserve_image_size"
# Set to 1 to charge queued GPU work to the phase that queued it (profiling; adds a sync per phase).
PROFILE_SYNC_ENV = "PIXELSERVE_PROFILE_SYNC"


def spec_from_model_config(config: dict) -> PreprocessSpec:
    """The preprocessing spec: output size and dtype from the output tensor, the rest from `parameters`."""
    output = pb_utils.get_output_config_by_name(config, OUTPUT)
    _, height, width = output["dims"]
    dtype = np.dtype(pb_utils.triton_string_to_numpy(output["data_type"])).name
    return PreprocessSpec.from_parameters({**config_parameters(config), "out_height": height, "out_width": width,
                                           "output_dtype": dtype})


def _error_response(input_name, exc):
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"input '{input_name}': {exc}", pb_utils.TritonError.INVALID_ARG))


def _numpy_dtype(array) -> np.dtype:
    """numpy dtype of a host array or of a CUDA array (torch, CuPy) through its array interface."""
    if isinstance(array, np.ndarray):
        return array.dtype
    return np.dtype(array.__cuda_array_interface__["typestr"])


class TritonPythonModel:
    """Validates (and decodes) each request, preprocesses every valid image of the batch in one kernel launch."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.spec = spec_from_model_config(config)
        self.max_batch = config["max_batch_size"]
        on_gpu = args["model_instance_kind"] == "GPU"
        parameters = config_parameters(config)
        try:
            reserve_size = image_size_parameter(parameters, RESERVE_PARAMETER)
            interval_s = interval_from_parameters(parameters)
            slow_s = threshold_from_parameters(parameters)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        device_id = int(args["model_instance_device_id"]) if on_gpu else None
        if on_gpu:
            from pixelserve.kernels_numba.serving import CudaRunner

            self.runner = CudaRunner(self.spec, device_id, config["max_batch_size"], reserve_size=reserve_size)
        else:
            from pixelserve.kernels_numba.serving import CpuRunner

            self.runner = CpuRunner(self.spec)
        self.decoder = ImageDecoder(parameters, device_id,
                                    warn=lambda message: pb_utils.Logger.log_warn(f"preprocess: {message}"))
        # A GPU instance hands its batch on from the host (one copy per batch) or from the GPU (DLPack).
        output_memory = parameters.get("output_memory", "cpu")
        if output_memory not in ("cpu", "gpu"):
            raise pb_utils.TritonModelException(f"parameter output_memory={output_memory!r}: expected 'cpu' or 'gpu'")
        self.copy_to_host = on_gpu and output_memory == "cpu"
        self.runner.warm_up(self.max_batch if self.copy_to_host else 1)  # compile now, not on the first request
        self.decoder.warm_up(self.max_batch, reserve_size)
        sync = self.runner.synchronize if os.environ.get(PROFILE_SYNC_ENV) == "1" else None
        self.timer = PhaseTimer("preprocess", pb_utils.MetricFamily, sync=sync, stages=PREPROCESS_STAGES,
                                slow_log=SlowLog("preprocess", slow_s, pb_utils.Logger.log_warn))
        self.image_metrics = ImageMetrics(pb_utils.MetricFamily)
        pb_utils.Logger.log_info(f"preprocess: {type(self.runner).__name__} with {self.spec}")
        pb_utils.Logger.log_info(f"preprocess: encoded images decoded with {self.decoder.description}")
        self.gc_pauses = GcPauses("preprocess", pb_utils.MetricFamily)
        self.metrics = MetricsFlusher((self.timer.flush, self.image_metrics.flush, self.gc_pauses.flush), interval_s,
                                      on_error=lambda message: pb_utils.Logger.log_error(f"preprocess: {message}"))

    def execute(self, requests):
        with self.timer.execute(len(requests)):
            return self._execute(requests)

    def _execute(self, requests):
        timer = self.timer
        responses = [None] * len(requests)
        images, owners = [], []
        encoded, encoded_owners = [], []
        with timer.phase("read_inputs"):
            for index, request in enumerate(requests):
                data = pb_utils.get_input_tensor_by_name(request, ENCODED_INPUT)
                if data is not None and pb_utils.get_input_tensor_by_name(request, INPUT) is not None:
                    self.image_metrics.rejected("both_inputs")
                    responses[index] = _error_response(
                        ENCODED_INPUT, f"send either '{INPUT}' or '{ENCODED_INPUT}', not both")
                    continue
                if data is not None:
                    try:
                        encoded.append(one_encoded_image(data.as_numpy()))
                        encoded_owners.append(index)
                    except DecodeError as exc:
                        self.image_metrics.rejected("undecodable")
                        responses[index] = _error_response(ENCODED_INPUT, exc)
                    continue
                try:
                    batch = self._request_images(request)
                except ImageError as exc:
                    self.image_metrics.rejected(exc.reason)
                    responses[index] = _error_response(INPUT, exc)
                    continue
                owners.append((index, len(images), len(batch)))
                images.extend(batch)
        if encoded:
            with timer.phase("decode"):
                decoded = self.decoder.decode_each(  # on a GPU: queued on the kernels' stream, not waited for
                    encoded, lambda exc: pb_utils.Logger.log_error(f"preprocess: decoding failed: {exc!r}"),
                    cuda_stream=self.runner.stream_handle)
            for index, image in zip(encoded_owners, decoded):
                if isinstance(image, DecodeError):
                    self.image_metrics.rejected("undecodable")
                    responses[index] = _error_response(ENCODED_INPUT, image)
                else:
                    owners.append((index, len(images), 1))
                    images.append(image)
        if images:
            try:
                outputs = self.runner.run(images, timer)
                if self.copy_to_host:
                    with timer.phase("to_host"):
                        outputs = self.runner.to_host(outputs)
                with timer.phase("outputs"):
                    for index, start, count in owners:
                        responses[index] = pb_utils.InferenceResponse(
                            output_tensors=[self._output(outputs[start:start + count])])
                self.image_metrics.accepted(image.shape for image in images)
            except Exception as exc:  # a failure of the whole batch still answers every request
                pb_utils.Logger.log_error(f"preprocess failed: {exc!r}")
                self.image_metrics.failed(len(images))
                for index, _, _ in owners:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"preprocess failed: {exc}")
                    )
        self.metrics.after_execute()
        return responses

    def _request_images(self, request):
        """The images of one request (leading dim = images in the request), each checked."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
        if tensor is None:
            raise ImageError(f"send '{INPUT}' (raw pixels) or '{ENCODED_INPUT}' (one JPEG or PNG file)", "missing")
        check_batch_shape(tensor.shape(), self.spec, self.max_batch)  # before any view of the data is made
        batch = tensor.as_numpy() if tensor.is_cpu() else self.runner.from_dlpack(tensor.to_dlpack())
        dtype = _numpy_dtype(batch)
        for image in batch:
            check_image(tuple(image.shape), dtype, self.spec)
        return list(batch)

    def _output(self, array):
        """A Triton tensor of the batch slice: a host slice is copied into the stub's shared memory, a device
        slice (output_memory "gpu") is handed over through DLPack."""
        if isinstance(array, np.ndarray):
            return pb_utils.Tensor(OUTPUT, array)
        return pb_utils.Tensor.from_dlpack(OUTPUT, array)

    def finalize(self):
        self.metrics.close()
        self.gc_pauses.close()
        self.decoder.close()
        self.runner = None
