#!/usr/bin/env bash
# Build the TensorRT classifier inside nvcr.io/nvidia/tensorrt:<TRITON_RELEASE>-py3 (the TensorRT that the
# tritonserver image of the same release runs), with the repository mounted at the working directory.
# Needs artifacts/onnx/efficientnet_lite0.onnx (made on any host by `pixelserve-build`, which exports it with
# torch). It runs pixelserve-build for gpu-tensorrt on the GPUs this machine shows; extra arguments go to it
# (e.g. --gpus 4 for another host, --profile latency).
set -euo pipefail
python3 -m pip install --no-cache-dir -r docker/requirements-build.txt -r docker/requirements-container.txt
# The project from the mount as `pixelserve.*`: an editable install (a plain `pip install .` would build
# in-tree and write into build/).
python3 -m pip install --no-cache-dir --no-deps -e .
exec python3 -m pixelserve.build.build_repository --target gpu-tensorrt "$@"
