#!/usr/bin/env bash
# Run the test suite (real tritonserver, real perf_analyzer, real model and photos). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pixelserve.build.build_classifier
exec .venv/bin/python -m pytest "$@"
