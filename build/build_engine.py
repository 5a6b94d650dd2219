"""Build the TensorRT plan of the classifier from ONNX, and write its config.pbtxt from the engine.

Usage: python -m pixelserve.build.build_engine [--precision fp32|fp16|int8] [--config build/tensorrt.yaml] [...]

Settings come from build/tensorrt.yaml (sections ``paths`` and ``engine``); any flag overrides
one key (``--help`` lists them). fp32/fp16 build from the FP32 ONNX, int8 from the Q/DQ ONNX
written by build/quantize_int8.py (explicit quantization; layers without Q/DQ run in FP16).
The single optimisation profile spans batch 1..max_batch_size, read from the model's current
config.pbtxt, because Triton refuses a plan whose profile maximum differs from the config.
The plan goes to <model_dir>/<version>/model.plan, and config.pbtxt is rewritten for the
``tensorrt_plan`` platform with I/O names, dtypes and dims read back from the built engine.

A plan only runs on the TensorRT version (and, by default, the GPU model) that built it:
run this inside the TensorRT container of the Triton release that will serve the plan.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import classifier_config, model_config, trt_prereqs, triton_plan_config
from .engine_settings import EngineSettings, resolve
from .settings_file import SettingsError, add_settings_flags, load_settings
from .triton_plan_config import EngineTensor

if TYPE_CHECKING:
    import tensorrt as trt

LOG = logging.getLogger("build_engine")

EXIT_BUILD_FAILED = 1
EXIT_CANNOT_START = 2


class BuildError(RuntimeError):
    """The ONNX model could not be parsed or built into a plan Triton can load."""


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(dims[i] for i in range(len(dims)))


def parse_onnx(logger: trt.ILogger, onnx_path: Path,
               portable: bool = False) -> tuple[trt.Builder, trt.INetworkDefinition, trt.OnnxParser]:
    """Parse `onnx_path` into a TensorRT network, logging every parser error; BuildError if parsing fails.

    portable: the plan is version- or hardware-compatible, whose lean runtime has no InstanceNorm
    plugin, so InstanceNormalization must map to TensorRT's native layer.
    """
    import tensorrt as trt

    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if portable:
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    parsed = parser.parse_from_file(str(onnx_path))
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        LOG.error(
            "ONNX parser error %d/%d: %s [node %s %r, op %s; %s:%d %s]",
            index + 1, parser.num_errors, error.desc(), error.node(), error.node_name(),
            error.node_operator(), error.file(), error.line(), error.func(),
        )
    if not parsed or parser.num_errors:
        raise BuildError(f"TensorRT could not parse {onnx_path} ({parser.num_errors} error(s), logged above)")
    return builder, network, parser


def network_tensors(network: trt.INetworkDefinition) -> list[EngineTensor]:
    """The network's inputs and outputs as parsed (before building)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    return [
        EngineTensor(t.name, is_input, t.dtype.name, _dims(t.shape))
        for is_input, group in ((True, inputs), (False, outputs))
        for t in group
    ]


def quantize_layers(network: trt.INetworkDefinition) -> int:
    """How many Quantize/Dequantize layers the network has (explicit quantization needs them)."""
    import tensorrt as trt

    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return sum(1 for index in range(network.num_layers) if network.get_layer(index).type in kinds)


def match_input_types(network: trt.INetworkDefinition, types: dict[str, str]) -> None:
    """Give the named network inputs the Triton data types the ensemble hands them (e.g. FP16 pixels)."""
    import tensorrt as trt

    engine_types = {triton: engine for engine, triton in triton_plan_config.TRITON_DTYPES.items()}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.name in types:
            if types[tensor.name] not in engine_types:
                raise BuildError(f"input {tensor.name!r}: no TensorRT type for {types[tensor.name]}")
            tensor.dtype = getattr(trt.DataType, engine_types[types[tensor.name]])
            LOG.info("input %r set to %s (the data type preprocess hands on)", tensor.name, types[tensor.name])


