"""INT8 by explicit quantization: FP32 ONNX -> Q/DQ ONNX that TensorRT builds INT8 plans from.

Usage: python -m pixelserve.build.quantize_int8 [--calibration-views N] [--keep-float GLOB ...] [...]
Settings: build/tensorrt.yaml, sections ``paths`` and ``quantization``; flags override keys.

Calibration runs ONNX Runtime's quantize_static in QDQ format with what TensorRT expects:
int8 symmetric (zero point 0) activations per tensor, int8 symmetric weights per output
channel, float bias, Q/DQ on the inputs of Conv/Gemm only (their outputs stay float so
TensorRT can fuse the activation that follows). Calibration images are random
crops/rescalings of real photographs, preprocessed by pixelserve.kernels_numba exactly as served.
The Q/DQ model is then compared with the FP32 model in ONNX Runtime and the numbers are
printed and written to perf/results/. The model is written only if the checks pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from pixelserve.model_runtime.tensors import PIXELS

from . import calibration_images, model_agreement
from .engine_settings import resolve
from .settings_file import SettingsError, add_settings_flags, load_settings, setting_help

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
NOISE_SEED = 12345
Pixels = npt.NDArray[np.float32]


@dataclass(frozen=True)
class QuantizeSettings:
    """Settings of one quantization run. No defaults here: build/tensorrt.yaml holds them all."""

    fp32_onnx: str = field(metadata=setting_help("FP32 ONNX model to quantize"))
    int8_onnx: str = field(metadata=setting_help("where to write the Q/DQ ONNX model"))
    preprocess_config: str = field(metadata=setting_help("config.pbtxt of the served preprocessing model"))
    model_dir: str = field(metadata=setting_help("Triton classifier directory (for labels.txt)"))
    calibration_views: int = field(metadata=setting_help("random crops/rescalings used for calibration"))
    calibration_seed: int = field(metadata=setting_help("seed of the calibration views"))
    evaluation_views: int = field(metadata=setting_help("random crops/rescalings used to measure agreement"))
    evaluation_seed: int = field(metadata=setting_help("seed of the evaluation views (differ from calibration)"))
    calibration_method: str = field(metadata=setting_help("activation range estimator", CALIBRATION_METHODS))
    quantize_op_types: list[str] = field(metadata=setting_help("ONNX op types whose inputs get Q/DQ"))
    keep_float: list[str] = field(metadata=setting_help("globs of node names left unquantized (FP16 in TensorRT)"))
    confident_probability: float = field(metadata=setting_help("FP32 top-1 softmax probability of a 'confident' image"))
    min_top1_agreement: float = field(metadata=setting_help("gate: least top-1 agreement on confident images"))
    results: str = field(metadata=setting_help('markdown report to write ("" for none)'))

    def __post_init__(self) -> None:
        if self.calibration_views < 1 or self.evaluation_views < 0:
            raise ValueError("calibration_views must be >= 1 and evaluation_views >= 0")
        if self.calibration_seed == self.evaluation_seed:
            raise ValueError("calibration_seed and evaluation_seed must differ (held-out views)")
        if not 0.0 < self.min_top1_agreement <= 1.0 or not 0.0 <= self.confident_probability < 1.0:
            raise ValueError("min_top1_agreement must be in (0, 1] and confident_probability in [0, 1)")


@dataclass
class QdqSummary:
    """What the Q/DQ model contains, and anything TensorRT would not take as intended."""

    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    per_channel_weights: int = 0
    float_nodes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


class _Batches:
    """ONNX Runtime calibration reader over a preprocessed [N,3,H,W] array."""

    def __init__(self, pixels: Pixels, batch_size: int = 16) -> None:
        self._chunks = iter([pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)])

    def get_next(self) -> dict[str, Pixels] | None:
        chunk = next(self._chunks, None)
        return None if chunk is None else {PIXELS: chunk}


def matching_nodes(model: Any, patterns: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Names of the `op_types` nodes of `model` matching any glob in `patterns` (ValueError if a glob matches none)."""
    names = [node.name for node in model.graph.node if node.op_type in op_types]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"keep_float pattern {pattern!r} matches no {'/'.join(op_types)} node")
        chosen += [hit for hit in hits if hit not in chosen]
    return chosen


