"""``pixelserve-build``: build the model repository for the host that serves it, and say what it chose and why.

    pixelserve-build [--target auto|cpu|gpu-torch|gpu-tensorrt] [--gpus N] [--profile throughput|latency]
                     [--repository model_repository] [--onnx PATH] [--weights model.pt]

The committed config.pbtxt files are the portable build (CPU, ONNX Runtime), and a CPU build rewrites them
byte for byte. A GPU build leaves them as they are and writes, beside each model's, the config Triton loads on
this host: ``<model>/configs/pixelserve.pbtxt`` (Triton's own per-host configs, chosen with tritonserver's
``--model-config-name``), with the classifier's flavour and the instances of build/placement.yaml's profile on
every GPU. The manifest ``<repository>/pixelserve-build.json`` says what was built, for which host, and how to
serve it (config name, server arguments, MPS): pixelserve-server, LocalTritonServer (tests, benchmarks) and the
container's entry point read it (pixelserve.triton_local.build_manifest), so every path serves this build.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pixelserve.triton_local.build_manifest import CONFIG_NAME, MANIFEST_NAME, Manifest, read_manifest, write_manifest

from . import build_classifier, classifier_config, model_config, place_instances

TARGETS = {"cpu": "onnxruntime", "gpu-torch": "torch", "gpu-tensorrt": "tensorrt"}
FLAVOUR_TARGETS = {flavour: target for target, flavour in TARGETS.items()}
DEFAULT_REPOSITORY = build_classifier.REPO_ROOT / "model_repository"
ONE_STEP_SOURCE = Path(__file__).resolve().parent / "models" / "one_step" / "model.py"
# The models that are one Python-backend step where the flavour is in classifier_config.ONE_STEP_FLAVOURS.
ONE_STEP_MODELS = (classifier_config.ENSEMBLE_NAME, classifier_config.ENCODED_ENSEMBLE_NAME)
VERSIONED = ("numba", "numba-cuda", "numpy", "torch", "onnxruntime", "nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12",
             "tensorrt", "tritonclient")  # fmt: skip
# MPS on for GPU builds: on the H100 it served more at every concurrency measured (issue 11 session 8: concurrency 1
# p50 3.6-4.1 ms against 4.4; concurrency 32 3,660 files/s against 2,612; the encoded ensemble 2,908-3,150 images/s
# against 1,751 at 32 in session 5).
MPS_REASON = "MPS served more at every concurrency measured on the H100 (perf/results/README.md, 'MPS')"


def gpu_names() -> list[str]:
    """The names of the GPUs nvidia-smi sees (empty without a driver)."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def versions() -> dict[str, str]:
    """Versions of the packages the served models run on (those installed here)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def decoder_description(target: str) -> str:
    """Which decoder the encoded requests get on a host like this one."""
    if target == "cpu":
        return "PIL on the CPU"
    try:
        from pixelserve.model_runtime.gpu_decoding import nvimgcodec_module

        return f"nvImageCodec {nvimgcodec_module().__version__} on the GPU"
    except ImportError:
        return ("nvImageCodec on the GPU where the serving host has it (pip install -r requirements-gpu-decode.txt), "
                "else PIL: not importable on the host that built this")


def choose_target(requested: str) -> tuple[str, str]:
    """(target, reason): ``requested``, or for ``auto`` what this host can serve (build_classifier.choose_flavour)."""
    if requested != "auto":
        return requested, f"--target {requested}"
    flavour, reason = build_classifier.choose_flavour("auto")
    return FLAVOUR_TARGETS[flavour], reason


def flavour_configs(flavour: str, classifier_text: str) -> dict[str, Any]:
    """The ModelConfig of every model for ``flavour``; the classifier's from the text its build left."""
    return {
        "preprocess": model_config.read_config(classifier_config.PREPROCESS_CONFIG),
        classifier_config.MODEL_NAME: model_config.parse_config(classifier_text),
        classifier_config.ENSEMBLE_NAME: classifier_config.product_config(flavour, encoded=False),
        classifier_config.ENCODED_ENSEMBLE_NAME: classifier_config.product_config(flavour, encoded=True),
    }


