# The `classifier` model, onnxruntime flavour: model.onnx on ONNX Runtime (CPU).
# All requests of one execute() call run as one batch; each request gets its own
# response, in order. A malformed request gets an error response and does not
# disturb the others.

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
ONNX_FILENAME = "model.onnx"


def _parameter(model_config: dict, key: str, default: str) -> str:
    """Return the string value of a config.pbtxt `parameters` entry, or `default`."""
    entry = model_config.get("parameters", {}).get(key)
    return entry.get("string_value", default) if entry else default


class TritonPythonModel:
    """Triton Python-backend model running the classifier ONNX with ONNX Runtime."""

    def initialize(self, args):
        """Load model.onnx into a CPU ONNX Runtime session configured from config.pbtxt."""
        model_config = json.loads(args["model_config"])
        self.input_dims = tuple(self._config_dims(model_config, "input", INPUT_NAME))

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(model_config, "intra_op_num_threads", "0"))
        options.inter_op_num_threads = 1  # one graph at a time per instance
        path = os.path.join(args["model_repository"], args["model_version"], ONNX_FILENAME)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} is missing; run `python -m pixelserve.build.build_classifier --flavour onnxruntime`"
            )
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise pb_utils.TritonModelException(
                f"{path} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}; "
                f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}] (prepare it with build/prepare_onnx.py)"
            )

    @staticmethod
    def _config_dims(model_config: dict, section: str, name: str) -> list:
        for entry in model_config.get(section, []):
            if entry["name"] == name:
                return [int(d) for d in entry["dims"]]
        raise pb_utils.TritonModelException(f"config.pbtxt has no {section} named {name!r}")

    def _read_pixels(self, request):
        """Return the request's pixels as an [n, 3, 224, 224] float32 array, or an error message."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        if tensor is None:
            return None, f"missing input {INPUT_NAME!r}"
        pixels = tensor.as_numpy()
        if pixels.dtype != np.float32:
            return None, f"input {INPUT_NAME!r} must be FP32, got {pixels.dtype}"
        if pixels.ndim != 1 + len(self.input_dims) or tuple(pixels.shape[1:]) != self.input_dims or pixels.shape[0] < 1:
            expected = ", ".join(str(d) for d in self.input_dims)
            return None, f"input {INPUT_NAME!r} must have shape [batch, {expected}], got {list(pixels.shape)}"
        return pixels, None

    def execute(self, requests):
        """Classify every request's pixels in one ONNX Runtime call; one response per request."""
        responses = [None] * len(requests)
        batch, owners = [], []
        for index, request in enumerate(requests):
            pixels, problem = self._read_pixels(request)
            if problem is not None:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(problem))
            else:
                batch.append(pixels)
                owners.append(index)

        if batch:
            try:
                stacked = batch[0] if len(batch) == 1 else np.concatenate(batch)
                logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: stacked})[0]
            except Exception as exc:  # a failed run must become error responses, not a dead batch
                message = f"ONNX Runtime failed on a batch of {sum(len(p) for p in batch)} images: {exc}"
                for index in owners:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
            else:
                start = 0
                for index, pixels in zip(owners, batch):
                    stop = start + len(pixels)
                    out = pb_utils.Tensor(OUTPUT_NAME, np.ascontiguousarray(logits[start:stop], dtype=np.float32))
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[out])
                    start = stop
        return responses

    def finalize(self):
        """Release the ONNX Runtime session."""
        self.session = None
