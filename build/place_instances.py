"""Place the repository's model instances on N GPUs: one ``instance_group`` entry per GPU, from one setting.

Usage:
  python -m pixelserve.build.place_instances --gpus 0,1,2,3 [--output DIR]        # or --gpu-count 4
  python -m pixelserve.build.place_instances --gpu-count 8 --per-gpu preprocess=2 --repository model_repository

Instances per GPU come from build/placement.yaml (``--per-gpu model=count`` overrides). Each placed model's
config.pbtxt gets ``instance_group [ { count: C, kind: KIND_GPU, gpus: [ g ] }, ... ]``, one entry per GPU,
written by the protobuf writer (build/model_config.py) under a header: every other field stays as it was, the
source's comments do not carry over. A model configured for KIND_CPU (the ONNX
Runtime classifier) is left as it is. Without --output the repository is edited in place; with it, the model
directories are copied there first (large files as symlinks). Every generated config is then validated.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import model_config

BUILD_DIR = Path(__file__).resolve().parent
REPO_ROOT = BUILD_DIR.parent
DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
SETTINGS = BUILD_DIR / "placement.yaml"
CONFIG_NAME = "config.pbtxt"
# Files at least this big (model.onnx, model.plan) are symlinked into a copied repository, not copied.
LINK_BYTES = 1 << 20
# Group kinds that place nothing on a GPU: such models are left as they are.
HOST_KINDS = ("KIND_CPU", "KIND_MODEL")


class PlacementError(ValueError):
    """A placement request or a generated repository is invalid; the message lists why."""


@dataclass(frozen=True)
class ModelPlacement:
    """What happened to one model: placed per GPU, or left as it is (and why)."""

    model: str
    placed: bool
    message: str


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into a ``ModelConfig`` message (PlacementError if it does not parse)."""
    from google.protobuf import text_format

    try:
        return model_config.parse_config(text)
    except text_format.ParseError as exc:
        raise PlacementError(f"not a valid config.pbtxt: {exc}") from None


def parse_gpu_list(text: str) -> list[int]:
    """``"0,1,3"`` -> [0, 1, 3]; argparse-friendly errors for non-integers."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"GPU ids must be a comma list of integers, got {text!r}") from None


def parse_per_gpu(text: str) -> dict[str, int]:
    """``"preprocess=4,classifier=1"`` -> {"preprocess": 4, "classifier": 1}."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, sep, value = item.partition("=")
        if not sep or not model.strip():
            raise argparse.ArgumentTypeError(f"--per-gpu wants model=count items, got {item!r}")
        try:
            counts[model.strip()] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--per-gpu count for {model!r} must be an integer, got {value!r}") from None
    return counts


PROFILES = ("throughput", "latency")
DEFAULT_PROFILE = "throughput"


def load_settings(path: str | os.PathLike[str] = SETTINGS) -> dict[str, Any]:
    """The placement settings file (build/placement.yaml), checked: ``profiles`` and ``cuda_memory_pool_bytes``."""
    import yaml

    with open(path) as handle:
        settings = yaml.safe_load(handle) or {}
    unknown = sorted(set(settings) - {"profiles", "cuda_memory_pool_bytes"})
    if unknown:
        raise PlacementError(f"{path}: unknown keys {unknown}; known: ['cuda_memory_pool_bytes', 'profiles']")
    profiles = settings.get("profiles") or {}
    if sorted(profiles) != sorted(PROFILES):
        raise PlacementError(f"{path}: profiles must be {list(PROFILES)}, got {sorted(profiles)}")
    for name, per_gpu in profiles.items():
        if not isinstance(per_gpu, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in per_gpu.values()):
            raise PlacementError(f"{path}: profile {name} must map model names to integer instance counts, got {per_gpu!r}")
    pool = settings.get("cuda_memory_pool_bytes")
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 0:
        raise PlacementError(f"{path}: cuda_memory_pool_bytes must be a byte count, got {pool!r}")
    return settings


def load_per_gpu(path: str | os.PathLike[str] = SETTINGS, profile: str = DEFAULT_PROFILE) -> dict[str, int]:
    """Instances per GPU of one profile of a placement settings file (build/placement.yaml)."""
    profiles = load_settings(path)["profiles"]
    if profile not in profiles:
        raise PlacementError(f"{path}: no profile {profile!r}; profiles: {sorted(profiles)}")
    return {str(model): count for model, count in profiles[profile].items()}


