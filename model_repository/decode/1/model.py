"""Triton Python-backend model `decode`: encoded JPEG/PNG bytes -> HWC uint8 RGB image, one per request.

A KIND_GPU instance decodes the whole request batch with nvImageCodec (pixelserve.runtime.gpu_decoding) and
hands each image to the next step on the GPU through DLPack; a KIND_CPU instance decodes with PIL on threads.
"""
import json
from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils

from pixelserve.runtime.decoding import DecodeError, decode_image
from pixelserve.runtime.parameters import config_parameters
from pixelserve.runtime.phases import PhaseTimer

INPUT, OUTPUT = "encoded", "images"


def _error_response(exc):
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"input '{INPUT}': {exc}", pb_utils.TritonError.INVALID_ARG))


def _encoded(request):
    """The one encoded image of a request (DecodeError if it sent several)."""
    encoded = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
    if encoded.size != 1:
        raise DecodeError(f"send one encoded image per request, got {encoded.size}")
    return encoded.reshape(-1)[0]


class TritonPythonModel:
    """Decodes every request of a batch (GPU: in one batched call; CPU: on a few threads); a bad request gets
    its own error."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config_parameters(config)
        self.max_side = int(parameters["max_image_side"])
        threads = int(parameters["decode_threads"])
        self.timer = PhaseTimer("decode", pb_utils.MetricFamily)
        self.gpu = None
        self.pool = None
        if args["model_instance_kind"] == "GPU":
            try:
                from pixelserve.runtime.gpu_decoding import GpuBatchDecoder

                self.gpu = GpuBatchDecoder(int(args["model_instance_device_id"]), self.max_side, cpu_threads=threads,
                                           options=parameters["gpu_decoder_options"],
                                           hardware=parameters["gpu_hardware_decoder"] == "true")
                pb_utils.Logger.log_info(f"decode: {self.gpu.backends}")
            except ImportError as exc:  # a GPU host without nvImageCodec or torch (the Triton container image)
                pb_utils.Logger.log_warn(f"decode: GPU instance without GPU decoding ({exc}); decoding with PIL")
        if self.gpu is None:
            self.pool = ThreadPoolExecutor(max_workers=threads)
            pb_utils.Logger.log_info(f"decode: PIL on {threads} threads")

    def _cpu_response(self, request):
        try:
            image = decode_image(_encoded(request), self.max_side)
        except DecodeError as exc:
            return _error_response(exc)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, image[None])])

    def _gpu_responses(self, requests):
        responses = [None] * len(requests)
        batch, owners = [], []
        for index, request in enumerate(requests):
            try:
                batch.append(_encoded(request))
                owners.append(index)
            except DecodeError as exc:
                responses[index] = _error_response(exc)
        for index, image in zip(owners, self.gpu.decode(batch)):
            if isinstance(image, DecodeError):
                responses[index] = _error_response(image)
            else:  # [1, H, W, 3], C-contiguous, on the GPU: the next step gets it without a host copy
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor.from_dlpack(OUTPUT, image.unsqueeze(0))])
        return responses

    def execute(self, requests):
        with self.timer.phase("decode"):
            if self.gpu is not None:
                responses = self._gpu_responses(requests)
            else:
                responses = list(self.pool.map(self._cpu_response, requests))
        self.timer.flush()
        return responses

    def finalize(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        self.gpu = None
