"""The classifier on ONNX Runtime's CPU provider: any host, no GPU needed."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from .tensors import LOGITS as OUTPUT_NAME
from .tensors import PIXELS as INPUT_NAME


class OnnxRuntimeClassifier:
    """One ONNX Runtime CPU session; ``run`` takes host batches and returns host logits."""

    on_gpu = False

    def __init__(self, onnx_path: str, intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1  # one graph at a time per instance
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ValueError(
                f"{onnx_path} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}; "
                f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}] (prepare it with build/prepare_onnx.py)"
            )

    def from_dlpack(self, capsule: object) -> npt.NDArray[np.float32]:
        """A host copy of a batch that arrived on the GPU."""
        import torch

        return torch.from_dlpack(capsule).cpu().numpy()  # type: ignore[attr-defined]  # not in torch.__all__

    def run(self, batches: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """float32 logits [N, classes] of the concatenated float32 [n, 3, H, W] batches."""
        stacked = batches[0] if len(batches) == 1 else np.concatenate(batches)
        inputs = {INPUT_NAME: np.ascontiguousarray(stacked, np.float32)}
        return self.session.run([OUTPUT_NAME], inputs)[0]  # type: ignore[no-any-return]  # onnxruntime is untyped
