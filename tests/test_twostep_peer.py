"""The two-step benchmark peer (perf/peer_models/twostep_classifier_encoded) against the one-step product.

With the torch flavour, image_classifier_encoded is one Python-backend step (classifier_config.ONE_STEP_FLAVOURS).
The peer is the ensemble the other flavours serve (preprocess -> classifier), so that a benchmark beside the product
measures what the second step costs. That comparison holds only while the peer stays the generated ensemble (checked
here on any host) and both give the same predictions (on the device): same top-1, logits within 0.05 (both FP16 CUDA
graphs of the same weights; the batch buckets may differ).
"""
from __future__ import annotations

import pytest

from encoded_peers import PEERS_DIR, assert_peer_predicts_as_product, served_beside_product
from pixelserve.build import classifier_config, model_config

PEER = "twostep_classifier_encoded"
PEER_DIR = PEERS_DIR / PEER
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
    yield from served_beside_product(PEER)


@pytest.mark.gpu
@pytest.mark.server
def test_one_step_predicts_what_the_two_steps_predict(server):
    assert_peer_predicts_as_product(server.grpc_url, PEER, LOGITS_MAX_ABS, counted="image_classifier_encoded")