def quantize(settings: QuantizeSettings, calibration: Pixels, output: Path) -> list[str]:
    """Write the Q/DQ model of ``settings.fp32_onnx`` to `output`; returns the nodes kept in float."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # ONNX Runtime's recommended pre-step: shape inference plus constant folding, which
        # turns the exporter's computed "same" padding into plain Conv pads.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(resolve(settings.fp32_onnx)), str(prepared))
        keep = matching_nodes(onnx.load(str(prepared)), settings.keep_float, settings.quantize_op_types)
        quantize_static(
            str(prepared),
            str(output),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.quantize_op_types),
            nodes_to_exclude=keep,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[settings.calibration_method],
            extra_options={
                "ActivationSymmetric": True,  # TensorRT supports zero point 0 only
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT takes float bias and fuses it
                # Keep Clip (ReLU6) explicit and leave Conv/Gemm outputs unquantized: a Q/DQ on the
                # pre-activation output would spend int8 levels on the range Clip discards.
                "QDQKeepRemovableActivations": True,
                "OpTypesToExcludeOutputQuantization": list(settings.quantize_op_types),
            },
        )
    model = onnx.load(str(output))
    _drop_unused_domains(model)
    onnx.save(model, str(output))
    return keep


def _drop_unused_domains(model: Any) -> None:
    used = {node.domain for node in model.graph.node}
    kept = [imp for imp in model.opset_import if imp.domain in used or imp.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def qdq_summary(model_path: Path, quantized_op_types: Sequence[str] = ("Conv", "Gemm")) -> QdqSummary:
    """Count Q/DQ nodes and check them against TensorRT's rules (int8, zero point 0, per-channel weights)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    init = {t.name: t for t in model.graph.initializer}
    summary = QdqSummary()
    producers = {out: node for node in model.graph.node for out in node.output}

    def array(name: str) -> npt.NDArray[Any]:
        return numpy_helper.to_array(init[name])

    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            summary.quantize_nodes += 1
            zero = array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                summary.problems.append(f"{node.name}: activations must be int8 with zero point 0")
        elif node.op_type == "DequantizeLinear":
            summary.dequantize_nodes += 1
            if node.input[0] in init:
                _check_weight(node, array, summary)
        elif node.op_type in quantized_op_types:
            weight_source = producers.get(node.input[1])
            if weight_source is None or weight_source.op_type != "DequantizeLinear":
                summary.float_nodes.append(node.name)
    return summary


def _check_weight(node: Any, array: Any, summary: QdqSummary) -> None:
    weights, scale = array(node.input[0]), array(node.input[1])
    zero = array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.int8)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if weights.dtype != np.int8 or zero.dtype != np.int8 or np.any(zero != 0):
        summary.problems.append(f"{node.name}: weights must be int8 with zero point 0 (got {weights.dtype})")
    elif scale.ndim == 1 and axis == 0 and len(scale) == weights.shape[0] > 1:
        summary.per_channel_weights += 1
    else:
        summary.problems.append(f"{node.name}: weights are not quantized per output channel (axis 0)")


@dataclass
class Evaluation:
    """Agreement of the Q/DQ model with FP32 on each image set, and the input-noise floor."""

    rows: list[model_agreement.Agreement]
    kernel_row: model_agreement.Agreement
    noise_floor: model_agreement.Agreement
    gate: model_agreement.Agreement
    photo_answers: list[tuple[str, int, float, int]]  # photo, FP32 class, its probability, Q/DQ class


