#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the classifier this host supports, serve the repository
# on a local Triton server and classify real photos over HTTP and gRPC.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
