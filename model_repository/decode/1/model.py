"""Triton Python-backend model `decode`: encoded JPEG/PNG bytes -> HWC uint8 RGB image, one per request."""
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.runtime.decoding import DecodeError, decode_image
from pixelserve.runtime.parameters import config_parameters
from pixelserve.runtime.phases import PhaseTimer

INPUT, OUTPUT = "encoded", "images"


class TritonPythonModel:
    """Decodes every request of a batch on a few threads; a bad request gets its own error."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config_parameters(config)
        self.max_side = int(parameters["max_image_side"])
        self.pool = ThreadPoolExecutor(max_workers=int(parameters["decode_threads"]))
        self.timer = PhaseTimer("decode", pb_utils.MetricFamily)

    def _decode(self, request):
        encoded = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
        if encoded.size != 1:
            raise DecodeError(f"send one encoded image per request, got {encoded.size}")
        return decode_image(encoded.reshape(-1)[0], self.max_side)

    def _response(self, request):
        try:
            image = self._decode(request)
        except DecodeError as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"input '{INPUT}': {exc}", pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, image[None])])

    def execute(self, requests):
        with self.timer.phase("decode"):
            responses = list(self.pool.map(self._response, requests))
        self.timer.flush()
        return responses

    def finalize(self):
        self.pool.shutdown(wait=False)
