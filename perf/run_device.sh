#!/usr/bin/env bash
# One device-machine session: GPU tests, kernel benchmark, served benchmark (ours vs peers).
# Usage on the device (repository root, .carry/ carried):  bash perf/run_device.sh [tests] [bench] [served]
# .carry/ holds what the device image lacks: numpy 1.26.4 (numba-cuda and the Triton 2.51 stub need numpy<2), setuptools
# and tritonserver 2.51 + python backend + stub 3.12 + tritonclient + perf_analyzer (see perf/README.md).
set -uo pipefail
OUT="${OUT:-/tmp/pixelserve-out}"
mkdir -p "$OUT" /tmp/results
stages="${*:-tests bench served}"
if [ ! -d /tmp/site/pytriton ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
  tar -xJf .carry/triton-2.51-site.tar.xz -C /tmp/site
fi
export PYTHONPATH="/tmp/site" PATH="/tmp/site/bin:$PATH" NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
# The project as `pixelserve.*`, editable, offline: setuptools comes from the carried wheel in /tmp/site.
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
python3 -c "import numpy, numba, numba_cuda, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__)"
python3 -c "import cupy; print('cupy', cupy.__version__)" || echo "cupy unusable here: the runner falls back to torch"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv

if [[ $stages == *tests* ]]; then
  echo "=== GPU tests"
  python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_antialias.py tests/test_gpu_serving.py tests/test_placement.py \
    --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [[ $stages == *bench* ]]; then
  echo "=== kernel benchmark"
  python3 -m pixelserve.perf.bench_kernels --json "$OUT/bench_kernels.json" 2>&1 | tee "$OUT/bench_kernels.log" | grep -v '^{'
fi
if [[ $stages == *served* ]]; then
  echo "=== served benchmark: preprocess vs peers, perf_analyzer over gRPC"
  python3 -m pixelserve.triton_local --model-repository model_repository --model-repository perf/peer_models \
    --http-port 8000 --grpc-port 8001 --metrics-port 8002 -- --model-control-mode=explicit \
    --load-model=preprocess --load-model=preprocess_torch --load-model=preprocess_opencv \
    --cuda-memory-pool-byte-size=0:2147483648 > /tmp/results/server.log 2>&1 &
  for _ in $(seq 240); do curl -sf localhost:8000/v2/health/ready && break; sleep 0.5; done
  # RUNS: model:instances pairs; the shipped config's count is what `model:` alone measures.
  for run in ${RUNS:-preprocess: preprocess_torch: preprocess_opencv:}; do
    model="${run%%:*}" count="${run#*:}"
    [ -n "$count" ] && python3 -m pixelserve.perf.set_instances "$model" "$count"
    python3 -m pixelserve.perf.run_perf --config h100_preprocess --model "$model" --url 127.0.0.1:8001 \
      --measurement-interval "${INTERVAL_MS:-2000}" --concurrency "${CONCURRENCY:-1,8,16,32}" \
      --shared-memory "${SHM:-none,system,cuda}" --results-dir /tmp/results 2>&1 | grep -v "^perf_analyzer:" | tail -16
  done
  kill %1; wait
fi
tar -czf "$OUT/results.tgz" -C /tmp/results .
