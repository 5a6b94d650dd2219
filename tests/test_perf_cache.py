"""The perf kit and Triton's response cache: servers it starts run without the cache; against a server given by
--url, cache hits during a measurement are reported loudly (stderr WARNING, cache_hits column, plot label)."""
from __future__ import annotations

import contextlib
import csv
import time

import pytest

import yaml

from conftest import MODEL_REPOSITORY, ensure_classifier_built

from pixelserve.build import model_config
from pixelserve.perf import perf_config, plots, run_perf, scaling

ENCODED = "image_classifier_encoded"


class _RecordingServer:
    """Stands in for LocalTritonServer: records its arguments, then fails to start (nothing is served)."""

    calls: list[dict] = []

    def __init__(self, *args, **kwargs):
        _RecordingServer.calls.append(kwargs)

    def start(self, timeout=None):
        raise RuntimeError("not started in this test")

    def __enter__(self):
        self.start()

    def __exit__(self, *exc):
        return False


def test_servers_the_perf_kit_starts_have_no_response_cache(monkeypatch, tmp_path):
    """Explicitly off, whatever LocalTritonServer's default is."""
    import pixelserve.triton_local as triton_local

    monkeypatch.setattr(triton_local, "LocalTritonServer", _RecordingServer)
    _RecordingServer.calls = []
    with pytest.raises(RuntimeError), run_perf.serving(perf_config.RunConfig(), None):
        pass
    step = scaling.Step(1, "0", tmp_path, {}, [], perf_config.RunConfig())
    with open(tmp_path / "log", "w") as log:
        assert scaling.measure_step(step, tmp_path / "in.json", tmp_path, log, 1.0)[0] is None
    assert [call["response_cache"] for call in _RecordingServer.calls] == [False, False]


@pytest.fixture(scope="module")
def cached_server():
    """The shipped repository on a server with the response cache on (as an external server may have it)."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    if not model_config.read_config(MODEL_REPOSITORY / ENCODED / "config.pbtxt").response_cache.enable:
        pytest.skip(f"{ENCODED} has no response cache in this flavour")
    server = LocalTritonServer([MODEL_REPOSITORY], response_cache=True)
    server.start(timeout=300)
    yield server
    server.stop()


def _settled_counters(url: str, protocol: str) -> tuple[int, int]:
    """cache_counters once two readings agree (Triton counts a request after answering it)."""
    last = run_perf.cache_counters(url, protocol, ENCODED)
    for _ in range(20):
        time.sleep(0.3)
        current = run_perf.cache_counters(url, protocol, ENCODED)
        if current == last:
            return current
        last = current
    return last


@pytest.mark.server
def test_cache_counters_read_the_same_over_grpc_and_http(cached_server):
    assert _settled_counters(cached_server.grpc_url, "grpc") == run_perf.cache_counters(cached_server.http_url, "http", ENCODED)
    assert run_perf.cache_counters(cached_server.grpc_url, "grpc", "no_such_model") is None


@pytest.mark.server
def test_cache_hits_against_an_external_server_are_reported_loudly(cached_server, tmp_path, capsys):
    config = tmp_path / "cache_check.yaml"
    config.write_text(yaml.safe_dump({"model": ENCODED, "concurrency": [1], "measurement_interval_ms": 1500,
                                      "stability_percentage": 100, "max_trials": 10,  # a shared, noisy 2-core host
                                      "inputs": {"sizes": ["224x224", "240x320"], "encoding": "jpeg"}}))  # fmt: skip
    before = _settled_counters(cached_server.grpc_url, "grpc")
    status = run_perf.main(["--config", str(config), "--url", cached_server.grpc_url, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    after = _settled_counters(cached_server.grpc_url, "grpc")

    assert status == 0, err[-3000:]
    (warning,) = [line for line in err.splitlines() if line.startswith("WARNING:")]
    assert ENCODED in warning and "response cache" in warning
    (summary,) = [path for path in tmp_path.glob("cache_check-*.csv") if path.name.count(".") == 1]
    with open(summary, newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    hits = int(row["cache_hits"])
    # perf_analyzer cycles the photos' files: all but the first request of each are hits, as the server counts them.
    assert 0 < hits <= after[1] - before[1] and hits >= (after[1] - before[1]) * 0.9, (hits, before, after)
    assert f"{hits} of " in warning
    report = summary.with_suffix(".md").read_text()
    assert f"YES on {ENCODED}" in report and "WARNING:" in report
    (series,) = plots.split_series(plots.load_rows(summary))
    assert series.label.endswith(plots.CACHE_FLAG)
