"""Requests for the two ensembles in tests: JPEG bytes of an image, gRPC inputs for encoded and raw images,
the bad-bytes check both decoders must pass, and the skip for hosts without GPU decoding."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import HAS_GPU
from images import encode, photo, png_header_only, uncached_jpeg

ESPRESSO = 967


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """``image`` as JPEG bytes (PIL, the given quality)."""
    return encode(image, "JPEG", quality=quality)


def encoded_input(grpcclient, data: bytes, name: str = "images"):
    """The ``images`` input of image_classifier_encoded (``encoded`` of preprocess): one file's bytes as a [1, 1]
    BYTES tensor."""
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=object))
    return tensor


def raw_input(grpcclient, image: np.ndarray):
    """The ``images`` input of image_classifier: one HWC uint8 image as [1, H, W, 3]."""
    tensor = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
    tensor.set_data_from_numpy(image[None])
    return tensor


def require_gpu_decoding() -> None:
    """Skip the calling test or fixture unless this host has a CUDA GPU and nvImageCodec."""
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    try:
        from pixelserve.model_runtime.gpu_decoding import nvimgcodec_module

        nvimgcodec_module()
    except ImportError as exc:
        pytest.skip(f"needs nvImageCodec: {exc}")


def assert_bad_files_fail_alone(grpc_url: str, good_count: int) -> None:
    """Send ``good_count`` distinct JPEGs of the coffee photo (no response cache can answer them) with an empty
    file, text, a cut JPEG and a PNG with rows missing among them, all at once, so that the dynamic batcher mixes them: each bad file
    gets its own INVALID_ARG naming the problem, every good one its espresso."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    goods = [("good", uncached_jpeg(photo("coffee"))) for _ in range(good_count)]
    cut = goods[0][1]
    bad = {"empty": b"", "text": b"definitely not an image", "truncated": cut[: len(cut) // 3],
           "rows_missing": png_header_only(8192, 8192)}  # 105 bytes: a header and one row's worth of data
    expected = {"empty": "empty", "text": "not a JPEG or PNG", "truncated": "undecodable JPEG",
                "rows_missing": "undecodable PNG image: image data ends"}
    half = good_count // 2
    jobs = goods[:half] + list(bad.items()) + goods[half:]

    def send(job):
        name, data = job
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            return name, client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")
        except InferenceServerException as exc:
            return name, exc

    # The error names the input of the model that decoded: the one-step model's own `images` (torch flavour), or
    # preprocess's `encoded` inside the ensemble (the other flavours).
    config = grpcclient.InferenceServerClient(grpc_url).get_model_config("image_classifier_encoded", as_json=True)
    named = "input 'images'" if config["config"].get("backend") == "python" else "input 'encoded'"
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(send, jobs))
    for name, result in results:
        if name == "good":
            assert isinstance(result, np.ndarray) and int(result[0].argmax()) == ESPRESSO
        else:
            assert isinstance(result, InferenceServerException), name
            assert expected[name] in result.message() and named in result.message(), result.message()
