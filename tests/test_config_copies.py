"""Configs that Triton needs as files beside the product (benchmark peers, floor probes, test models) must
serve the same batch size as the product: the one max_batch_size, in model_repository/preprocess/config.pbtxt;
and those that produce or take `pixels` must use its data type and dims (the output size), written there too."""
from __future__ import annotations

from pathlib import Path

import pytest

from pixelserve.build import classifier_config, model_config

REPO_ROOT = Path(__file__).resolve().parent.parent
# perf/results/ holds records of what a tool tried (Model Analyzer's configurations), not configs that run.
COPIES = sorted(p for folder in ("perf", "tests") for p in (REPO_ROOT / folder).rglob("config.pbtxt")
                if "results" not in p.relative_to(REPO_ROOT).parts)


def test_there_are_configs_to_check():
    assert len(COPIES) >= 8


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_batch_size_is_the_repository_one(path):
    assert model_config.read_config(path).max_batch_size == classifier_config.max_batch_size(), (
        f"{path.relative_to(REPO_ROOT)}: max_batch_size differs from model_repository/preprocess/config.pbtxt"
    )


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pixels_have_the_repository_data_type(path):
    config = model_config.read_config(path)
    for tensor in [*config.input, *config.output]:
        if tensor.name == classifier_config.INPUT_NAME:
            assert tensor.data_type == classifier_config.pixels_data_type(), (
                f"{path.relative_to(REPO_ROOT)}: {tensor.name} data_type differs from model_repository/preprocess/config.pbtxt"
            )


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pixels_have_the_repository_dims(path):
    config = model_config.read_config(path)
    for tensor in [*config.input, *config.output]:
        if tensor.name == classifier_config.INPUT_NAME:
            assert tuple(tensor.dims) == classifier_config.pixels_dims(), (
                f"{path.relative_to(REPO_ROOT)}: {tensor.name} dims differ from "
                "model_repository/preprocess/config.pbtxt"
            )
