"""Triton's response cache, on the real server of the test session.

It is on for the encoded ensemble: the same file sent twice gets an identical second answer, the cache-hit
statistics and the Prometheus cache metric move, and no step of the ensemble runs again. It is off for the
raw ensemble, because Triton's cache key hashes input bytes without their shape: the last test shows the
wrong answer that the cache would give there.
"""
from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import MODEL_REPOSITORY
from images import photo_at, uncached, uncached_jpeg
from model_stats import settled

from pixelserve.build import model_config
from pixelserve.triton_local import server as triton_server_module

pytestmark = pytest.mark.server
ENCODED = "image_classifier_encoded"
STEPS = ("preprocess", "classifier")


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


def test_cache_is_enabled_on_the_encoded_ensemble_only_and_sized_by_the_server(triton_server):
    _require_the_encoded_ensemble()
    assert model_config.read_config(MODEL_REPOSITORY / ENCODED / "config.pbtxt").response_cache.enable
    assert not model_config.read_config(MODEL_REPOSITORY / "image_classifier" / "config.pbtxt").HasField("response_cache")
    for step in STEPS:  # the steps are reached only on a miss; caching them too would duplicate entries
        assert not model_config.read_config(MODEL_REPOSITORY / step / "config.pbtxt").response_cache.enable, step
    command = triton_server_module.LocalTritonServer([MODEL_REPOSITORY]).command()
    assert f"--cache-config={triton_server_module.RESPONSE_CACHE_CONFIG}" in command
    assert any(arg.startswith("--cache-directory=") for arg in command)
    assert "--cache-config" not in " ".join(triton_server_module.LocalTritonServer([MODEL_REPOSITORY], response_cache=False).command())


def test_second_identical_file_is_answered_from_the_cache(triton_server):
    _require_the_encoded_ensemble()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data = uncached_jpeg(photo_at("coffee", 240, 320))
    first = _classify_file(client, data)
    ensemble, steps = _stats(client, ENCODED), {m: _stats(client, m) for m in STEPS}
    hits_metric = _metric(triton_server.metrics_url, "nv_cache_num_hits_per_model", ENCODED)

    second = _classify_file(client, data)
    top5 = _classify_file(client, data, class_count=5)  # the classification extension is applied to cached scores too

    np.testing.assert_array_equal(second, first)  # bit for bit
    assert top5[0][0].decode().split(":")[1] == str(int(first[0].argmax()))
    after = _stats(client, ENCODED)
    assert after["hits"] - ensemble["hits"] == 2 and after["misses"] == ensemble["misses"], (ensemble, after)
    assert _metric(triton_server.metrics_url, "nv_cache_num_hits_per_model", ENCODED) - hits_metric == 2
    for model, before in steps.items():
        assert _stats(client, model)["executions"] == before["executions"], f"{model} ran on a cache hit"


def test_a_different_file_is_a_miss_and_runs_the_steps(triton_server):
    _require_the_encoded_ensemble()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data = uncached_jpeg(photo_at("chelsea", 240, 320))
    _classify_file(client, data)
    before = _stats(client, ENCODED), _stats(client, "preprocess")
    _classify_file(client, data + b"\0")  # one byte after the JPEG's end marker: the same pixels, another key
    after = _stats(client, ENCODED), _stats(client, "preprocess")
    assert after[0]["misses"] - before[0]["misses"] == 1 and after[0]["hits"] == before[0]["hits"]
    assert after[1]["executions"] - before[1]["executions"] == 1


def test_raw_images_with_the_same_bytes_in_another_shape_get_their_own_answer(triton_server):
    """Found by tests/test_fuzz.py with the cache on the raw ensemble: a 1x2 image got the cached scores of the
    2x1 image with the same 6 bytes. With the cache off there, each shape is classified on its own."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    wide = uncached(photo_at("astronaut", 24, 32))
    tall = wide.reshape(32, 24, 3)  # the same bytes, read as another image
    expected = [_classify_raw(client, image.copy()) for image in (wide, tall)]  # fresh buffers, same bytes
    assert not np.allclose(expected[0], expected[1], atol=1e-2)  # they are different images
    np.testing.assert_allclose(_classify_raw(client, tall), expected[1], atol=1e-5)
    np.testing.assert_allclose(_classify_raw(client, wide), expected[0], atol=1e-5)
    assert _stats(client, "image_classifier")["hits"] == 0


def test_a_repeated_bad_file_gets_its_error_again(triton_server):
    """An error is never cached: Triton 2.51 would cache a Python-backend model's per-request error as a success
    with no outputs, which is why the torch flavour's one-step model has no cache (README, "The response cache")."""
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data = b"not an image, sent three times"
    for _ in range(3):
        with pytest.raises(InferenceServerException, match="not a JPEG or PNG"):
            _classify_file(client, data, class_count=3)
