#!/usr/bin/env bash
# Run the test suite (real tritonserver, real perf_analyzer, real model and photos) on the repository pixelserve-build
# writes for this host. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pixelserve.build.build_repository
exec .venv/bin/python -m pytest "$@"
