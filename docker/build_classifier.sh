#!/usr/bin/env bash
# Build the TensorRT classifier inside nvcr.io/nvidia/tensorrt:<TRITON_RELEASE>-py3 (the TensorRT that the
# tritonserver image of the same release runs), with the repository mounted at the working directory.
# Needs artifacts/onnx/efficientnet_lite0.onnx (made on any host by `python -m pixelserve.build.build_classifier
# --flavour onnxruntime`, which exports it with torch). Extra arguments go to build_classifier.py.
set -euo pipefail
python3 -m pip install --no-cache-dir -r docker/requirements-build.txt -r docker/requirements-container.txt
# The project from the mount as `pixelserve.*`: an editable install (a plain `pip install .` would build
# in-tree and write into build/).
python3 -m pip install --no-cache-dir --no-deps -e .
exec python3 -m pixelserve.build.build_classifier --flavour tensorrt "$@"
