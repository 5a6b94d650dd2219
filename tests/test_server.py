"""The shipped repository on a real tritonserver: real photos over HTTP and gRPC, ragged dynamic batching,
bad input answered with clear errors while the server keeps serving.

Reference: ONNX Runtime on the same photos preprocessed independently: PIL resize(BILINEAR) + numpy when
the shipped config antialiases (its default), torch float64 bilinear + numpy otherwise. Logits must agree
within LOGIT_ATOL and top-1 must be equal. PIL rounds to uint8 after each resize pass, which moves
EfficientNet-Lite0 logits by up to ~0.6 (measured on the skimage photos at 480p..4K); without antialias
the two preprocessings agree to ~1e-6 and the logits to ~1e-4.
"""
from __future__ import annotations

import os
import queue
from functools import partial

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODEL_REPOSITORY
from images import PHOTO_NAMES, photo, photo_at, uncached

from pixelserve.build.classifier_config import preprocess_spec
from pixelserve.build.reference_images import EXPECTED_TOP1
from pixelserve.kernels_numba import PreprocessSpec
from references import pil_preprocess, reference_preprocess

pytestmark = pytest.mark.server

MODEL = "image_classifier"
CLIENTS = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="module")
def logit_atol(spec) -> float:
    return 1.0 if spec.antialias else 1e-2


@pytest.fixture(scope="module")
def spec() -> PreprocessSpec:
    return preprocess_spec()


@pytest.fixture(scope="module")
def onnx_logits(spec):
    """Logits of ONNX Runtime on reference-preprocessed images."""
    session = ort.InferenceSession(str(MODEL_REPOSITORY / "classifier" / "1" / "model.onnx"))

    reference = pil_preprocess if spec.antialias else reference_preprocess

    def run(images):
        batch = np.stack([reference(img, spec) for img in images]).astype(np.float32)
        return session.run(None, {session.get_inputs()[0].name: batch})[0]

    return run