def evaluate(settings: QuantizeSettings, int8_model: Path, photos: Pixels, views: Pixels,
             pixel_step: Pixels, photo_names: Sequence[str]) -> Evaluation:
    """Run FP32 and Q/DQ models on photos and views; compare top-1/top-5."""
    fp32_model = resolve(settings.fp32_onnx)
    pixels = np.concatenate([photos, views])
    reference = model_agreement.onnx_logits(fp32_model, pixels)
    as_written = model_agreement.onnx_logits(int8_model, pixels, as_written=True)
    kernels = model_agreement.onnx_logits(int8_model, pixels)
    noisy = model_agreement.onnx_logits(fp32_model, model_agreement.with_pixel_noise(pixels, pixel_step, NOISE_SEED))
    sure = model_agreement.confident(reference, settings.confident_probability)
    n = len(photos)
    shifted = np.exp(reference[:n] - reference[:n].max(axis=1, keepdims=True))
    probability = shifted.max(axis=1) / shifted.sum(axis=1)
    answers = [
        (name, int(ref), float(prob), int(cand))
        for name, ref, prob, cand in zip(photo_names, reference[:n].argmax(1), probability, as_written[:n].argmax(1))
    ]
    compare = model_agreement.compare_logits
    gate = compare(f"FP32 top-1 probability >= {settings.confident_probability:g}", reference[sure], as_written[sure])
    return Evaluation(
        rows=[
            compare("real photos (skimage.data)", reference[:n], as_written[:n]),
            compare(f"random crops/rescalings (seed {settings.evaluation_seed})", reference[n:], as_written[n:]),
            compare("all", reference, as_written),
            gate,
        ],
        kernel_row=compare("all, ONNX Runtime int8 CPU kernels", reference, kernels),
        noise_floor=compare("all, FP32 vs FP32 on inputs +-1/2 pixel step", reference, noisy),
        gate=gate,
        photo_answers=answers,
    )


