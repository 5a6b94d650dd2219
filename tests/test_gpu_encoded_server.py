"""The encoded ensemble with `decode` on a GPU instance (nvImageCodec) under a real tritonserver (device machine only).

The shipped repository on a GPU host: decode's instance_group names no kind, so Triton makes it KIND_GPU.
The GPU decoder's pixels differ from PIL's by a level or two (tests/test_gpu_decoding.py), so the
predictions are compared by top-1 and loosely, not to 1e-4 as on the CPU path.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from encoded_requests import encoded_input, jpeg, raw_input, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at, uncached

pytestmark = [pytest.mark.gpu, pytest.mark.server]
MODELS = ("image_classifier", "image_classifier_encoded")


@pytest.fixture(scope="module")
def gpu_server():
    require_gpu_decoding()
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    args = ["--model-control-mode=explicit", *[f"--load-model={m}" for m in MODELS],
            "--cuda-memory-pool-byte-size=0:536870912"]
    server = LocalTritonServer([MODEL_REPOSITORY], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


def test_decode_runs_on_a_gpu_instance(gpu_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
    config = client.get_model_config("decode", as_json=True)["config"]
    assert {group["kind"] for group in config["instance_group"]} == {"KIND_GPU"}
    log = gpu_server.log_path.read_text(errors="replace")
    assert "decode: nvImageCodec" in log and "decode: PIL" not in log  # the GPU decoder, not the PIL fallback


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_gpu_decoded_top1_matches_the_raw_ensemble(gpu_server, name):
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


def test_bad_bytes_fail_alone_in_a_gpu_batch(gpu_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    good = jpeg(photo("coffee"))
    bad = {"empty": b"", "text": b"definitely not an image", "truncated": good[: len(good) // 3]}
    expected = {"empty": "empty", "text": "not a JPEG or PNG", "truncated": "undecodable JPEG"}
    # Distinct files, so that no response cache answers for the decoder.
    goods = [("good", jpeg(uncached(photo("coffee")))) for _ in range(24)]
    jobs = goods[:12] + list(bad.items()) + goods[12:]

    def send(job):
        name, data = job
        client = grpcclient.InferenceServerClient(gpu_server.grpc_url)
        try:
            return name, client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")
        except InferenceServerException as exc:
            return name, exc

    with ThreadPoolExecutor(len(jobs)) as pool:  # concurrent requests: the dynamic batcher mixes them
        results = list(pool.map(send, jobs))
    for name, result in results:
        if name == "good":
            assert isinstance(result, np.ndarray) and int(result[0].argmax()) == 967  # espresso
        else:
            assert isinstance(result, InferenceServerException), name
            assert expected[name] in result.message() and "input 'encoded'" in result.message(), result.message()
