#!/usr/bin/env bash
# Build .carry/, the offline bundle that perf/run_device.sh installs on a GPU host without network access whose
# Python (3.12) has torch, numba-cuda and onnxruntime but no Triton: python-rapidjson, setuptools and
# efficientnet-lite-pytorch wheels, plus one tar.xz holding numpy 1.26.4 (unpacked), tritonserver 2.51 (from nvidia-pytriton: binary, Python
# backend, the 3.12 stub, caches, libraries minus the bundled libpython), the tritonclient package and perf_analyzer
# (from tritonclient 2.51). Run from the repository root on a machine with network, after scripts/setup.sh, then
# copy .carry/ (about 42 MB, git-ignored) to the GPU host beside the checkout.
set -euo pipefail
PY=3.12
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
work=$(mktemp -d)
mkdir -p .carry "$work/site/bin" "$work/site/pytriton/tritonserver/backends" "$work/site/pytriton/tritonserver/python_backend_stubs"
pip_download() {
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
pip_download .carry python-rapidjson==1.25 setuptools==84.2.1  # setuptools: run_device.sh's editable install
# numpy goes unpacked into the site tar: xz packs it to half its wheel (9 MB, not 18), which leaves room in a call's
# 64 MiB carry for .carry/, the working tree and the classifier's weights together.
pip_download "$work" numpy==1.26.4
(cd "$work" && unzip -q numpy-1.26.4-*.whl -d site && rm -rf site/numpy-1.26.4.data)
# The torch flavour builds its network with efficientnet-lite-pytorch (23 kB, pure Python): the GPU host has none.
pip_download .carry efficientnet-lite-pytorch==0.1.0
pip_download "$work" tritonclient==2.51.0
(cd "$work" && unzip -q tritonclient-2.51.0-*.whl -d client)
cp -r "$work/client/tritonclient-2.51.0.data/purelib/tritonclient" "$work/site/"
cp "$work/client/tritonclient-2.51.0.data/data/bin/perf_analyzer" "$work/site/bin/"
server="$site/pytriton/tritonserver"
cp "$site/pytriton/__init__.py" "$work/site/pytriton/"
cp -r "$server/bin" "$server/caches" "$work/site/pytriton/tritonserver/"
cp -r "$server/backends/python" "$work/site/pytriton/tritonserver/backends/"
cp -r "$server/python_backend_stubs/$PY" "$work/site/pytriton/tritonserver/python_backend_stubs/"
cp -r "$site/nvidia_pytriton.libs" "$work/site/"
rm -f "$work"/site/nvidia_pytriton.libs/libpython3-*.so*
find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
tar -c -C "$work/site" . | xz -T0 -6 > .carry/triton-2.51-site.tar.xz
rm -rf "$work"
du -sh .carry/*
