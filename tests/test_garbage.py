"""The collector pause counters of the model processes (pixelserve.model_runtime.garbage), here and in a real server."""
from __future__ import annotations

import gc

import pytest

from images import photo
from prometheus_text import counters_sent

from pixelserve.model_runtime.garbage import GcPauses


def test_pauses_are_counted_per_generation_and_flushed():
    pauses = GcPauses("test")
    try:
        gc.collect(2)
        gc.collect(0)
        (_, gen0), _, (seconds2, gen2) = pauses.pending()
        assert gen0 >= 1 and gen2 >= 1 and seconds2 > 0.0
        pauses.flush()
        assert [count for _, count in pauses.pending()] == [0, 0, 0]
    finally:
        pauses.close()
    gc.collect()
    assert [count for _, count in pauses.pending()] == [0, 0, 0]  # closed: no longer called


@pytest.mark.server
def test_served_models_export_their_collector_pauses(triton_server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = photo("coffee")
    inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
    inp.set_data_from_numpy(image[None])
    client.infer("image_classifier", [inp])
    samples = counters_sent(triton_server.metrics_url)
    for model in ("preprocess", "classifier"):
        for family in ("pixelserve_gc_pause_seconds_total", "pixelserve_gc_collections_total"):
            generations = {dict(labels).get("generation") for name, labels in samples
                           if name == family and ("model", model) in labels}
            assert generations == {"0", "1", "2"}, (model, family)
