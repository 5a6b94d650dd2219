"""The classifier's config.pbtxt: one generator for both flavours, and the committed file cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from pixelserve.build import build_classifier, classifier_config, model_config
from pixelserve.model_runtime.tensors import PIXELS

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
CLASSIFIER_DIR = REPO_ROOT / "model_repository" / "classifier"
PREPROCESS_CONFIG = REPO_ROOT / "model_repository" / "preprocess" / "config.pbtxt"
_parse = model_config.parse_config


def _preprocess_pixels() -> model_config_pb2.ModelOutput:
    """preprocess's pixels output, as its config.pbtxt states it."""
    (pixels,) = [o for o in model_config.read_config(PREPROCESS_CONFIG).output if o.name == PIXELS]
    return pixels


def test_max_batch_size_and_the_pixels_follow_the_preprocess_config_they_read(tmp_path):
    """The readers read the file they are given: change it, and what they return changes with it."""
    edited = model_config.read_config(PREPROCESS_CONFIG)
    edited.max_batch_size = 7
    (pixels,) = [o for o in edited.output if o.name == PIXELS]
    pixels.data_type = model_config_pb2.TYPE_FP32
    pixels.dims[:] = [3, 192, 160]
    path = model_config.write_config(tmp_path / "config.pbtxt", edited, [])
    assert classifier_config.max_batch_size(path) == 7
    assert classifier_config.pixels_data_type(path) == model_config_pb2.TYPE_FP32
    assert classifier_config.pixels_dims(path) == (3, 192, 160)
    spec = classifier_config.preprocess_spec(path)
    assert (spec.out_height, spec.out_width, spec.output_dtype) == (192, 160, "float32")


def test_a_preprocess_config_without_pixels_is_refused_by_name(tmp_path):
    edited = model_config.read_config(PREPROCESS_CONFIG)
    edited.output[0].name = "not_pixels"
    path = model_config.write_config(tmp_path / "config.pbtxt", edited, [])
    with pytest.raises(ValueError, match=f"0 outputs named '{PIXELS}'"):
        classifier_config.pixels_dims(path)


def test_generated_configs_carry_the_preprocess_max_batch_size():
    expected = model_config.read_config(PREPROCESS_CONFIG).max_batch_size
    assert expected > 0
    generated = [classifier_config.render_ensemble(), classifier_config.render_ensemble(encoded=True),
                 *(classifier_config.render_config(flavour) for flavour in classifier_config.FLAVOURS)]
    assert [_parse(text).max_batch_size for text in generated] == [expected] * len(generated)


def test_ensemble_chains_preprocess_and_classifier():
    config = _parse(classifier_config.render_ensemble())
    assert (config.name, config.platform) == ("image_classifier", "ensemble")
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in config.ensemble_scheduling.step]
    assert steps == [("preprocess", {"images": "images"}, {PIXELS: PIXELS}),
                     ("classifier", {PIXELS: PIXELS}, {"logits": "predictions"})]
    (out,) = config.output
    assert (out.name, list(out.dims), out.label_filename) == ("predictions", [1000], "labels.txt")


@pytest.mark.parametrize("flavour", classifier_config.FLAVOURS)
def test_both_flavours_share_the_contract(flavour):
    config = _parse(classifier_config.render_config(flavour))
    assert config.name == "classifier"
    assert config.max_batch_size == classifier_config.max_batch_size()
    assert config.HasField("dynamic_batching")
    (inp,) = config.input
    pixels = _preprocess_pixels()  # what preprocess hands over: its output's name, type (FP16) and dims (3x224x224)
    assert (inp.name, inp.data_type, list(inp.dims)) == (pixels.name, pixels.data_type, list(pixels.dims))
    (out,) = config.output
    assert (out.name, out.data_type, list(out.dims)) == ("logits", model_config_pb2.TYPE_FP32, [1000])
    assert out.label_filename == "labels.txt"


