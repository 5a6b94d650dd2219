"""Benchmark peer: JPEG/PNG bytes -> ImageNet logits in one Python-backend step (see config.pbtxt)."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from pixelserve.build.classifier_config import REPO_ROOT
from pixelserve.kernels.serving import CudaRunner
from pixelserve.perf.shipped_settings import preprocess_settings
from pixelserve.runtime.decoding import DecodeError
from pixelserve.runtime.encoded_images import ImageDecoder, one_encoded_image
from pixelserve.runtime.parameters import image_size_parameter
from pixelserve.runtime.torch_classifier import TorchCudaClassifier

WEIGHTS = REPO_ROOT / "model_repository" / "classifier" / "1" / "model.pt"


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        device_id = int(args["model_instance_device_id"])
        parameters, spec, _ = preprocess_settings()
        batch = config["max_batch_size"]
        reserve = image_size_parameter(parameters, "reserve_image_size")
        self.runner = CudaRunner(spec, device_id, batch, reserve_size=reserve)
        self.runner.warm_up()
        self.decoder = ImageDecoder(parameters, device_id)
        self.decoder.warm_up(batch, reserve)
        self.classifier = TorchCudaClassifier(str(WEIGHTS), device_id, batch,
                                              (3, spec.out_height, spec.out_width), input_dtype=spec.output_dtype,
                                              high_priority=True)

    def execute(self, requests):
        responses = [None] * len(requests)
        encoded, owners = [], []
        for index, request in enumerate(requests):
            try:
                encoded.append(one_encoded_image(pb_utils.get_input_tensor_by_name(request, "images").as_numpy()))
                owners.append(index)
            except DecodeError as exc:
                responses[index] = _error(f"input 'images': {exc}")
        images, kept = [], []
        for index, image in zip(owners, self.decoder.decode(encoded) if encoded else []):
            if isinstance(image, DecodeError):
                responses[index] = _error(f"input 'images': {image}")
            else:
                images.append(image)
                kept.append(index)
        if images:
            logits = self.classifier.run([self.runner.run(images)]).cpu().numpy()
            for row, index in enumerate(kept):
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("predictions", np.ascontiguousarray(logits[row:row + 1]))])
        return responses

    def finalize(self):
        self.decoder.close()
