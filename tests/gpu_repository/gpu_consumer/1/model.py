"""Test model: where did `pixels` arrive (is_cpu), and its per-image sum computed where it lies."""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        import torch

        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "pixels")
            on_gpu = not tensor.is_cpu()
            if on_gpu:
                sums = torch.from_dlpack(tensor.to_dlpack()).double().sum(dim=(1, 2, 3)).cpu().numpy()
            else:
                sums = tensor.as_numpy().astype(np.float64).sum(axis=(1, 2, 3))
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("input_on_gpu", np.full((len(sums), 1), on_gpu, np.bool_)),
                        pb_utils.Tensor("checksum", sums.reshape(-1, 1)),
                    ]
                )
            )
        return responses
