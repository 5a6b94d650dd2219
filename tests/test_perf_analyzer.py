"""perf/ tooling: input data from real photos, the named configs, and a real perf_analyzer run on the server."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, ensure_classifier_built

from pixelserve.perf import make_inputs, perf_config, perf_csv, run_perf

PERF_DIR = Path(__file__).resolve().parent.parent / "perf"

# perf_analyzer 2.51's -f CSV with --verbose-csv, as written on this project's CPU machine.
SAMPLE_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
2,53.3993,17,6864,2,120,29399,931,2,32164,63450,70096,85671,37339,19,37271
1,43.7863,14,5746,2,91,16154,759,3,20175,38657,43984,53934,22774,17,22719
"""  # rows come ordered by throughput; this order (high first) checks that we sort by concurrency


def test_input_data_flat_and_b64_hold_the_photo(tmp_path):
    image = make_inputs.resized_photo("chelsea", 30, 40)
    for encoding in ("flat", "b64"):
        path = make_inputs.write_input_data(tmp_path / f"{encoding}.json", [image], encoding=encoding)
        entry = json.loads(path.read_text())["data"][0]["images"]
        assert entry["shape"] == [30, 40, 3]  # no batch dimension: perf_analyzer adds it
        content = entry["content"]
        raw = base64.b64decode(content["b64"]) if encoding == "b64" else bytes(content)
        np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(30, 40, 3), image)


def test_input_data_jpeg_is_one_serialized_bytes_element_holding_the_file(tmp_path):
    import io
    import struct

    from PIL import Image

    image = make_inputs.resized_photo("coffee", 120, 160)
    path = make_inputs.write_input_data(tmp_path / "jpeg.json", [image], encoding="jpeg")
    entry = json.loads(path.read_text())["data"][0]["images"]
    assert entry["shape"] == [1]
    raw = base64.b64decode(entry["content"]["b64"])
    (length,) = struct.unpack("<I", raw[:4])  # perf_analyzer sends b64 BYTES content as the serialized tensor
    assert length == len(raw) - 4
    decoded = np.asarray(Image.open(io.BytesIO(raw[4:])))
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 6  # JPEG q90, 4:2:0 chroma


def test_make_images_cycles_sizes_and_real_photos():
    images = make_inputs.make_images([(20, 30), (30, 20)], ["coffee", "rocket", "astronaut"])
    assert [im.shape for im in images] == [(20, 30, 3), (30, 20, 3), (20, 30, 3)]
    assert all(im.dtype == np.uint8 and im.std() > 10 for im in images)  # photographs, not flat fills


@pytest.mark.parametrize("name", perf_config.named_configs())
def test_named_configs_load_and_build_commands(name, tmp_path):
    config = perf_config.load_config(name)
    assert config.concurrency_ranges()
    args = run_perf.perf_analyzer_args(config, "host:1", tmp_path / "in.json", config.shared_memory[0],
                                       config.concurrency_ranges()[0], tmp_path / "out.csv")  # fmt: skip
    assert args[args.index("-m") + 1] == config.model
    assert args[args.index("-i") + 1] == config.protocol


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown keys"):
        perf_config.config_from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="shared_memory"):
        perf_config.config_from_dict({"shared_memory": ["gpu"]})
    with pytest.raises(ValueError, match="concurrency"):
        perf_config.config_from_dict({"concurrency": "0:4"})


def test_csv_summary_in_ms_by_concurrency(tmp_path):
    path = tmp_path / "pa.csv"
    path.write_text(SAMPLE_CSV)
    rows = [perf_csv.summarize(row) for row in perf_csv.read_perf_csv(path)]
    assert [row["concurrency"] for row in rows] == [1, 2]
    assert rows[0]["throughput_infer_s"] == pytest.approx(43.7863)
    assert rows[1]["p99_ms"] == pytest.approx(85.671)
    assert "| 2 | 53.40 |" in perf_csv.markdown_table(rows, ["concurrency", "throughput_infer_s"])


def _success_counts(url: str, models: list[str]) -> dict[str, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    counts = {}
    for model in models:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
        counts[model] = sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)
    return counts


