"""Monitoring with a real Prometheus (Debian's package, installed by scripts/setup.sh): the shipped scrape
config reads the test session's tritonserver, and the alert rules pass promtool's check and unit tests."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import yaml

from conftest import REPO_ROOT
from images import photo_at, uncached

from pixelserve.triton_local import free_port

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
MISSING = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
needs_prometheus = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (scripts/setup.sh apt-get installs prometheus)")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


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


@needs_prometheus
def test_shipped_scrape_config_is_valid():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _query(base: str, expr: str) -> float | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    results = body["data"]["result"]
    return float(results[0]["value"][1]) if results else None


def _wait_for(base: str, expr: str, accept, timeout: float = 60.0) -> float | None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = _query(base, expr)
        if value is not None and accept(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{expr}: last value {value} after {timeout:.0f} s")


@pytest.fixture(scope="module")
def prometheus(triton_server, tmp_path_factory):
    """A real Prometheus on the shipped config and rules, scraping the test server every second."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    metrics = urllib.parse.urlsplit(triton_server.metrics_url)
    config["scrape_configs"][0]["static_configs"] = [{"targets": [metrics.netloc]}]
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@needs_prometheus
@pytest.mark.server
def test_prometheus_scrapes_tritons_metrics_and_ours(triton_server, prometheus):
    from model_stats import settled
    from prometheus_text import counters_sent, scrape, total

    assert _wait_for(prometheus, 'up{job="triton"}', lambda v: v == 1) == 1
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)

    def send(images) -> None:
        for image in images:
            inp = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
            inp.set_data_from_numpy(image[None])
            client.infer("image_classifier", [inp])

    send([uncached(photo_at("coffee", 240, 320))])  # so that every series below exists
    counters = {  # PromQL -> (metric, labels) to read the same sum straight from the server
        'sum(pixelserve_preprocess_images_total{job="triton", outcome="ok"})':
            ("pixelserve_preprocess_images_total", {"outcome": "ok"}),
        'sum(nv_inference_request_success{job="triton", model="image_classifier"})':
            ("nv_inference_request_success", {"model": "image_classifier"}),
    }  # fmt: skip
    stage = 'sum(pixelserve_stage_seconds_total{job="triton", model="preprocess", stage="kernel"})'

    def read_counters() -> dict[str, float]:
        samples = scrape(triton_server.metrics_url)
        return {expr: total(samples, name, **labels) for expr, (name, labels) in counters.items()}

    counters_sent()
    before = settled(read_counters)  # once the last request is counted (model_stats.settled)
    for expr, value in before.items():  # Prometheus has caught up with the server
        assert _wait_for(prometheus, expr, lambda v, value=value: v >= value) == value, expr
    stage_before = _wait_for(prometheus, stage, lambda v: v > 0)
    send([uncached(photo_at("chelsea", 300, 400)) for _ in range(5)])
    for expr, value in before.items():  # and sees exactly the five new images
        assert _wait_for(prometheus, expr, lambda v, value=value: v >= value + 5) == value + 5, expr
    assert _wait_for(prometheus, stage, lambda v: v > stage_before) > stage_before
    # Triton's queue-time summary (which the p99 alert reads) is exported, and the rules are loaded.
    assert _query(prometheus, 'nv_inference_queue_summary_us{job="triton", model="preprocess", quantile="0.99"}') is not None
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
            _query(prometheus, expr)
        except urllib.error.HTTPError as exc:  # 400: a PromQL error, named in the body
            raise AssertionError(f"panel {title!r}: {expr}\n{exc.read().decode()}") from None
