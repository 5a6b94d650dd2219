"""What ``pixelserve-build`` built into a model repository, and how that build is served.

The build writes ``<repository>/pixelserve-build.json`` (Triton ignores files beside the model folders). Every
path that starts a server on the repository reads it here: ``pixelserve-server`` and ``LocalTritonServer``
(tests, benchmarks) and the container's entry point, so that each serves the configs the build wrote for its
host (``--model-config-name``), with its server arguments and MPS choice. Standard library only: the container's
entry point imports it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

MANIFEST_NAME = "pixelserve-build.json"
# The name of the per-host configs a GPU build writes: <model>/configs/pixelserve.pbtxt.
CONFIG_NAME = "pixelserve"


@dataclass(frozen=True)
class Manifest:
    """One build: its target and classifier flavour, the GPUs and profile it placed instances for, how to serve
    it (``config_name``, ``server_args``, ``mps``) and the versions it was built with."""

    target: str
    flavour: str
    profile: str
    gpus: int
    config_name: str | None
    server_args: list[str]
    mps: bool
    mps_reason: str
    decoder: str
    gpu_names: list[str] = field(default_factory=list)
    instances: dict[str, dict[int, int]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def write_manifest(repository: str | Path, manifest: Manifest) -> Path:
    """Write the manifest into ``repository`` and return its path."""
    path = Path(repository) / MANIFEST_NAME
    path.write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(repository: str | Path) -> Manifest | None:
    """The manifest of ``repository`` (None where no build wrote one); ValueError if it cannot be read."""
    path = Path(repository) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["instances"] = {model: {int(gpu): count for gpu, count in placement.items()}
                             for model, placement in data.get("instances", {}).items()}  # fmt: skip
        return Manifest(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a pixelserve-build manifest ({exc}); run pixelserve-build again") from None


def repository_manifest(repositories: Sequence[str | Path]) -> Manifest | None:
    """The manifest of the first repository that has one (the product's; peers beside it have none)."""
    for repository in repositories:
        manifest = read_manifest(repository)
        if manifest is not None:
            return manifest
    return None


def served_args(manifest: Manifest | None, extra_args: Sequence[str] = ()) -> list[str]:
    """The build's server arguments, less those that ``extra_args`` set themselves (the caller's win)."""
    if manifest is None:
        return []
    given = {arg.split("=", 1)[0] for arg in extra_args}
    return [arg for arg in manifest.server_args if arg.split("=", 1)[0] not in given]
