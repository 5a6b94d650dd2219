"""The EfficientNet-Lite0 ONNX export, prepare_onnx on foreign/bad models, and build_classifier on CPU."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pixelserve.build import classifier_config, export_onnx, prepare_onnx, reference_images

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"

def _run_script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"pixelserve.build.{name}", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Run build/export_onnx.py once into a temp dir; yield (path, completed process)."""
    path = tmp_path_factory.mktemp("onnx") / "efficientnet_lite0.onnx"
    result = _run_script("export_onnx", "--output", path)
    assert result.returncode == 0, result.stdout + result.stderr
    return path, result


@pytest.fixture(scope="session")
def torch_model():
    return export_onnx.load_model()


@pytest.fixture(scope="session")
def photos():
    return reference_images.reference_batch()


def _ort_logits(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixels": pixels})[0]


# --- the export -----------------------------------------------------------------------------------


def test_export_script_reports_the_comparison(exported):
    path, result = exported
    assert path.is_file() and path.stat().st_size > 10_000_000
    assert "onnx.checker: ok" in result.stdout
    assert "max |torch - onnxruntime| logit difference" in result.stdout
    for name in reference_images.PHOTO_NAMES:
        assert name in result.stdout


def test_export_passes_checker_with_contract_io(exported):
    path, _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,), (out,) = prepare_onnx.graph_inputs(model), model.graph.output
    assert (inp.name, out.name) == ("pixels", "logits")
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 224, 224]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [1000]


def test_onnxruntime_matches_torch_on_photos(exported, torch_model, photos):
    path, _ = exported
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(photos)).numpy()
    got = _ort_logits(path, photos)
    assert np.abs(got - expected).max() <= 1e-3
    assert got.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()


def test_known_photos_get_their_imagenet_class(exported, photos):
    path, _ = exported
    top1 = dict(zip(reference_images.PHOTO_NAMES, _ort_logits(path, photos).argmax(axis=1).tolist()))
    assert top1["chelsea"] == 285  # Egyptian cat
    assert top1["coffee"] == 967  # espresso


def test_dynamic_batch_up_to_max_batch_size(exported, photos):
    path, _ = exported
    single = _ort_logits(path, photos[:1])
    batch = np.repeat(photos[:1], classifier_config.max_batch_size(), axis=0)
    batched = _ort_logits(path, batch)
    assert batched.shape == (classifier_config.max_batch_size(), 1000)
    np.testing.assert_allclose(batched, np.repeat(single, len(batch), axis=0), rtol=1e-4, atol=1e-4)


def test_check_comparison_rejects_disagreement():
    good = export_onnx.Comparison(("chelsea", "coffee"), [285, 967], [285, 967], 1e-5)
    export_onnx.check_comparison(good)
    with pytest.raises(export_onnx.ExportCheckError, match="top-1 differs"):
        export_onnx.check_comparison(export_onnx.Comparison(("chelsea",), [285], [281], 1e-5))
    with pytest.raises(export_onnx.ExportCheckError, match="exceeds"):
        export_onnx.check_comparison(export_onnx.Comparison(("coffee",), [967], [967], 12.0))
    with pytest.raises(export_onnx.ExportCheckError, match="expected one of"):
        export_onnx.check_comparison(export_onnx.Comparison(("coffee",), [504], [504], 1e-5))


# --- prepare_onnx on models from elsewhere -------------------------------------------------------


class _TinyClassifier(torch.nn.Module):
    """A stand-in for a foreign classifier: strided conv, global pool, linear."""

    def __init__(self, channels=3, classes=1000, flatten="hardcoded", mix_batch=False, nhwc=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, kernel_size=8, stride=8)
        self.fc = torch.nn.Linear(4, classes)
        self.flatten, self.mix_batch, self.nhwc = flatten, mix_batch, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        y = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
        # reshape(1, -1) bakes batch 1 into the graph, as many exported models do.
        y = y.reshape(1, -1) if self.flatten == "hardcoded" else y.flatten(1)
        y = self.fc(y)
        return y - y.mean(dim=0, keepdim=True) if self.mix_batch else y


