"""deploy/kubernetes, validated offline: every built-in resource against the Kubernetes JSON schemas bundled in
kubernetes-validate (strict: unknown fields fail), and the wiring between them checked (no cluster here),
the Prometheus Operator's ServiceMonitor and PrometheusRule included."""
from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from dashboard import metric_names

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = REPO_ROOT / "deploy" / "kubernetes"
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
OPERATOR_API = "monitoring.coreos.com/v1"  # Prometheus Operator CRDs: not in kubernetes-validate's schemas


def resources() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization["resources"]}


def by_kind(kind: str) -> dict:
    (found,) = [r for r in resources().values() if r["kind"] == kind]
    return found


def test_kustomization_lists_every_manifest():
    listed = set(resources())
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_matches_the_kubernetes_schema(version):
    for name, resource in resources().items():
        if resource["apiVersion"] != OPERATOR_API:
            kubernetes_validate.validate(resource, version, strict=True)  # raises ValidationError with the path


def test_the_schema_check_catches_a_misspelt_field():
    deployment = copy.deepcopy(by_kind("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_deployment_probes_gpu_shm_and_scrape_annotations():
    deployment, service = by_kind("Deployment"), by_kind("Service")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}  # docker/Dockerfile EXPOSE 8000 8001 8002
    assert "EXPOSE 8000 8001 8002" in (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    inference_probe = ["python3", "-m", "pixelserve.triton_local.health", "--url", "127.0.0.1:8000"]
    assert container["readinessProbe"]["exec"]["command"] == container["startupProbe"]["exec"]["command"] == inference_probe
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # kernel compile and model load
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (shm,) = [v for v in pod["spec"]["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_autoscaler_reads_a_metric_the_adapter_serves_from_tritons_counters():
    hpa, deployment = by_kind("HorizontalPodAutoscaler"), by_kind("Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}  # fmt: skip
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load(by_kind("ConfigMap")["data"]["config.yaml"])
    rules = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    rule = rules[metric["pods"]["metric"]["name"]]
    query = re.sub(r"<<[^>]*>>,?", "", rule["metricsQuery"])  # the adapter's template placeholders
    assert metric_names(query) == {"nv_inference_queue_duration_us", "nv_inference_request_success",
                                   "nv_inference_request_failure"}  # fmt: skip
    assert re.match(r"^\w+", rule["seriesQuery"]).group() in metric_names(query)


def test_admin_key_comes_from_an_optional_secret():
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    secret = env["PIXELSERVE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True and secret["name"] and secret["key"]


def alert_server_matcher() -> tuple[str, str]:
    """(label, value) by which the alert rules pick the servers: TritonDown's ``up{label="value"}``."""
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    (expr,) = [rule["expr"] for group in groups for rule in group["rules"] if rule["alert"] == "TritonDown"]
    label, value = re.fullmatch(r'up\{(\w+)="([^"]*)"\} == 0', expr.strip()).groups()
    return label, value


def as_prometheus_label(kubernetes_label: str) -> str:
    """A Kubernetes label's name as pod discovery's labelmap and the Operator's podTargetLabels write it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", kubernetes_label)


def test_every_discovery_gives_the_servers_the_label_the_alerts_select():
    label, value = alert_server_matcher()
    pod = by_kind("Deployment")["spec"]["template"]["metadata"]
    # Annotation-based pod discovery (job "kubernetes-pods" and the like) copies every pod label.
    assert pod["annotations"]["prometheus.io/scrape"] == "true"
    (pod_label,) = [key for key in pod["labels"] if as_prometheus_label(key) == label]
    assert pod["labels"][pod_label] == value
    # The ServiceMonitor copies it by podTargetLabels.
    assert pod_label in by_kind("ServiceMonitor")["spec"]["podTargetLabels"]
    # The static target of deploy/prometheus/prometheus.yml carries it.
    (scrape,) = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]
    assert all(target["labels"][label] == value for target in scrape["static_configs"])


def test_servicemonitor_scrapes_the_services_metrics_port():
    monitor, service, deployment = by_kind("ServiceMonitor"), by_kind("Service"), by_kind("Deployment")
    assert monitor["apiVersion"] == OPERATOR_API
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert target["containerPort"] == int(annotations["prometheus.io/port"])  # where the annotations point
    assert endpoint["path"] == annotations["prometheus.io/path"]


def test_prometheusrule_is_generated_from_the_alert_rules():
    """prometheusrule.yaml is what generate_prometheusrule.py writes from deploy/prometheus/alerts.yml: the
    rules promtool checks and unit-tests are the ones the Operator loads."""
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", K8S / "generate_prometheusrule.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    shipped = (K8S / "prometheusrule.yaml").read_text()
    assert shipped == generator.render(), "rerun: python deploy/kubernetes/generate_prometheusrule.py"
    rule = by_kind("PrometheusRule")
    assert rule["apiVersion"] == OPERATOR_API
    assert rule["spec"]["groups"] == yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