def check_request(gpus: Sequence[int], per_gpu: dict[str, int]) -> None:
    """Raise PlacementError on an empty, negative or duplicated GPU list, or an instance count below 1."""
    problems = []
    if not gpus:
        problems.append("no GPUs given")
    if any(gpu < 0 for gpu in gpus):
        problems.append(f"GPU ids must be >= 0, got {list(gpus)}")
    duplicates = sorted({gpu for gpu in gpus if list(gpus).count(gpu) > 1})
    if duplicates:
        problems.append(f"duplicate GPU ids {duplicates} in {list(gpus)}")
    problems += [f"{model}: instances per GPU must be >= 1, got {count}" for model, count in per_gpu.items() if count < 1]
    if problems:
        raise PlacementError("; ".join(problems))


def placed_config(config: Any, gpus: Sequence[int], count: int) -> Any:
    """A copy of ``config`` whose instance_group is ``count`` KIND_GPU instances on each GPU, one entry per GPU."""
    placed = type(config)()
    placed.CopyFrom(config)
    placed.ClearField("instance_group")
    kind_gpu = model_config.pb2().ModelInstanceGroup.Kind.Value("KIND_GPU")
    for gpu in gpus:
        placed.instance_group.add(count=count, kind=kind_gpu, gpus=[gpu])
    return placed


def host_reason(config: Any) -> str | None:
    """Why a model's instances are not GPU instances to place (ensemble, KIND_CPU, KIND_MODEL), else None."""
    if config.platform == "ensemble":
        return "an ensemble has no instances of its own: left as it is"
    kinds = sorted({model_config.pb2().ModelInstanceGroup.Kind.Name(group.kind) for group in config.instance_group})
    host = [kind for kind in kinds if kind in HOST_KINDS]
    if host:
        return f"instance_group asks for {', '.join(host)} (host instances, as in the ONNX Runtime classifier): left as it is"
    return None


def place_model(config_path: Path, gpus: Sequence[int], count: int) -> tuple[ModelPlacement, str | None]:
    """(outcome, new config text) for one model: its instance_group rewritten for ``gpus``, or None if left as is."""
    config = parse_config(config_path.read_text(encoding="utf-8"))
    model = config_path.parent.name
    reason = host_reason(config)
    if reason:
        return ModelPlacement(model, False, reason), None
    where = ", ".join(map(str, gpus))
    header = [
        f"Written by pixelserve.build.place_instances: {count} instance(s) per GPU on GPU {where}.",
        f"Everything else as in the {model} config it was placed from (whose comments explain the settings).",
    ]
    text = model_config.config_text(placed_config(config, gpus, count), header)
    return ModelPlacement(model, True, f"{count} instance(s) on each of GPU {where} ({count * len(gpus)} in all)"), text


def _copy_or_link(source: str, target: str) -> None:
    if os.path.basename(source) != CONFIG_NAME and os.path.getsize(source) >= LINK_BYTES:
        os.symlink(os.path.realpath(source), target)
    else:
        shutil.copy2(source, target)


def copy_repository(source: Path, target: Path) -> Path:
    """Copy the model directories of ``source`` into ``target`` (new or empty); large files become symlinks."""
    source, target = Path(source).resolve(), Path(target).resolve()
    if target == source or source in target.parents:
        raise PlacementError(f"output {target} must not be inside the repository {source}")
    if target.exists() and any(target.iterdir()):
        raise PlacementError(f"output {target} exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    for model_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        shutil.copytree(model_dir, target / model_dir.name, ignore=shutil.ignore_patterns("__pycache__"),
                        copy_function=_copy_or_link)  # fmt: skip
    return target


def place_repository(repository: Path, gpus: Sequence[int], per_gpu: dict[str, int],
                     output: Path | None = None) -> list[ModelPlacement]:  # fmt: skip
    """Place each model of ``per_gpu`` on ``gpus``, in ``repository`` itself or in a copy at ``output``."""
    check_request(gpus, per_gpu)
    target = copy_repository(repository, output) if output is not None else Path(repository)
    results = []
    edits = []  # written only once every model is known to place cleanly
    for model, count in per_gpu.items():
        config_path = target / model / CONFIG_NAME
        if not config_path.is_file():
            results.append(ModelPlacement(model, False, f"not in {target}: nothing to place"))
            continue
        result, text = place_model(config_path, gpus, count)
        results.append(result)
        if text is not None:
            edits.append((config_path, text))
    for config_path, text in edits:
        config_path.write_text(text, encoding="utf-8")
    return results


