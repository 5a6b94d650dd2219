"""Triton Model Analyzer in local launch mode: the wrappers it is handed start the real tritonserver and
perf_analyzer; the small search of perf/model_analyzer.yaml runs when .venv-model-analyzer is installed
(scripts/setup_model_analyzer.sh, about 5 minutes; not part of scripts/setup.sh)."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import REPO_ROOT, ensure_classifier_built

from pixelserve.perf import model_analyzer


def test_config_searches_instances_batch_sizes_and_queue_delay():
    config = yaml.safe_load(model_analyzer.DEFAULT_CONFIG.read_text())
    assert config["triton_launch_mode"] == "local"
    search = config["profile_models"]["preprocess"]["model_config_parameters"]
    assert len(search["instance_group"][0]["count"]) > 1 and len(search["max_batch_size"]) > 1
    assert len(search["dynamic_batching"]["max_queue_delay_microseconds"]) > 1


def test_wrappers_run_the_real_binaries(tmp_path):
    tritonserver, perf_analyzer = model_analyzer.write_wrappers(tmp_path)
    usage = subprocess.run([str(tritonserver), "--help"], capture_output=True, text=True, timeout=60)
    assert "--model-repository" in usage.stdout + usage.stderr, usage.stderr[-2000:]  # it ran: libraries found
    help_text = subprocess.run([str(perf_analyzer), "--help"], capture_output=True, text=True, timeout=60)
    assert "concurrency-range" in help_text.stdout + help_text.stderr, help_text.stderr[-2000:]


@pytest.mark.server
@pytest.mark.skipif(not model_analyzer.DEFAULT_MODEL_ANALYZER.exists(),
                    reason="Model Analyzer not installed (scripts/setup_model_analyzer.sh)")
def test_small_search_profiles_preprocess(tmp_path, monkeypatch):
    ensure_classifier_built()
    # conftest turns on numba's CUDA simulator on hosts without a GPU; Model Analyzer would take it for a GPU
    # and look for DCGM.
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    config = yaml.safe_load(model_analyzer.DEFAULT_CONFIG.read_text())
    search = config["profile_models"]["preprocess"]
    search["model_config_parameters"] = {"instance_group": [{"count": [1, 2], "kind": "KIND_AUTO"}]}
    search["parameters"] = {"concurrency": [2]}
    config["perf_analyzer_flags"]["measurement-interval"] = 1000
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))
    status = model_analyzer.main(["--config", str(small), "--workdir", str(tmp_path / "ma")])
    assert status == 0
    metrics = (tmp_path / "ma" / "results" / "results" / "metrics-model-inference.csv").read_text()
    assert metrics.count("preprocess_config_") >= 2, metrics
