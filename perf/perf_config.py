"""A named perf run: what to load (perf/configs/<name>.yaml), validate, and override from the command line."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .make_inputs import ENCODINGS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROTOCOLS = ("grpc", "http")
SHARED_MEMORY = ("none", "system", "cuda")
_RANGE = re.compile(r"^\d+(:\d+(:\d+)?)?$")


@dataclass
class Inputs:
    """The real-photo input data perf_analyzer cycles through (see make_inputs.py)."""

    sizes: list[str] = field(default_factory=lambda: ["1080x1920"])
    photos: list[str] = field(default_factory=lambda: ["chelsea", "coffee", "astronaut", "rocket"])
    count: int | None = None
    encoding: str = "flat"


@dataclass
class RunConfig:
    """Everything one run_perf invocation measures."""

    name: str = "adhoc"
    description: str = ""
    model: str = "image_classifier"
    # Other models measured in the same run with the same inputs and settings (benchmark peers).
    peers: list[str] = field(default_factory=list)
    input_name: str = "images"
    protocol: str = "grpc"
    # A list of levels (one perf_analyzer run each) or one "start:end[:step]" range (a single run).
    concurrency: list[int] | str = field(default_factory=lambda: [1])
    shared_memory: list[str] = field(default_factory=lambda: ["none"])
    batch_size: int = 1
    measurement_interval_ms: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10
    inputs: Inputs = field(default_factory=Inputs)
    extra_repositories: list[str] = field(default_factory=list)
    server_args: list[str] = field(default_factory=list)
    perf_args: list[str] = field(default_factory=list)

    def models(self) -> list[str]:
        """The models this run measures: ``model``, then its peers."""
        return [self.model, *self.peers]

    def concurrency_ranges(self) -> list[str]:
        """The ``--concurrency-range`` values, one per perf_analyzer invocation."""
        if isinstance(self.concurrency, str):
            return [self.concurrency]
        return [str(level) for level in self.concurrency]

    def validate(self) -> "RunConfig":
        """Raise ValueError on a value perf_analyzer or the server would reject later; return self."""
        if self.model in self.peers or len(set(self.peers)) != len(self.peers):
            raise ValueError(f"peers must be distinct models other than {self.model!r}, got {self.peers!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        bad = [mode for mode in self.shared_memory if mode not in SHARED_MEMORY]
        if bad or not self.shared_memory:
            raise ValueError(f"shared_memory must be a non-empty list of {SHARED_MEMORY}, got {self.shared_memory!r}")
        ranges = self.concurrency_ranges()
        if not ranges or not all(_RANGE.match(r) and int(r.split(":")[0]) > 0 for r in ranges):
            raise ValueError(f"concurrency must be positive ints or one 'start:end[:step]' range, got {self.concurrency!r}")
        if self.inputs.encoding not in ENCODINGS:
            raise ValueError(f"inputs.encoding must be one of {ENCODINGS}, got {self.inputs.encoding!r}")
        if self.batch_size < 1 or self.measurement_interval_ms < 100 or self.max_trials < 1:
            raise ValueError("batch_size >= 1, measurement_interval_ms >= 100 and max_trials >= 1 are required")
        return self


def _build(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(values: dict, name: str = "adhoc") -> RunConfig:
    """A validated RunConfig from a parsed YAML mapping."""
    values = dict(values or {})
    values.setdefault("name", name)
    inputs = _build(Inputs, dict(values.pop("inputs", None) or {}), f"{name}: inputs")
    if isinstance(values.get("concurrency"), int):
        values["concurrency"] = [values["concurrency"]]
    config = _build(RunConfig, values, name)
    config.inputs = inputs
    return config.validate()


def resolve_config_path(name_or_path: str) -> Path:
    """A config file path from a name in perf/configs (``cpu_smoke``) or a path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no config {name_or_path!r}; named configs: {known}")


def load_config(name_or_path: str) -> RunConfig:
    """Load and validate a named config or a YAML file."""
    path = resolve_config_path(name_or_path)
    with open(path) as handle:
        return config_from_dict(yaml.safe_load(handle), name=path.stem)


def named_configs() -> list[str]:
    """Names of the configs shipped in perf/configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
