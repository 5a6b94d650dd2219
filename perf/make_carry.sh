#!/usr/bin/env bash
# Build .carry/, the offline bundle that perf/run_device.sh installs on a GPU host without network access whose
# Python (3.12) has torch, numba-cuda and onnxruntime but no Triton: one tar.xz holding, unpacked, numpy 1.26.4,
# python-rapidjson, setuptools, efficientnet-lite-pytorch, tritonserver 2.51 (from nvidia-pytriton: binary, Python
# backend, the 3.12 stub, caches, libraries minus the bundled libpython), the tritonclient package and perf_analyzer
# (from tritonclient 2.51). Run from the repository root on a machine with network, after scripts/setup.sh, then
# copy .carry/ (about 40 MB with the classifier's weights, git-ignored) to the GPU host beside the checkout.
set -euo pipefail
PY=3.12
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
work=$(mktemp -d)
rm -rf .carry && mkdir -p .carry "$work/site/bin" "$work/site/pytriton/tritonserver/backends" "$work/site/pytriton/tritonserver/python_backend_stubs"
pip_download() {
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
# The wheels go unpacked into the site tar (numpy 1.26.4, python-rapidjson for tritonclient.http, setuptools for
# run_device.sh's editable install, efficientnet-lite-pytorch, 23 kB of pure Python the torch flavour builds its
# network with): xz packs numpy to half its wheel (9 MB, not 18), which lets .carry/, .carry-gpu-decode/ and the
# working tree travel in one call's 64 MiB.
mkdir "$work/wheels"
pip_download "$work/wheels" numpy==1.26.4 python-rapidjson==1.25 setuptools==84.2.1 efficientnet-lite-pytorch==0.1.0
for wheel in "$work"/wheels/*.whl; do (cd "$work/site" && unzip -q -o "$wheel"); done
rm -rf "$work"/site/*.data "$work"/site/numpy/*/tests "$work"/site/numpy/tests "$work"/site/setuptools/tests  # never run there
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
tar -c -C "$work/site" . | xz -T0 -9e > .carry/triton-2.51-site.tar.xz
rm -rf "$work"
# The classifier's weights where this host has built them (the GPU host cannot download them): xz saves the 1 MB that
# lets .carry/, .carry-gpu-decode/ and the working tree travel in one call.
weights=model_repository/classifier/1/model.pt
if [ -f "$weights" ]; then xz -T0 -9e -c "$weights" > .carry/model.pt.xz; fi
du -sh .carry/*
