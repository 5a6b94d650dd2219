"""Run Triton Model Analyzer (``model-analyzer profile``) in local launch mode on this repository.

Model Analyzer starts ``tritonserver`` and ``perf_analyzer`` itself; the ones here need libraries, a
backend directory and a Python environment for the stub that Model Analyzer knows nothing of, so this
writes two wrapper scripts that add them (the same settings LocalTritonServer and run_perf use) and hands
their paths to Model Analyzer. Model Analyzer lives in its own virtual environment (it requires a newer
tritonclient than the 2.51 this project pins): MODEL_ANALYZER or --model-analyzer names its executable.

On a GPU host without DCGM (Model Analyzer loads libdcgm.so.4 as soon as it sees a GPU, and fails without it),
Model Analyzer is shown no GPU (NUMBA_DISABLE_CUDA=1: it finds GPUs through numba) while the server it starts
still gets them: the reports then carry no GPU utilisation or memory, everything else is measured as usual.

Usage: python -m pixelserve.perf.model_analyzer [--config perf/model_analyzer.yaml ...] [--workdir DIR]
Writes, per config file, DIR/<config name>/results (reports, metrics CSVs) and .../output_repository (the
configurations it tried).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pixelserve.triton_local import paths, server, tools

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "perf" / "model_analyzer.yaml"
DEFAULT_MODEL_ANALYZER = REPO_ROOT / ".venv-model-analyzer" / "bin" / "model-analyzer"
# Variables Model Analyzer sets for the server it starts that the server must not keep when Model Analyzer was
# shown no GPU (CUDA_VISIBLE_DEVICES="" would hide the GPUs from the models).
_GPU_HIDING = ("CUDA_VISIBLE_DEVICES", "NUMBA_DISABLE_CUDA")


def wrapper_script(path: Path, env: dict[str, str], argv: list[str], restore_gpus: bool = False) -> Path:
    """An executable shell script at ``path`` that exports ``env``'s library, path and cache settings and execs ``argv``."""
    keep = ("LD_LIBRARY_PATH", "PATH", "NUMBA_CACHE_DIR")
    lines = [f"export {name}={shlex.quote(env[name])}" for name in keep if name in env]
    if restore_gpus:
        lines += [f"export {name}={shlex.quote(env[name])}" if name in env else f"unset {name}" for name in _GPU_HIDING]
    body = "".join(line + "\n" for line in lines)
    path.write_text(f"#!/bin/sh\n# Written by pixelserve.perf.model_analyzer.\n{body}exec {shlex.join(argv)} \"$@\"\n")
    path.chmod(0o755)
    return path


def gpu_without_dcgm() -> bool:
    """Whether an NVIDIA GPU is present but DCGM's library, which Model Analyzer needs to use it, is not."""
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        return False
    # Model Analyzer loads DCGM from these two paths only (model_analyzer/monitor/dcgm/dcgm_structs.py).
    return not any(Path(path).is_file() for path in (f"/usr/lib/{platform.machine()}-linux-gnu/libdcgm.so.4",
                                                     "/usr/lib64/libdcgm.so.4"))  # fmt: skip


def write_wrappers(workdir: Path, restore_gpus: bool = False) -> tuple[Path, Path]:
    """(tritonserver, perf_analyzer) wrapper scripts in ``workdir/bin``; ``restore_gpus``: the server gets this
    environment's GPUs back whatever Model Analyzer set."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python_env = server.make_python_env(workdir / "python-env")
    backends = server.make_backend_dir(workdir / "backends")
    env = server.server_environment(python_env=python_env)
    settings = [f"--backend-directory={backends}", f"--cache-directory={paths.caches_dir()}"]
    settings += [f"--backend-config={c}" for c in server.DEFAULT_BACKEND_CONFIG]
    tritonserver = wrapper_script(bin_dir / "tritonserver", env, [str(paths.tritonserver_binary()), *settings], restore_gpus)
    argv, perf_env = tools.perf_analyzer_command([])
    perf_analyzer = wrapper_script(bin_dir / "perf_analyzer", perf_env, argv)
    return tritonserver, perf_analyzer


def profile_command(config: Path, workdir: Path, model_analyzer: Path, restore_gpus: bool = False) -> list[str]:
    """The ``model-analyzer profile`` command line (wrappers written)."""
    tritonserver, perf_analyzer = write_wrappers(workdir, restore_gpus)
    settings = yaml.safe_load(config.read_text())
    return [str(model_analyzer), "profile", "-f", str(config),
            "--model-repository", str(REPO_ROOT / "model_repository"),
            "--output-model-repository-path", str(workdir / "output_repository"),
            "--export-path", str(workdir / "results"), "--checkpoint-directory", str(workdir / "checkpoints"),
            "--triton-server-path", str(tritonserver), "--perf-analyzer-path", str(perf_analyzer),
            "--triton-output-path", str(workdir / "tritonserver.log"),
            # Free ports, not Triton's 8000-8002: Model Analyzer refuses to start when they are taken.
            "--triton-http-endpoint", f"127.0.0.1:{server.free_port()}",
            "--triton-grpc-endpoint", f"127.0.0.1:{server.free_port()}",
            "--triton-metrics-url", f"http://127.0.0.1:{server.free_port()}/metrics",
            *(["--override-output-model-repository"] if settings.get("override_output_model_repository") else [])]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, action="append", help=f"repeatable; default {DEFAULT_CONFIG}")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "artifacts" / "model_analyzer")
    parser.add_argument("--model-analyzer", type=Path,
                        default=Path(os.environ.get("MODEL_ANALYZER", DEFAULT_MODEL_ANALYZER)))
    args = parser.parse_args(argv)
    if not args.model_analyzer.exists():
        print(f"model-analyzer not found at {args.model_analyzer} (scripts/setup_model_analyzer.sh installs it)",
              file=sys.stderr)
        return 2
    hide_gpus = gpu_without_dcgm()
    env = dict(os.environ)
    if hide_gpus:
        print("GPU present but no DCGM (libdcgm.so.4): Model Analyzer runs without GPU metrics; the server keeps "
              "the GPUs", file=sys.stderr)  # fmt: skip
        env["NUMBA_DISABLE_CUDA"] = "1"
    status = 0
    for config in args.config or [DEFAULT_CONFIG]:
        workdir = (args.workdir / config.stem).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        command = profile_command(config.resolve(), workdir, args.model_analyzer, restore_gpus=hide_gpus)
        print(shlex.join(command), flush=True)
        try:
            status = _run(command, workdir, env) or status
        except KeyboardInterrupt:
            return 130
    return status


def _run(command: list[str], workdir: Path, env: dict[str, str]) -> int:
    """Run Model Analyzer; on Ctrl-C / SIGINT let it end its measurement and save its checkpoint."""
    process = subprocess.Popen(command, cwd=workdir, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Model Analyzer got the signal too (same process group)
        print("interrupted: Model Analyzer ends its current measurement and keeps a checkpoint", file=sys.stderr)
        process.wait()
        raise


if __name__ == "__main__":
    sys.exit(main())
