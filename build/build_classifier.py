"""Build the `classifier` model of the repository in the flavour this host can run.

Usage: python -m pixelserve.build.build_classifier [--flavour auto|onnxruntime|torch|tensorrt] [--onnx PATH]

Without --onnx the pretrained EfficientNet-Lite0 export is used (exported and
verified first if artifacts/onnx/efficientnet_lite0.onnx is missing); with it,
the given ImageNet ONNX is validated and adapted by prepare_onnx. Then:
  onnxruntime -> model_repository/classifier/1/model.onnx (run by 1/model.py on ONNX Runtime, CPU)
  torch       -> model_repository/classifier/1/model.pt (FP16 weights, run by 1/model.py in PyTorch
                 CUDA graphs on the GPU; EfficientNet-Lite0 only, for GPU hosts without TensorRT)
  tensorrt    -> model_repository/classifier/1/model.plan (built by build_engine.py)
and config.pbtxt is regenerated for that flavour by classifier_config, with the
image_classifier ensemble beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import classifier_config

BUILD_DIR = Path(__file__).resolve().parent
REPO_ROOT = BUILD_DIR.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / classifier_config.MODEL_NAME
# The one labels file, the classifier's. Triton reads a model's labels from its own directory, so every model whose
# config names the file gets a copy of this one (write_labels).
LABELS_SOURCE = DEFAULT_MODEL_DIR / classifier_config.LABEL_FILENAME
DEFAULT_ARTIFACTS = REPO_ROOT / "artifacts" / "onnx"
EXPORT_FILENAME = "efficientnet_lite0.onnx"


class BuildError(RuntimeError):
    """The classifier cannot be built as asked; the message says why."""


def tensorrt_build_problems() -> list:
    """Return why this host cannot build a TensorRT engine (empty list: it can)."""
    try:
        from . import trt_prereqs  # owned by the TensorRT build; knows what build_engine.py needs
    except Exception as exc:
        return [f"build/trt_prereqs.py is unusable ({type(exc).__name__}: {exc})"]
    return trt_prereqs.missing_prerequisites()


def torch_serving_problems() -> list:
    """Return why this host cannot serve the torch flavour (empty list: it can)."""
    try:
        import torch
    except ImportError:
        return ["PyTorch is not installed"]
    if not torch.cuda.is_available():
        return ["PyTorch sees no CUDA GPU"]
    return []


def choose_flavour(requested: str) -> tuple:
    """Return (flavour, reason) for `requested` (auto, onnxruntime, torch or tensorrt).

    auto picks tensorrt when TensorRT imports and a CUDA GPU is visible (and the rest of
    the TensorRT build tooling is there), else torch when PyTorch sees a CUDA GPU, else
    onnxruntime. Raises BuildError when tensorrt is requested but cannot be built here.
    torch may be requested on any host (its weights file does not depend on the GPU).
    """
    if requested in ("onnxruntime", "torch"):
        return requested, f"requested with --flavour {requested}"
    problems = tensorrt_build_problems()
    if requested == "tensorrt":
        if problems:
            raise BuildError("--flavour tensorrt cannot be built here: " + "; ".join(problems))
        return "tensorrt", "requested with --flavour tensorrt"
    if not problems:
        return "tensorrt", "auto: TensorRT and a CUDA GPU are available"
    torch_problems = torch_serving_problems()
    if not torch_problems:
        return "torch", "auto: " + "; ".join(problems) + " -> PyTorch FP16 on the GPU"
    return "onnxruntime", "auto: " + "; ".join(problems + torch_problems) + " -> ONNX Runtime on CPU"


def source_onnx(onnx_path: Path | None, artifacts: Path = DEFAULT_ARTIFACTS) -> Path:
    """Return a servable ONNX in `artifacts`: the prepared --onnx file, or the verified default export."""
    from . import prepare_onnx  # imported here: torch/onnx are only needed when there is ONNX work to do

    if onnx_path is not None:
        target = artifacts / f"{Path(onnx_path).stem}.prepared.onnx"
        try:
            report = prepare_onnx.prepare_file(Path(onnx_path), target)
        except prepare_onnx.OnnxModelError as exc:
            raise BuildError(str(exc)) from exc
        print(f"prepared {onnx_path}: {prepare_onnx.describe(report)}")
        return target

    export = artifacts / EXPORT_FILENAME
    if export.exists():
        print(f"using existing export {export}")
    else:
        print(f"{export} missing: exporting EfficientNet-Lite0")
        from . import export_onnx

        try:
            export_onnx.export_and_verify(export)
        except export_onnx.ExportCheckError as exc:
            raise BuildError(f"the exported ONNX failed verification: {exc}") from exc
    return export


def install_onnx(onnx_path: Path, model_dir: Path) -> Path:
    """Copy `onnx_path` to <model_dir>/1/model.onnx (atomically) and return that path."""
    target = model_dir / "1" / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="model.", suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(onnx_path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def install_torch_weights(model_dir: Path, weights: Path | None = None) -> Path:
    """Write <model_dir>/1/model.pt (atomically): the pretrained EfficientNet-Lite0 in FP16, or a copy of `weights`."""
    from pixelserve.model_runtime.torch_classifier import load_network, save_weights

    from . import export_onnx

    target = model_dir / "1" / "model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".pt.tmp")
    if weights is None:
        save_weights(export_onnx.load_model(), export_onnx.ARCH, str(tmp))
    elif Path(weights).resolve() != target.resolve():
        try:
            load_network(str(weights))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise BuildError(f"--weights {weights}: {exc}") from exc
        shutil.copyfile(weights, tmp)
    if tmp.exists():
        os.replace(tmp, target)
    return target


def write_config(flavour: str, model_dir: Path) -> Path:
    """Write the generated config.pbtxt for `flavour` into `model_dir` and return its path."""
    path = model_dir / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(classifier_config.render_config(flavour))
    return path


def write_labels(model_dir: Path) -> list[Path]:
    """Copy LABELS_SOURCE into the classifier's `model_dir` and the models clients call beside it (their configs
    name it); return the copies' paths."""
    copies = [model_dir.parent / name / classifier_config.LABEL_FILENAME
              for name in (model_dir.name, classifier_config.ENSEMBLE_NAME, classifier_config.ENCODED_ENSEMBLE_NAME)]
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        if not (copy.exists() and copy.samefile(LABELS_SOURCE)):
            shutil.copyfile(LABELS_SOURCE, copy)
    return copies


