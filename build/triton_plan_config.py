"""Turn a Triton config (a ModelConfig message) into the TensorRT plan's, from the engine's own I/O description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import model_config

# Engine dtype names (trt.DataType member names) -> Triton data types.
TRITON_DTYPES = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
}


@dataclass(frozen=True)
class EngineTensor:
    """One engine I/O tensor as the engine reports it (shape includes the batch dimension)."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        """The Triton data type of this tensor."""
        try:
            return TRITON_DTYPES[self.dtype]
        except KeyError:
            raise ValueError(f"tensor {self.name!r}: engine dtype {self.dtype} has no Triton type") from None


def max_batch_size(config: Any) -> int:
    """The config's max_batch_size; a plan with a dynamic batch needs it to be at least 1."""
    value = int(config.max_batch_size)
    if value < 1:
        raise ValueError(f"max_batch_size is {value}; the TensorRT profile needs a batching model (>= 1)")
    return value


def _check_names(config: Any, tensors: Sequence[EngineTensor]) -> None:
    for kind, declared, found in (
        ("input", {t.name for t in config.input}, {t.name for t in tensors if t.is_input}),
        ("output", {t.name for t in config.output}, {t.name for t in tensors if not t.is_input}),
    ):
        if declared and declared != found:
            raise ValueError(
                f"engine {kind}s {sorted(found)} differ from the config's {sorted(declared)}; "
                "the ensemble and clients use the config names"
            )


def plan_config_text(base: Any, tensors: Sequence[EngineTensor], header: Sequence[str] = ()) -> str:
    """Render `base` as a ``tensorrt_plan`` config whose I/O comes from `tensors`.

    Kept from `base`: name, max_batch_size, batching, instance count, output label files.
    Dims exclude the batch dimension, which must be dynamic (-1) in the engine.
    """
    pb2 = model_config.pb2()
    _check_names(base, tensors)
    labels = {o.name: o.label_filename for o in base.output}

    config = pb2.ModelConfig()
    config.CopyFrom(base)
    was_plan = base.platform == "tensorrt_plan"
    config.platform = "tensorrt_plan"
    config.ClearField("backend")
    config.ClearField("default_model_filename")  # Triton's default for tensorrt_plan is model.plan
    if not was_plan:
        config.parameters.clear()  # other backends' parameters mean nothing to TensorRT
    del config.input[:]
    del config.output[:]
    for tensor in tensors:
        if not tensor.shape or tensor.shape[0] != -1:
            raise ValueError(f"tensor {tensor.name!r} has shape {tensor.shape}: expected a dynamic batch dimension")
        entry = config.input.add() if tensor.is_input else config.output.add()
        entry.name = tensor.name
        entry.data_type = pb2.DataType.Value(tensor.triton_dtype)
        entry.dims.extend(tensor.shape[1:])
        if not tensor.is_input and labels.get(tensor.name):
            entry.label_filename = labels[tensor.name]

    if not config.instance_group:
        config.instance_group.add(count=1)
    for group in config.instance_group:
        group.kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")

    return model_config.config_text(config, header)
