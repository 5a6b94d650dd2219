"""Triton Model Analyzer in local launch mode: the shipped searches cover what they should, the wrappers it is
handed start the real tritonserver and perf_analyzer, and a small search of preprocess, the classifier and the
ensemble runs when .venv-model-analyzer is installed (scripts/setup_model_analyzer.sh; not part of
scripts/setup.sh, so CI skips it)."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from conftest import REPO_ROOT, ensure_classifier_built

from pixelserve.perf import model_analyzer

PERF = REPO_ROOT / "perf"
MODEL_SEARCHES = {"model_analyzer": "KIND_CPU", "model_analyzer_gpu": "KIND_GPU"}
ENSEMBLE_SEARCHES = {"model_analyzer_ensemble": "KIND_CPU", "model_analyzer_gpu_ensemble": "KIND_GPU"}


def load(name: str) -> dict:
    """A Model Analyzer config shipped in perf/."""
    return yaml.safe_load((PERF / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", MODEL_SEARCHES)
def test_model_searches_cover_instances_batching_and_queue_delay(name):
    config = load(name)
    assert config["triton_launch_mode"] == "local" and config["run_config_search_mode"] == "brute"
    models = config["profile_models"]
    assert set(models) == {"preprocess", "classifier"}
    for model in models.values():
        search = model["model_config_parameters"]
        group = search["instance_group"][0]
        assert len(group["count"]) > 1 and group["kind"] == MODEL_SEARCHES[name]
        assert len(search["dynamic_batching"]["max_queue_delay_microseconds"]) > 1
        # A model's own perf_analyzer_flags replace the global ones rather than adding to them.
        assert config["perf_analyzer_flags"].items() <= model.get("perf_analyzer_flags", config["perf_analyzer_flags"]).items()
    assert len(models["preprocess"]["model_config_parameters"]["max_batch_size"]) > 1
    classifier = models["classifier"]["model_config_parameters"]
    preferred = classifier["dynamic_batching"]["preferred_batch_size"]
    assert len(preferred) > 1
    assert max(map(max, preferred)) <= min(classifier["max_batch_size"])  # Triton refuses a larger preferred size


@pytest.mark.parametrize("name", ENSEMBLE_SEARCHES)
def test_ensemble_searches_move_both_steps(name):
    config = load(name)
    assert config["triton_launch_mode"] == "local"
    assert config["run_config_search_mode"] == "quick"  # Model Analyzer 1.58 searches ensembles in quick mode only
    assert config["profile_models"] == ["image_classifier"]  # and only alone
    steps = config["ensemble_composing_models"]
    assert set(steps) == {"preprocess", "classifier"}
    for step in steps.values():
        group = step["model_config_parameters"]["instance_group"][0]
        assert len(group["count"]) > 1
        assert group["kind"] == ENSEMBLE_SEARCHES[name]  # quick search ignores KIND_AUTO
    assert config["run_config_search_min_model_batch_size"] < config["run_config_search_max_model_batch_size"]


def test_wrappers_run_the_real_binaries(tmp_path):
    tritonserver, perf_analyzer = model_analyzer.write_wrappers(tmp_path)
    usage = subprocess.run([str(tritonserver), "--help"], capture_output=True, text=True, timeout=60)
    assert "--model-repository" in usage.stdout + usage.stderr, usage.stderr[-2000:]  # it ran: libraries found
    help_text = subprocess.run([str(perf_analyzer), "--help"], capture_output=True, text=True, timeout=60)
    assert "concurrency-range" in help_text.stdout + help_text.stderr, help_text.stderr[-2000:]


def test_server_wrapper_gives_back_the_gpus_model_analyzer_was_not_shown(tmp_path):
    script = model_analyzer.wrapper_script(tmp_path / "show-env", {"CUDA_VISIBLE_DEVICES": "0"}, ["env"],
                                           restore_gpus=True)  # fmt: skip
    # What Model Analyzer, shown no GPU, passes to the server it starts.
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "NUMBA_DISABLE_CUDA": "1"}
    seen = subprocess.run([str(script)], env=hidden, capture_output=True, text=True, check=True).stdout.splitlines()
    assert "CUDA_VISIBLE_DEVICES=0" in seen
    assert not any(line.startswith("NUMBA_DISABLE_CUDA=") for line in seen)


def small_searches(tmp_path) -> list[str]:
    """The shipped CPU searches cut to a few configurations and short windows, written to ``tmp_path``."""
    models = load("model_analyzer")
    models["perf_analyzer_flags"]["measurement-interval"] = 1000
    preprocess, classifier = models["profile_models"]["preprocess"], models["profile_models"]["classifier"]
    preprocess["model_config_parameters"] = {"instance_group": [{"count": [1, 2], "kind": "KIND_CPU"}]}
    preprocess["perf_analyzer_flags"]["measurement-interval"] = 1000
    preprocess["parameters"] = {"concurrency": [2]}
    classifier["model_config_parameters"] = {
        "instance_group": [{"count": [1], "kind": "KIND_CPU"}], "max_batch_size": [8],
        "dynamic_batching": {"preferred_batch_size": [[4]], "max_queue_delay_microseconds": [1000]},
    }  # fmt: skip
    classifier["parameters"] = {"concurrency": [2]}
    ensemble = load("model_analyzer_ensemble")
    ensemble["perf_analyzer_flags"]["measurement-interval"] = 1000
    ensemble.update(run_config_search_max_instance_count=1, run_config_search_max_concurrency=2,
                    run_config_search_min_model_batch_size=8, run_config_search_max_model_batch_size=8)  # fmt: skip
    for step in ensemble["ensemble_composing_models"].values():
        step["model_config_parameters"]["instance_group"][0]["count"] = [1]
    paths = []
    for name, config in (("models", models), ("ensemble", ensemble)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        paths += ["--config", str(path)]
    return paths


@pytest.mark.server
@pytest.mark.skipif(not model_analyzer.DEFAULT_MODEL_ANALYZER.exists(),
                    reason="Model Analyzer not installed (scripts/setup_model_analyzer.sh)")
def test_small_search_profiles_the_models_and_the_ensemble(tmp_path, monkeypatch):
    ensure_classifier_built()
    # conftest turns on numba's CUDA simulator on hosts without a GPU; Model Analyzer would take it for a GPU
    # and look for DCGM.
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    status = model_analyzer.main([*small_searches(tmp_path), "--workdir", str(tmp_path / "ma")])
    assert status == 0
    models = (tmp_path / "ma" / "models" / "results" / "results" / "metrics-model-inference.csv").read_text()
    assert models.count("preprocess_config_") >= 2 and "classifier_config_" in models, models
    tried = (tmp_path / "ma" / "models" / "output_repository" / "classifier_config_0" / "config.pbtxt").read_text()
    assert "preferred_batch_size: 4" in tried and "max_queue_delay_microseconds: 1000" in tried, tried
    ensemble = (tmp_path / "ma" / "ensemble" / "results" / "results" / "metrics-model-inference.csv").read_text()
    assert "image_classifier_config_" in ensemble, ensemble
    reports = list((tmp_path / "ma" / "ensemble" / "results" / "reports" / "summaries").glob("*/result_summary.*"))
    assert reports, "no summary report written"