def write_ensemble(model_dir: Path, flavour: str = "onnxruntime") -> Path:
    """Write the generated configs of the models clients call beside the classifier in `model_dir`'s repository:
    the raw ensemble, and the encoded model for `flavour` (classifier_config.encoded_config); and the labels file
    their configs name, in each of them and the classifier (write_labels).

    Returns the raw ensemble's config path."""
    texts = {classifier_config.ENSEMBLE_NAME: classifier_config.render_ensemble(),
             classifier_config.ENCODED_ENSEMBLE_NAME: classifier_config.render_encoded(flavour)}
    paths = []
    for name, text in texts.items():
        path = model_dir.parent / name / "config.pbtxt"
        (path.parent / "1").mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    write_labels(model_dir)
    return paths[0]


def build_plan(onnx_path: Path, model_dir: Path) -> Path:
    """Build <model_dir>/1/model.plan from `onnx_path` with build/build_engine.py.

    Expects the tensorrt config.pbtxt to be written already: build_engine.py
    sizes the engine's batch profile from its max_batch_size.
    """
    target = model_dir / "1" / "model.plan"
    # Flags named after the keys of build/tensorrt.yaml; everything else keeps that file's value.
    command = [sys.executable, "-m", "pixelserve.build.build_engine", "--fp32-onnx", str(onnx_path), "--model-dir", str(model_dir)]
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise BuildError(f"build_engine.py failed with exit status {result.returncode}")
    if not target.is_file():
        raise BuildError(f"build_engine.py succeeded but wrote no {target}")
    return target


def check_config(flavour: str, model_dir: Path) -> None:
    """Raise BuildError if <model_dir>/config.pbtxt no longer honours the classifier contract."""
    # build_engine.py may rewrite the config from the engine's real I/O; it must still fit the ensemble.
    path = model_dir / "config.pbtxt"
    problems = classifier_config.contract_problems(path.read_text(), flavour)
    if problems:
        raise BuildError(f"{path} breaks the classifier contract: " + "; ".join(problems))


def install(flavour: str, onnx_path: Path | None, model_dir: Path, weights: Path | None = None) -> tuple:
    """Put the `flavour` model built from `onnx_path` and its config into `model_dir`.

    Writes the models clients call (write_ensemble) beside it. Returns (model file, config.pbtxt path).
    """
    config_path = model_dir / "config.pbtxt"
    if flavour != "torch" and onnx_path is None:
        raise BuildError(f"the {flavour} flavour is built from an ONNX file")
    if flavour == "onnxruntime":
        artifact = install_onnx(onnx_path, model_dir)
        write_config(flavour, model_dir)
    elif flavour == "torch":
        artifact = install_torch_weights(model_dir, weights)
        write_config(flavour, model_dir)
    else:
        previous = config_path.read_text() if config_path.exists() else None
        write_config(flavour, model_dir)
        try:
            artifact = build_plan(onnx_path, model_dir)
        except BuildError:
            # Never leave a tensorrt config without its plan: put the previous config back.
            if previous is None:
                config_path.unlink()
            else:
                config_path.write_text(previous)
            raise
    check_config(flavour, model_dir)
    write_ensemble(model_dir, flavour)
    return artifact, config_path


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Build the classifier model for ONNX Runtime or TensorRT.")
    parser.add_argument("--flavour", choices=("auto",) + classifier_config.FLAVOURS, default="auto")
    parser.add_argument("--onnx", type=Path, help="serve this ImageNet ONNX instead of the EfficientNet-Lite0 export")
    parser.add_argument(
        "--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="the classifier's directory in a model repository"
    )
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        default=DEFAULT_ARTIFACTS,
        help=f"where the EfficientNet-Lite0 export ({EXPORT_FILENAME}) and prepared ONNX files live",
    )
    parser.add_argument("--weights", type=Path, help="torch flavour: serve this model.pt (written by a torch build elsewhere)")
    args = parser.parse_args(argv)

    try:
        flavour, reason = choose_flavour(args.flavour)
        print(f"flavour: {flavour} ({reason})")
        if flavour == "torch" and args.onnx is not None:
            raise BuildError("--flavour torch serves the pretrained EfficientNet-Lite0 only; --onnx needs onnxruntime or tensorrt")
        if args.weights is not None and flavour != "torch":
            raise BuildError("--weights is for --flavour torch")
        onnx_path = None if flavour == "torch" else source_onnx(args.onnx, args.artifacts_dir)
        artifact, config = install(flavour, onnx_path, args.model_dir, args.weights)
    except BuildError as exc:
        print(f"build_classifier: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {artifact}\nwrote {config} ({flavour})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
