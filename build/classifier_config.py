"""The configs the build writes: model_repository/classifier (per flavour) and the image_classifier ensemble.

Where the classifier flavour is in ONE_STEP_FLAVOURS, ``image_classifier`` and ``image_classifier_encoded`` are each
one Python-backend model instead of an ensemble (``one_step_config``). All are ``ModelConfig`` messages rendered by model_config
(protobuf text_format, generated header).
Every flavour shares name, inputs, outputs, labels and batching; only its row of ``_RUNTIME`` differs.
``max_batch_size``, the size (dims) and data type of the pixels and the Python-backend models' shared parameters
(``metrics_interval_ms``, ``slow_log_ms``) are written once, in
model_repository/preprocess/config.pbtxt (the first step of the ensemble); the generated configs take them from there,
and the tools that need the preprocessing read it there too (``preprocess_parameters``, ``preprocess_spec``).
Usage: python -m pixelserve.build.classifier_config [--flavour F] prints the classifier config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelserve.model_runtime.cuda_host_wait import HOST_WAIT_PARAMETER
from pixelserve.model_runtime.metrics_flush import INTERVAL_PARAMETER as METRICS_INTERVAL
from pixelserve.model_runtime.slow_log import THRESHOLD_PARAMETER as SLOW_LOG
from pixelserve.model_runtime.tensors import LOGITS, PIXELS
from . import model_config

if TYPE_CHECKING:
    from pixelserve.kernels_numba import PreprocessSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
PREPROCESS_CONFIG = REPO_ROOT / "model_repository" / "preprocess" / "config.pbtxt"
MODEL_NAME = "classifier"
ENSEMBLE_NAME = "image_classifier"
ENCODED_ENSEMBLE_NAME = "image_classifier_encoded"
INPUT_NAME = PIXELS
OUTPUT_NAME = LOGITS
NUM_CLASSES = 1000
LABEL_FILENAME = "labels.txt"
# Parameters of every Python-backend step, set once in preprocess's config.pbtxt.
SHARED_PARAMETERS = (METRICS_INTERVAL, SLOW_LOG, HOST_WAIT_PARAMETER)

# One row per flavour: how the model runs (the config field and its value), where its instances live,
# how long the batcher may hold a request to form a bigger batch, and backend parameters.
_RUNTIME: dict[str, dict[str, Any]] = {
    "onnxruntime": {
        "runtime": ("backend", "python"),
        "kind": "KIND_CPU",
        # CPU inference of one image takes milliseconds, so waiting 2 ms to batch is cheap.
        "queue_delay_us": 2000,
        # "0" lets ONNX Runtime pick (one thread per physical core).
        "parameters": {"runtime": "onnxruntime", "intra_op_num_threads": "0"},
    },
    "torch": {
        "runtime": ("backend", "python"),
        "kind": "KIND_GPU",
        # No delay: batches form from the queue under load (measured in perf/results/h100/issue9-run2).
        "queue_delay_us": 0,
        # Inputs stay where the preprocess step left them (the GPU); without this the Python backend
        # copies every GPU input to the host first.
        # "high": the classifier's kernels go first where processes share the GPU side by side (MPS):
        # H100, MPS, encoded ensemble at concurrency 32: 3,150 images/s against 2,908 (perf/results/h100/issue11-mps).
        # "fold_batchnorm": BatchNorms folded into their convolutions before the graphs are captured
        # (pixelserve.model_runtime.torch_classifier.fold_for_inference; perf/results/README.md, "Folded BatchNorm").
        "parameters": {"runtime": "torch", "FORCE_CPU_ONLY_INPUT_TENSORS": "no", "cuda_stream_priority": "high",
                       "fold_batchnorm": "true"},
    },
    "tensorrt": {
        "runtime": ("platform", "tensorrt_plan"),
        "kind": "KIND_GPU",
        "queue_delay_us": 500,
        "parameters": {},
    },
}
FLAVOURS = tuple(_RUNTIME)

# Where the classifier is a Python-backend model on the GPU (torch), image_classifier and image_classifier_encoded are
# each one Python-backend model that (decodes,) preprocesses and classifies (build/models/one_step/model.py, which
# pixelserve-build puts in both when it chooses this flavour), not the
# ensemble preprocess -> classifier: every step of an ensemble costs a Python-backend round trip (about 1 ms of stub
# handling per execute() of the classifier on the H100). On three H100 servers the one step served 2.78-3.29x the raw
# ensemble at concurrency 32, the two steps beside it 2.26-2.66x (perf/results/README.md, "Issue 11, session 7").
# A TensorRT classifier runs in Triton's own backend, with no stub: there the two-step ensemble stays.
ONE_STEP_FLAVOURS = ("torch",)
# The one step reads the classifier's weights from the classifier model beside it (its path from the model's dir).
WEIGHTS_PARAMETER = "classifier_weights"
# preprocess's parameters that only say how it hands `pixels` to a next step: the one step has none.
_HAND_OFF_PARAMETERS = ("output_memory",)


def max_batch_size(preprocess_config: Path = PREPROCESS_CONFIG) -> int:
    """The repository's max_batch_size: the one written in the preprocess model's config.pbtxt."""
    return int(model_config.read_config(preprocess_config).max_batch_size)


def _pixels_output(config: Any, path: Path) -> Any:
    """The output of preprocess's ``config`` (read from ``path``) that the classifier takes: the one named PIXELS."""
    outputs = [o for o in config.output if o.name == INPUT_NAME]
    if len(outputs) != 1:
        raise ValueError(f"{path} has {len(outputs)} outputs named {INPUT_NAME!r}; expected one")
    return outputs[0]


