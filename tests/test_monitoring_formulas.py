"""The failure-rate alert (deploy/prometheus/alerts.yml) and the autoscaler's queue time per request
(deploy/kubernetes/prometheus-adapter-rules.yaml), evaluated by a real Prometheus that scrapes the real server
while it answers traffic of known shape: good and bad requests to each ensemble."""
from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from conftest import MODEL_REPOSITORY, REPO_ROOT, ensure_classifier_built
from dashboard import load, queries
from encoded_requests import encoded_input, raw_input
from images import photo_at, uncached, uncached_jpeg
from prometheus_text import PROMETHEUS_DIR, query, running_prometheus, scrape, shipped_config, total, wait_for

ENSEMBLES = ("image_classifier", "image_classifier_encoded")
SENT = {"image_classifier_encoded": (12, 4), "image_classifier": (9, 1)}  # model -> (good, bad) requests
POD = {"namespace": "pixelserve-test", "pod": "pixelserve-triton-0"}  # the labels Kubernetes discovery adds
ADAPTER = REPO_ROOT / "deploy" / "kubernetes" / "prometheus-adapter-rules.yaml"

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (scripts/setup.sh apt-get installs it)"
)


def failure_rule() -> tuple[str, float]:
    """TritonFailureRateHigh's ratio and threshold."""
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    (expr,) = [rule["expr"] for group in groups for rule in group["rules"] if rule["alert"] == "TritonFailureRateHigh"]
    ratio, threshold = re.fullmatch(r"(.*)>\s*([\d.]+)", expr.strip(), re.S).groups()
    return ratio, float(threshold)


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(yaml.safe_load(ADAPTER.read_text())["data"]["config.yaml"])["rules"]
    return rule


def adapter_query(namespace: str, pod: str) -> str:
    """The adapter's metricsQuery as it would run it for one pod (its templates filled in the adapter's way)."""
    return (adapter_rule()["metricsQuery"].replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
            .replace("<<.GroupBy>>", "pod"))  # fmt: skip


def client_facing_models() -> set[str]:
    """The models of the repository that no ensemble calls as a step: the ones clients send to."""
    ensure_classifier_built()  # the ensembles' configs are generated with the classifier
    configs = {path.parent.name: path.read_text() for path in MODEL_REPOSITORY.glob("*/config.pbtxt")}
    steps = {step for text in configs.values() for step in re.findall(r'model_name:\s*"(\w+)"', text)}
    return set(configs) - steps


def test_formulas_read_the_models_clients_call():
    """The ensembles named by the alert, the adapter and the dashboard's failure panel are the repository's
    client-facing models."""
    assert client_facing_models() == set(ENSEMBLES)
    dashboard = [expr for _, expr in queries(load()) if "nv_inference_request_failure" in expr]
    for expr in [failure_rule()[0], adapter_rule()["metricsQuery"], *dashboard]:
        for regex in re.findall(r'model[=!]~"([^"]*)"', expr):
            assert set(regex.split("|")) == client_facing_models(), expr


def send(grpc_url: str, model: str, good: bool) -> float:
    """One request, a fresh image (no cache can answer it) or one preprocess rejects; its latency in seconds."""
    if model == "image_classifier_encoded":
        data = uncached_jpeg(photo_at("coffee", 240, 320)) if good else b"not an image"
        inputs = [encoded_input(grpcclient, data)]
    else:
        image = uncached(photo_at("chelsea", 240, 320)) if good else np.zeros((0, 4, 3), np.uint8)  # empty
        inputs = [raw_input(grpcclient, image)]
    client = grpcclient.InferenceServerClient(grpc_url)
    start = time.perf_counter()
    try:
        client.infer(model, inputs)
        assert good, f"{model} answered a bad request"
    except InferenceServerException as exc:
        assert not good, exc.message()
    latency = time.perf_counter() - start
    client.close()
    return latency


# What the formulas read: the queue time of every model and the requests of each ensemble, as name ->
# (metric, labels) of a sum over the matching series.
SUMS = {"queue_us": ("nv_inference_queue_duration_us", {})} | {
    f"{model} {kind}": (f"nv_inference_request_{kind}", {"model": model})
    for model in ENSEMBLES
    for kind in ("success", "failure")
}


def read_sums(metrics_url: str) -> dict[str, float]:
    """SUMS straight from the server."""
    samples = scrape(metrics_url)
    return {key: total(samples, metric, **labels) for key, (metric, labels) in SUMS.items()}


def promql_sum(metric: str, labels: dict[str, str]) -> str:
    matchers = ", ".join(f'{name}="{value}"' for name, value in labels.items())
    return f"sum({metric}{{{matchers}}})"


