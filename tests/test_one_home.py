"""Facts that several files need have one home each; the copies that must stay (model.py files, which Triton loads
as they are, and files Triton reads from each model's directory) are checked against it here.

- the tensors' names: pixelserve.model_runtime.tensors (PIXELS, LOGITS);
- the output size (the pixels' dims): preprocess's config.pbtxt (pixelserve.build.classifier_config.pixels_dims);
- the reserve_image_size parameter's name: pixelserve.model_runtime.parameters.RESERVE_PARAMETER;
- the labels: model_repository/classifier/labels.txt (pixelserve.build.build_classifier.LABELS_SOURCE);
- parsing config.pbtxt: pixelserve.build.model_config.
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from pixelserve.build import build_classifier, classifier_config, model_config, prepare_onnx
from pixelserve.model_runtime.parameters import RESERVE_PARAMETER, image_size_parameter
from pixelserve.model_runtime.tensors import PIXELS

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
# pb_utils calls that name a tensor, and the position of the name among their arguments.
TENSOR_NAME_ARGS = {"Tensor": 0, "from_dlpack": 0, "get_input_tensor_by_name": 1, "get_output_tensor_by_name": 1,
                    "get_input_config_by_name": 1, "get_output_config_by_name": 1}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _assigned_strings(path: Path) -> dict[str, str]:
    """Module-level names bound to string literals in ``path``: ``A = "x"`` and ``A, B = "x", "y"``."""
    found = {}
    for node in _tree(path).body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            unpacked = isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
            pairs = zip(target.elts, node.value.elts) if unpacked else [(target, node.value)]
            found.update({t.id: v.value for t, v in pairs
                          if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str)})
    return found


def _call_name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _string_args(path: Path, calls: dict[str, int]) -> set[str]:
    """The strings ``path`` passes as the argument at ``calls[name]`` of each call of ``name``: literals, or module
    constants bound to literals."""
    constants = _assigned_strings(path)
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and _call_name(node) in calls and len(node.args) > calls[_call_name(node)]:
            arg = node.args[calls[_call_name(node)]]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                found.add(constants[arg.id])
    return found


def _tensor_names(config_path: Path) -> set[str]:
    config = model_config.read_config(config_path)
    return {tensor.name for tensor in [*config.input, *config.output]}


# --- the pixels tensor's name -----------------------------------------------------------------------------------

def test_the_configs_name_the_hand_off_pixels():
    preprocess = model_config.read_config(classifier_config.PREPROCESS_CONFIG)
    assert [o.name for o in preprocess.output] == [PIXELS]
    classifier = model_config.read_config(MODEL_REPOSITORY / "classifier" / "config.pbtxt")
    assert [i.name for i in classifier.input] == [PIXELS]
    assert classifier_config.INPUT_NAME == PIXELS


def _imported_names(path: Path, module: str) -> set[str]:
    """The names ``path`` imports from ``module`` (``from module import A, B``)."""
    return {alias.name for node in ast.walk(_tree(path)) if isinstance(node, ast.ImportFrom) and node.module == module
            for alias in node.names}


def _string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(_tree(path)) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize("path", ["model_repository/classifier/1/model.py", "model_repository/preprocess/1/model.py"])
def test_the_served_models_name_pixels_by_its_home(path):
    """They import PIXELS from its home and never spell it."""
    assert "PIXELS" in _imported_names(REPO_ROOT / path, "pixelserve.model_runtime.tensors"), path
    assert PIXELS not in _string_literals(REPO_ROOT / path), f"{path} spells {PIXELS!r} instead of importing it"


@pytest.mark.parametrize("path", ["perf/peer_models/preprocess_opencv/1/model.py",
                                  "perf/peer_models/preprocess_torch/1/model.py",
                                  "perf/peer_models/preprocess_dali/1/model.py",
                                  "tests/gpu_repository/gpu_consumer/1/model.py"])
def test_peer_and_test_models_hand_over_pixels_by_its_home_name(path):
    """Each names PIXELS, and only tensors its config.pbtxt has (which has PIXELS too)."""
    model_py = REPO_ROOT / path
    used, declared = _string_args(model_py, TENSOR_NAME_ARGS), _tensor_names(model_py.parent.parent / "config.pbtxt")
    assert PIXELS in used and PIXELS in declared, (used, declared)
    assert used <= declared, f"{path} names tensors its config lacks: {sorted(used - declared)}"


def test_the_logits_are_named_in_one_place():
    """The classifier's output name is spelled only in its home; the configs use it."""
    from pixelserve.model_runtime.tensors import LOGITS

    classifier = model_config.read_config(MODEL_REPOSITORY / "classifier" / "config.pbtxt")
    assert [o.name for o in classifier.output] == [LOGITS]
    spellers = [path.relative_to(REPO_ROOT).as_posix()
                for folder in ("build", "model_runtime", "kernels_numba", "model_repository", "client", "triton_local")
                for path in (REPO_ROOT / folder).rglob("*.py") if LOGITS in _string_literals(path)]
    assert spellers == ["model_runtime/tensors.py"], spellers


