"""The preprocessing settings as the shipped repository sets them, for tools and benchmark peers outside Triton."""
from __future__ import annotations

from pathlib import Path

from pixelserve.build.classifier_config import PREPROCESS_CONFIG, max_batch_size, preprocess_parameters
from pixelserve.kernels_numba import PreprocessSpec


def preprocess_settings(path: Path = PREPROCESS_CONFIG) -> tuple[dict[str, str], PreprocessSpec, int]:
    """preprocess's parameters (with its output's size and dtype), its PreprocessSpec and max_batch_size, read from
    its config.pbtxt."""
    parameters = preprocess_parameters(path)
    return parameters, PreprocessSpec.from_parameters(parameters), max_batch_size(path)
