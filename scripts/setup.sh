#!/usr/bin/env bash
# Create .venv with everything the build, the local Triton server, the clients and the tests need.
# Idempotent: re-running only installs what changed. PYTHON picks the interpreter (3.10-3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Prometheus and promtool (Debian's package) for the monitoring tests; they skip, saying why, without them.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
      >/dev/null || echo "setup.sh: could not install prometheus; its tests will skip" >&2
  else
    echo "setup.sh: prometheus/promtool missing (apt-get install prometheus as root); their tests will skip" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.pixelserve-requirements
wanted="$(cat requirements.txt requirements-dev.txt requirements-typecheck.txt pyproject.toml | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  # TensorRT API type stubs for the mypy check: they declare TensorRT itself as a dependency, which
  # cannot be installed here, hence --no-deps (see requirements-typecheck.txt).
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-typecheck.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  # numba's kernel caches beside the sources name the module they were compiled under; after a package rename
  # (pyproject.toml changed) they would fail to load, so they are compiled again.
  find kernels_numba -name '*.nbi' -delete -o -name '*.nbc' -delete
  echo "$wanted" > "$stamp"
fi
