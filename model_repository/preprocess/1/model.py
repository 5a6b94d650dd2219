"""Triton Python-backend model `preprocess`: uint8 HWC images or encoded JPEG/PNG files -> normalised CHW batch.

A request sends either `images` (raw pixels, the `image_classifier` ensemble) or `encoded` (one file's
bytes, the `image_classifier_encoded` ensemble). Encoded files are decoded first, on a GPU instance with
nvImageCodec, all of a batch in one call; the pixels then go through the same kernel launch as raw images.
Reading, checking and refusing requests, metrics and errors: pixelserve.model_runtime.triton_model.ImageModel.
"""
import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.model_runtime.image_metrics import PREPROCESS_STAGES
from pixelserve.model_runtime.tensors import PIXELS
from pixelserve.model_runtime.triton_model import ImageModel

OUTPUT_MEMORY = ("cpu", "gpu")


def spec_from_model_config(config: dict, parameters: dict) -> PreprocessSpec:
    """The preprocessing spec: output size and dtype from the output tensor, the rest from `parameters`."""
    output = pb_utils.get_output_config_by_name(config, PIXELS)
    _, height, width = output["dims"]
    dtype = np.dtype(pb_utils.triton_string_to_numpy(output["data_type"])).name
    return PreprocessSpec.from_parameters({**parameters, "out_height": height, "out_width": width,
                                           "output_dtype": dtype})


class TritonPythonModel(ImageModel):
    """Checks (and decodes) each request, preprocesses every valid image of the batch in one kernel launch."""

    name, stages = "preprocess", PREPROCESS_STAGES
    raw_input, encoded_input = "images", "encoded"

    def setup(self, args):
        # A GPU instance hands its batch on from the host (one copy per batch) or from the GPU (DLPack).
        output_memory = self.parameters.get("output_memory", "cpu")
        if output_memory not in OUTPUT_MEMORY:
            raise ValueError(f"parameter output_memory={output_memory!r}: expected one of {OUTPUT_MEMORY}")
        self.copy_to_host = self.on_gpu and output_memory == "cpu"
        self.load_images(spec_from_model_config(self.config, self.parameters), warm_batch=self.max_batch if self.copy_to_host else 1)

    def process(self, images):
        outputs = self.runner.run(images, self.timer)
        if self.copy_to_host:
            with self.timer.phase("to_host"):
                outputs = self.runner.to_host(outputs)
        return outputs

    def output_tensor(self, rows):
        """A host slice is copied into the stub's shared memory; a device slice goes on through DLPack."""
        if isinstance(rows, np.ndarray):
            return pb_utils.Tensor(PIXELS, rows)
        return pb_utils.Tensor.from_dlpack(PIXELS, rows)
