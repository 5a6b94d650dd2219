#!/usr/bin/env bash
# Create .venv with everything the build, the local Triton server, the clients and the tests need.
# Idempotent: re-running only installs what changed. PYTHON picks the interpreter (3.10-3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
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
  echo "$wanted" > "$stamp"
fi
