"""Monitoring with a real Prometheus (Debian's package, installed by scripts/setup.sh): the shipped scrape
config reads the test session's tritonserver, the alert selectors match what it scrapes, and the alert rules pass
promtool's check and unit tests. tests/test_monitoring_formulas.py checks the formulas' values."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import yaml

from conftest import REPO_ROOT
from images import photo_at, uncached
from prometheus_text import PROMETHEUS_DIR, query, query_one, running_prometheus, shipped_config, wait_for

MISSING = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
needs_prometheus = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (scripts/setup.sh apt-get installs prometheus)")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_exprs() -> dict[str, str]:
    """alert name -> PromQL expression, from deploy/prometheus/alerts.yml."""
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def server_selector() -> str:
    """The label matchers by which the alerts pick the servers: TritonDown's ``up{...}``."""
    return re.fullmatch(r"up(\{[^}]*\}) == 0", alert_exprs()["TritonDown"].strip()).group(1)


def test_every_alert_and_panel_picks_the_servers_by_their_label_not_the_job():
    """Every metric each alert and dashboard query reads carries the alerts' server matcher, and none matches
    `job`: static config, annotation-based pod discovery and the ServiceMonitor name the job differently."""
    from dashboard import load, metric_selectors, queries

    matcher = server_selector()[1:-1]
    exprs = [*alert_exprs().values(), *(expr for _, expr in queries(load()))]
    for expr in exprs:
        for name, selector in metric_selectors(expr):
            assert matcher in selector and "job" not in selector, f"{name}{selector} in {expr}"
    assert len(exprs) > 20


@needs_prometheus
def test_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


@needs_prometheus
def test_alert_rules_unit_tests_pass_and_can_fail(tmp_path):
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The same cases against rules with a looser GPU threshold must fail: the cases check the firing.
    shutil.copy(PROMETHEUS_DIR / "alerts.test.yml", tmp_path)
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert rules.count("> 0.9\n") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 0.9\n", "> 0.99\n"))
    broken = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert broken.returncode != 0 and "TritonGpuMemoryNearFull" in broken.stdout + broken.stderr
    # And against the failure rate that reads Triton's double-counted ensemble failures as they are.
    assert rules.count(") / 2") == 2
    (tmp_path / "alerts.yml").write_text(rules.replace(") / 2", ")"))
    counted_twice = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    report = counted_twice.stdout + counted_twice.stderr
    assert counted_twice.returncode != 0 and "image_classifier_encoded: 5.825% of requests fail" in report, report


@needs_prometheus
def test_shipped_scrape_config_is_valid():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def prometheus(triton_server, tmp_path_factory):
    """A real Prometheus on the shipped config and rules, scraping the test server every second."""
    with running_prometheus(shipped_config(triton_server.metrics_url), tmp_path_factory.mktemp("prometheus")) as base:
        yield base


@needs_prometheus
@pytest.mark.server
def test_prometheus_scrapes_tritons_metrics_and_ours(triton_server, prometheus):
    from model_stats import settled
    from prometheus_text import counters_sent, scrape, total

    selector = server_selector()  # the alerts' matchers pick the shipped config's target
    assert wait_for(prometheus, f"up{selector}", lambda v: v == 1) == 1
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)

    def send(images) -> None:
        for image in images:
            inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
            inp.set_data_from_numpy(image[None])
            client.infer("image_classifier", [inp])

    send([uncached(photo_at("coffee", 240, 320))])  # so that every series below exists
    inner = selector[1:-1]
    counters = {  # PromQL -> (metric, labels) to read the same sum straight from the server
        f'sum(pixelserve_preprocess_images_total{{{inner}, outcome="ok"}})':
            ("pixelserve_preprocess_images_total", {"outcome": "ok"}),
        f'sum(nv_inference_request_success{{{inner}, model="image_classifier"}})':
            ("nv_inference_request_success", {"model": "image_classifier"}),
    }  # fmt: skip
    stage = f'sum(pixelserve_stage_seconds_total{{{inner}, model="preprocess", stage="kernel"}})'

    def read_counters() -> dict[str, float]:
        samples = scrape(triton_server.metrics_url)
        return {expr: total(samples, name, **labels) for expr, (name, labels) in counters.items()}

    counters_sent(triton_server.metrics_url)
    before = settled(read_counters)  # once the last request is counted (model_stats.settled)
    for expr, value in before.items():  # Prometheus has caught up with the server
        assert wait_for(prometheus, expr, lambda v, value=value: v >= value) == value, expr
    stage_before = wait_for(prometheus, stage, lambda v: v > 0)
    send([uncached(photo_at("chelsea", 300, 400)) for _ in range(5)])
    for expr, value in before.items():  # and sees exactly the five new images
        assert wait_for(prometheus, expr, lambda v, value=value: v >= value + 5) == value + 5, expr
    assert wait_for(prometheus, stage, lambda v: v > stage_before) > stage_before
    # Triton's queue-time summary (which the p99 alert reads) is exported, and the rules are loaded.
    assert query_one(prometheus, f'nv_inference_queue_summary_us{{{inner}, model="preprocess", quantile="0.99"}}') is not None
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    alerts = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(alerts) == {"TritonDown", "TritonQueueTimeP99High", "TritonFailureRateHigh", "TritonGpuMemoryNearFull"}
    assert all(rule["health"] == "ok" for rule in alerts.values()), alerts
    assert alerts["TritonDown"]["state"] == "inactive"


def test_local_server_and_container_export_latency_summaries():
    from pixelserve.triton_local import launch
    from pixelserve.triton_local.server import LocalTritonServer

    wanted = "--metrics-config=summary_latencies=true"  # the queue-time p99 alert reads these summaries
    assert wanted in LocalTritonServer([REPO_ROOT / "model_repository"]).command()
    assert wanted in launch.command([])


@needs_prometheus
@pytest.mark.server
def test_dashboard_queries_run_in_prometheus(prometheus):
    """Every PromQL query of the Grafana dashboard parses and evaluates in the real Prometheus."""
    import urllib.error

    from dashboard import load, queries

    for title, expr in queries(load()):
        try:
            query(prometheus, expr)
        except urllib.error.HTTPError as exc:  # 400: a PromQL error, named in the body
            raise AssertionError(f"panel {title!r}: {expr}\n{exc.read().decode()}") from None
