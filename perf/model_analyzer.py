"""Run Triton Model Analyzer (``model-analyzer profile``) in local launch mode on this repository.

Model Analyzer starts ``tritonserver`` and ``perf_analyzer`` itself; the ones here need libraries, a
backend directory and a Python environment for the stub that Model Analyzer knows nothing of, so this
writes two wrapper scripts that add them (the same settings LocalTritonServer and run_perf use) and hands
their paths to Model Analyzer. Model Analyzer lives in its own virtual environment (it requires a newer
tritonclient than the 2.51 this project pins): MODEL_ANALYZER or --model-analyzer names its executable.

Usage: python -m pixelserve.perf.model_analyzer [--config perf/model_analyzer.yaml] [--workdir DIR]
Writes DIR/results (reports, metrics CSVs) and DIR/output_repository (the configurations it tried).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from pixelserve.triton_local import paths, server, tools

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "perf" / "model_analyzer.yaml"
DEFAULT_MODEL_ANALYZER = REPO_ROOT / ".venv-model-analyzer" / "bin" / "model-analyzer"


def _script(path: Path, env: dict[str, str], argv: list[str]) -> Path:
    keep = ("LD_LIBRARY_PATH", "PATH", "NUMBA_CACHE_DIR")
    exports = "".join(f"export {name}={shlex.quote(env[name])}\n" for name in keep if name in env)
    path.write_text(f"#!/bin/sh\n# Written by pixelserve.perf.model_analyzer.\n{exports}exec {shlex.join(argv)} \"$@\"\n")
    path.chmod(0o755)
    return path


def write_wrappers(workdir: Path) -> tuple[Path, Path]:
    """(tritonserver, perf_analyzer) wrapper scripts in ``workdir/bin``."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python_env = server.make_python_env(workdir / "python-env")
    backends = server.make_backend_dir(workdir / "backends")
    env = server.server_environment(python_env=python_env)
    settings = [f"--backend-directory={backends}", f"--cache-directory={paths.caches_dir()}"]
    settings += [f"--backend-config={c}" for c in server.DEFAULT_BACKEND_CONFIG]
    tritonserver = _script(bin_dir / "tritonserver", env, [str(paths.tritonserver_binary()), *settings])
    argv, perf_env = tools.perf_analyzer_command([])
    perf_analyzer = _script(bin_dir / "perf_analyzer", perf_env, argv)
    return tritonserver, perf_analyzer


def profile_command(config: Path, workdir: Path, model_analyzer: Path) -> list[str]:
    """The ``model-analyzer profile`` command line (wrappers written)."""
    tritonserver, perf_analyzer = write_wrappers(workdir)
    settings = yaml.safe_load(config.read_text())
    return [str(model_analyzer), "profile", "-f", str(config),
            "--model-repository", str(REPO_ROOT / "model_repository"),
            "--output-model-repository-path", str(workdir / "output_repository"),
            "--export-path", str(workdir / "results"), "--checkpoint-directory", str(workdir / "checkpoints"),
            "--triton-server-path", str(tritonserver), "--perf-analyzer-path", str(perf_analyzer),
            "--triton-output-path", str(workdir / "tritonserver.log"),
            *(["--override-output-model-repository"] if settings.get("override_output_model_repository") else [])]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "artifacts" / "model_analyzer")
    parser.add_argument("--model-analyzer", type=Path,
                        default=Path(os.environ.get("MODEL_ANALYZER", DEFAULT_MODEL_ANALYZER)))
    args = parser.parse_args(argv)
    if not args.model_analyzer.exists():
        print(f"model-analyzer not found at {args.model_analyzer} (scripts/setup_model_analyzer.sh installs it)",
              file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    command = profile_command(args.config.resolve(), args.workdir.resolve(), args.model_analyzer)
    print(shlex.join(command), flush=True)
    return subprocess.run(command, cwd=args.workdir).returncode


if __name__ == "__main__":
    sys.exit(main())