@pytest.fixture(scope="module")
def benchmark_server():
    """The shipped repository served as run_perf serves it: without the response cache, which would answer
    perf_analyzer's repeated inputs (and which perf_analyzer 2.51 cannot account for in an ensemble:
    "Server side statistics compute counts must be the same")."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY], response_cache=False)
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.mark.server
@pytest.mark.parametrize("model, shared_memory", [("image_classifier", "none"), ("image_classifier", "system"),
                                                  ("image_classifier_encoded", "none")])
def test_perf_analyzer_measures_the_ensemble(benchmark_server, tmp_path, model, shared_memory):
    """A short real perf_analyzer run over gRPC; the server's statistics must count what it sent."""
    config = perf_config.config_from_dict(
        {"model": model, "protocol": "grpc", "concurrency": "1:2", "shared_memory": [shared_memory],
         # a shared 2-core CI host is noisy: loose stability, few trials, short windows
         "measurement_interval_ms": 1500, "stability_percentage": 100, "max_trials": 10}
    )  # fmt: skip
    images = make_inputs.make_images([(224, 224), (240, 320), (300, 451)], ["chelsea", "coffee", "rocket"])
    encoded = model == "image_classifier_encoded"
    input_file = make_inputs.write_input_data(tmp_path / "inputs.json", images, encoding="jpeg" if encoded else "b64")
    models = [model, "preprocess", "classifier"]
    before = _success_counts(benchmark_server.grpc_url, models)

    csv_path = tmp_path / "pa.csv"
    args = run_perf.perf_analyzer_args(config, benchmark_server.grpc_url, input_file, shared_memory, "1:2", csv_path,
                                       benchmark_server.admin_key)  # shared memory registration needs the key
    status, output, command = run_perf.run_perf_analyzer(args)

    assert status == 0, f"{command}\n{output[-3000:]}"
    rows = [perf_csv.summarize(row) for row in perf_csv.read_perf_csv(csv_path)]
    assert [row["concurrency"] for row in rows] == [1, 2]
    assert all(row["throughput_infer_s"] > 0 and row["p99_ms"] > 0 for row in rows)
    measured = sum(int(n) for n in re.findall(r"Request count: (\d+)", output))
    assert measured > 0
    after = _success_counts(benchmark_server.grpc_url, models)
    for model in models:  # the ensemble and both of its steps ran every measured request (and warm-up ones)
        assert after[model] - before[model] >= measured, (model, before, after, measured)


@pytest.mark.server
def test_run_perf_keeps_perf_analyzers_own_csv_beside_its_summary(benchmark_server, tmp_path):
    """run_perf against a running server: the summary and, per measurement, perf_analyzer's own -f CSV
    (the format other tools read) land in the results folder, named after the model measured."""
    status = run_perf.main(["--config", "cpu_smoke", "--url", benchmark_server.grpc_url, "--model",
                            "image_classifier_encoded", "--encoding", "jpeg", "--concurrency", "1,2",
                            "--shared-memory", "none", "--results-dir", str(tmp_path)])  # fmt: skip

    assert status == 0
    kept = sorted(path.name for path in tmp_path.glob("*.image_classifier_encoded-none-c*.csv"))
    assert [name.rsplit(".", 2)[-2] for name in kept] == ["image_classifier_encoded-none-c1",
                                                         "image_classifier_encoded-none-c2"]
    for name in kept:
        header = (tmp_path / name).read_text().splitlines()[0]
        assert header.startswith("Concurrency,Inferences/Second,"), header
        (row,) = perf_csv.read_perf_csv(tmp_path / name)
        assert row["Inferences/Second"] > 0
    (summary,) = [path for path in tmp_path.glob("cpu_smoke-*.csv") if path.name.count(".") == 1]
    assert "throughput_infer_s" in summary.read_text().splitlines()[0]


def test_perf_analyzer_libraries_are_relinked_when_their_target_is_gone(tmp_path, monkeypatch):
    """A link left pointing into a removed environment is replaced, not reused (perf_analyzer would not start)."""
    from pixelserve.triton_local import tools

    monkeypatch.setattr(tools.tempfile, "gettempdir", lambda: str(tmp_path))
    libdir = tools._runtime_lib_dir()
    link = libdir / "libb64.so.0d"
    assert link.exists()
    link.unlink()
    link.symlink_to(tmp_path / "removed-environment" / "libb64.so.0d")
    assert tools._runtime_lib_dir() == libdir and link.exists()
