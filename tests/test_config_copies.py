"""Configs that Triton needs as files beside the product (benchmark peers, floor probes, test models, the
decode step) must serve the same batch size as the product: the one max_batch_size, in
model_repository/preprocess/config.pbtxt; decode must refuse images above preprocess's max_image_side."""
from __future__ import annotations

from pathlib import Path

import pytest

from pixelserve.build import classifier_config, model_config

REPO_ROOT = Path(__file__).resolve().parent.parent
# perf/results/ holds records of what a tool tried (Model Analyzer's configurations), not configs that run.
COPIES = sorted([*(p for folder in ("perf", "tests") for p in (REPO_ROOT / folder).rglob("config.pbtxt")
                   if "results" not in p.relative_to(REPO_ROOT).parts),
                 REPO_ROOT / "model_repository" / "decode" / "config.pbtxt"])


def test_there_are_configs_to_check():
    assert len(COPIES) >= 8


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_batch_size_is_the_repository_one(path):
    assert model_config.read_config(path).max_batch_size == classifier_config.max_batch_size(), (
        f"{path.relative_to(REPO_ROOT)}: max_batch_size differs from model_repository/preprocess/config.pbtxt"
    )


def test_decode_refuses_what_preprocess_would_refuse():
    """decode checks the declared size before decoding, with preprocess's limit."""
    def limit(model: str) -> str:
        config = model_config.read_config(REPO_ROOT / "model_repository" / model / "config.pbtxt")
        return config.parameters["max_image_side"].string_value

    assert limit("decode") == limit("preprocess")
