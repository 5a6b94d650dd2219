"""Triton Python-backend model in one step: images -> ImageNet scores, on one GPU without leaving it.

Used where the generated config.pbtxt says `backend: "python"`: the torch classifier flavour (GPU hosts without
TensorRT; pixelserve.build.classifier_config.ONE_STEP_FLAVOURS says why). The other flavours generate an ensemble
(preprocess -> classifier) in this directory's config.pbtxt and Triton never loads this file.

The input `images` is one JPEG/PNG file per request (BYTES) or raw HWC pixels (UINT8), as the config says. Files
are decoded on the GPU (nvImageCodec); the pixels are preprocessed by the same kernels as `preprocess`, straight
into the input of the torch classifier's CUDA graphs (the `classifier` model's weights). Reading, checking and
refusing requests, metrics and errors: pixelserve.model_runtime.triton_model.ImageModel.
"""
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.model_runtime.image_metrics import PREPROCESS_STAGES
from pixelserve.model_runtime.triton_model import ImageModel

INPUT, OUTPUT = "images", "predictions"


class TritonPythonModel(ImageModel):
    """Decodes, preprocesses and classifies every valid image of a batch together on the instance's GPU."""

    # The classifier's phase (its graph replay and the logits' copy to the host) joins preprocess's stages.
    stages = {**PREPROCESS_STAGES, "infer": "classify"}
    build_hint = "run `pixelserve-build --target gpu-torch`"

    def setup(self, args):
        self.name = args["model_name"]
        if pb_utils.get_input_config_by_name(self.config, INPUT)["data_type"] == "TYPE_STRING":
            self.encoded_input = INPUT
        else:
            self.raw_input = INPUT
        if not self.on_gpu:
            raise ValueError("one step runs the torch classifier: it needs a KIND_GPU instance (a CPU host serves "
                             "the onnxruntime flavour's ensemble)")
        from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier, options_from_parameters

        weights = os.path.normpath(os.path.join(args["model_repository"], self.parameters.get("classifier_weights", "")))
        if not os.path.isfile(weights):
            raise ValueError(f"classifier weights {weights} are missing")
        spec = PreprocessSpec.from_parameters(self.parameters)
        self.load_images(spec)
        self.classifier = TorchCudaClassifier(weights, self.device_id, self.max_batch, (3, spec.out_height, spec.out_width),
                                              input_dtype=spec.output_dtype, **options_from_parameters(self.parameters))
        self.log_info(f"one step, {type(self.classifier).__name__}, folded {self.classifier.folded}")

    def process(self, images):
        # The kernels write straight into the classifier's graph input, and the logits come back in one DMA.
        # Decode, kernels and classifier are queued on the GPU back to back; the host waits once, in `infer`,
        # which therefore also holds whatever of the decode and the kernels was still running.
        self.runner.run(images, self.timer, out=self.classifier.staged_input(len(images)), wait=False)
        with self.timer.phase("infer"):
            return self.classifier.classify_staged(len(images), after_stream=self.runner.stream_handle)

    def output_tensor(self, rows):
        return pb_utils.Tensor(OUTPUT, np.ascontiguousarray(rows))

    def release(self):
        super().release()
        self.classifier = None