def pixels_data_type(preprocess_config: Path = PREPROCESS_CONFIG) -> int:
    """The data type of the pixels handed from preprocess to the classifier: preprocess's output's."""
    return int(_pixels_output(model_config.read_config(preprocess_config), preprocess_config).data_type)


def _image_dims(output: Any, path: Path) -> tuple[int, ...]:
    """The pixels ``output``'s dims (of the config read from ``path``): (channels, height, width), all fixed."""
    dims = tuple(int(d) for d in output.dims)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"{path}: output {INPUT_NAME!r} has dims {list(dims)}; expected [3, height, width]")
    return dims


def pixels_dims(preprocess_config: Path = PREPROCESS_CONFIG) -> tuple[int, ...]:
    """One image's pixels as (channels, height, width): preprocess's output's dims, which set the output size."""
    output = _pixels_output(model_config.read_config(preprocess_config), preprocess_config)
    return _image_dims(output, preprocess_config)


def preprocess_parameters(preprocess_config: Path = PREPROCESS_CONFIG) -> dict[str, str]:
    """preprocess's ``parameters`` as strings, plus ``out_height``, ``out_width`` and ``output_dtype`` from its pixels
    output, as the served model takes them: what ``PreprocessSpec.from_parameters`` reads."""
    from tritonclient.utils import triton_to_np_dtype

    config = model_config.read_config(preprocess_config)
    fields = {key: str(value.string_value) for key, value in config.parameters.items()}
    output = _pixels_output(config, preprocess_config)
    _, height, width = _image_dims(output, preprocess_config)
    type_name = model_config.pb2().DataType.Name(output.data_type)
    numpy_type = triton_to_np_dtype(type_name.removeprefix("TYPE_"))
    # A type numpy has no name for is passed on as Triton's, for PreprocessSpec to refuse by that name.
    fields.update(out_height=str(height), out_width=str(width),
                  output_dtype=type_name if numpy_type is None else np.dtype(numpy_type).name)
    return fields


def preprocess_spec(preprocess_config: Path = PREPROCESS_CONFIG) -> "PreprocessSpec":
    """The preprocessing recipe the served preprocess model runs, read from its config.pbtxt."""
    from pixelserve.kernels_numba import PreprocessSpec

    return PreprocessSpec.from_parameters(preprocess_parameters(preprocess_config))


def shared_parameters(preprocess_config: Path = PREPROCESS_CONFIG) -> dict[str, str]:
    """The parameters every Python-backend step takes from preprocess's config.pbtxt (SHARED_PARAMETERS)."""
    parameters = model_config.read_config(preprocess_config).parameters
    missing = [key for key in SHARED_PARAMETERS if key not in parameters]
    if missing:
        raise ValueError(f"{preprocess_config} lacks the parameter(s) {', '.join(missing)}")
    return {key: str(parameters[key].string_value) for key in SHARED_PARAMETERS}


def metrics_interval_ms(preprocess_config: Path = PREPROCESS_CONFIG) -> str:
    """How often the Python-backend models send their counters to Triton: preprocess's parameter."""
    return shared_parameters(preprocess_config)[METRICS_INTERVAL]


