"""Triton Python-backend model `classifier`: normalised [N, 3, 224, 224] pixels -> ImageNet logits.

The `runtime` parameter of config.pbtxt picks the engine: `onnxruntime` (model.onnx, CPU, any host)
or `torch` (model.pt, FP16 CUDA graphs on the instance's GPU). All requests of one execute() call run
as one batch; each request gets its own response, in order.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.model_runtime.garbage import GcPauses
from pixelserve.model_runtime.metrics_flush import MetricsFlusher, interval_from_parameters
from pixelserve.model_runtime.parameters import config_parameters
from pixelserve.model_runtime.phases import PhaseTimer
from pixelserve.model_runtime.slow_log import SlowLog, threshold_from_parameters

INPUT, OUTPUT = "pixels", "logits"
ARTIFACTS = {"onnxruntime": "model.onnx", "torch": "model.pt"}
BUILD_HINT = "run `pixelserve-build` (the {runtime} flavour)"


def _engine(args: dict, config: dict):
    runtime = config_parameters(config).get("runtime", "onnxruntime")
    if runtime not in ARTIFACTS:
        raise pb_utils.TritonModelException(f"parameter runtime={runtime!r}: expected one of {sorted(ARTIFACTS)}")
    path = os.path.join(args["model_repository"], args["model_version"], ARTIFACTS[runtime])
    if not os.path.isfile(path):
        raise pb_utils.TritonModelException(f"{path} is missing; {BUILD_HINT.format(runtime=runtime)}")
    if runtime == "torch":
        if args["model_instance_kind"] != "GPU":
            raise pb_utils.TritonModelException("runtime torch needs a KIND_GPU instance")
        from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier, options_from_parameters

        pixels = pb_utils.get_input_config_by_name(config, INPUT)
        dtype = np.dtype(pb_utils.triton_string_to_numpy(pixels["data_type"])).name
        try:
            options = options_from_parameters(config_parameters(config))
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{exc}; {BUILD_HINT.format(runtime=runtime)}") from None
        return TorchCudaClassifier(path, int(args["model_instance_device_id"]), config["max_batch_size"],
                                   tuple(pixels["dims"]), input_dtype=dtype, **options)
    from pixelserve.model_runtime.onnxruntime_classifier import OnnxRuntimeClassifier

    return OnnxRuntimeClassifier(path, int(config_parameters(config).get("intra_op_num_threads", "0")))


class TritonPythonModel:
    """Runs every request of a batch through one engine call."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config_parameters(config)
        try:
            interval_s = interval_from_parameters(parameters)
            slow_s = threshold_from_parameters(parameters)
        except ValueError as exc:  # a config generated before the parameter existed: regenerate it
            runtime = parameters.get("runtime", "onnxruntime")
            raise pb_utils.TritonModelException(f"{exc}; {BUILD_HINT.format(runtime=runtime)}") from None
        self.engine = _engine(args, config)
        # Logits are small: on the host they reach the client without a GPU hand-off (see docs/serving.md).
        self.output_on_gpu = self.engine.on_gpu and parameters.get("output_memory", "cpu") == "gpu"
        self.timer = PhaseTimer("classifier", pb_utils.MetricFamily,
                                slow_log=SlowLog("classifier", slow_s, pb_utils.Logger.log_warn))
        folded = getattr(self.engine, "folded", None)
        pb_utils.Logger.log_info(f"classifier: {type(self.engine).__name__}" + (f", folded {folded}" if folded else ""))
        self.gc_pauses = GcPauses("classifier", pb_utils.MetricFamily)
        self.metrics = MetricsFlusher((self.timer.flush, self.gc_pauses.flush), interval_s,
                                      on_error=lambda message: pb_utils.Logger.log_error(f"classifier: {message}"))

    def _pixels(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
        if tensor.is_cpu():
            self.timer.count("inputs_on_host", 1)
            return tensor.as_numpy()
        self.timer.count("inputs_on_gpu", 1)
        return self.engine.from_dlpack(tensor.to_dlpack())

    def _output(self, logits):
        if self.output_on_gpu:
            return pb_utils.Tensor.from_dlpack(OUTPUT, logits)
        return pb_utils.Tensor(OUTPUT, np.ascontiguousarray(logits, np.float32))

    def execute(self, requests):
        with self.timer.execute(len(requests)):
            return self._execute(requests)

    def _execute(self, requests):
        timer = self.timer
        with timer.phase("read_inputs"):
            batches = [self._pixels(r) for r in requests]
        try:
            with timer.phase("infer"):
                logits = self.engine.run(batches)
        except Exception as exc:  # a failed run must become error responses, not a dead batch
            pb_utils.Logger.log_error(f"classifier failed: {exc!r}")
            message = f"classifier failed on a batch of {sum(len(b) for b in batches)} images: {exc}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        with timer.phase("outputs"):
            if self.engine.on_gpu and not self.output_on_gpu:
                logits = logits.cpu().numpy()  # one small copy for the whole batch
            responses, start = [], 0
            for batch in batches:
                stop = start + len(batch)
                responses.append(pb_utils.InferenceResponse(output_tensors=[self._output(logits[start:stop])]))
                start = stop
        self.metrics.after_execute()
        return responses

    def finalize(self):
        self.metrics.close()
        self.gc_pauses.close()
        self.engine = None
