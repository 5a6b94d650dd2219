"""The two-step benchmark peer (perf/peer_models/twostep_classifier_encoded) against the one-step product.

With the torch flavour, image_classifier_encoded is one Python-backend step (classifier_config.ONE_STEP_FLAVOURS).
The peer is the ensemble the other flavours serve (preprocess -> classifier), so that a benchmark beside the product
measures what the second step costs. That comparison holds only while the peer stays the generated ensemble (checked
here on any host) and both give the same predictions (on the device): same top-1, logits within 0.05 (both FP16 CUDA
graphs of the same weights; the batch buckets may differ).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, REPO_ROOT, ensure_classifier_built
from encoded_requests import encoded_input, jpeg, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at
from pixelserve.build import classifier_config, model_config

PEER = "twostep_classifier_encoded"
PEER_DIR = REPO_ROOT / "perf" / "peer_models" / PEER
LOGITS_MAX_ABS = 0.05


def test_peer_is_the_generated_encoded_ensemble_under_another_name():
    peer = model_config.read_config(PEER_DIR / "config.pbtxt")
    ensemble = classifier_config.ensemble_config(encoded=True)
    ensemble.name = PEER
    ensemble.output[0].label_filename = ""
    ensemble.ClearField("response_cache")
    assert peer == ensemble


@pytest.fixture(scope="module")
def server():
    require_gpu_decoding()
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    encoded = model_config.read_config(MODEL_REPOSITORY / "image_classifier_encoded" / "config.pbtxt")
    if encoded.backend != "python":
        pytest.skip("the repository is not built with the torch flavour (one-step image_classifier_encoded)")
    args = ["--model-control-mode=explicit", "--load-model=image_classifier_encoded", f"--load-model={PEER}",
            "--cuda-memory-pool-byte-size=0:536870912"]
    server = LocalTritonServer([MODEL_REPOSITORY, REPO_ROOT / "perf" / "peer_models"], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.mark.gpu
@pytest.mark.server
def test_one_step_predicts_what_the_two_steps_predict(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    for name in PHOTO_NAMES:
        for image in (photo(name), photo_at(name, 1080, 1920)):
            data = jpeg(image)
            one = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            two = client.infer(PEER, [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            assert int(one.argmax()) == int(two.argmax()), (name, image.shape)
            assert np.abs(one - two).max() <= LOGITS_MAX_ABS, (name, image.shape)
    stats = client.get_inference_statistics("image_classifier_encoded", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 2 * len(PHOTO_NAMES)