def classifier_config(flavour: str = "onnxruntime") -> Any:
    """The classifier's ``ModelConfig`` for `flavour`."""
    if flavour not in _RUNTIME:
        raise ValueError(f"unknown classifier flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    rt = _RUNTIME[flavour]
    pb2 = model_config.pb2()
    config = pb2.ModelConfig(name=MODEL_NAME, max_batch_size=max_batch_size())
    setattr(config, *rt["runtime"])
    config.input.add(name=INPUT_NAME, data_type=pixels_data_type(), dims=pixels_dims())
    config.output.add(name=OUTPUT_NAME, data_type=pb2.TYPE_FP32, dims=[NUM_CLASSES], label_filename=LABEL_FILENAME)
    config.dynamic_batching.max_queue_delay_microseconds = rt["queue_delay_us"]
    config.instance_group.add(count=1, kind=pb2.ModelInstanceGroup.Kind.Value(rt["kind"]))
    for key, value in rt["parameters"].items():
        config.parameters[key].string_value = value
    if rt["runtime"] == ("backend", "python"):
        for key, value in shared_parameters().items():
            config.parameters[key].string_value = value
    return config


def render_config(flavour: str = "onnxruntime") -> str:
    """The classifier's config.pbtxt text for `flavour`."""
    config = classifier_config(flavour)
    return model_config.config_text(config, [
        f"Generated by pixelserve.build.classifier_config (flavour: {flavour}); do not edit by hand.",
        "Regenerate with pixelserve-build (build/build_repository.py), which writes this file for the CPU build.",
        "max_batch_size, the input's data_type, metrics_interval_ms, slow_log_ms and gpu_host_wait come from",
        "model_repository/preprocess/config.pbtxt.",
    ])


def ensemble_config(encoded: bool = False) -> Any:
    """An ensemble ending in the classifier with labelled predictions: ``image_classifier`` (raw images ->
    preprocess -> classifier), or with ``encoded`` ``image_classifier_encoded`` (JPEG/PNG bytes -> preprocess's
    optional ``encoded`` input, decoded there -> classifier)."""
    pb2 = model_config.pb2()
    name = ENCODED_ENSEMBLE_NAME if encoded else ENSEMBLE_NAME
    config = pb2.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size())
    steps: list[tuple[str, dict[str, str], dict[str, str]]]  # (model, input_map, output_map)
    if encoded:
        config.input.add(name="images", data_type=pb2.TYPE_STRING, dims=[1])
        steps = [("preprocess", {"encoded": "images"}, {})]
    else:
        config.input.add(name="images", data_type=pb2.TYPE_UINT8, dims=[-1, -1, 3])
        steps = [("preprocess", {"images": "images"}, {})]
    steps[-1][2][INPUT_NAME] = INPUT_NAME
    steps.append((MODEL_NAME, {INPUT_NAME: INPUT_NAME}, {OUTPUT_NAME: "predictions"}))
    config.output.add(name="predictions", data_type=pb2.TYPE_FP32, dims=[NUM_CLASSES], label_filename=LABEL_FILENAME)
    for model, inputs, outputs in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    # Identical requests are answered from Triton's response cache without running the steps; the cache's
    # size is a server setting (RESPONSE_CACHE_CONFIG in pixelserve.triton_local). Only the encoded ensemble:
    # Triton's cache key hashes the input bytes but not the shape (core's TritonCache::HashInputs), so on the
    # raw ensemble a 2x1 image would get the cached answer of the 1x2 image with the same bytes. An encoded
    # file's bytes say its own size, so that cannot happen there.
    if encoded:
        config.response_cache.enable = True
    return config


def one_step_config(flavour: str = "torch", encoded: bool = True) -> Any:
    """``image_classifier_encoded`` (``encoded``) or ``image_classifier`` as one Python-backend model
    (ONE_STEP_FLAVOURS): the ensemble's input (preprocess's ``encoded`` or ``images`` input, required here) and
    labelled output, without a response cache; preprocess's batching and parameters (with its output's size and
    dtype as ``out_height``, ``out_width`` and ``output_dtype``: ``preprocess_parameters``) and the classifier's
    flavour parameters, each from where it is set."""
    pb2 = model_config.pb2()
    preprocess = model_config.read_config(PREPROCESS_CONFIG)
    name = ENCODED_ENSEMBLE_NAME if encoded else ENSEMBLE_NAME
    config = pb2.ModelConfig(name=name, backend="python", max_batch_size=preprocess.max_batch_size)
    (source,) = [i for i in preprocess.input if i.name == ("encoded" if encoded else "images")]
    config.input.add(name="images", data_type=source.data_type, dims=source.dims,
                     allow_ragged_batch=source.allow_ragged_batch)
    config.output.add(name="predictions", data_type=pb2.TYPE_FP32, dims=[NUM_CLASSES], label_filename=LABEL_FILENAME)
    config.dynamic_batching.CopyFrom(preprocess.dynamic_batching)
    config.instance_group.add(count=1, kind=pb2.ModelInstanceGroup.Kind.Value(_RUNTIME[flavour]["kind"]))
    settings = {**preprocess_parameters(), **_RUNTIME[flavour]["parameters"]}
    for key, value in settings.items():
        if key not in _HAND_OFF_PARAMETERS:
            config.parameters[key].string_value = value
    config.parameters[WEIGHTS_PARAMETER].string_value = f"../{MODEL_NAME}/1/model.pt"
    # No response cache here, unlike on the ensemble: Triton 2.51 caches a Python-backend model's per-request error
    # response as a success with no outputs, so a second request with the same bad bytes would get an empty answer
    # (seen on this server; an ensemble's errors are not cached). docs/serving.md, "The response cache".
    return config


