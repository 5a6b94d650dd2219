# Floor probe: read each request's input, answer one float. Measures the Python-backend request path.
# A config parameter `read` "in_place" reads a CPU input through DLPack (a view into the stub's shared memory)
# instead of as_numpy() (which copies it): the floor of a model that reads its frames in place, as ours do.
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def first_value(array: np.ndarray) -> float:
    """A number read from the input, so that the read is not optimised away: a file's length, a pixel's value."""
    first = array.reshape(-1)[0]
    return float(len(first)) if array.dtype == np.object_ else float(first)


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.in_place = parameters.get("read", {}).get("string_value", "as_numpy") == "in_place"

    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "images")
            if t.is_cpu():
                v = first_value(np.from_dlpack(t) if self.in_place else t.as_numpy())
            else:
                v = 0.0
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", np.full((1, 1), v, np.float32))]))
        return out
