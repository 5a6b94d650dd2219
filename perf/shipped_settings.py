"""The preprocessing settings as the shipped repository sets them, for tools and benchmark peers outside Triton."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelserve.build import model_config
from pixelserve.build.classifier_config import PREPROCESS_CONFIG
from pixelserve.kernels import PreprocessSpec


def preprocess_settings(path: Path = PREPROCESS_CONFIG) -> tuple[dict[str, str], PreprocessSpec, int]:
    """preprocess's parameters, its PreprocessSpec and max_batch_size, read from its config.pbtxt."""
    from tritonclient.utils import triton_to_np_dtype

    config = model_config.read_config(path)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    (pixels,) = [o for o in config.output if o.name == "pixels"]
    dtype = np.dtype(triton_to_np_dtype(model_config.pb2().DataType.Name(pixels.data_type).removeprefix("TYPE_"))).name
    spec = PreprocessSpec.from_parameters({**parameters, "out_height": int(pixels.dims[1]),
                                           "out_width": int(pixels.dims[2]), "output_dtype": dtype})
    return parameters, spec, int(config.max_batch_size)
