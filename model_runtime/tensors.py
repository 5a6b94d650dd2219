"""Names of the tensors the models hand each other: one home each.

The configs name them too (model_repository/preprocess/config.pbtxt, the generated ones) and so do the model.py
files; tests/test_one_home.py checks those against the names here.
"""
from __future__ import annotations

# preprocess's output and the classifier's input: the normalised CHW batch.
PIXELS = "pixels"

# The classifier's output: one row of ImageNet scores per image (the ONNX export, the engines and the configs).
LOGITS = "logits"
