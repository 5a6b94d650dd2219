"""Triton's response cache on the image_classifier ensemble, on the real server of the test session.

The same image sent twice: the second answer is identical, the ensemble's cache-hit statistics and the
Prometheus cache metric move, and neither step of the ensemble runs again.
"""
from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import MODEL_REPOSITORY
from images import photo_at, uncached

from pixelserve.build import model_config
from pixelserve.triton_local import server as triton_server_module

pytestmark = pytest.mark.server


def _stats(client, model: str) -> dict[str, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inference = stats["inference_stats"]
    return {"executions": int(stats.get("execution_count", 0)),
            "hits": int(inference["cache_hit"].get("count", 0)),  # JSON omits zero counts
            "misses": int(inference["cache_miss"].get("count", 0))}  # fmt: skip


def _metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


def _classify(client, image: np.ndarray, class_count: int = 0) -> np.ndarray:
    inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
    inp.set_data_from_numpy(image[None])
    output = grpcclient.InferRequestedOutput("predictions", class_count=class_count)
    return client.infer("image_classifier", [inp], outputs=[output]).as_numpy("predictions")


def test_cache_is_enabled_on_the_ensemble_and_sized_by_the_server():
    ensemble = model_config.read_config(MODEL_REPOSITORY / "image_classifier" / "config.pbtxt")
    assert ensemble.response_cache.enable
    for step in ("preprocess", "classifier"):  # the steps are reached only on a miss; caching them too would duplicate entries
        assert not model_config.read_config(MODEL_REPOSITORY / step / "config.pbtxt").response_cache.enable, step
    command = triton_server_module.LocalTritonServer([MODEL_REPOSITORY]).command()
    assert f"--cache-config={triton_server_module.RESPONSE_CACHE_CONFIG}" in command
    assert any(arg.startswith("--cache-directory=") for arg in command)
    assert "--cache-config" not in " ".join(triton_server_module.LocalTritonServer([MODEL_REPOSITORY], response_cache=False).command())


def test_second_identical_request_is_answered_from_the_cache(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = uncached(photo_at("coffee", 240, 320))
    first = _classify(client, image)
    ensemble, steps = _stats(client, "image_classifier"), {m: _stats(client, m) for m in ("preprocess", "classifier")}
    hits_metric = _metric(triton_server.metrics_url, "nv_cache_num_hits_per_model", "image_classifier")

    second = _classify(client, image)
    top5 = _classify(client, image, class_count=5)  # the classification extension is applied to cached scores too

    np.testing.assert_array_equal(second, first)  # bit for bit
    assert top5[0][0].decode().split(":")[1] == str(int(first[0].argmax()))
    after = _stats(client, "image_classifier")
    assert after["hits"] - ensemble["hits"] == 2 and after["misses"] == ensemble["misses"], (ensemble, after)
    assert _metric(triton_server.metrics_url, "nv_cache_num_hits_per_model", "image_classifier") - hits_metric == 2
    for model, before in steps.items():
        assert _stats(client, model)["executions"] == before["executions"], f"{model} ran on a cache hit"


def test_a_different_image_is_a_miss_and_runs_the_steps(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = uncached(photo_at("chelsea", 240, 320))
    _classify(client, image)
    before = _stats(client, "image_classifier"), _stats(client, "preprocess")
    changed = image.copy()
    changed[-1, -1, 0] ^= 1  # one bit of one pixel
    _classify(client, changed)
    after = _stats(client, "image_classifier"), _stats(client, "preprocess")
    assert after[0]["misses"] - before[0]["misses"] == 1 and after[0]["hits"] == before[0]["hits"]
    assert after[1]["executions"] - before[1]["executions"] == 1
