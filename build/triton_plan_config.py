"""Read a Triton config.pbtxt and rewrite it for a TensorRT plan from the engine's own I/O description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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


def _pb2() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into a ``ModelConfig`` message."""
    from google.protobuf import text_format

    return text_format.Parse(text, _pb2().ModelConfig())


def read_config(path: Path) -> Any:
    """Read `path` (a config.pbtxt) into a ``ModelConfig`` message."""
    return parse_config(Path(path).read_text(encoding="utf-8"))


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
    from google.protobuf import text_format

    pb2 = _pb2()
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

    comments = "".join(f"# {line}\n" for line in header)
    return comments + str(text_format.MessageToString(config, use_short_repeated_primitives=True))