def product_config(flavour: str = "onnxruntime", encoded: bool = True) -> Any:
    """``image_classifier_encoded`` (``encoded``) or ``image_classifier`` for `flavour`: one Python-backend model
    (ONE_STEP_FLAVOURS) or the ensemble."""
    return one_step_config(flavour, encoded) if flavour in ONE_STEP_FLAVOURS else ensemble_config(encoded)


def encoded_config(flavour: str = "onnxruntime") -> Any:
    """``image_classifier_encoded`` for `flavour` (product_config)."""
    return product_config(flavour, encoded=True)


def render_encoded(flavour: str = "onnxruntime") -> str:
    """The config.pbtxt text of ``image_classifier_encoded`` for `flavour`."""
    if flavour not in ONE_STEP_FLAVOURS:
        return render_ensemble(encoded=True)
    return model_config.config_text(one_step_config(flavour), [
        "The product: an image in, ImageNet scores out (ask for `class_count` to get top-k labels).",
        "Encoded images in: one JPEG or PNG file's bytes per request, as a [1, 1] BYTES tensor.",
        f"Generated by pixelserve.build.classifier_config (flavour: {flavour}); do not edit by hand.",
        "One Python-backend step (1/model.py): decode, preprocess and classify (ONE_STEP_FLAVOURS says why).",
        "max_batch_size, dynamic_batching and the preprocessing and decoding parameters come from",
        "model_repository/preprocess/config.pbtxt (which documents them); the rest from the classifier's flavour.",
    ])


def render_ensemble(encoded: bool = False) -> str:
    """The config.pbtxt text of the raw (``image_classifier``) or the encoded ensemble."""
    what = ("Encoded images in: one JPEG or PNG file's bytes per request, as a [1, 1] BYTES tensor."
            if encoded else "Clients send one HWC uint8 image per request as [1, height, width, 3] (any size).")
    return model_config.config_text(ensemble_config(encoded), [
        "The product: an image in, ImageNet scores out (ask for `class_count` to get top-k labels).",
        what,
        "Generated by pixelserve.build.classifier_config with the classifier; do not edit by hand.",
        "max_batch_size and the input's data_type come from model_repository/preprocess/config.pbtxt.",
    ])


def contract_problems(config_text: str, flavour: str) -> list[str]:
    """Return how `config_text` breaks the classifier contract for `flavour` (empty if it holds).

    The contract is what the ensemble and clients rely on: name, batching,
    input/output names, types, dims and labels, plus the flavour's runtime.
    """
    from google.protobuf import text_format

    pb2 = model_config.pb2()
    try:
        config = model_config.parse_config(config_text)
    except text_format.ParseError as exc:
        return [f"not a valid config.pbtxt: {exc}"]
    problems = []
    if config.name != MODEL_NAME:
        problems.append(f"name is {config.name!r}, expected {MODEL_NAME!r}")
    expected_batch = max_batch_size()
    if config.max_batch_size != expected_batch:
        problems.append(f"max_batch_size is {config.max_batch_size}, expected {expected_batch}")
    if not config.HasField("dynamic_batching"):
        problems.append("dynamic_batching is off")
    field, value = _RUNTIME[flavour]["runtime"]
    if getattr(config, field) != value:
        problems.append(f"{field} is {getattr(config, field)!r}, expected {value!r}")
    expected_io = (
        ("input", config.input, INPUT_NAME, pb2.DataType.Name(pixels_data_type()), list(pixels_dims()), ""),
        ("output", config.output, OUTPUT_NAME, "TYPE_FP32", [NUM_CLASSES], LABEL_FILENAME),
    )
    for kind, entries, name, data_type, dims, labels in expected_io:
        found = [(e.name, pb2.DataType.Name(e.data_type), list(e.dims)) for e in entries]
        if found != [(name, data_type, dims)]:
            problems.append(f"{kind}s are {found}, expected [({name!r}, {data_type!r}, {dims})]")
        elif kind == "output" and entries[0].label_filename != labels:
            problems.append(f"output label_filename is {entries[0].label_filename!r}, expected {labels!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print the config for the chosen flavour; returns the exit status."""
    parser = argparse.ArgumentParser(description="Print the classifier config.pbtxt for a flavour.")
    parser.add_argument("--flavour", choices=FLAVOURS, default="onnxruntime")
    args = parser.parse_args(argv)
    sys.stdout.write(render_config(args.flavour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
