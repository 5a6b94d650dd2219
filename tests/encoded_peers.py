"""Benchmark peers of image_classifier_encoded (perf/peer_models) served beside it, and the check that a peer
predicts what the product predicts."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, REPO_ROOT, ensure_classifier_built
from encoded_requests import encoded_input, jpeg, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at
from pixelserve.build import model_config

PEERS_DIR = REPO_ROOT / "perf" / "peer_models"


def served_beside_product(peer: str) -> Iterator:
    """(For a module fixture) a server of the torch-flavour repository and ``peer`` from perf/peer_models, started,
    then stopped; skips without GPU decoding or the torch flavour."""
    require_gpu_decoding()
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    encoded = model_config.read_config(MODEL_REPOSITORY / "image_classifier_encoded" / "config.pbtxt")
    if encoded.backend != "python":
        pytest.skip("the repository is not built with the torch flavour (one-step image_classifier_encoded)")
    args = ["--model-control-mode=explicit", "--load-model=image_classifier_encoded", f"--load-model={peer}",
            "--cuda-memory-pool-byte-size=0:536870912"]
    server = LocalTritonServer([MODEL_REPOSITORY, PEERS_DIR], extra_args=args)
    server.start(timeout=300)
    yield server
    server.stop()


def assert_peer_predicts_as_product(grpc_url: str, peer: str, logits_max_abs: float, counted: str) -> None:
    """Each photo, as sent and at 1080p, as a JPEG: ``peer`` answers the product's top-1 class and logits within
    ``logits_max_abs`` of its; ``counted`` (a model ``peer`` runs) counted every one."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    for name in PHOTO_NAMES:
        for image in (photo(name), photo_at(name, 1080, 1920)):
            data = jpeg(image)
            ours = client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            theirs = client.infer(peer, [encoded_input(grpcclient, data)]).as_numpy("predictions")[0]
            assert int(ours.argmax()) == int(theirs.argmax()), (name, image.shape)
            assert np.abs(ours - theirs).max() <= logits_max_abs, (name, image.shape, np.abs(ours - theirs).max())
    stats = client.get_inference_statistics(counted, as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 2 * len(PHOTO_NAMES)