def _export_tiny(path: Path, batch=1, channels=3, size=224, nhwc=False, **kwargs) -> tuple:
    """Export a _TinyClassifier with input 'data', output 'prob' and a static input shape."""
    torch.manual_seed(0)
    model = _TinyClassifier(channels=channels, nhwc=nhwc, **kwargs).eval()
    shape = (batch, size, size, channels) if nhwc else (batch, channels, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(*shape),), str(path), input_names=["data"], output_names=["prob"],
            opset_version=17, dynamo=False,
        )  # fmt: skip
    return model, path


def test_prepare_renames_and_makes_batch_dynamic(tmp_path):
    model, src = _export_tiny(tmp_path / "foreign.onnx")
    original = onnx.load(str(src))
    assert [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]

    report = prepare_onnx.prepare_file(src, tmp_path / "prepared.onnx")
    assert (report.original_input, report.original_output) == ("data", "prob")
    assert report.batch_made_dynamic and report.reshapes_patched

    prepared = onnx.load(str(tmp_path / "prepared.onnx"))
    onnx.checker.check_model(prepared, full_check=True)
    images = np.random.default_rng(1).standard_normal((5, 3, 224, 224)).astype(np.float32)
    got = _ort_logits(tmp_path / "prepared.onnx", images)
    with torch.no_grad():
        expected = np.concatenate([model(torch.from_numpy(images[i : i + 1])).numpy() for i in range(len(images))])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_prepare_leaves_a_dynamic_model_alone(exported, tmp_path):
    path, _ = exported
    report = prepare_onnx.prepare_file(path, tmp_path / "same.onnx")
    assert not report.batch_made_dynamic and not report.reshapes_patched


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 1}, r"1 channels in dim 1 .*expected 3"),
        ({"nhwc": True}, r"NHWC"),
        ({"size": 299}, r"spatial size 299x299"),
        ({"batch": 4, "flatten": "flatten"}, r"static batch of 4"),
        ({"classes": 10}, r"expected \[N, 1000\]"),
        ({"mix_batch": True, "flatten": "flatten"}, r"cannot make the static batch of 1 dynamic"),
    ],
    ids=["one-channel", "nhwc", "299px", "static-batch-4", "10-classes", "batch-mixing"],
)
def test_prepare_rejects_unusable_models_clearly(tmp_path, kwargs, message):
    _, src = _export_tiny(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(prepare_onnx.OnnxModelError, match=message):
        prepare_onnx.prepare_file(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_prepare_rejects_non_onnx_and_two_inputs(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(prepare_onnx.OnnxModelError, match="cannot be read as ONNX"):
        prepare_onnx.prepare_file(junk, tmp_path / "out.onnx")

    two_inputs = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Add", ["a", "b"], ["c"])],
            "two",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 3, 224, 224]) for n in "ab"],
            [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1, 3, 224, 224])],
        )
    )
    with pytest.raises(prepare_onnx.OnnxModelError, match=r"exactly one image input, found 2 \(a, b\)"):
        prepare_onnx.prepare(two_inputs)


# --- build_classifier, onnxruntime flavour -------------------------------------------------------


def test_build_classifier_installs_the_export(exported, tmp_path):
    path, _ = exported
    model_dir = tmp_path / "classifier"
    result = _run_script(
        "build_classifier", "--flavour", "onnxruntime", "--artifacts-dir", path.parent, "--model-dir", model_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flavour: onnxruntime (requested with --flavour onnxruntime)" in result.stdout
    assert (model_dir / "1" / "model.onnx").read_bytes() == path.read_bytes()
    assert (model_dir / "config.pbtxt").read_text() == classifier_config.render_config("onnxruntime")


def test_build_classifier_serves_a_foreign_onnx(tmp_path):
    _, src = _export_tiny(tmp_path / "foreign.onnx")
    model_dir = tmp_path / "classifier"
    result = _run_script(
        "build_classifier", "--onnx", src, "--artifacts-dir", tmp_path / "art", "--model-dir", model_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "input 'data' -> 'pixels'" in result.stdout
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_build_classifier_fails_clearly_on_a_bad_onnx(tmp_path):
    _, src = _export_tiny(tmp_path / "gray.onnx", channels=1)
    result = _run_script(
        "build_classifier", "--onnx", src, "--artifacts-dir", tmp_path, "--model-dir", tmp_path / "c"
    )
    assert result.returncode == 1
    assert "build_classifier:" in result.stderr and "channels" in result.stderr
    assert not (tmp_path / "c" / "config.pbtxt").exists()
