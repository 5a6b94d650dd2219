"""deploy/kubernetes, validated offline: every resource against the Kubernetes JSON schemas bundled in
kubernetes-validate (strict: unknown fields fail), and the wiring between them checked (no cluster here)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from dashboard import metric_names

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


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
    assert metric_names(query) == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert re.match(r"^\w+", rule["seriesQuery"]).group() in metric_names(query)


def test_admin_key_comes_from_an_optional_secret():
    (container,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    secret = env["PIXELSERVE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True and secret["name"] and secret["key"]