def placed(config: Any, gpus: int, per_gpu: dict[str, int]) -> tuple[Any, dict[int, int]]:
    """``config`` with its instances on GPUs 0..gpus-1 (build/placement.yaml's count per GPU), and that placement;
    models that stay on the host (ensembles, KIND_CPU) or that the profile does not name are left as they are."""
    if config.name not in per_gpu or place_instances.host_reason(config) is not None:
        return config, {}
    count = per_gpu[config.name]
    return place_instances.placed_config(config, range(gpus), count), {gpu: count for gpu in range(gpus)}


def write_gpu_configs(repository: Path, configs: dict[str, Any], target: str, profile: str, gpus: int,
                      per_gpu: dict[str, int]) -> dict[str, dict[int, int]]:  # fmt: skip
    """Write ``<model>/configs/pixelserve.pbtxt`` for every model; return the instances placed per model and GPU."""
    placements = {}
    for name, config in configs.items():
        config, placement = placed(config, gpus, per_gpu)
        if placement:
            placements[name] = placement
        where = f"{per_gpu.get(name, 0)} instance(s) on each of {gpus} GPU(s)" if placement else "not placed (host or ensemble)"
        model_config.write_config(repository / name / "configs" / f"{CONFIG_NAME}.pbtxt", config, [
            f"Written by pixelserve-build for target {target}, profile {profile}: {where}.",
            f"Triton loads it instead of ../config.pbtxt when started with --model-config-name={CONFIG_NAME}",
            f"(pixelserve-server and the container do, from ../../{MANIFEST_NAME}). Regenerate, do not edit:",
            f"pixelserve-build --target {target} --gpus {gpus} --profile {profile}",
        ])
    return placements


def remove_gpu_build(repository: Path) -> None:
    """Remove what a GPU build wrote (configs/pixelserve.pbtxt, the one-step model's code)."""
    for path in repository.glob(f"*/configs/{CONFIG_NAME}.pbtxt"):
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    for model in ONE_STEP_MODELS:
        (repository / model / "1" / "model.py").unlink(missing_ok=True)


def install_one_step(repository: Path, flavour: str) -> None:
    """Put the one-step model's code where Triton loads it, only where the flavour makes the products one step."""
    for model in ONE_STEP_MODELS:
        target = repository / model / "1" / "model.py"
        if flavour in classifier_config.ONE_STEP_FLAVOURS:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ONE_STEP_SOURCE, target)
        else:
            target.unlink(missing_ok=True)


def gpu_server_args(gpus: int) -> list[str]:
    """How a GPU build is served: its per-host configs, and build/placement.yaml's CUDA memory pool on each GPU."""
    pool = place_instances.load_settings()["cuda_memory_pool_bytes"]
    return [f"--model-config-name={CONFIG_NAME}"] + [f"--cuda-memory-pool-byte-size={gpu}:{pool}" for gpu in range(gpus)]


def build(target: str, gpus: int, profile: str, repository: Path, onnx: Path | None = None,
          weights: Path | None = None) -> Manifest:  # fmt: skip
    """Build ``repository`` for ``target`` on ``gpus`` GPUs; return the manifest it wrote (BuildError, PlacementError)."""
    flavour = TARGETS[target]
    model_dir = repository / classifier_config.MODEL_NAME
    onnx_path = None if flavour == "torch" else build_classifier.source_onnx(onnx)
    build_classifier.install(flavour, onnx_path, model_dir, weights)
    remove_gpu_build(repository)
    per_gpu = place_instances.load_per_gpu(profile=profile)
    placements: dict[str, dict[int, int]] = {}
    server_args: list[str] = []
    if target != "cpu":
        configs = flavour_configs(flavour, (model_dir / "config.pbtxt").read_text())
        # The committed config.pbtxt files stay the portable build: written again for ONNX Runtime, byte for byte.
        build_classifier.write_config("onnxruntime", model_dir)
        build_classifier.write_ensemble(model_dir, "onnxruntime")
        placements = write_gpu_configs(repository, configs, target, profile, gpus, per_gpu)
        install_one_step(repository, flavour)
        server_args = gpu_server_args(gpus)
    manifest = Manifest(
        target=target, flavour=flavour, profile=profile, gpus=gpus, gpu_names=gpu_names(),
        config_name=CONFIG_NAME if target != "cpu" else None, server_args=server_args,
        mps=target != "cpu", mps_reason=MPS_REASON if target != "cpu" else "no GPU instances",
        decoder=decoder_description(target), instances=placements, versions=versions())
    write_manifest(repository, manifest)
    return manifest


