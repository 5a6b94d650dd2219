#!/usr/bin/env bash
# Build .carry-gpu-decode/ for perf/run_device.sh on a GPU host without network access: nvImageCodec and nvJPEG for
# CUDA 13 (the versions requirements-gpu-decode.txt pins), unpacked into one site folder and packed as one tar.xz
# (about 11 MB; the two wheels are 29 MB). Small enough to travel in the same call as .carry/, the working tree and
# model_repository/classifier/1/model.pt: run_device.sh unpacks it into /tmp/site-gpu-decode before its stages.
# Run from the repository root on a machine with network, after scripts/setup.sh.
set -euo pipefail
PY=3.12
work=$(mktemp -d)
pins=$(grep -E '^nvidia-(nvimgcodec-cu13|nvjpeg)==' requirements-gpu-decode.txt)
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$work" $pins
# One target for both: nvImageCodec loads libnvjpeg from nvidia/cu13/lib beside it.
mkdir "$work/site" && for wheel in "$work"/*.whl; do (cd "$work/site" && unzip -q -o "$wheel"); done
rm -rf .carry-gpu-decode && mkdir .carry-gpu-decode
tar -c -C "$work/site" . | xz -T0 -9e > .carry-gpu-decode/gpu-decode-site.tar.xz
rm -rf "$work"
du -sh .carry-gpu-decode/*