@pytest.fixture(scope="module")
def traffic(triton_server, tmp_path_factory):
    """A fresh Prometheus (the shipped config, its target labelled as a pod) that has seen the server idle, then
    answering SENT four at a time, then settled: its rate windows hold that traffic and nothing else."""
    from model_stats import settled

    configs = {model: (MODEL_REPOSITORY / model / "config.pbtxt").read_text() for model in ENSEMBLES}
    not_ensembles = [model for model, config in configs.items() if 'platform: "ensemble"' not in config]
    if not_ensembles:  # the one-step flavour (ONE_STEP_FLAVOURS): no double count, bad input counted as success
        pytest.skip(f"{', '.join(not_ensembles)} not an ensemble here: the formulas count ensembles' requests")
    for model in ENSEMBLES:  # request counters well past zero before the first scrape (see below)
        for good in (True, True, True, False, False):
            send(triton_server.grpc_url, model, good)
    before = settled(lambda: read_sums(triton_server.metrics_url))
    config = shipped_config(triton_server.metrics_url, **POD)
    with running_prometheus(config, tmp_path_factory.mktemp("prometheus")) as base:
        # Ten idle scrapes first. rate() stretches a window's increase at its start by half a scrape interval,
        # or by as long as the counter would take to reach zero at that rate where that is under 1.1 intervals:
        # with the warm-up's counts and this span, every request counter of a ratio is stretched alike.
        wait_for(base, f'count_over_time(up{{pod="{POD["pod"]}"}}[1m])', lambda v: v >= 10)
        jobs = [(model, good) for model, (goods, bads) in SENT.items() for good in [True] * goods + [False] * bads]
        jobs = [jobs[i] for i in np.random.default_rng(0).permutation(len(jobs))]
        with ThreadPoolExecutor(4) as pool:  # concurrent, so that requests do queue
            latencies = list(pool.map(lambda job: send(triton_server.grpc_url, *job), jobs))
        after = settled(lambda: read_sums(triton_server.metrics_url))
        for key, (metric, labels) in SUMS.items():  # Prometheus has the last counts
            wait_for(base, promql_sum(metric, labels), lambda v, key=key: v == after[key])
        yield SimpleNamespace(base=base, moved={key: after[key] - before[key] for key in after}, latencies=latencies)


@needs_prometheus
@pytest.mark.server
def test_triton_counts_every_failed_ensemble_request_twice(traffic):
    """What the formulas correct for: an ensemble's failure counter moves by two per failed request (a Triton
    upgrade that stops doing so fails here, and the halving in the formulas must go)."""
    for model, (good, bad) in SENT.items():
        assert traffic.moved[f"{model} success"] == good
        assert traffic.moved[f"{model} failure"] == 2 * bad, model


@needs_prometheus
@pytest.mark.server
def test_failure_rate_alert_reads_the_share_of_requests_that_failed(traffic):
    """TritonFailureRateHigh's ratio reads bad / (good + bad) for each ensemble, and the rule goes pending."""
    ratio, threshold = failure_rule()
    seen = {labels["model"]: value for labels, value in query(traffic.base, ratio)}
    print("failure ratio by ensemble:", seen)
    assert seen.keys() == SENT.keys()  # the ensembles only: steps' counts are not what clients see
    for model, (good, bad) in SENT.items():
        assert seen[model] == pytest.approx(bad / (good + bad), rel=0.01), model
        assert bad / (good + bad) > threshold
    # The rule as Prometheus loaded it goes pending on both at its next evaluation (it fires after `for: 5m`).
    pending = 'ALERTS{alertname="TritonFailureRateHigh", alertstate="pending"}'
    assert wait_for(traffic.base, f"count({pending})", lambda v: v == len(SENT), timeout=10) == len(SENT)
    assert {labels["model"] for labels, _ in query(traffic.base, pending)} == set(SENT)


@needs_prometheus
@pytest.mark.server
def test_autoscaler_metric_is_queue_time_per_client_request(traffic):
    """The adapter's query for the pod reads the queue time of all its models over the requests sent."""
    rule = adapter_rule()
    series = query(traffic.base, f"count by (namespace, pod) ({rule['seriesQuery']})")
    assert [labels for labels, _ in series] == [POD]  # the adapter finds the pod's series
    ((labels, per_request_us),) = query(traffic.base, adapter_query(**POD))
    requests = sum(good + bad for good, bad in SENT.values())
    expected_us = traffic.moved["queue_us"] / requests
    mean_latency_us = 1e6 * sum(traffic.latencies) / len(traffic.latencies)
    print(f"queue time per request: {per_request_us:.0f} us (server counters: {expected_us:.0f} us); "
          f"mean client latency {mean_latency_us:.0f} us over {requests} requests")  # fmt: skip
    assert labels == {"pod": POD["pod"]}
    # Not exact: the queue-time counters start near zero, so rate() stretches their increase less than the
    # request counters' (see the fixture).
    assert per_request_us == pytest.approx(expected_us, rel=0.1)
    # A request's queue time is part of its latency: a per-request figure above the mean latency would be
    # queue time divided by too few requests.
    assert 0 < per_request_us < mean_latency_us
