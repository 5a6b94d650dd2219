"""The DALI benchmark peer (perf/peer_models/dali_classifier_encoded, preprocess_dali) against ours.

Served beside twostep_classifier_encoded, the peer is a fair comparison only while it is that ensemble with DALI in
place of preprocess (same input, output, batching; checked here on any host) and it does the same work: on a GPU
host with DALI (perf/run_device.sh unpacks it in /tmp/site-dali, and the nvImageCodec wheel's folder goes on
LD_LIBRARY_PATH), each photo at two sizes gets the product's top-1 class, and logits within 1.0 of the product's
(looser than the two-step peer's 0.05: DALI's JPEG decoder and resize are not ours, so its pixels are not ours
to the last level). Where DALI is installed, its pipeline run on the CPU is also held to our CPU preprocessing:
on the four photos at two sizes it gave the same top-1 everywhere, logits within 0.54 and pixels within 0.07 on
average (DALI 2.4, 2026-12-07).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from encoded_peers import PEERS_DIR, assert_peer_predicts_as_product, served_beside_product
from encoded_requests import jpeg, require_gpu_decoding
from images import PHOTO_NAMES, photo, photo_at
from pixelserve.build import model_config

PEER, PEER_STEP, OURS = "dali_classifier_encoded", "preprocess_dali", "twostep_classifier_encoded"
LOGITS_MAX_ABS = 1.0


def test_peer_is_the_two_step_ensemble_with_dali_in_place_of_preprocess():
    peer = model_config.read_config(PEERS_DIR / PEER / "config.pbtxt")
    ours = model_config.read_config(PEERS_DIR / OURS / "config.pbtxt")
    assert peer.ensemble_scheduling.step[0].model_name == PEER_STEP
    ours.name = PEER
    ours.ensemble_scheduling.step[0].model_name = PEER_STEP
    assert peer == ours


def test_dali_step_has_the_inputs_outputs_and_batching_of_preprocess():
    step = model_config.read_config(PEERS_DIR / PEER_STEP / "config.pbtxt")
    preprocess = model_config.read_config(MODEL_REPOSITORY / "preprocess" / "config.pbtxt")
    (encoded,) = [tensor for tensor in preprocess.input if tensor.name == "encoded"]
    assert [(t.name, t.data_type, list(t.dims)) for t in step.input] == [(encoded.name, encoded.data_type, list(encoded.dims))]
    assert [(t.name, t.data_type, list(t.dims)) for t in step.output] == \
        [(t.name, t.data_type, list(t.dims)) for t in preprocess.output]
    assert step.max_batch_size == preprocess.max_batch_size
    assert step.dynamic_batching == preprocess.dynamic_batching
    assert 0 <= float(step.parameters["hw_decoder_load"].string_value) <= 1
    assert list(step.parameters) == ["hw_decoder_load"]  # the rest (decode_threads, the spec) read from preprocess's
    assert int(preprocess.parameters["decode_threads"].string_value) >= 1


def _dali_pipeline_or_skip(device_id):
    """(preprocess's spec, DALI's pipeline for it, batches of 1) on GPU ``device_id`` or, with None, the CPU; skips
    the caller where DALI is missing or cannot build it (its decoders dlopen libnvimgcodec.so, on the CPU too)."""
    pytest.importorskip("nvidia.dali", reason="needs NVIDIA DALI (pip install nvidia-dali-cuda130)")
    from pixelserve.perf.dali_pipeline import decode_resize_normalise
    from pixelserve.perf.shipped_settings import preprocess_settings

    _, spec, _ = preprocess_settings()
    try:
        return spec, decode_resize_normalise(spec, 1, 1, device_id, 0.65)
    except Exception as exc:
        pytest.skip(f"DALI's pipeline does not build here (is nvImageCodec's folder on LD_LIBRARY_PATH?): {exc}")


PIXELS_MEAN_ABS = 0.1  # normalised units; the largest mean seen was 0.062 (chelsea at 300x451, DALI 2.4)


def test_dali_pipeline_does_our_preprocessing():
    """DALI's pipeline, run on the CPU (its CPU decoder: the same steps as the peer's mixed one), against our CPU
    preprocessing of the same JPEG, each photo as sent and at 1080p: the pixels within PIXELS_MEAN_ABS on average,
    and through the ONNX classifier the same top-1 class with logits within LOGITS_MAX_ABS."""
    spec, pipeline = _dali_pipeline_or_skip(device_id=None)
    import onnxruntime as ort

    from pixelserve.kernels_numba import preprocess_cpu
    from pixelserve.model_runtime.decoding import decode_image
    from pixelserve.perf.dali_pipeline import run_batch

    ensure_classifier_built()
    session = ort.InferenceSession(str(MODEL_REPOSITORY / "classifier" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    tensor = session.get_inputs()[0].name
    for name in PHOTO_NAMES:
        for image in (photo(name), photo_at(name, 1080, 1920)):
            data = jpeg(image)
            ours = preprocess_cpu([decode_image(data, spec.max_image_side)], spec).astype(np.float32)
            dali = np.full_like(ours, np.nan)  # poisoned: every value must come from DALI
            dali[...] = np.asarray(run_batch(pipeline, [data]).as_array(), dtype=np.float32)
            assert np.abs(dali - ours).mean() <= PIXELS_MEAN_ABS, (name, image.shape)
            ours_logits, dali_logits = (session.run(None, {tensor: pixels})[0][0] for pixels in (ours, dali))
            assert int(ours_logits.argmax()) == int(dali_logits.argmax()), (name, image.shape)
            assert np.abs(ours_logits - dali_logits).max() <= LOGITS_MAX_ABS, (name, image.shape)


@pytest.fixture(scope="module")
def server():
    require_gpu_decoding()
    _dali_pipeline_or_skip(device_id=0)  # in this process first: a DALI that cannot build fails here, clearly
    yield from served_beside_product(PEER)


@pytest.mark.gpu
@pytest.mark.server
def test_dali_peer_predicts_what_the_product_predicts(server):
    assert_peer_predicts_as_product(server.grpc_url, PEER, LOGITS_MAX_ABS, counted=PEER_STEP)