def _model_configs(repository: Path) -> Iterable[tuple[str, Path]]:
    for config_path in sorted(Path(repository).glob(f"*/{CONFIG_NAME}")):
        yield config_path.parent.name, config_path


def validate_placement(repo_dir: str | os.PathLike[str], n_gpus: int, per_gpu: dict[str, int] | None = None,
                       gpus: Sequence[int] | None = None) -> dict[str, dict[int, int]]:  # fmt: skip
    """Check a placed repository for ``n_gpus`` visible GPUs; return {model: {gpu: instances}} of placed models.

    Every config must parse as a ``ModelConfig``; every GPU id named anywhere must be in [0, n_gpus). Each
    model of ``per_gpu`` (default: build/placement.yaml) that is not a host model must have exactly one
    KIND_GPU entry per GPU of ``gpus`` (default: all n_gpus), each on a distinct GPU with its per-GPU count.
    Raises PlacementError listing every problem.
    """
    if n_gpus < 1:
        raise PlacementError(f"n_gpus must be >= 1, got {n_gpus}")
    per_gpu = load_per_gpu() if per_gpu is None else per_gpu
    expected = sorted(gpus) if gpus is not None else list(range(n_gpus))
    kind_gpu = model_config.pb2().ModelInstanceGroup.Kind.Value("KIND_GPU")
    problems: list[str] = []
    placements: dict[str, dict[int, int]] = {}
    for model, config_path in _model_configs(Path(repo_dir)):
        try:
            config = parse_config(config_path.read_text(encoding="utf-8"))
        except PlacementError as exc:
            problems.append(f"{model}: {exc}")
            continue
        named = [gpu for group in config.instance_group for gpu in group.gpus]
        problems += [f"{model}: GPU id {gpu} is outside 0..{n_gpus - 1}" for gpu in sorted(set(named)) if not 0 <= gpu < n_gpus]
        if model not in per_gpu or host_reason(config):
            continue
        placement: dict[int, int] = {}
        for number, group in enumerate(config.instance_group):
            if group.kind != kind_gpu or len(group.gpus) != 1:
                problems.append(f"{model}: instance_group entry {number} is not KIND_GPU on exactly one GPU")
                continue
            gpu = group.gpus[0]
            if gpu in placement:
                problems.append(f"{model}: GPU {gpu} appears in more than one instance_group entry")
            if group.count != per_gpu[model]:
                problems.append(f"{model}: GPU {gpu} has {group.count} instance(s), expected {per_gpu[model]}")
            placement[gpu] = placement.get(gpu, 0) + group.count
        if sorted(placement) != expected:
            problems.append(f"{model}: instances on GPUs {sorted(placement)}, expected GPUs {expected}")
        placements[model] = placement
    if problems:
        raise PlacementError("invalid placement in " + str(repo_dir) + ":\n  " + "\n  ".join(problems))
    return placements


def describe(placements: dict[str, dict[int, int]]) -> str:
    """One line per placed model: ``preprocess: GPU 0 x4, GPU 1 x4``."""
    return "\n".join(
        f"{model}: " + ", ".join(f"GPU {gpu} x{count}" for gpu, count in sorted(placement.items()))
        for model, placement in placements.items()
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--gpus", type=parse_gpu_list, help="comma list of GPU ids, e.g. 0,1,2,3")
    which.add_argument("--gpu-count", type=int, help="N: GPUs 0..N-1")
    parser.add_argument("--per-gpu", type=parse_per_gpu, default={}, help="model=count,... (overrides the settings)")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--output", type=Path, help="write a placed copy here (new or empty) instead of editing in place")
    parser.add_argument("--settings", type=Path, default=SETTINGS, help="per-GPU instance counts (YAML)")
    parser.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE, help="which of the settings' profiles")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when the placement was written and validated, 2 on an invalid request or result."""
    args = parse_args(argv)
    gpus = args.gpus if args.gpus is not None else list(range(args.gpu_count))
    try:
        if args.gpu_count is not None and args.gpu_count < 1:
            raise PlacementError(f"--gpu-count must be >= 1, got {args.gpu_count}")
        per_gpu = {**load_per_gpu(args.settings, args.profile), **args.per_gpu}
        results = place_repository(args.repository, gpus, per_gpu, args.output)
        target = args.output or args.repository
        for result in results:
            print(f"{result.model}: {result.message}")
        placements = validate_placement(target, max(gpus) + 1, per_gpu, gpus)
    except PlacementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"validated {target}:\n{describe(placements)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