def make_client(server, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    return CLIENTS[protocol].InferenceServerClient(url)


def infer(client, protocol, batch, class_count=0, dtype="UINT8"):
    """One request carrying ``batch`` ([B, H, W, 3] for valid input) as the `images` input."""
    module = CLIENTS[protocol]
    inp = module.InferInput("images", list(batch.shape), dtype)
    inp.set_data_from_numpy(batch)
    outputs = [module.InferRequestedOutput("predictions", class_count=class_count)]
    return client.infer(MODEL, [inp], outputs=outputs)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_photos_are_classified(triton_server, protocol):
    client = make_client(triton_server, protocol)
    for name, expected in EXPECTED_TOP1.items():
        top = infer(client, protocol, photo(name)[None], class_count=5).as_numpy("predictions")[0]
        score, index, label = top[0].decode().split(":", 2)
        assert int(index) in expected, f"{name}: top-1 {index} {label} ({score}), top-5 {top}"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predictions_match_onnxruntime_on_reference_preprocessing(triton_server, protocol, onnx_logits, logit_atol):
    client = make_client(triton_server, protocol)
    images = [photo(n) for n in PHOTO_NAMES] + [photo_at("chelsea", 1080, 1920)]
    expected = onnx_logits(images)
    for image, reference in zip(images, expected):
        got = infer(client, protocol, image[None]).as_numpy("predictions")[0]
        np.testing.assert_allclose(got, reference, atol=logit_atol, rtol=0)
        assert got.argmax() == reference.argmax()


@pytest.mark.parametrize("resolution", [(480, 854), (1080, 1920), (2160, 3840)])
def test_top1_agrees_with_pil_pipeline_at_camera_resolutions(triton_server, resolution):
    """The whole ensemble vs ONNX Runtime on PIL-preprocessed photos (the training-time pipeline)."""
    spec = preprocess_spec()
    session = ort.InferenceSession(str(MODEL_REPOSITORY / "classifier" / "1" / "model.onnx"))
    images = [photo_at(n, *resolution) for n in PHOTO_NAMES]
    pil_batch = np.stack([pil_preprocess(img, spec) for img in images]).astype(np.float32)
    expected = session.run(None, {session.get_inputs()[0].name: pil_batch})[0].argmax(1)
    client = httpclient.InferenceServerClient(triton_server.http_url)
    got = [infer(client, "http", img[None]).as_numpy("predictions")[0].argmax() for img in images]
    assert list(got) == list(expected)


def _infer_all_at_once(client, inputs) -> list:
    """Each input (a list of InferInputs) sent to MODEL as a gRPC async call, all before any answer is awaited;
    the `predictions` of each, in the order sent."""
    done: queue.Queue = queue.Queue()
    for index, request in enumerate(inputs):
        client.async_infer(MODEL, request, partial(lambda i, result, error: done.put((i, result, error)), index))
    results = [None] * len(inputs)
    for _ in inputs:
        index, result, error = done.get(timeout=120)
        assert error is None, error
        results[index] = result.as_numpy("predictions")
    return results


def _model_stats(client, model):
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_mixed_sizes_are_batched_and_correct(triton_server, onnx_logits, logit_atol):
    """Differently sized images sent at once: answers correct, and preprocess ran fewer executions than images.

    A 4K frame goes first: while the single preprocess instance works on it, the others queue up and
    must come out as one ragged batch (gRPC async calls, so the client does not serialise the sends).
    """
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    sizes = [(2160, 3840), (480, 640), (720, 1280), (300, 451), (600, 400), (1024, 768), (231, 1000), (999, 333)]
    images = [uncached(photo_at(PHOTO_NAMES[i % len(PHOTO_NAMES)], h, w)) for i, (h, w) in enumerate(sizes * 2)]
    inputs = []
    for image in images:
        inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        inputs.append(inp)
    before = _model_stats(client, "preprocess")
    results = [predictions[0] for predictions in _infer_all_at_once(client, [[inp] for inp in inputs])]
    after = _model_stats(client, "preprocess")
    np.testing.assert_allclose(np.stack(results), onnx_logits(images), atol=logit_atol, rtol=0)
    np.testing.assert_array_equal(np.stack(results).argmax(1), onnx_logits(images).argmax(1))
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(images)
    assert executions < inferences, f"no dynamic batching: {executions} executions for {inferences} images"


def test_several_images_in_one_request(triton_server, onnx_logits, logit_atol):
    """A client may stack same-size images in one request ([B, H, W, 3])."""
    client = httpclient.InferenceServerClient(triton_server.http_url)
    images = np.stack([photo_at("coffee", 240, 320), photo_at("chelsea", 240, 320)])
    got = infer(client, "http", images).as_numpy("predictions")
    np.testing.assert_allclose(got, onnx_logits(list(images)), atol=logit_atol, rtol=0)


def test_pixels_in_system_shared_memory_match_onnxruntime(triton_server, onnx_logits, logit_atol):
    """Frames in a system shared-memory region, several per request and requests in flight at once: each answer is
    ONNX Runtime's on the same frame. preprocess reads host frames where the Python backend put them (a view, not a
    copy), so a frame read from the wrong place or after its request would show here."""
    import tritonclient.utils.shared_memory as shm

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    requests = [np.stack([uncached(photo_at(name, 360 + 40 * i, 480)) for name in PHOTO_NAMES[:3]]) for i in range(4)]
    offsets = np.cumsum([0] + [batch.nbytes for batch in requests])
    key = f"/pixelserve_test_frames_{os.getpid()}"
    handle = shm.create_shared_memory_region("frames_cpu", key, int(offsets[-1]))
    headers = triton_server.admin_headers  # registering shared memory is a restricted API
    try:
        for batch, offset in zip(requests, offsets):
            shm.set_shared_memory_region(handle, [batch], offset=int(offset))
        client.register_system_shared_memory("frames_cpu", key, int(offsets[-1]), headers=headers)
        inputs = []
        for batch, offset in zip(requests, offsets):
            inp = grpcclient.InferInput("images", list(batch.shape), "UINT8")
            inp.set_shared_memory("frames_cpu", batch.nbytes, offset=int(offset))
            inputs.append([inp])
        results = _infer_all_at_once(client, inputs)
    finally:
        client.unregister_system_shared_memory("frames_cpu", headers=headers)
        shm.destroy_shared_memory_region(handle)
    for batch, got in zip(requests, results):
        expected = onnx_logits(list(batch))
        np.testing.assert_allclose(got, expected, atol=logit_atol, rtol=0)
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


BAD_INPUTS = {
    "wrong dtype": (np.zeros((1, 8, 8, 3), np.float32), "FP32", "data"),
    "2-D image": (np.zeros((1, 8, 8), np.uint8), "UINT8", "shape"),
    "4-D image": (np.zeros((1, 2, 8, 8, 3), np.uint8), "UINT8", "shape"),
    "1 channel": (np.zeros((1, 8, 8, 1), np.uint8), "UINT8", "shape"),
    "4 channels": (np.zeros((1, 8, 8, 4), np.uint8), "UINT8", "shape"),
    "empty image": (np.zeros((1, 0, 16, 3), np.uint8), "UINT8", "image is empty"),
    "oversized image": (np.zeros((1, 8193, 1, 3), np.uint8), "UINT8", "exceeds the maximum side"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_clear_error_and_server_keeps_serving(triton_server, protocol, case):
    array, dtype, message = BAD_INPUTS[case]
    client = make_client(triton_server, protocol)
    with pytest.raises(InferenceServerException) as error:
        infer(client, protocol, array, dtype=dtype)
    assert message in str(error.value), str(error.value)
    top = infer(client, protocol, photo("coffee")[None], class_count=1).as_numpy("predictions")[0]
    assert top[0].decode().split(":")[1] == "967"
    assert triton_server.is_running()


def test_bad_request_in_a_batch_does_not_fail_its_neighbours(triton_server):
    """A bad image sent amid good ones while they are batched gets its error; the good ones get their answers.

    As in the batching test above, a 4K frame goes first so that the rest queue up behind it; the
    preprocess statistics must then show fewer executions than requests, i.e. requests shared a batch.
    """
    import queue

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    good = [uncached(photo_at("chelsea", 2160, 3840))] + [uncached(photo_at("coffee", 720, 1280)) for _ in range(6)]
    bad = np.zeros((0, 5, 3), np.uint8)
    images = good[:4] + [bad] + good[4:]
    before = _model_stats(client, "preprocess")
    done: queue.Queue = queue.Queue()
    for index, image in enumerate(images):
        inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        client.async_infer(MODEL, [inp], partial(lambda i, result, error: done.put((i, result, error)), index))
    answers = {}
    for _ in images:
        index, result, error = done.get(timeout=120)
        answers[index] = (result, error)
    after = _model_stats(client, "preprocess")
    assert "image is empty" in str(answers[4][1])
    for index, (result, error) in answers.items():
        if index != 4:
            assert error is None, error
            assert result.as_numpy("predictions")[0].argmax() in EXPECTED_TOP1["chelsea" if index == 0 else "coffee"]
    executions = after[1] - before[1]
    assert executions < len(images), f"no batch formed: {executions} executions for {len(images)} requests"


def test_server_statistics_and_metrics(triton_server):
    """The ensemble and its steps report successes in the statistics and the Prometheus metrics."""
    import urllib.request

    client = httpclient.InferenceServerClient(triton_server.http_url)
    infer(client, "http", photo("chelsea")[None])
    for model in ("image_classifier", "preprocess", "classifier"):
        stats = client.get_inference_statistics(model)["model_stats"][0]
        assert int(stats["inference_stats"]["success"]["count"]) > 0, model
    metrics = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="image_classifier"' in metrics
