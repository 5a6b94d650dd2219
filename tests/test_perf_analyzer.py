"""perf/ tooling: input data from real photos, the named configs, and a real perf_analyzer run on the server."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, ensure_classifier_built

from pixelserve.perf import make_inputs, perf_config, perf_csv, plots, run_perf

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


def _smoke_config(tmp_path: Path) -> str:
    """cpu_smoke with looser stability: this test host is shared, and 50 % is missed there now and then."""
    import yaml

    values = yaml.safe_load((perf_config.CONFIG_DIR / "cpu_smoke.yaml").read_text())
    values.update(stability_percentage=100, max_trials=10)
    path = tmp_path / "config" / "cpu_smoke.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.server
def test_run_perf_keeps_perf_analyzers_own_csv_beside_its_summary(benchmark_server, tmp_path):
    """run_perf against a running server: the summary and, per measurement, perf_analyzer's own -f CSV
    (the format other tools read) land in the results folder, named after the model measured."""
    status = run_perf.main(["--config", _smoke_config(tmp_path), "--url", benchmark_server.grpc_url, "--model",
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


def _console_script() -> Path:
    script = Path(sys.executable).parent / "pixelserve-perf-analyzer"
    assert script.exists(), f"{script} missing: scripts/setup.sh installs the project's console scripts"
    return script


def _without_library_path() -> dict[str, str]:
    """This environment without LD_LIBRARY_PATH: the wrapper must find perf_analyzer's libraries itself."""
    return {key: value for key, value in os.environ.items() if key != "LD_LIBRARY_PATH"}


