"""Triton's response cache: off by default, and correct where a deployment turns it on.

The shipped server starts without it (its key hashes input bytes, not their shape, with a 64-bit
non-cryptographic hash; docs/serving.md, "The response cache"). A server started with it answers the same encoded
file twice with an identical second answer, the cache-hit statistics and the Prometheus cache metric
move, and no step of the ensemble runs again. It is off for the raw ensemble, because the key ignores
shapes: a test shows the wrong answer that the cache would give there. Nor can a request whose batch
dimension overflows Triton 2.51's 32-bit batch size leave its wrong-shaped answer for the next client.
"""
from __future__ import annotations

import re
import struct
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from images import photo_at, uncached, uncached_jpeg
from model_stats import settled

from pixelserve.build import model_config
from pixelserve.triton_local import server as triton_server_module

pytestmark = pytest.mark.server
ENCODED = "image_classifier_encoded"
STEPS = ("preprocess", "classifier")


@pytest.fixture(scope="module")
def cached_server():
    """A real tritonserver on the shipped repository, started with the response cache (the opt-in)."""
    ensure_classifier_built()
    server = triton_server_module.LocalTritonServer([MODEL_REPOSITORY], response_cache=True)
    server.start(timeout=300)
    yield server
    server.stop()


def _stats(client, model: str) -> dict[str, int]:
    """The model's execution and cache counters, once settled (model_stats.settled)."""

    def read() -> dict[str, int]:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        inference = stats["inference_stats"]
        return {"executions": int(stats.get("execution_count", 0)),
                "hits": int(inference["cache_hit"].get("count", 0)),  # JSON omits zero counts
                "misses": int(inference["cache_miss"].get("count", 0))}  # fmt: skip

    return settled(read)


def _metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


