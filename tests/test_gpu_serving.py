"""The preprocess model on a GPU instance under a real tritonserver (GPU hosts only).

Checks that the step after `preprocess` receives its input where `output_memory` says (the host as shipped,
the GPU through DLPack with "gpu"), that GPU results equal the CPU path (1e-4 in float32; in float16 the
same float32 result may round to the neighbouring half, one unit in the last place), and that inputs
arriving in CUDA shared memory work.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_GPU, MODEL_REPOSITORY
from images import photo, photo_at

from pixelserve.build.classifier_config import preprocess_spec
from pixelserve.kernels_numba import preprocess_cpu
from pixelserve.model_runtime.tensors import PIXELS

pytestmark = [pytest.mark.gpu, pytest.mark.server]
GPU_REPOSITORY = Path(__file__).parent / "gpu_repository"
MODELS = ("preprocess", "gpu_consumer", "preprocess_then_gpu_consumer")


@pytest.fixture(scope="module")
def gpu_server():
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    from pixelserve.triton_local import LocalTritonServer

    args = ["--model-control-mode=explicit", *[f"--load-model={m}" for m in MODELS],
            "--cuda-memory-pool-byte-size=0:268435456"]
    server = LocalTritonServer([MODEL_REPOSITORY, GPU_REPOSITORY], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spec():
    return preprocess_spec()


def _tolerance(spec):
    """GPU against CPU path: 1e-4 apart in float32, plus one half-precision ulp (2**-10 relative) in float16."""
    return {"atol": 1e-4, "rtol": 2.0**-10 if spec.numpy_dtype == np.float16 else 0.0}


def _infer(client_module, client, model, image, outputs):
    inp = client_module.InferInput("images", [1, *image.shape], "UINT8")
    inp.set_data_from_numpy(image[None])
    return client.infer(model, [inp], outputs=[client_module.InferRequestedOutput(o) for o in outputs])


def test_preprocess_runs_on_a_gpu_instance(gpu_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    config = client.get_model_config("preprocess", as_json=True)["config"]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"


@pytest.mark.parametrize("output_memory", ["cpu", "gpu"])
def test_next_step_receives_pixels_where_output_memory_says(gpu_server, spec, output_memory):
    import json

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    config = client.get_model_config("preprocess", as_json=True)["config"]
    shipped = config["parameters"]["output_memory"]["string_value"]
    assert shipped == "cpu"  # the measured default (model_repository/preprocess/config.pbtxt)
    if output_memory != shipped:
        config["parameters"]["output_memory"]["string_value"] = output_memory
        client.load_model("preprocess", config=json.dumps(config), headers=gpu_server.admin_headers)
    try:
        for image in (photo("chelsea"), photo_at("coffee", 1080, 1920)):
            result = _infer(grpcclient, client, "preprocess_then_gpu_consumer", image, ["input_on_gpu", "checksum"])
            assert bool(result.as_numpy("input_on_gpu")[0, 0]) is (output_memory == "gpu")
            expected = preprocess_cpu([image], spec).astype(np.float64).sum()
            # 150528 values, each the CPU path's or its neighbour in float16: the differences mostly cancel
            assert abs(result.as_numpy("checksum")[0, 0] - expected) < 1.0
    finally:
        if output_memory != shipped:
            client.load_model("preprocess", headers=gpu_server.admin_headers)  # back to the file's config


def test_gpu_preprocess_equals_cpu_path(gpu_server, spec):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    for image in (photo("astronaut"), photo_at("rocket", 2160, 3840), photo_at("chelsea", 3, 5)):
        got = _infer(grpcclient, client, "preprocess", image, [PIXELS]).as_numpy(PIXELS)
        np.testing.assert_allclose(got, preprocess_cpu([image], spec), **_tolerance(spec))


def test_input_in_cuda_shared_memory(gpu_server, spec):
    """A client that already holds the image on the GPU hands it over through CUDA shared memory (IPC)."""
    import base64

    import tritonclient.grpc as grpcclient
    from numba import cuda

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    image = photo_at("coffee", 1080, 1920)[None]
    from cuda.bindings import driver

    device_image = cuda.to_device(image)  # its own allocation, so the IPC handle starts at the image
    error, ipc_handle = driver.cuIpcGetMemHandle(device_image.device_ctypes_pointer.value)
    assert int(error) == 0, error
    raw_handle = base64.b64encode(bytes(ipc_handle.reserved))
    headers = gpu_server.admin_headers  # registering shared memory is a restricted API
    client.register_cuda_shared_memory("images_in", raw_handle, 0, image.nbytes, headers=headers)
    try:
        inp = grpcclient.InferInput("images", list(image.shape), "UINT8")
        inp.set_shared_memory("images_in", image.nbytes)
        got = client.infer("preprocess", [inp]).as_numpy(PIXELS)
        np.testing.assert_allclose(got, preprocess_cpu([image[0]], spec), **_tolerance(spec))
        stats = client.get_inference_statistics("preprocess", as_json=True)["model_stats"][0]
        assert int(stats["inference_stats"]["fail"].get("count", 0)) == 0  # JSON omits zero counts
    finally:
        client.unregister_cuda_shared_memory("images_in", headers=headers)
