"""The one-step benchmark peer (perf/peer_models/onestep_classifier_encoded) answers as the encoded ensemble does
(device machine only).

It runs the product's own decoder, kernels and classifier weights in one Python-backend step, so that a benchmark
beside image_classifier_encoded measures only what the ensemble's second step costs. That comparison holds only
while both give the same predictions: same top-1, logits within 0.05 (both FP16 CUDA graphs; the buckets of the
batch sizes may differ).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, REPO_ROOT, ensure_classifier_built
from encoded_requests import encoded_input, jpeg, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at

pytestmark = [pytest.mark.gpu, pytest.mark.server]
PEER = "onestep_classifier_encoded"
LOGITS_MAX_ABS = 0.05


@pytest.fixture(scope="module")
def server():
    require_gpu_decoding()
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    args = ["--model-control-mode=explicit", "--load-model=image_classifier_encoded", f"--load-model={PEER}",
            "--cuda-memory-pool-byte-size=0:536870912"]
    server = LocalTritonServer([MODEL_REPOSITORY, REPO_ROOT / "perf" / "peer_models"], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


def test_peer_predicts_what_the_encoded_ensemble_predicts(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    for name in PHOTO_NAMES:
        for image in (photo(name), photo_at(name, 1080, 1920)):
            data = jpeg(image)
            ensemble = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            peer = client.infer(PEER, [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            assert int(peer.argmax()) == int(ensemble.argmax()), (name, image.shape)
            assert np.abs(peer - ensemble).max() <= LOGITS_MAX_ABS, (name, image.shape)


def test_peer_refuses_bad_bytes_alone(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="images"):
        client.infer(PEER, [encoded_input(grpcclient, b"not an image")])
    good = client.infer(PEER, [encoded_input(grpcclient, jpeg(photo(PHOTO_NAMES[0])))]).as_numpy("predictions")
    assert good.shape == (1, 1000) and np.isfinite(good).all()