def render_report(settings: QuantizeSettings, command: str, summary: QdqSummary, evaluation: Evaluation,
                  timings: dict[str, float], passed: bool) -> str:
    """The markdown report written to ``settings.results``."""
    import onnxruntime

    labels_file = resolve(settings.model_dir) / "labels.txt"
    labels = labels_file.read_text(encoding="utf-8").splitlines() if labels_file.is_file() else []

    def label(index: int) -> str:
        return f"{index} {labels[index]}" if index < len(labels) else str(index)

    photo_rows = [
        f"| {name} | {label(ref)} | {prob:.2f} | {label(cand)} | {'yes' if ref == cand else '**no**'} |"
        for name, ref, prob, cand in evaluation.photo_answers
    ]

    lines = [
        "# INT8 (Q/DQ) EfficientNet-Lite0 vs FP32: top-1 agreement and top-5 overlap",
        "",
        f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Host: {_cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}.",
        "",
        "## Quantization",
        "",
        f"- ONNX Runtime `quantize_static`, QDQ format, calibration `{settings.calibration_method}` on "
        f"{settings.calibration_views} random crops/rescalings (seed {settings.calibration_seed}) of "
        f"{len(calibration_images.PHOTO_NAMES)} skimage.data photographs, preprocessed by pixelserve.kernels_numba "
        f"(`{settings.preprocess_config}`).",
        "- int8 symmetric activations (zero point 0, per tensor); int8 symmetric weights per output channel; "
        f"float bias; Q/DQ on the inputs of {', '.join(settings.quantize_op_types)}, outputs left float.",
        f"- Q/DQ nodes: {summary.quantize_nodes} QuantizeLinear, {summary.dequantize_nodes} DequantizeLinear; "
        f"{summary.per_channel_weights} per-channel weight tensors; TensorRT-rule problems: "
        f"{len(summary.problems) or 'none'}.",
        f"- Left in float (TensorRT runs them in FP16): {len(summary.float_nodes)} nodes matching "
        f"{', '.join(f'`{p}`' for p in settings.keep_float) or 'nothing'}.",
        "- Time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()) + ".",
        "",
        "## Agreement with the FP32 model (ONNX Runtime, CPU)",
        "",
        "The Q/DQ model runs with graph optimisation off, so its QuantizeLinear/DequantizeLinear nodes "
        "execute as written (the arithmetic TensorRT is asked to reproduce).",
        "",
        model_agreement.TABLE_HEADER,
        *(row.row() for row in evaluation.rows),
        evaluation.kernel_row.row(),
        evaluation.noise_floor.row(),
        "",
        "The last row is the floor: the FP32 model compared with itself after adding uniform noise of "
        "at most half a uint8 step to every input pixel. Most of these photographs and crops are not "
        "ImageNet objects and the FP32 answer is uncertain, so a sub-pixel change already flips some of "
        "them; no 8-bit-faithful model can be expected to agree more on those images.",
        "",
        f"Gate (top-1 agreement on images the FP32 model is confident about >= {settings.min_top1_agreement:.0%}): "
        f"**{'PASS' if passed else 'FAIL'}** ({evaluation.gate.top1_agreement:.2%} on {evaluation.gate.images} images).",
        "",
        "## Top-1 answer per photograph",
        "",
        "| photo | FP32 top-1 | FP32 probability | Q/DQ top-1 | same |",
        "|---|---|---:|---|---|",
        *photo_rows,
        "",
    ]
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    """Quantize, check, measure, report; returns the exit status (0 only if every check passed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser, QuantizeSettings)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(QuantizeSettings, "quantization", args)
    except (SettingsError, ValueError) as exc:
        print(f"quantize_int8: {exc}", file=sys.stderr)
        return 2
    fp32 = resolve(settings.fp32_onnx)
    if not fp32.is_file():
        print(f"quantize_int8: {fp32} not found; run: python -m pixelserve.build.export_onnx", file=sys.stderr)
        return 2

    timings: dict[str, float] = {}
    start = time.perf_counter()
    spec = calibration_images.load_spec(resolve(settings.preprocess_config))
    named_photos = calibration_images.real_photos()
    photo_list = list(named_photos.values())
    calibration = calibration_images.preprocess(
        calibration_images.random_views(photo_list, settings.calibration_views, settings.calibration_seed), spec
    )
    photos = calibration_images.preprocess(photo_list, spec)
    views = calibration_images.preprocess(
        calibration_images.random_views(photo_list, settings.evaluation_views, settings.evaluation_seed), spec
    )
    timings["images and preprocessing"] = time.perf_counter() - start

    output = resolve(settings.int8_onnx)
    output.parent.mkdir(parents=True, exist_ok=True)
    candidate = output.with_name(output.stem + ".candidate.onnx")
    try:
        start = time.perf_counter()
        try:
            quantize(settings, calibration, candidate)
        except ValueError as exc:
            print(f"quantize_int8: {exc}", file=sys.stderr)
            return 2
        timings["quantization (pre-process, calibration, Q/DQ insertion)"] = time.perf_counter() - start
        summary = qdq_summary(candidate, settings.quantize_op_types)
        start = time.perf_counter()
        evaluation = evaluate(settings, candidate, photos, views, calibration_images.pixel_step(spec), list(named_photos))
        timings["evaluation"] = time.perf_counter() - start

        passed = not summary.problems and evaluation.gate.top1_agreement >= settings.min_top1_agreement
        command = shlex.join(["python", "-m", "pixelserve.build.quantize_int8", *(sys.argv[1:] if argv is None else argv)])
        report = render_report(settings, command, summary, evaluation, timings, passed)
        print(report)
        if settings.results:
            results = resolve(settings.results)
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(report, encoding="utf-8")
            print(f"wrote {results}")
        for problem in summary.problems:
            print(f"quantize_int8: {problem}", file=sys.stderr)
        if not passed:
            print("quantize_int8: checks FAILED; the Q/DQ model was not written", file=sys.stderr)
            return 1
        os.replace(candidate, output)
        print(f"wrote {output}")
        return 0
    finally:
        candidate.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
