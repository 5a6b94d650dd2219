"""The preprocessing settings as the shipped repository sets them, for tools and benchmark peers outside Triton."""
from __future__ import annotations

from pathlib import Path

from pixelserve.build import model_config
from pixelserve.build.classifier_config import PREPROCESS_CONFIG
from pixelserve.kernels import PreprocessSpec
from pixelserve.kernels.spec import config_file_parameters


def preprocess_settings(path: Path = PREPROCESS_CONFIG) -> tuple[dict[str, str], PreprocessSpec, int]:
    """preprocess's parameters (with its output's size and dtype), its PreprocessSpec and max_batch_size, read from
    its config.pbtxt."""
    parameters = config_file_parameters(str(path))
    return parameters, PreprocessSpec.from_parameters(parameters), int(model_config.read_config(path).max_batch_size)
