"""Benchmark peer: NVIDIA DALI decodes and preprocesses each batch of files (pixelserve.perf.dali_pipeline) and hands
the FP16 batch on from the GPU, as preprocess_torch does."""
import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from nvidia.dali.plugin.pytorch import feed_ndarray

from pixelserve.perf.dali_pipeline import decode_resize_normalise, run_batch
from pixelserve.perf.shipped_settings import preprocess_settings


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        torch.cuda.set_device(self.device)
        preprocess_parameters, self.spec, _ = preprocess_settings()
        self.dtype = torch.float16 if self.spec.numpy_dtype == np.float16 else torch.float32
        self.pipeline = decode_resize_normalise(self.spec, int(config["max_batch_size"]),
                                                int(preprocess_parameters["decode_threads"]), self.device.index,
                                                float(parameters["hw_decoder_load"]))

    def execute(self, requests):
        files, counts = [], []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "encoded").as_numpy()  # [n, 1] of bytes
            files += [row[0] for row in rows]
            counts.append(len(rows))
        try:
            output = run_batch(self.pipeline, files).as_tensor()
            pixels = torch.empty(tuple(output.shape()), dtype=self.dtype, device=self.device)
            feed_ndarray(output, pixels, cuda_stream=torch.cuda.current_stream(self.device))
            torch.cuda.synchronize(self.device)  # every stream of the device, DALI's too
        except Exception as exc:  # DALI fails the whole batch for one file it cannot decode
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"DALI: {exc}")) for _ in requests]
        responses, start = [], 0
        for count in counts:
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("pixels", pixels[start:start + count])]))
            start += count
        return responses