def _classify_file(client, data: bytes, class_count: int = 0) -> np.ndarray:
    inp = grpcclient.InferInput("images", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    output = grpcclient.InferRequestedOutput("predictions", class_count=class_count)
    return client.infer(ENCODED, [inp], outputs=[output]).as_numpy("predictions")


def _require_the_encoded_ensemble() -> None:
    """Skip where image_classifier_encoded is the torch flavour's one Python-backend step, which has no cache."""
    if model_config.read_config(MODEL_REPOSITORY / ENCODED / "config.pbtxt").backend == "python":
        pytest.skip("image_classifier_encoded is one Python-backend step here (torch flavour): no response cache")


def _classify_raw(client, image: np.ndarray) -> np.ndarray:
    inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
    inp.set_data_from_numpy(image[None])
    return client.infer("image_classifier", [inp]).as_numpy("predictions")


def test_cache_is_off_unless_the_server_is_started_with_it():
    from pixelserve.triton_local.__main__ import argument_parser

    assert "--cache-config" not in " ".join(triton_server_module.LocalTritonServer([MODEL_REPOSITORY]).command())
    assert argument_parser().parse_args([]).response_cache is False
    assert argument_parser().parse_args(["--response-cache"]).response_cache is True
    assert argument_parser().parse_args(["--no-response-cache"]).response_cache is False


def test_the_default_server_runs_the_steps_for_a_repeated_file(triton_server):
    _require_the_encoded_ensemble()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data = uncached_jpeg(photo_at("rocket", 200, 300))
    first = _classify_file(client, data)
    before = _stats(client, "preprocess")["executions"]
    np.testing.assert_array_equal(_classify_file(client, data), first)
    assert _stats(client, "preprocess")["executions"] - before == 1
    assert _stats(client, ENCODED)["hits"] == 0


def test_cache_is_enabled_on_the_encoded_ensemble_only_and_sized_by_the_server(cached_server):
    _require_the_encoded_ensemble()
    assert model_config.read_config(MODEL_REPOSITORY / ENCODED / "config.pbtxt").response_cache.enable
    assert not model_config.read_config(MODEL_REPOSITORY / "image_classifier" / "config.pbtxt").HasField("response_cache")
    for step in STEPS:  # the steps are reached only on a miss; caching them too would duplicate entries
        assert not model_config.read_config(MODEL_REPOSITORY / step / "config.pbtxt").response_cache.enable, step
    command = cached_server.command()
    assert f"--cache-config={triton_server_module.RESPONSE_CACHE_CONFIG}" in command
    assert any(arg.startswith("--cache-directory=") for arg in command)
    assert "--cache-config" not in " ".join(triton_server_module.LocalTritonServer([MODEL_REPOSITORY], response_cache=False).command())


def test_second_identical_file_is_answered_from_the_cache(cached_server):
    _require_the_encoded_ensemble()
    client = grpcclient.InferenceServerClient(cached_server.grpc_url)
    data = uncached_jpeg(photo_at("coffee", 240, 320))
    first = _classify_file(client, data)
    ensemble, steps = _stats(client, ENCODED), {m: _stats(client, m) for m in STEPS}
    hits_metric = _metric(cached_server.metrics_url, "nv_cache_num_hits_per_model", ENCODED)

    second = _classify_file(client, data)
    top5 = _classify_file(client, data, class_count=5)  # the classification extension is applied to cached scores too

    np.testing.assert_array_equal(second, first)  # bit for bit
    assert top5[0][0].decode().split(":")[1] == str(int(first[0].argmax()))
    after = _stats(client, ENCODED)
    assert after["hits"] - ensemble["hits"] == 2 and after["misses"] == ensemble["misses"], (ensemble, after)
    assert _metric(cached_server.metrics_url, "nv_cache_num_hits_per_model", ENCODED) - hits_metric == 2
    for model, before in steps.items():
        assert _stats(client, model)["executions"] == before["executions"], f"{model} ran on a cache hit"


def test_a_different_file_is_a_miss_and_runs_the_steps(cached_server):
    _require_the_encoded_ensemble()
    client = grpcclient.InferenceServerClient(cached_server.grpc_url)
    data = uncached_jpeg(photo_at("chelsea", 240, 320))
    _classify_file(client, data)
    before = _stats(client, ENCODED), _stats(client, "preprocess")
    _classify_file(client, data + b"\0")  # one byte after the JPEG's end marker: the same pixels, another key
    after = _stats(client, ENCODED), _stats(client, "preprocess")
    assert after[0]["misses"] - before[0]["misses"] == 1 and after[0]["hits"] == before[0]["hits"]
    assert after[1]["executions"] - before[1]["executions"] == 1


def test_raw_images_with_the_same_bytes_in_another_shape_get_their_own_answer(cached_server):
    """Found by tests/test_fuzz.py with the cache on the raw ensemble: a 1x2 image got the cached scores of the
    2x1 image with the same 6 bytes. With the cache off there, each shape is classified on its own."""
    client = grpcclient.InferenceServerClient(cached_server.grpc_url)
    wide = uncached(photo_at("astronaut", 24, 32))
    tall = wide.reshape(32, 24, 3)  # the same bytes, read as another image
    expected = [_classify_raw(client, image.copy()) for image in (wide, tall)]  # fresh buffers, same bytes
    assert not np.allclose(expected[0], expected[1], atol=1e-2)  # they are different images
    np.testing.assert_allclose(_classify_raw(client, tall), expected[1], atol=1e-5)
    np.testing.assert_allclose(_classify_raw(client, wide), expected[0], atol=1e-5)
    assert _stats(client, "image_classifier")["hits"] == 0


def test_a_repeated_bad_file_gets_its_error_again(cached_server):
    """An error is never cached: Triton 2.51 would cache a Python-backend model's per-request error as a success
    with no outputs, which is why the torch flavour's one-step model has no cache (docs/serving.md, "The response cache")."""
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(cached_server.grpc_url)
    data = b"not an image, sent three times"
    for _ in range(3):
        with pytest.raises(InferenceServerException, match="not a JPEG or PNG"):
            _classify_file(client, data, class_count=3)


def _raw_grpc_encoded(url: str, shape: list[int], data: bytes, model: str = ENCODED):
    """One file sent to the encoded ensemble (or to ``preprocess``) over raw gRPC with any declared shape
    (tritonclient refuses to build a tensor whose shape does not match its data). Returns the response, or the
    grpc.RpcError."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="encoded" if model == "preprocess" else "images", datatype="BYTES")
    tensor.shape.extend(shape)
    request.raw_input_contents.append(struct.pack("<I", len(data)) + data)
    with grpc.insecure_channel(url) as channel:
        try:
            return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        except grpc.RpcError as exc:
            return exc


@pytest.mark.parametrize("batch", [1 << 32, 3 << 32])
def test_a_batch_dimension_that_overflows_cannot_poison_the_default_server(triton_server, batch):
    """Triton 2.51 keeps the batch size in 32 bits: the ensemble answers a file sent as [2^32, 1] with scores of
    shape [1000], and with the response cache on it served that answer to well-formed [1, 1] requests for the same
    file (fixed upstream by triton-inference-server/core#434). preprocess itself refuses such a request, naming the
    shape; the ensemble's own answer to it is Triton's, and the default server has no cache to pass it on: the next
    well-formed request for the file gets [1, 1000] and the scores of the file."""
    import grpc

    _require_the_encoded_ensemble()
    data = uncached_jpeg(photo_at("chelsea", 200, 300))
    refused = _raw_grpc_encoded(triton_server.grpc_url, [batch, 1], data, model="preprocess")
    assert isinstance(refused, grpc.RpcError), f"answered: {refused}"
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(r"\[1, 1\] BYTES tensor .*got shape \[1\]", refused.details()), refused.details()
    _raw_grpc_encoded(triton_server.grpc_url, [batch, 1], data)  # Triton's answer, whatever its shape
    answer = _raw_grpc_encoded(triton_server.grpc_url, [1, 1], data)
    assert list(answer.outputs[0].shape) == [1, 1000]
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    scores = _classify_file(client, data + b"\0")  # another file of the same pixels
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, 1000), scores)
