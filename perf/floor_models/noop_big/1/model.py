# Floor probe: read each request's input, answer one float. Measures the Python-backend request path.
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, "images")
            v = float(t.as_numpy().reshape(-1)[:1].sum()) if t.is_cpu() else 0.0
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", np.full((1, 1), v, np.float32))]))
        return out
