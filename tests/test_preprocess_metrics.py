"""preprocess's own Prometheus metrics (Python backend custom metrics API), read from Triton's metrics port
after real requests, and the counting logic on its own."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from encoded_requests import encoded_input
from images import photo_at, uncached, uncached_jpeg
from prometheus_text import counters_sent, value

from pixelserve.model_runtime import image_metrics
from pixelserve.model_runtime.counters import CounterFamily
from pixelserve.model_runtime.phases import PhaseTimer


class FakeFamily:
    """Records what would be sent to Triton: pb_utils.MetricFamily's interface."""

    COUNTER = "counter"
    sent: dict = {}

    def __init__(self, name, description, kind):
        self.name = name

    def Metric(self, labels):  # noqa: N802 (Triton's name)
        family = self

        class Metric:
            def increment(self, amount):
                key = (family.name, tuple(sorted(labels.items())))
                FakeFamily.sent[key] = FakeFamily.sent.get(key, 0) + amount

        return Metric()


def test_size_buckets():
    assert image_metrics.size_bucket(480, 640) == "vga"
    assert image_metrics.size_bucket(481, 640) == "720p"
    assert image_metrics.size_bucket(1080, 1920) == "1080p"
    assert image_metrics.size_bucket(2160, 3840) == "4k"
    assert image_metrics.size_bucket(2161, 3840) == "larger"


def test_counters_sum_per_label_set_and_send_once_per_flush():
    FakeFamily.sent = {}
    family = CounterFamily(FakeFamily, "x_total", "", ("a",))
    family.add(1, "p")
    family.add(2, "p")
    family.add(5, "q")
    assert FakeFamily.sent == {}  # nothing leaves before flush
    family.flush()
    family.flush()  # nothing pending: nothing sent again
    assert FakeFamily.sent == {("x_total", (("a", "p"),)): 3, ("x_total", (("a", "q"),)): 5}


def test_phase_timer_groups_phases_into_stages():
    FakeFamily.sent = {}
    timer = PhaseTimer("preprocess", FakeFamily, stages=image_metrics.PREPROCESS_STAGES)
    for phase in ("read_inputs", "stage_h2d", "decode", "kernel", "outputs", "unmapped"):
        with timer.phase(phase):
            pass
    timer.count("pinned", 3)
    timer.flush()
    stages = {dict(labels)["stage"] for name, labels in FakeFamily.sent if name == "pixelserve_stage_seconds_total"}
    assert stages == {"copy_in", "decode", "kernel", "hand_off"}
    assert FakeFamily.sent[("pixelserve_phase_calls_total", (("model", "preprocess"), ("phase", "pinned")))] == 3


@pytest.mark.server
def test_preprocess_metrics_move_with_real_requests(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    good = [uncached(photo_at("coffee", h, w)) for h, w in ((480, 640), (720, 1280), (720, 1280), (1080, 1920))]
    bad = {"empty": np.zeros((0, 16, 3), np.uint8), "oversized": np.zeros((8193, 1, 3), np.uint8)}
    before = counters_sent(triton_server.metrics_url)  # with what earlier tests' requests counted
    for image in good + list(bad.values()):
        inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        try:
            client.infer("image_classifier", [inp])
        except InferenceServerException:
            pass
    encoded = {"good": uncached_jpeg(photo_at("coffee", 480, 640)), "bad": b"GIF89a not decodable here"}
    for data in encoded.values():  # decoded inside preprocess: counted beside the raw images
        try:
            client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)])
        except InferenceServerException:
            pass
    after = counters_sent(triton_server.metrics_url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(image_metrics.IMAGES_NAME, outcome="ok", reason="none") == len(good) + 1
    for reason in [*bad, "undecodable"]:
        assert moved(image_metrics.IMAGES_NAME, outcome="rejected", reason=reason) == 1, reason
    assert moved(image_metrics.IMAGES_NAME, outcome="failed") == 0
    assert {size: moved(image_metrics.SIZE_NAME, size=size) for size in ("vga", "720p", "1080p", "4k")} == {
        "vga": 2, "720p": 2, "1080p": 1, "4k": 0}
    assert moved(image_metrics.PIXELS_NAME) == sum(image.shape[0] * image.shape[1] for image in good) + 480 * 640
    for stage in ("copy_in", "decode", "kernel", "hand_off"):
        assert moved("pixelserve_stage_seconds_total", model="preprocess", stage=stage) > 0, stage
