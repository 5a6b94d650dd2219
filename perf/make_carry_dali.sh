#!/usr/bin/env bash
# Build .carry-dali/ for `bash perf/run_device.sh install-dali` on a GPU host without network access: NVIDIA DALI
# (nvidia-dali-cuda130, 199 MB as a wheel, 473 MB unpacked) as one tar.xz of the unpacked wheel (about 137 MB) split
# into pieces of 46 MB (dali-part-aa, -ab, ...) with its checksum (dali.sha256), and the packages it imports as cp312
# wheels (deps/). Its nvImageCodec comes from .carry-gpu-decode/; nvcomp is left out (only
# DALI's decompression operators use it). Each piece fits one call beside the working tree: carry one per call, the
# last with dali.sha256 and deps/. Run from the repository root on a machine with network, after scripts/setup.sh;
# compressing takes about 5 minutes on 2 cores.
set -euo pipefail
PY=3.12
DALI_VERSION="${DALI_VERSION:-2.4.0}"
work=$(mktemp -d)
pip_download() {
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
rm -rf .carry-dali && mkdir -p .carry-dali/deps
pip_download "$work" "nvidia-dali-cuda130==$DALI_VERSION"
pip_download .carry-dali/deps astunparse==1.6.3 gast==0.7.0 six==1.17.0 optree==0.20.0 packaging==26.4 nvtx==0.2.17 \
  makefun==1.16.0 libcst==1.9.0 pyyaml==6.0.4 typing_extensions==4.16.0 wheel==0.48.0
mkdir "$work/unpacked" && (cd "$work/unpacked" && unzip -q "$work"/nvidia_dali_cuda130-*.whl)
tar -c -C "$work/unpacked" . | xz -T0 -9 > "$work/dali.tar.xz"
(cd "$work" && sha256sum dali.tar.xz) > .carry-dali/dali.sha256
split -b 46m "$work/dali.tar.xz" .carry-dali/dali-part-
rm -rf "$work"
du -sh .carry-dali/*
