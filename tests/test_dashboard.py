"""The Grafana dashboard loads, covers what operators need, and every query reads metrics that exist on the
real server (Triton's and ours); GPU metrics, absent on a CPU host, must be Triton's documented ones."""
from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

from dashboard import GPU_METRICS, load, metric_names, queries
from images import photo_at, uncached
from prometheus_text import counters_sent


def test_dashboard_loads_with_unique_panels_and_queries():
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]


def test_metric_name_extraction():
    expr = 'sum by (model) (rate(nv_inference_count{job="triton", model=~"a|b"}[1m])) / scalar(up{job="x"}) > 1e6'
    assert metric_names(expr) == {"nv_inference_count", "up"}


def test_dashboard_covers_throughput_latency_queue_batches_gpu_and_ours():
    names = set().union(*(metric_names(expr) for _, expr in queries(load())))
    for needed in ("nv_inference_request_success", "nv_inference_request_summary_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us", "nv_inference_exec_count", "nv_gpu_utilization",
                   "nv_gpu_memory_used_bytes", "pixelserve_preprocess_images_total", "pixelserve_stage_seconds_total",
                   "pixelserve_preprocess_images_by_size_total"):  # fmt: skip
        assert needed in names, needed


@pytest.mark.server
def test_every_queried_metric_exists_on_the_real_server(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    image = uncached(photo_at("coffee", 240, 320))
    for _ in range(2):  # a miss, then a cache hit: every counter the dashboard reads has a series
        inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        client.infer("image_classifier", [inp])
    exported = {name for name, _ in counters_sent(triton_server.metrics_url)} | {"up"}  # up: Prometheus's own
    for title, expr in queries(load()):
        for name in metric_names(expr):
            assert name in exported or name in GPU_METRICS, f"panel {title!r}: no metric {name}"