# --- the output size ----------------------------------------------------------------------------------------------

def _classifier_onnx(height: int, width: int):
    """A minimal ImageNet-shaped classifier: [1, 3, height, width] float32 -> [1, 1000] float32."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((3, classifier_config.NUM_CLASSES), np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weights"], ["scores"])],
        "tiny", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classifier_config.NUM_CLASSES])],
        [weights])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION)


def test_prepare_onnx_takes_the_output_size_from_preprocess(monkeypatch):
    monkeypatch.setattr(classifier_config, "pixels_dims", lambda *_: (3, 192, 160))
    prepare_onnx.validate(_classifier_onnx(192, 160))
    with pytest.raises(prepare_onnx.OnnxModelError, match="spatial size 224x224; the classifier is fed 192x160"):
        prepare_onnx.validate(_classifier_onnx(224, 224))


def test_the_classifier_takes_the_size_preprocess_makes():
    (pixels,) = [o for o in model_config.read_config(classifier_config.PREPROCESS_CONFIG).output if o.name == PIXELS]
    assert classifier_config.pixels_dims() == tuple(pixels.dims)
    classifier = model_config.read_config(MODEL_REPOSITORY / "classifier" / "config.pbtxt")
    assert list(classifier.input[0].dims) == list(pixels.dims)


# --- the reserve_image_size parameter -----------------------------------------------------------------------------

def test_preprocess_sets_the_reserve_parameter():
    config = model_config.read_config(classifier_config.PREPROCESS_CONFIG)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert RESERVE_PARAMETER in parameters
    image_size_parameter(parameters, RESERVE_PARAMETER)  # a size or 0, else ValueError


def test_the_models_read_the_reserve_parameter_in_one_place():
    """Only the models' shared frame reads the image size parameter, by its home name."""
    readers = {path.relative_to(REPO_ROOT).as_posix(): path
               for path in [*REPO_ROOT.glob("model_repository/*/1/model.py"), *REPO_ROOT.glob("build/models/*/model.py"),
                            *REPO_ROOT.glob("model_runtime/*.py")]
               if any(isinstance(node, ast.Call) and _call_name(node) == "image_size_parameter"
                      for node in ast.walk(_tree(path)))}
    assert set(readers) == {"model_runtime/triton_model.py"}, sorted(readers)
    assert "RESERVE_PARAMETER" in _imported_names(readers["model_runtime/triton_model.py"], "parameters")
    assert RESERVE_PARAMETER not in _string_literals(readers["model_runtime/triton_model.py"])


# --- the labels ---------------------------------------------------------------------------------------------------

def _labelled_model_dirs() -> list[Path]:
    """The repository's models whose config names a labels file."""
    return [config.parent for config in sorted(MODEL_REPOSITORY.glob("*/config.pbtxt"))
            if any(o.label_filename for o in model_config.read_config(config).output)]


def test_every_labels_file_is_the_source():
    dirs = _labelled_model_dirs()
    assert {d.name for d in dirs} == {"classifier", "image_classifier", "image_classifier_encoded"}
    assert build_classifier.LABELS_SOURCE == MODEL_REPOSITORY / "classifier" / classifier_config.LABEL_FILENAME
    source = build_classifier.LABELS_SOURCE.read_bytes()
    for model_dir in dirs:
        copy = model_dir / classifier_config.LABEL_FILENAME
        assert copy.read_bytes() == source, f"{copy} differs from {build_classifier.LABELS_SOURCE} (pixelserve-build)"


def test_the_build_copies_the_labels_beside_every_config_that_names_them(tmp_path):
    build_classifier.write_ensemble(tmp_path / "classifier", "onnxruntime")
    source = build_classifier.LABELS_SOURCE.read_bytes()
    for name in ("classifier", "image_classifier", "image_classifier_encoded"):
        assert (tmp_path / name / classifier_config.LABEL_FILENAME).read_bytes() == source, name


# --- parsing config.pbtxt -----------------------------------------------------------------------------------------

def _parses_config_text(path: Path) -> bool:
    """Whether ``path`` calls protobuf's ``text_format.Parse`` or ``text_format.Merge``."""
    calls = (node.func for node in ast.walk(_tree(path)) if isinstance(node, ast.Call))
    return any(isinstance(func, ast.Attribute) and func.attr in ("Parse", "Merge")
               and isinstance(func.value, ast.Name) and func.value.id == "text_format" for func in calls)


def test_config_text_is_parsed_only_by_model_config():
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    parsers = [path for path in listed.stdout.splitlines()
               if path != "build/model_config.py" and _parses_config_text(REPO_ROOT / path)]
    assert parsers == [], "parse config.pbtxt with pixelserve.build.model_config"
