#!/usr/bin/env bash
# Build .carry-ma/ for `bash perf/run_device.sh analyzer` on a GPU host without network access: Triton Model
# Analyzer 1.58 and the packages it imports, as cp312 wheels, less those the host's Python or .carry/ already provide
# (numpy, numba, llvmlite, the CUDA Python bindings, pillow, tritonclient and perf_analyzer: Model Analyzer drives the
# carried 2.51 ones) and those only tritonclient's asyncio client needs (aiohttp and its dependencies, ml_dtypes).
# Run from the repository root on a machine with network, after scripts/setup.sh. About 42 MB, a bundle separate
# from .carry/ (about 51 MB), so that each can be copied to the GPU host on its own: run_device.sh installs it into
# /tmp/ma-site on a host where .carry/ is unpacked.
set -euo pipefail
PY=3.12
work=$(mktemp -d)
.venv/bin/python -m pip download -q --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux1_x86_64 -d "$work" "triton-model-analyzer==1.58.0" "numpy<2"
rm -rf .carry-ma && mkdir .carry-ma
for wheel in "$work"/*.whl; do
  case "$(basename "$wheel")" in
    numpy-*|numba-*|llvmlite-*|cuda_*|pillow-*|tritonclient-*|perf_analyzer-*|python_rapidjson-*) ;;
    aiohttp-*|aiohappyeyeballs-*|aiosignal-*|multidict-*|yarl-*|propcache-*|frozenlist-*|ml_dtypes-*) ;;
    *) mv "$wheel" .carry-ma/ ;;
  esac
done
rm -rf "$work"
du -sh .carry-ma
