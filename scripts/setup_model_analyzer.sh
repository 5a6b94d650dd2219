#!/usr/bin/env bash
# Triton Model Analyzer in its own environment, .venv-model-analyzer (it requires a newer tritonclient than
# the 2.51 that .venv pins; numpy<2, which the 2.51 Python-backend stub needs). About 5 minutes the first time.
# Then: .venv/bin/python -m pixelserve.perf.model_analyzer (see perf/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv-model-analyzer/bin/model-analyzer ]; then
  "$PYTHON" -m venv .venv-model-analyzer
  .venv-model-analyzer/bin/python -m pip install --quiet "triton-model-analyzer==1.58.0" "numpy<2"
fi