def apply_layer_precisions(network: trt.INetworkDefinition, overrides: dict[str, str]) -> int:
    """Pin the precision of layers whose names match the globs in `overrides`; returns how many were pinned."""
    import tensorrt as trt

    types = {"fp32": trt.DataType.FLOAT, "fp16": trt.DataType.HALF}
    floating = (trt.DataType.FLOAT, trt.DataType.HALF)
    unmatched = set(overrides)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for pattern, precision in overrides.items():
            if not fnmatch.fnmatchcase(layer.name, pattern):
                continue
            unmatched.discard(pattern)
            outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
            # Shape and index layers compute integers; a float precision would be rejected.
            if not outputs or any(out.dtype not in floating for out in outputs):
                LOG.info("layer %r matches %r but has non-float outputs; left alone", layer.name, pattern)
                break
            layer.precision = types[precision]
            for i in range(layer.num_outputs):
                layer.set_output_type(i, types[precision])
            LOG.info("layer %r pinned to %s (pattern %r)", layer.name, precision, pattern)
            pinned += 1
            break
    if unmatched:
        raise BuildError(f"layer_precisions pattern(s) matched no layer: {', '.join(sorted(unmatched))}")
    return pinned


def profile_shapes(tensors: Sequence[EngineTensor], opt: int, max_batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max shapes per input: batch 1/opt/max_batch, other dims as in the network (must be static)."""
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for tensor in tensors:
        if not tensor.is_input:
            continue
        batch, rest = tensor.shape[0], tensor.shape[1:]
        if batch != -1 or any(d < 0 for d in rest):
            raise BuildError(f"input {tensor.name!r} has shape {tensor.shape}; expected only a dynamic batch dimension")
        shapes[tensor.name] = ((1, *rest), (opt, *rest), (max_batch, *rest))
    return shapes


def builder_config_options(settings: EngineSettings, shapes: dict[str, tuple[tuple[int, ...], ...]],
                           timing_cache: Path | None) -> dict[str, Any]:
    """Keyword arguments of Polygraphy's CreateConfig for these settings."""
    import tensorrt as trt
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (low, opt, high) in shapes.items():
        profile.add(name, min=low, opt=opt, max=high)
    hardware = {
        "none": None,
        "ampere_plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
        "same_compute_capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY,
    }[settings.hardware_compatibility]
    return {
        "tf32": settings.tf32,
        # int8: Q/DQ layers run in INT8; layers left in float may use FP16.
        "fp16": settings.precision in ("fp16", "int8"),
        "int8": settings.precision == "int8",
        "profiles": [profile],
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: settings.workspace_mib << 20},
        "load_timing_cache": str(timing_cache) if timing_cache and timing_cache.is_file() else None,
        "sparse_weights": settings.sparsity,
        "builder_optimization_level": settings.optimization_level,
        "hardware_compatibility_level": hardware,
        "version_compatible": settings.version_compatible,
        "exclude_lean_runtime": settings.exclude_lean_runtime,
        "precision_constraints": settings.precision_constraints if settings.layer_precisions else None,
    }