def test_onnxruntime_flavour_is_a_cpu_python_model():
    config = _parse(classifier_config.render_config("onnxruntime"))
    assert config.backend == "python" and not config.platform
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert int(config.parameters["intra_op_num_threads"].string_value) >= 0


def test_tensorrt_flavour_is_a_gpu_plan():
    config = _parse(classifier_config.render_config("tensorrt"))
    assert config.platform == "tensorrt_plan" and not config.backend
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError, match="unknown classifier flavour 'tflite'"):
        classifier_config.render_config("tflite")


def test_labels_cover_every_class():
    labels = (CLASSIFIER_DIR / "labels.txt").read_text().splitlines()
    assert len(labels) == classifier_config.NUM_CLASSES and all(labels)
    assert (labels[285], labels[967]) == ("Egyptian_cat", "espresso")


def test_generator_cli_prints_the_config():
    result = subprocess.run(
        [sys.executable, "-m", "pixelserve.build.classifier_config", "--flavour", "tensorrt"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout == classifier_config.render_config("tensorrt")


def test_explicit_onnxruntime_needs_nothing():
    assert build_classifier.choose_flavour("onnxruntime") == ("onnxruntime", "requested with --flavour onnxruntime")


def test_auto_and_tensorrt_follow_what_the_host_has():
    problems = build_classifier.tensorrt_build_problems()
    flavour, reason = build_classifier.choose_flavour("auto")
    assert reason.startswith("auto: ")
    if not problems:
        assert flavour == "tensorrt"
        assert build_classifier.choose_flavour("tensorrt")[0] == "tensorrt"
    else:  # torch where PyTorch sees a CUDA GPU (a GPU host), else ONNX Runtime on the CPU
        expected = "onnxruntime" if build_classifier.torch_serving_problems() else "torch"
        assert flavour == expected and all(p in reason for p in problems)
        with pytest.raises(build_classifier.BuildError, match="--flavour tensorrt cannot be built here"):
            build_classifier.choose_flavour("tensorrt")


needs_no_tensorrt = pytest.mark.skipif(
    not build_classifier.tensorrt_build_problems(), reason="this host can build TensorRT engines"
)


@needs_no_tensorrt
def test_tensorrt_request_fails_clearly_without_tensorrt(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pixelserve.build.build_classifier", "--flavour", "tensorrt", "--model-dir", tmp_path],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "build_classifier: --flavour tensorrt cannot be built here: " in result.stderr
    assert not (tmp_path / "config.pbtxt").exists()


@needs_no_tensorrt
def test_failed_engine_build_restores_the_previous_config(tmp_path):
    model_dir = tmp_path / "classifier"
    build_classifier.write_config("onnxruntime", model_dir)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")  # never read: the engine build fails before (no build_engine.py or no TensorRT)
    with pytest.raises(build_classifier.BuildError, match="build_engine"):
        build_classifier.install("tensorrt", onnx_file, model_dir)
    assert (model_dir / "config.pbtxt").read_text() == classifier_config.render_config("onnxruntime")


@pytest.mark.parametrize("flavour", classifier_config.FLAVOURS)
def test_generated_configs_honour_the_contract(flavour):
    assert classifier_config.contract_problems(classifier_config.render_config(flavour), flavour) == []


def test_contract_check_names_each_breach():
    text = (
        classifier_config.render_config("onnxruntime")
        .replace(f"max_batch_size: {classifier_config.max_batch_size()}", "max_batch_size: 8")
        .replace("dims: [1000]", "dims: [10]")
    )
    problems = classifier_config.contract_problems(text, "tensorrt")
    assert f"max_batch_size is 8, expected {classifier_config.max_batch_size()}" in problems
    assert "platform is '', expected 'tensorrt_plan'" in problems
    assert any(p.startswith("outputs are [('logits', 'TYPE_FP32', [10])]") for p in problems)
    no_labels = classifier_config.render_config("tensorrt").replace('  label_filename: "labels.txt"\n', "")
    assert classifier_config.contract_problems(no_labels, "tensorrt") == [
        "output label_filename is '', expected 'labels.txt'"
    ]



@pytest.mark.parametrize("flavour", [f for f in classifier_config.FLAVOURS if f not in classifier_config.ONE_STEP_FLAVOURS])
def test_encoded_model_is_the_two_step_ensemble_where_the_classifier_is_not_torch(flavour):
    config = _parse(classifier_config.render_encoded(flavour))
    assert (config.name, config.platform) == ("image_classifier_encoded", "ensemble")
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in config.ensemble_scheduling.step]
    assert steps == [("preprocess", {"encoded": "images"}, {PIXELS: PIXELS}),
                     ("classifier", {PIXELS: PIXELS}, {"logits": "predictions"})]


def test_torch_encoded_model_is_one_gpu_python_step_with_the_ensembles_contract():
    assert classifier_config.ONE_STEP_FLAVOURS == ("torch",)
    config = _parse(classifier_config.render_encoded("torch"))
    ensemble = _parse(classifier_config.render_ensemble(encoded=True))
    assert (config.name, config.backend, config.platform) == ("image_classifier_encoded", "python", "")
    assert config.max_batch_size == ensemble.max_batch_size == classifier_config.max_batch_size()
    assert list(config.input) == list(ensemble.input) and list(config.output) == list(ensemble.output)
    assert config.output[0].label_filename == "labels.txt"
    # Triton 2.51 would cache a Python-backend model's per-request errors as empty successes (docs/serving.md)
    assert ensemble.response_cache.enable and not config.HasField("response_cache")
    (group,) = config.instance_group
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"


def test_torch_encoded_model_takes_its_settings_from_where_they_are_set():
    """preprocess's config.pbtxt for batching, preprocessing and decoding; the torch flavour's row for the classifier;
    the classifier model's weights. Nothing is written a second time by hand."""
    preprocess = model_config.read_config(PREPROCESS_CONFIG)
    config = _parse(classifier_config.render_encoded("torch"))
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    hand_off = {"output_memory"}
    for key, value in preprocess.parameters.items():
        if key in hand_off:
            assert key not in parameters, key
        else:
            assert parameters[key] == value.string_value, key
    # Frames already on the GPU (CUDA shared memory) reach the raw one step there, not copied to the host.
    raw = classifier_config.one_step_config("torch", encoded=False)
    assert raw.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert config.dynamic_batching == preprocess.dynamic_batching
    pixels = _preprocess_pixels()
    assert [int(parameters["out_height"]), int(parameters["out_width"])] == list(pixels.dims)[1:]
    assert parameters["output_dtype"] == {model_config_pb2.TYPE_FP16: "float16",
                                          model_config_pb2.TYPE_FP32: "float32"}[pixels.data_type]
    torch_classifier = _parse(classifier_config.render_config("torch"))
    for key in ("cuda_stream_priority", "fold_batchnorm", "metrics_interval_ms", "slow_log_ms", "gpu_host_wait"):
        assert parameters[key] == torch_classifier.parameters[key].string_value, key
    weights = (REPO_ROOT / "model_repository" / "image_classifier_encoded" / parameters["classifier_weights"]).resolve()
    assert weights == (CLASSIFIER_DIR / "1" / "model.pt").resolve()


def test_the_one_steps_parameters_make_the_spec_preprocess_makes():
    from pixelserve.kernels_numba import PreprocessSpec

    config = _parse(classifier_config.render_encoded("torch"))
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert PreprocessSpec.from_parameters(parameters) == classifier_config.preprocess_spec(PREPROCESS_CONFIG)


def test_build_writes_the_encoded_model_of_its_flavour(tmp_path):
    model_dir = tmp_path / "classifier"
    for flavour in ("torch", "onnxruntime"):
        build_classifier.write_ensemble(model_dir, flavour)
        written = (tmp_path / "image_classifier_encoded" / "config.pbtxt").read_text()
        assert written == classifier_config.render_encoded(flavour)
        assert (tmp_path / "image_classifier" / "config.pbtxt").read_text() == classifier_config.render_ensemble()
