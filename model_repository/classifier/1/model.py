"""Triton Python-backend model `classifier`: normalised CHW pixels (the `pixels` input's dims) -> ImageNet logits.

The `runtime` parameter of config.pbtxt picks the engine: `onnxruntime` (model.onnx, CPU, any host)
or `torch` (model.pt, FP16 CUDA graphs on the instance's GPU). All requests of one execute() call run
as one batch; each request gets its own response, in order. Settings, metrics and errors:
pixelserve.model_runtime.triton_model.TritonModel.
"""
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.model_runtime.tensors import LOGITS, PIXELS
from pixelserve.model_runtime.triton_model import TritonModel, host_view

ARTIFACTS = {"onnxruntime": "model.onnx", "torch": "model.pt"}


class TritonPythonModel(TritonModel):
    """Runs every request of a batch through one engine call."""

    name = "classifier"

    def setup(self, args):
        runtime = self.parameters.get("runtime", "onnxruntime")
        self.build_hint = f"run `pixelserve-build` (the {runtime} flavour)"
        if runtime not in ARTIFACTS:
            raise ValueError(f"parameter runtime={runtime!r}: expected one of {sorted(ARTIFACTS)}")
        path = os.path.join(args["model_repository"], args["model_version"], ARTIFACTS[runtime])
        if not os.path.isfile(path):
            raise ValueError(f"{path} is missing")
        if runtime == "torch":
            if not self.on_gpu:
                raise ValueError("runtime torch needs a KIND_GPU instance")
            from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier, options_from_parameters

            pixels = pb_utils.get_input_config_by_name(self.config, PIXELS)
            dtype = np.dtype(pb_utils.triton_string_to_numpy(pixels["data_type"])).name
            self.engine = TorchCudaClassifier(path, self.device_id, self.max_batch, tuple(pixels["dims"]),
                                              input_dtype=dtype, **options_from_parameters(self.parameters))
        else:
            from pixelserve.model_runtime.onnxruntime_classifier import OnnxRuntimeClassifier

            self.engine = OnnxRuntimeClassifier(path, int(self.parameters.get("intra_op_num_threads", "0")))
        # Logits are small: on the host they reach the client without a GPU hand-off (see docs/serving.md).
        self.output_on_gpu = self.engine.on_gpu and self.parameters.get("output_memory", "cpu") == "gpu"
        folded = getattr(self.engine, "folded", None)
        self.log_info(type(self.engine).__name__ + (f", folded {folded}" if folded else ""))

    def _pixels(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, PIXELS)
        if tensor.is_cpu():
            self.timer.count("inputs_on_host", 1)
            return host_view(tensor)  # read where the stub put it: as_numpy would copy the batch once more
        self.timer.count("inputs_on_gpu", 1)
        return self.engine.from_dlpack(tensor.to_dlpack())

    def answer(self, requests):
        with self.timer.phase("read_inputs"):
            batches = [self._pixels(r) for r in requests]
        try:
            with self.timer.phase("infer"):
                logits = self.engine.run(batches)
        except Exception as exc:  # a failed run must become error responses, not a dead batch
            return self.batch_failed(exc, sum(len(b) for b in batches), len(requests))
        with self.timer.phase("outputs"):
            if self.engine.on_gpu and not self.output_on_gpu:
                logits = logits.cpu().numpy()  # one small copy for the whole batch
            responses, start = [], 0
            for batch in batches:
                rows, start = logits[start:start + len(batch)], start + len(batch)
                tensor = (pb_utils.Tensor.from_dlpack(LOGITS, rows) if self.output_on_gpu
                          else pb_utils.Tensor(LOGITS, np.ascontiguousarray(rows, np.float32)))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def release(self):
        self.engine = None