def replace_for_gpus(repository: Path, gpus: int, per_gpu: dict[str, int] | None = None) -> Manifest:
    """Place a GPU build's instances again for ``gpus`` GPUs (the count a host shows at start), with the same
    instances per GPU (``per_gpu`` overrides some), and rewrite its per-host configs and manifest; the classifier
    is not built again."""
    manifest = read_manifest(repository)
    if manifest is None or manifest.config_name is None:
        raise build_classifier.BuildError(f"{repository} holds no GPU build to place again")
    if gpus < 1:
        raise build_classifier.BuildError("no GPU to place the instances on")
    per_gpu = {**{model: placement[min(placement)] for model, placement in manifest.instances.items()},
               **(per_gpu or {})}  # fmt: skip
    configs = {path.parent.parent.name: model_config.read_config(path)
               for path in sorted(repository.glob(f"*/configs/{CONFIG_NAME}.pbtxt"))}  # fmt: skip
    placements = write_gpu_configs(repository, configs, manifest.target, manifest.profile, gpus, per_gpu)
    placed_again = dataclasses.replace(manifest, gpus=gpus, instances=placements, server_args=gpu_server_args(gpus),
                                       gpu_names=gpu_names())  # fmt: skip
    write_manifest(repository, placed_again)
    return placed_again


def summary(manifest: Manifest, target_reason: str, gpus_reason: str) -> str:
    """What was built and why, in a few lines."""
    lines = [f"target: {manifest.target} ({target_reason}); classifier flavour {manifest.flavour}",
             f"GPUs: {manifest.gpus} ({gpus_reason}){': ' + ', '.join(manifest.gpu_names) if manifest.gpu_names else ''}",
             f"decoder: {manifest.decoder}", f"profile: {manifest.profile}"]
    for model, placement in manifest.instances.items():
        lines.append(f"  {model}: " + ", ".join(f"GPU {gpu} x{count}" for gpu, count in sorted(placement.items())))
    if manifest.server_args:
        lines.append("server arguments: " + " ".join(manifest.server_args))
    off = "; pixelserve-server --no-mps turns it off" if manifest.mps else ""
    lines.append(f"MPS: {'on' if manifest.mps else 'off'} ({manifest.mps_reason}{off})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the repository and print what was chosen; 0 on success, 1 when the build cannot be made here."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("auto", *TARGETS), default="auto",
                        help="what the repository serves on (auto: what this host can)")
    parser.add_argument("--gpus", type=int, help="GPUs to place instances on (default: those nvidia-smi sees)")
    parser.add_argument("--profile", choices=place_instances.PROFILES, default=place_instances.DEFAULT_PROFILE,
                        help="throughput: many requests at once (default); latency: one request at a time")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--onnx", type=Path, help="serve this ImageNet ONNX instead of the EfficientNet-Lite0 export")
    parser.add_argument("--weights", type=Path, help="gpu-torch: serve this model.pt (written by a build elsewhere)")
    parser.add_argument("--place-only", action="store_true",
                        help="place the repository's GPU build again for --gpus N (or the GPUs seen), building nothing")
    args = parser.parse_args(argv)
    if args.place_only:
        try:
            gpus = args.gpus if args.gpus is not None else len(gpu_names())
            manifest = replace_for_gpus(args.repository, gpus)
        except build_classifier.BuildError as exc:
            print(f"pixelserve-build: {exc}", file=sys.stderr)
            return 1
        print(summary(manifest, f"the {manifest.target} build in {args.repository}", "--place-only"))
        return 0
    try:
        target, target_reason = choose_target(args.target)
        if target == "cpu":
            gpus, gpus_reason = 0, "the CPU target places nothing on GPUs"
        elif args.gpus is not None:
            gpus, gpus_reason = args.gpus, "--gpus"
        else:
            gpus, gpus_reason = len(gpu_names()), "seen by nvidia-smi"
        if target != "cpu" and gpus < 1:
            raise build_classifier.BuildError(f"--target {target} needs at least one GPU: pass --gpus N to build for "
                                              "another host")
        manifest = build(target, gpus, args.profile, args.repository, args.onnx, args.weights)
    except (build_classifier.BuildError, place_instances.PlacementError) as exc:
        print(f"pixelserve-build: {exc}", file=sys.stderr)
        return 1
    print(summary(manifest, target_reason, gpus_reason))
    print(f"wrote {args.repository / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
