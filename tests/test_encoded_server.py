"""The encoded ensemble (image_classifier_encoded: JPEG/PNG bytes -> preprocess, which decodes them ->
classifier) on a real tritonserver serving the shipped repository."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import HAS_GPU
from encoded_requests import assert_bad_files_fail_alone, encoded_input, jpeg, raw_input
from images import PHOTO_NAMES, photo

pytestmark = pytest.mark.server


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_encoded_top1_matches_the_raw_ensemble(triton_server, name):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    data = jpeg(photo(name))
    encoded = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the same pixels, decoded by the client
    raw = client.infer("image_classifier", [raw_input(grpcclient, decoded)]).as_numpy("predictions")[0]
    assert int(encoded.argmax()) == int(raw.argmax())
    if not HAS_GPU:  # on a GPU host decode is nvImageCodec, within a level or two of PIL (test_gpu_encoded_server)
        np.testing.assert_allclose(encoded, raw, atol=1e-4)  # same pixels, same path from there on


def test_bad_bytes_fail_alone_while_their_neighbours_are_answered(triton_server):
    assert_bad_files_fail_alone(triton_server.grpc_url, good_count=12)


def test_preprocess_takes_pixels_or_a_file_not_both_and_not_neither(triton_server):
    """preprocess's two optional inputs, called directly: one of them is required, and only one."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = photo("coffee")[:64, :64]
    pixels = client.infer("preprocess", [raw_input(grpcclient, image)]).as_numpy("pixels")
    from_file = client.infer("preprocess", [encoded_input(grpcclient, jpeg(image), "encoded")]).as_numpy("pixels")
    assert pixels.shape == from_file.shape == (1, 3, 224, 224)
    with pytest.raises(InferenceServerException, match="not both"):
        client.infer("preprocess", [raw_input(grpcclient, image), encoded_input(grpcclient, jpeg(image), "encoded")])
    with pytest.raises(InferenceServerException, match="request has 0 inputs"):  # Triton's own check
        client.infer("preprocess", [], outputs=[grpcclient.InferRequestedOutput("pixels")])
    assert client.is_model_ready("preprocess")