@pytest.fixture(scope="module")
def console_measurement(benchmark_server, tmp_path_factory):
    """``pixelserve-perf-analyzer`` (the documented command), run as a user runs it, measuring the raw ensemble
    at concurrency 1 and 2: (completed process, its -f CSV)."""
    tmp = tmp_path_factory.mktemp("console")
    images = make_inputs.make_images([(224, 224), (240, 320)], ["chelsea", "coffee"])
    input_file = make_inputs.write_input_data(tmp / "inputs.json", images, encoding="b64")
    csv_path = tmp / "pa.csv"
    config = perf_config.config_from_dict({"model": "image_classifier", "concurrency": "1:2", "measurement_interval_ms": 1500,
                                           "stability_percentage": 100, "max_trials": 10})  # fmt: skip
    args = run_perf.perf_analyzer_args(config, benchmark_server.grpc_url, input_file, "none", "1:2", csv_path)
    result = subprocess.run([str(_console_script()), *args], env=_without_library_path(), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    return result, csv_path


@pytest.mark.server
def test_console_script_measures_a_real_server(benchmark_server, console_measurement):
    result, csv_path = console_measurement
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Request concurrency: 2" in result.stdout
    rows = perf_csv.read_perf_csv(csv_path)
    assert [row["Concurrency"] for row in rows] == [1, 2]
    assert all(row["Inferences/Second"] > 0 for row in rows)


@pytest.mark.server
def test_plots_of_a_real_perf_analyzer_csv_hold_its_numbers(console_measurement, tmp_path):
    """Both panels plot exactly the CSV's numbers (read here with the csv module, not perf_csv), saved as a PNG."""
    _, csv_path = console_measurement
    with open(csv_path, newline="") as handle:
        raw = sorted(csv.DictReader(handle), key=lambda row: int(row["Concurrency"]))
    fig = plots.figure(plots.split_series(plots.load_rows(csv_path)))
    left, right = fig.axes
    (line,) = left.get_lines()
    assert list(line.get_xdata()) == [int(row["Concurrency"]) for row in raw]
    assert list(line.get_ydata()) == [float(row["Inferences/Second"]) for row in raw]
    latency = {entry.get_label().rsplit(" ", 1)[1]: entry for entry in right.get_lines()}
    assert sorted(latency) == ["p50", "p90", "p99"]
    for name, entry in latency.items():
        assert list(entry.get_xdata()) == [float(row["Inferences/Second"]) for row in raw]
        assert list(entry.get_ydata()) == [float(row[f"{name} latency"]) / 1000 for row in raw], name  # us -> ms

    png = plots.save(fig, tmp_path / "pa.png")
    _assert_png(png)


def _assert_png(path: Path) -> None:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # a truncated or corrupt file raises
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300


@pytest.mark.server
def test_run_perf_measures_peers_in_one_run_and_plots_them_together(benchmark_server, tmp_path, capsys):
    """--peers: the raw ensemble and preprocess (the same inputs) in one run; one PNG beside the summary holds
    both models' numbers as the summary CSV has them; no cache hits on this server, so no warning."""
    status = run_perf.main(["--config", _smoke_config(tmp_path), "--url", benchmark_server.grpc_url, "--model", "image_classifier",
                            "--peers", "preprocess", "--concurrency", "1,2", "--shared-memory", "none",
                            "--results-dir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err

    assert status == 0, err[-3000:]
    assert "WARNING" not in err
    (summary,) = [path for path in tmp_path.glob("cpu_smoke-*.csv") if path.name.count(".") == 1]
    with open(summary, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({row["model"] for row in rows}) == ["image_classifier", "preprocess"]
    assert all(row["cache_hits"] == "0" for row in rows)
    png = summary.with_suffix(".png")
    _assert_png(png)
    assert f"]({png.name})" in summary.with_suffix(".md").read_text()

    left, right = plots.figure(plots.split_series(plots.load_rows(summary))).axes
    for model in ("image_classifier", "preprocess"):
        mine = sorted((row for row in rows if row["model"] == model), key=lambda row: float(row["concurrency"]))
        (line,) = [line for line in left.get_lines() if line.get_label() == model]
        assert list(line.get_xdata()) == [float(row["concurrency"]) for row in mine] == [1, 2]
        assert list(line.get_ydata()) == [float(row["throughput_infer_s"]) for row in mine]
        (p99,) = [line for line in right.get_lines() if line.get_label() == f"{model} p99"]
        assert list(p99.get_ydata()) == [float(row["p99_ms"]) for row in mine]


@pytest.mark.server
def test_scaling_keeps_every_level_per_gpu_count_with_its_plot(console_measurement, tmp_path):
    """scaling's .levels.csv/.png from real measurements (the console script's, standing in for two GPU counts)."""
    from pixelserve.perf import scaling_report

    _, csv_path = console_measurement
    measured = [{"model": "image_classifier", **perf_csv.summarize(row)} for row in perf_csv.read_perf_csv(csv_path)]
    levels = [{"gpus": gpus, **row} for gpus in (1, 2) for row in measured]
    points = [scaling_report.ScalingPoint(gpus=g, throughput=measured[-1]["throughput_infer_s"] * g, concurrency=2) for g in (1, 2)]

    paths = scaling_report.write_results(tmp_path / "scaling-x", points, {}, [], [], levels=levels)

    md, _, _, levels_csv, levels_png = paths
    assert levels_csv.name == "scaling-x.levels.csv" and f"]({levels_png.name})" in md.read_text()
    _assert_png(levels_png)
    series = plots.split_series(plots.load_rows(levels_csv))
    assert [one.label for one in series] == ["image_classifier, 1 GPU(s)", "image_classifier, 2 GPU(s)"]
    for one in series:
        assert one.values("p90_ms") == [row["p90_ms"] for row in measured]


@pytest.mark.server
def test_the_documented_perf_analyzer_command_works(benchmark_server):
    """The command docs/performance.md documents, pointed at this test's server."""
    page = (PERF_DIR.parent / "docs" / "performance.md").read_text()
    section = page.split("\n## Measuring with perf_analyzer\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    argv = shlex.split(block.replace("127.0.0.1:8001", benchmark_server.grpc_url))
    assert argv[0] == ".venv/bin/pixelserve-perf-analyzer"
    argv[0] = str(_console_script())
    argv += ["--stability-percentage", "100"]  # the last one counts: this shared test host is noisier than a user's
    result = subprocess.run(argv, env=_without_library_path(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"Concurrency: 2, throughput: [0-9.]+ infer/sec", result.stdout)
