"""image_classifier_encoded decoding on a GPU instance (nvImageCodec) under a real tritonserver (GPU hosts only).

The shipped repository on a GPU host: with the torch flavour image_classifier_encoded is one KIND_GPU Python-backend
step; with the others it is an ensemble whose preprocess (no kind in its instance_group, so KIND_GPU) decodes.
The GPU decoder's pixels differ from PIL's by a level or two (tests/test_gpu_decoding.py), so the
predictions are compared by top-1 and loosely, not to 1e-4 as on the CPU path.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from encoded_requests import ESPRESSO, assert_bad_files_fail_alone, encoded_input, jpeg, raw_input, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at

pytestmark = [pytest.mark.gpu, pytest.mark.server]
MODELS = ("image_classifier", "image_classifier_encoded")


@pytest.fixture
def gpu_decoding():
    """Skips a test of GPU decoding where nvImageCodec is missing."""
    require_gpu_decoding()


@pytest.fixture(scope="module")
def gpu_server():
    """The shipped repository on this GPU host (the module's gpu mark skips it elsewhere). The raw-pixel tests need
    only the GPU; without nvImageCodec the encoded model decodes with PIL, as it would for a user on this host, and
    the encoded tests skip."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    args = ["--model-control-mode=explicit", *[f"--load-model={m}" for m in MODELS],
            "--cuda-memory-pool-byte-size=0:536870912"]
    server = LocalTritonServer([MODEL_REPOSITORY], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


def test_encoded_files_are_decoded_on_a_gpu_instance(gpu_decoding, gpu_server):
    """With the torch flavour image_classifier_encoded is one GPU step of its own; with the others an ensemble whose
    preprocess decodes. Either way the GPU decoder, not the PIL fallback."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    encoded = client.get_model_config("image_classifier_encoded", as_json=True)["config"]
    decoding = "image_classifier_encoded" if encoded.get("backend") == "python" else "preprocess"
    config = client.get_model_config(decoding, as_json=True)["config"]
    assert {group["kind"] for group in config["instance_group"]} == {"KIND_GPU"}
    log = gpu_server.log_path.read_text(errors="replace")
    assert f"{decoding}: encoded images decoded with nvImageCodec" in log and "decoded with PIL" not in log


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_gpu_decoded_top1_matches_the_raw_ensemble(gpu_decoding, gpu_server, name):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    for image in (photo(name), photo_at(name, 1080, 1920)):
        data = jpeg(image)
        encoded = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # PIL's pixels, sent raw
        raw = client.infer("image_classifier", [raw_input(grpcclient, decoded)]).as_numpy("predictions")[0]
        assert int(encoded.argmax()) == int(raw.argmax()), (name, image.shape)
        cosine = float(encoded @ raw / (np.linalg.norm(encoded) * np.linalg.norm(raw)))
        assert cosine > 0.99, (name, image.shape, cosine)  # a level or two of pixels apart, not another image


def test_bad_bytes_fail_alone_in_a_gpu_batch(gpu_decoding, gpu_server):
    assert_bad_files_fail_alone(gpu_server.grpc_url, good_count=24)


def test_oversized_and_several_files_are_refused_and_the_server_keeps_serving(gpu_decoding, gpu_server):
    """A header declaring a side above max_image_side and a request carrying two files each get an INVALID_ARG
    naming the problem (before any pixel memory for the first); the next good file is answered."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from images import png_header_only

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    with pytest.raises(InferenceServerException, match="above the maximum side of 8192") as oversized:
        client.infer("image_classifier_encoded", [encoded_input(grpcclient, png_header_only(9000, 20))])
    assert "StatusCode.INVALID_ARGUMENT" in str(oversized.value.status())
    data = jpeg(photo("coffee"))
    two = grpcclient.InferInput("images", [2, 1], "BYTES")  # two files in one request (a batch of 2)
    two.set_data_from_numpy(np.array([[data], [data]], dtype=object))
    with pytest.raises(InferenceServerException, match="one encoded image per request, got 2"):
        client.infer("image_classifier_encoded", [two])
    good = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")
    assert int(good[0].argmax()) == ESPRESSO


def test_raw_product_answers_the_reference_photos(gpu_server):
    """image_classifier (one step with the torch flavour, else the ensemble) gives each photo an allowed top-1."""
    import tritonclient.grpc as grpcclient

    from reference_top1 import assert_reference_top1

    assert_reference_top1(grpcclient.InferenceServerClient(gpu_server.grpc_url))


def test_raw_product_takes_frames_in_cuda_shared_memory(gpu_server):
    """A client holding decoded frames on the GPU hands them over through CUDA shared memory (IPC); the answer is
    the one sent over plain gRPC, and the model's statistics count no failure."""
    import base64

    import tritonclient.grpc as grpcclient
    from cuda.bindings import driver
    from numba import cuda

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    frames = np.stack([photo_at("coffee", 1080, 1920), photo_at("rocket", 1080, 1920)])
    expected = client.infer("image_classifier", [raw_input(grpcclient, frames[0])]).as_numpy("predictions")
    device_frames = cuda.to_device(frames)  # its own allocation, so the IPC handle starts at the frames
    error, ipc_handle = driver.cuIpcGetMemHandle(device_frames.device_ctypes_pointer.value)
    assert int(error) == 0, error
    headers = gpu_server.admin_headers  # registering shared memory is a restricted API
    client.register_cuda_shared_memory("frames_in", base64.b64encode(bytes(ipc_handle.reserved)), 0, frames.nbytes,
                                       headers=headers)
    try:
        inp = grpcclient.InferInput("images", list(frames.shape), "UINT8")
        inp.set_shared_memory("frames_in", frames.nbytes)
        got = client.infer("image_classifier", [inp]).as_numpy("predictions")
        assert got.shape == (2, 1000)
        rocket = client.infer("image_classifier", [raw_input(grpcclient, frames[1])]).as_numpy("predictions")
        # The same pixels through the same FP16 engine; batches of 1 and 2 may run different kernels (FP16 rounding).
        for row, alone in ((got[:1], expected), (got[1:], rocket)):
            assert int(row.argmax()) == int(alone.argmax())
            np.testing.assert_allclose(row, alone, rtol=0, atol=0.05)
        stats = client.get_inference_statistics("image_classifier", as_json=True)["model_stats"][0]
        assert int(stats["inference_stats"]["fail"].get("count", 0)) == 0  # JSON omits zero counts
    finally:
        client.unregister_cuda_shared_memory("frames_in", headers=headers)
    # The frames reached the kernels from the GPU, not through a copy to the host and back.
    from prometheus_text import counters_sent, total

    config = client.get_model_config("image_classifier", as_json=True)["config"]
    kernels_in = "image_classifier" if config.get("backend") == "python" else "preprocess"
    from_gpu = total(counters_sent(gpu_server.metrics_url), "pixelserve_phase_calls_total", model=kernels_in,
                     phase="images_from_gpu")
    assert from_gpu >= 2, f"{kernels_in}: {from_gpu} images came from the GPU"


def test_raw_product_takes_frames_in_system_shared_memory(gpu_server):
    """Frames in system shared memory: the answer is the one sent over plain gRPC, and the frames went to the GPU
    from the host (images_h2d_staged: the Python backend hands host inputs to the model as copies in its own memory)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.shared_memory as shm

    from prometheus_text import counters_sent, total

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    config = client.get_model_config("image_classifier", as_json=True)["config"]
    kernels_in = "image_classifier" if config.get("backend") == "python" else "preprocess"
    before = total(counters_sent(gpu_server.metrics_url), "pixelserve_phase_calls_total", model=kernels_in,
                   phase="images_h2d_staged")
    frames = np.stack([photo_at("coffee", 1080, 1920), photo_at("rocket", 1080, 1920)])
    expected = [client.infer("image_classifier", [raw_input(grpcclient, frame)]).as_numpy("predictions")
                for frame in frames]
    key = f"/pixelserve_test_frames_{os.getpid()}"
    handle = shm.create_shared_memory_region("frames_in", key, frames.nbytes)
    headers = gpu_server.admin_headers  # registering shared memory is a restricted API
    try:
        shm.set_shared_memory_region(handle, [frames])
        client.register_system_shared_memory("frames_in", key, frames.nbytes, headers=headers)
        inp = grpcclient.InferInput("images", list(frames.shape), "UINT8")
        inp.set_shared_memory("frames_in", frames.nbytes)
        got = client.infer("image_classifier", [inp]).as_numpy("predictions")
        assert got.shape == (2, 1000)
        for row, alone in zip(got, expected):  # batches of 1 and 2 may run different FP16 kernels
            assert int(row.argmax()) == int(alone.argmax())
            np.testing.assert_allclose(row, alone[0], rtol=0, atol=0.05)
    finally:
        client.unregister_system_shared_memory("frames_in", headers=headers)
        shm.destroy_shared_memory_region(handle)
    staged = total(counters_sent(gpu_server.metrics_url), "pixelserve_phase_calls_total", model=kernels_in,
                   phase="images_h2d_staged") - before
    assert staged >= 4, f"{kernels_in}: {staged} host images staged (2 sent alone over gRPC, 2 in shared memory)"