def build_plan(network: tuple[trt.Builder, trt.INetworkDefinition, trt.OnnxParser], options: dict[str, Any],
               timing_cache: Path | None) -> bytes:
    """Build and serialize the engine with Polygraphy (it also merges and saves the timing cache)."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork

    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
    build = EngineBytesFromNetwork(
        network, config=CreateConfig(**options), save_timing_cache=str(timing_cache) if timing_cache else None
    )
    plan = build()  # Polygraphy raises when TensorRT returns no engine
    data = bytes(plan)
    if not data:
        raise BuildError("TensorRT returned an empty plan (see the builder log above)")
    return data


def engine_tensors(logger: trt.ILogger, plan: bytes, allow_host_code: bool,
                   max_batch: int) -> tuple[trt.ICudaEngine, list[EngineTensor]]:
    """Deserialize `plan` as Triton will and read its I/O; BuildError if the profile does not span 1..max_batch."""
    import tensorrt as trt

    runtime = trt.Runtime(logger)
    # A version-compatible plan embeds its lean runtime (host code); Triton needs
    # --backend-config=tensorrt,version-compatible=true for the same reason.
    runtime.engine_host_code_allowed = allow_host_code
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError("the freshly built plan does not deserialize")
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        tensors.append(EngineTensor(name, is_input, engine.get_tensor_dtype(name).name,
                                    _dims(engine.get_tensor_shape(name))))
        if is_input:
            low, _, high = (_dims(d) for d in engine.get_tensor_profile_shape(name, 0))
            if low[0] != 1 or high[0] != max_batch:
                raise BuildError(f"profile of {name!r} spans batch {low[0]}..{high[0]}, expected 1..{max_batch}")
    return engine, tensors


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _log_tensors(title: str, tensors: Sequence[EngineTensor]) -> None:
    for tensor in tensors:
        LOG.info("%s %s %r: shape %s, dtype %s", title, "input" if tensor.is_input else "output",
                 tensor.name, list(tensor.shape), tensor.dtype)


def build(settings: EngineSettings) -> None:
    """Build the plan and write it with its config.pbtxt; raises BuildError (or OSError/ValueError) on failure."""
    import tensorrt as trt

    base = model_config.read_config(settings.config_path)
    max_batch = triton_plan_config.max_batch_size(base)
    opt = settings.opt_batch_for(max_batch)
    onnx_path = settings.onnx_path
    if not onnx_path.is_file():
        producer = "build/quantize_int8.py" if settings.precision == "int8" else "build/export_onnx.py"
        raise BuildError(f"{onnx_path} not found; run: python {producer}")
    LOG.info("TensorRT %s, %s precision, %s -> %s", trt.__version__, settings.precision, onnx_path, settings.plan_path)
    LOG.info("profile: batch min 1, opt %d, max %d (max_batch_size of %s)", opt, max_batch, settings.config_path)

    logger = trt.Logger(trt.Logger.VERBOSE if settings.verbose else trt.Logger.INFO)
    portable = settings.version_compatible or settings.hardware_compatibility != "none"
    builder, network, parser = parse_onnx(logger, onnx_path, portable)
    parsed = network_tensors(network)
    _log_tensors("network", parsed)
    qdq = quantize_layers(network)
    LOG.info("network: %d layers, %d Quantize/Dequantize", network.num_layers, qdq)
    if settings.precision == "int8" and qdq == 0:
        # Without Q/DQ TensorRT would fall back to implicit INT8 calibration, deprecated since 10.1.
        raise BuildError(f"{onnx_path} has no Q/DQ nodes; int8 builds need the model from build/quantize_int8.py")
    pb2 = model_config.pb2()
    match_input_types(network, {classifier_config.INPUT_NAME: pb2.DataType.Name(classifier_config.pixels_data_type())})
    apply_layer_precisions(network, settings.layer_precisions)

    timing_cache = None
    if settings.timing_cache:
        timing_cache = resolve(settings.timing_cache.format(
            trt_version=trt.__version__, compute_capability=trt_prereqs.compute_capability()))
        LOG.info("timing cache: %s (%s)", timing_cache, "reused" if timing_cache.is_file() else "new")
    options = builder_config_options(settings, profile_shapes(parsed, opt, max_batch), timing_cache)
    plan = build_plan((builder, network, parser), options, timing_cache)

    _, tensors = engine_tensors(logger, plan, settings.version_compatible, max_batch)
    _log_tensors("engine", tensors)
    header = [
        "Written by build/build_engine.py; rerun it (not an editor) after changing the model or settings.",
        f"Plan: TensorRT {trt.__version__}, {settings.precision}, built on {trt_prereqs.gpu_name()} "
        f"(sm_{trt_prereqs.compute_capability()}); it loads only on that TensorRT version"
        + (" or later (version-compatible)." if settings.version_compatible else "."),
        "I/O names, dtypes and dims are read from the engine; dims exclude the batch dimension.",
    ]
    config_text = triton_plan_config.plan_config_text(base, tensors, header)
    _write_atomically(settings.plan_path, plan)
    _write_atomically(settings.config_path, config_text.encode("utf-8"))
    LOG.info("wrote %s (%.1f MB) and %s", settings.plan_path, len(plan) / 1e6, settings.config_path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser, EngineSettings)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build_engine: %(levelname)s: %(message)s")
    try:
        settings = load_settings(EngineSettings, "engine", args)
    except (SettingsError, ValueError) as exc:
        LOG.error("%s", exc)
        return EXIT_CANNOT_START
    missing = trt_prereqs.missing_prerequisites()
    if missing:
        for problem in missing:
            LOG.error("%s", problem)
        LOG.error("cannot build a TensorRT plan on this host; %s", trt_prereqs.CONTAINER_HINT)
        return EXIT_CANNOT_START
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    if settings.verbose:
        G_LOGGER.module_severity = G_LOGGER.VERBOSE
    try:
        build(settings)
    except (BuildError, PolygraphyException, OSError, ValueError) as exc:
        LOG.error("%s", exc)
        return EXIT_BUILD_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
