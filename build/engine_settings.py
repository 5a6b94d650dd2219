"""What build_engine.py builds: the ``engine`` settings of build/tensorrt.yaml (plus shared paths)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .settings_file import REPO_ROOT, setting_help

PRECISIONS = ("fp32", "fp16", "int8")
LAYER_PRECISIONS = ("fp32", "fp16")
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class EngineSettings:
    """Settings of one TensorRT build. No defaults here: build/tensorrt.yaml holds them all."""

    fp32_onnx: str = field(metadata=setting_help("FP32 ONNX model, input of fp32 and fp16 builds"))
    int8_onnx: str = field(metadata=setting_help("Q/DQ ONNX model from quantize_int8.py, input of int8 builds"))
    model_dir: str = field(metadata=setting_help("Triton model directory: its config.pbtxt gives max_batch_size"))
    model_version: int = field(metadata=setting_help("version sub-directory the plan is written to"))
    precision: str = field(metadata=setting_help("fp32, fp16, or int8 (explicit Q/DQ quantization)", PRECISIONS))
    opt_batch: int | str = field(metadata=setting_help('profile "opt" batch: a number, or "max" for max_batch_size'))
    workspace_mib: int = field(metadata=setting_help("builder workspace memory-pool limit in MiB"))
    timing_cache: str = field(
        metadata=setting_help('timing cache file read and updated by every build; "" disables it. '
                       "{trt_version} and {compute_capability} are substituted")
    )
    optimization_level: int = field(metadata=setting_help("builder optimisation level 0-5 (3 is TensorRT's own default)",
                                                   (0, 1, 2, 3, 4, 5)))
    tf32: bool = field(metadata=setting_help("allow TF32 math for FP32 layers"))
    sparsity: bool = field(metadata=setting_help("let TensorRT use 2:4 structured-sparse kernels where weights allow"))
    layer_precisions: dict[str, str] = field(
        metadata=setting_help("per-layer precision overrides: layer-name glob -> fp32 or fp16")
    )
    precision_constraints: str = field(
        metadata=setting_help("how layer_precisions bind: prefer (fall back with a warning) or obey (fail)",
                       ("prefer", "obey"))
    )
    version_compatible: bool = field(metadata=setting_help("plan loadable by later TensorRT versions (lean runtime)"))
    exclude_lean_runtime: bool = field(
        metadata=setting_help("with version_compatible: leave the lean runtime out of the plan")
    )
    hardware_compatibility: str = field(
        metadata=setting_help("GPU architectures the plan may run on besides the building one", HARDWARE_COMPATIBILITY)
    )
    verbose: bool = field(metadata=setting_help("verbose TensorRT and Polygraphy logging"))

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.opt_batch, str) and self.opt_batch != "max":
            problems.append(f'opt_batch must be a positive number or "max", got {self.opt_batch!r}')
        if isinstance(self.opt_batch, int) and self.opt_batch < 1:
            problems.append(f"opt_batch must be >= 1, got {self.opt_batch}")
        if self.workspace_mib < 1:
            problems.append(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if self.model_version < 1:
            problems.append(f"model_version must be >= 1, got {self.model_version}")
        bad = {k: v for k, v in self.layer_precisions.items() if v not in LAYER_PRECISIONS}
        if bad:
            problems.append(f"layer_precisions values must be one of {LAYER_PRECISIONS}, got {bad}")
        if self.exclude_lean_runtime and not self.version_compatible:
            problems.append("exclude_lean_runtime needs version_compatible")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def onnx_path(self) -> Path:
        """The ONNX model this precision builds from."""
        return resolve(self.int8_onnx if self.precision == "int8" else self.fp32_onnx)

    @property
    def config_path(self) -> Path:
        """The model's config.pbtxt (read for max_batch_size, then rewritten for the plan)."""
        return resolve(self.model_dir) / "config.pbtxt"

    @property
    def plan_path(self) -> Path:
        """Where the plan is written: <model_dir>/<version>/model.plan."""
        return resolve(self.model_dir) / str(self.model_version) / "model.plan"

    def opt_batch_for(self, max_batch_size: int) -> int:
        """The profile's opt batch given the config's max_batch_size (ValueError if out of range)."""
        opt = max_batch_size if self.opt_batch == "max" else int(self.opt_batch)
        if not 1 <= opt <= max_batch_size:
            raise ValueError(f"opt_batch {opt} is outside 1..max_batch_size ({max_batch_size})")
        return opt


def resolve(path: str) -> Path:
    """A settings path: absolute as given, relative ones from the repository root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate
