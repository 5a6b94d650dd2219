"""Smoke tests of the command-line tools in perf/ (``python -m pixelserve.perf.<tool>``), on the CPU.

Every tool answers ``--help`` with what it is for and its options. The tools that can do their work on a CPU host
do it here on tiny inputs: make_inputs, plots and run_perf's dry run without a server; latency_timeline, soak,
set_instances and profile_ensemble against one small tritonserver of this module (explicit model control, so that
set_instances may reload a model; the session's ``triton_server`` fixture has none). bench_decode's CPU columns run
on two small JPEG files. The GPU benchmarks (bench_kernels, bench_classifier, bench_decode's GPU columns) run for
real only where torch sees a CUDA GPU, and are skipped elsewhere with the reason.

Tools covered elsewhere on the CPU: run_perf, scaling, scaling_report and scaling_plot (test_perf_analyzer.py,
test_placement.py), model_analyzer (test_model_analyzer.py), shipped_settings (test_shipped_settings.py), perf_config
and perf_csv (test_perf_analyzer.py).
"""
from __future__ import annotations

import ast
import base64
import functools
import importlib
import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL_REPOSITORY, REPO_ROOT, ensure_classifier_built
from pixelserve.perf import bench_decode, latency_timeline, machine_info, make_inputs, perf_config, plots
from pixelserve.perf import env_ab, process_cpu, profile_ensemble, run_perf, soak

PERF_DIR = REPO_ROOT / "perf"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FLOOR_MODELS = ("noop_files", "noop_big", "noop_in_place")

# Each command-line tool and options its --help must name (those perf/README.md and run_device.sh use).
TOOL_OPTIONS = {
    "run_perf": ["--config", "--model", "--peers", "--url", "--results-dir", "--dry-run"],
    "plots": ["csv", "--output", "--title"],
    "make_inputs": ["--output", "--size", "--mixed", "--photos", "--count", "--encoding"],
    "scaling": ["--max-gpus", "--counts", "--per-gpu", "--concurrency-per-gpu", "--dry-run"],
    "profile_ensemble": ["--model", "--grpc", "--metrics", "--points", "--sizes", "--encoding", "--output"],
    "latency_timeline": ["--url", "--model", "--size", "--concurrency", "--seconds", "--period", "--json"],
    "soak": ["--seconds", "--url", "--concurrency", "--bad-share", "--max-rss-growth-mb"],
    "set_instances": ["model", "count", "--like", "--parameter", "--queue-delay-us", "--url"],
    "model_analyzer": ["--config", "--workdir", "--model-analyzer"],
    "bench_decode": ["--json", "--batch", "--sizes", "--repeat", "--threads", "--columns"],
    "bench_kernels": ["--json"],
    "bench_classifier": ["--weights", "--max-batch-size"],
    "host_register_check": ["--megabytes"],
    "env_ab": ["--b", "--point", "--rounds", "--interval", "--mps", "--output"],
}


def _run_module(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m pixelserve.perf.<module> args...`` as a user runs it, from the repository root."""
    return subprocess.run([sys.executable, "-m", f"pixelserve.perf.{module}", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _first_doc_line(module: str) -> str:
    """The first line of the tool's docstring (its description), read without importing it."""
    doc = ast.get_docstring(ast.parse((PERF_DIR / f"{module}.py").read_text(encoding="utf-8")))
    assert doc, f"perf/{module}.py has no docstring"
    return doc.splitlines()[0]


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _cuda_or_skip() -> None:
    reason = bench_decode.cuda_available()
    if reason:
        pytest.skip(f"the real run needs a CUDA GPU: {reason}")


# --- every tool: --help --------------------------------------------------------------------------------------------

def test_every_command_line_tool_is_listed_and_runs_as_a_module():
    """A tool added to perf/ (a module with an argparse main) gets a --help check here; each runs as
    ``python -m pixelserve.perf.<tool>`` (its relative imports fail as ``python perf/<tool>.py``)."""
    tools = {path.stem for path in PERF_DIR.glob("*.py") if "ArgumentParser(" in path.read_text(encoding="utf-8")}
    assert tools == set(TOOL_OPTIONS)
    for tool in tools:
        source = (PERF_DIR / f"{tool}.py").read_text(encoding="utf-8")
        assert 'if __name__ == "__main__":' in source, tool
        assert "python perf/" not in source, f"perf/{tool}.py documents `python perf/`: use python -m pixelserve.perf"


@pytest.mark.parametrize("module", sorted(TOOL_OPTIONS))
def test_help_says_what_the_tool_does_and_names_its_options(module, monkeypatch, capsys):
    """Each tool's main() as ``python -m pixelserve.perf.<tool> --help`` calls it (from sys.argv), in this process:
    importing it works on a CPU host, and the help exits 0 with the docstring and the options."""
    monkeypatch.setattr(sys, "argv", [f"{module}.py", "--help"])
    main = importlib.import_module(f"pixelserve.perf.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {module}.py "), out[:200]
    assert _first_doc_line(module) in out
    missing = [option for option in TOOL_OPTIONS[module] if option not in out]
    assert missing == [], f"{module} --help does not name {missing}"


def test_make_inputs_runs_as_documented_with_python_m(tmp_path):
    output = tmp_path / "in.json"
    result = _run_module("make_inputs", "-o", str(output), "--size", "8x12", "--photos", "rocket", "--encoding", "jpeg")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"wrote {output}: 1 entries, shapes [(8, 12, 3)]")
    (entry,) = json.loads(output.read_text())["data"]
    assert entry["images"]["shape"] == [1]  # one JPEG file per request
    assert base64.b64decode(entry["images"]["content"]["b64"])[4:6] == b"\xff\xd8"  # after the length: a JPEG


# --- make_inputs, plots, run_perf --dry-run: no server -------------------------------------------------------------

def test_make_inputs_writes_the_photos_at_the_sizes_asked(tmp_path, capsys):
    output = tmp_path / "inputs.json"
    assert make_inputs.main(["-o", str(output), "--size", "20x30", "--size", "30x20", "--photos", "coffee,rocket",
                             "--count", "3", "--encoding", "b64", "--input-name", "pixels"]) == 0  # fmt: skip
    assert f"wrote {output}: 3 entries" in capsys.readouterr().out
    entries = [entry["pixels"] for entry in json.loads(output.read_text())["data"]]
    assert [entry["shape"] for entry in entries] == [[20, 30, 3], [30, 20, 3], [20, 30, 3]]
    first = np.frombuffer(base64.b64decode(entries[0]["content"]["b64"]), np.uint8).reshape(20, 30, 3)
    np.testing.assert_array_equal(first, make_inputs.resized_photo("coffee", 20, 30))


def test_make_inputs_refuses_a_malformed_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_inputs.main(["-o", str(tmp_path / "x.json"), "--size", "20by30"])
    assert exit_info.value.code == 2
    assert "size must look like 1080x1920" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


SUMMARY_HEADER = "model,protocol,shared_memory,concurrency,throughput_infer_s,p50_ms,p90_ms,p99_ms,avg_ms\n"


def _summary_csv(path: Path, model: str, scale: float) -> Path:
    """A run_perf summary CSV of one model at concurrency 1, 2 and 4."""
    rows = [f"{model},grpc,none,{c},{scale * c:.1f},{2.0 * c},{3.0 * c},{4.0 * c},{2.5 * c}\n" for c in (1, 2, 4)]
    path.write_text(SUMMARY_HEADER + "".join(rows))
    return path


def test_plots_writes_a_png_beside_each_csv_and_one_for_several(tmp_path, capsys):
    ours = _summary_csv(tmp_path / "ours.csv", "image_classifier", 50.0)
    peer = _summary_csv(tmp_path / "peer.csv", "image_classifier_torch", 30.0)
    assert plots.main([str(ours), str(peer)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(tmp_path / "ours.png"), "wrote", str(tmp_path / "peer.png")]
    assert _png_size(tmp_path / "ours.png") == (12 * 110, 5 * 110)  # plots.figure's figsize at plots.save's dpi
    assert plots.main([str(ours), str(peer), "-o", str(tmp_path / "both.png"), "--title", "ours vs peer"]) == 0
    assert _png_size(tmp_path / "both.png") == (1320, 550)
    # what the combined figure holds: one throughput line per model, at the CSVs' numbers
    throughput = plots.figure(plots.split_series([*plots.load_rows(ours), *plots.load_rows(peer)])).axes[0]
    assert [list(line.get_ydata()) for line in throughput.get_lines()] == [[50.0, 100.0, 200.0], [30.0, 60.0, 120.0]]


def test_plots_refuses_a_csv_without_measurements(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text(SUMMARY_HEADER)
    assert plots.main([str(empty)]) == 1
    assert f"no measurements in {empty}" in capsys.readouterr().err
    assert not empty.with_suffix(".png").exists()


def test_run_perf_dry_run_prints_every_command_and_starts_nothing(tmp_path, capsys):
    assert run_perf.main(["--config", "cpu_smoke", "--model", "preprocess", "--peers", "preprocess_torch",
                          "--shared-memory", "none,system", "--concurrency", "1,4", "--url", "127.0.0.1:9",
                          "--results-dir", str(tmp_path), "--dry-run"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("python -m pixelserve.perf.make_inputs -o inputs.json")
    measured = [line for line in lines if line.startswith("perf_analyzer ")]
    # (model, shared memory, concurrency) for the model and its peer
    assert len(measured) == 2 * 2 * 2, lines
    assert sum("-m preprocess_torch " in line for line in measured) == 4
    assert all("-u 127.0.0.1:9" in line for line in measured)
    assert any("--shared-memory system" in line and "--concurrency-range 4" in line for line in measured)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_machine_info_describes_this_host(monkeypatch, tmp_path):
    facts = machine_info.describe()
    assert set(facts) == {"cpu", "cpu_count", "gpu", "os"}
    assert int(facts["cpu_count"]) == len(os.sched_getaffinity(0))
    assert facts["cpu"] and facts["os"].startswith(os.uname().sysname)
    # the GPUs are nvidia-smi's lines; "none" without nvidia-smi
    fake = tmp_path / "nvidia-smi"
    gpu = "NVIDIA H100 80GB HBM3, 560.35, 81559 MiB"
    fake.write_text(f"#!/bin/sh\necho '{gpu}'\necho '{gpu}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert machine_info.describe()["gpu"] == f"{gpu}; {gpu}"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert machine_info.describe()["gpu"] == "none"


def test_latency_timeline_puts_a_periodic_stall_in_one_phase_bin():
    """summarize() on synthetic rows: 10 ms requests every 10 ms for 5 s, 60 ms ones 0.33-0.37 s into each second."""
    ticks = np.arange(500)
    latency = np.where((ticks % 100 >= 33) & (ticks % 100 <= 37), 0.060, 0.010)
    summary = latency_timeline.summarize(np.column_stack([ticks / 100, latency]), period=1.0, slow_factor=1.5)
    assert summary["requests"] == 500 and summary["p50_ms"] == pytest.approx(10.0)
    assert summary["max_ms"] == pytest.approx(60.0) and summary["slow"] == 25
    assert summary["slow_by_phase"] == [0, 0, 0, 25, 0, 0, 0, 0, 0, 0]
    assert all(row["latency_ms"] == 60.0 for row in summary["slowest"])


# --- against a running server (one for this module) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def perf_server():
    """tritonserver on the shipped repository with explicit model control (set_instances reloads a model), serving
    image_classifier and its steps, and beside them the floor models that take files and frames."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    floors = [f"--load-model={name}" for name in FLOOR_MODELS]
    server = LocalTritonServer([MODEL_REPOSITORY, PERF_DIR / "floor_models"],
                               extra_args=["--model-control-mode=explicit", "--load-model=image_classifier", *floors])
    server.start(timeout=300)
    yield server
    server.stop()



@pytest.fixture
def lenient_windows(monkeypatch):
    """profile_ensemble's perf_analyzer asks for 10 % stability; a small CPU host rarely gets there in a few short
    windows, so these runs accept any three windows in a row (a broken run still fails: no measurement, no CSV)."""
    monkeypatch.setattr(profile_ensemble.perf_config, "RunConfig",
                        functools.partial(perf_config.RunConfig, stability_percentage=100.0, max_trials=6))

@pytest.mark.server
def test_latency_timeline_measures_a_running_server(perf_server, tmp_path, capsys):
    output = tmp_path / "timeline.json"
    status = latency_timeline.main(["--url", perf_server.grpc_url, "--model", "image_classifier", "--size", "64x96",
                                    "--concurrency", "2", "--seconds", "1.5", "--title", "tiny",
                                    "--json", str(output)])  # fmt: skip
    assert status == 0, capsys.readouterr().out
    assert capsys.readouterr().out.startswith("tiny c2: ")
    summary = json.loads(output.read_text())
    assert summary["errors"] == 0 and summary["requests"] == len(summary["rows"]) > 2
    assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert sum(summary["slow_by_phase"]) == summary["slow"]
    sent = [row[0] for row in summary["rows"]]
    assert sent == sorted(sent) and 0 <= sent[0] and sent[-1] < 1.5


@pytest.mark.server
def test_soak_sends_good_and_bad_requests_to_a_running_server(perf_server, capsys):
    status = soak.main(["--url", perf_server.grpc_url, "--seconds", "1.5", "--warmup", "0.3", "--window", "0.5",
                        "--concurrency", "2", "--bad-share", "0.5"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    counts = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in ("valid_sent", "valid_failed", "bad_sent", "bad_answered"):
            counts[key] = int(value)
    assert counts["valid_sent"] > 0 and counts["bad_sent"] > 0
    assert counts["valid_failed"] == 0 and counts["bad_answered"] == 0
    assert out.rstrip().endswith("soak: PASS")



def _profile(server, model: str, points: str, output: Path, *options: str) -> int:
    """profile_ensemble's main against the module's server, with 1 s windows."""
    return profile_ensemble.main(["--model", model, "--grpc", server.grpc_url, "--metrics",
                                  f"127.0.0.1:{server.metrics_port}", "--points", points, "--interval", "1000",
                                  "--output", str(output), *options])

@pytest.mark.server
def test_profile_ensemble_reports_each_step_of_a_measured_point(perf_server, tmp_path, lenient_windows, capsys):
    output = tmp_path / "profile.md"
    assert _profile(perf_server, "image_classifier", "none:1", output, "--sizes", "64x96,96x64", "--title", "tiny") == 0
    out = capsys.readouterr().out
    assert "perf_analyzer exit" not in out, out[-3000:]
    assert "image_classifier none c1: " in out
    text = output.read_text()
    assert text.startswith("## tiny\n") and "### none shared memory, concurrency 1" in text
    for model in ("image_classifier", "preprocess", "classifier"):
        assert f"\n| {model} | " in text, text
    # the models' own phase timers (pixelserve_phase_seconds_total), read from the metrics endpoint
    assert "| model.py phase | us per execute() | calls |" in text and "\n| preprocess: execute | " in text, text
    assert (tmp_path / "profile-none-c1.csv").is_file()  # perf_analyzer's CSV beside the report
    # the host's CPU split by process: this server and its stubs are local, perf_analyzer is the tool's child
    cores = _process_cpu_rows(text)
    for role in ("tritonserver", "Python-backend stubs", "perf_analyzer (load generator)"):
        assert cores[role][0] > 0 and cores[role][1] > 0, text


def _process_cpu_rows(text: str) -> dict[str, tuple[float, float]]:
    """{process group: (cores busy, CPU us per inference)} from a profile_ensemble report's host CPU table."""
    rows = {}
    table = text[text.index("| process | cores busy | CPU us per inference |"):]
    for line in table.splitlines()[2:]:
        if not line.startswith("| "):
            break
        role, cores, per, _faults, _waiting, _main_waiting = (cell.strip() for cell in line.strip("|").split("|"))
        rows[role] = (float(cores), float(per))
    return rows



BUSY_CHILD = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.4: pass"


def test_process_cpu_charges_finished_children_to_the_load_generator_and_live_processes_by_name():
    before = process_cpu.snapshot()
    subprocess.run([sys.executable, "-c", BUSY_CHILD], check=True)  # ends before the second snapshot
    running = subprocess.Popen([sys.executable, "-c", BUSY_CHILD + "\ntime.sleep(30)"])
    try:
        for _ in range(100):  # until it has burnt its 0.4 s, as /proc counts it
            if process_cpu.usage_by_role(before, process_cpu.snapshot()).get(process_cpu.OTHER, (0, 0))[0] >= 0.4:
                break
            time.sleep(0.05)
        after = process_cpu.snapshot()
    finally:
        running.kill()
        running.wait()
    used = process_cpu.usage_by_role(before, after)
    assert 0.35 <= used[process_cpu.LOAD_GENERATOR][0] < 5, used  # the finished child only, not the live one
    assert used[process_cpu.OTHER][0] >= 0.35, used  # the live child, counted from /proc under its own name
    assert used[process_cpu.LOAD_GENERATOR][1] > 0 and used[process_cpu.OTHER][1] > 0, used  # an interpreter's start faults
    assert process_cpu.role_of("triton_python_b") == "Python-backend stubs"
    assert process_cpu.role_of("tritonserver") == "tritonserver" and process_cpu.role_of("python3") == process_cpu.OTHER
    assert 0 < process_cpu.host_busy(before, after) <= 1  # both children ran on this host's cores


def test_process_cpu_counts_the_time_threads_wait_for_a_core():
    # More busy processes than cores: each must wait for a core part of the time, and the kernel counts it.
    children = [subprocess.Popen([sys.executable, "-c", BUSY_CHILD + "\ntime.sleep(30)"])
                for _ in range(2 * (os.cpu_count() or 1) + 1)]
    try:
        before = process_cpu.snapshot()
        time.sleep(1.0)
        after = process_cpu.snapshot()
    finally:
        for child in children:
            child.kill()
            child.wait()
    other = process_cpu.usage_by_role(before, after)[process_cpu.OTHER]
    assert other.seconds > 0.3 and other.waiting > 0.1, other
    assert 0.1 < other.main_waiting <= other.waiting + 1e-6, other  # one thread each: the main thread waited
    assert math.isnan(process_cpu.usage_by_role(before, after)[process_cpu.LOAD_GENERATOR].waiting)
    table = process_cpu.describe({process_cpu.OTHER: other}, 1.0, 10)
    assert f"| {process_cpu.OTHER} | " in table and "| n/a | n/a |" not in table.splitlines()[-1], table


@pytest.mark.server
def test_floor_models_answer_what_they_read(perf_server):
    """The floors read every request: a file's length, a frame's first value, through as_numpy or in place."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(perf_server.grpc_url)
    files = [b"\xff\xd8" + bytes(n) for n in (10, 3000)]
    for data in files:
        tensor = grpcclient.InferInput("images", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        assert client.infer("noop_files", [tensor]).as_numpy("y")[0, 0] == len(data)
    rng = np.random.default_rng()
    for model in ("noop_big", "noop_in_place"):
        frame = rng.integers(1, 256, (1, 37, 53, 3), dtype=np.uint8)
        tensor = grpcclient.InferInput("images", list(frame.shape), "UINT8")
        tensor.set_data_from_numpy(frame)
        assert client.infer(model, [tensor]).as_numpy("y")[0, 0] == frame[0, 0, 0, 0], model


@pytest.mark.server
def test_profile_ensemble_measures_the_files_floor(perf_server, tmp_path, lenient_windows):
    """The files floor served as perf_analyzer drives the encoded product: JPEG files, the host CPU split."""
    output = tmp_path / "floor.md"
    assert _profile(perf_server, "noop_files", "none:2", output, "--sizes", "64x96") == 0  # files: what it takes
    text = output.read_text()
    assert "\n| noop_files | " in text and "perf_analyzer exit" not in text, text
    cores = _process_cpu_rows(text)
    assert cores["Python-backend stubs"][1] > 0 and cores["perf_analyzer (load generator)"][1] > 0, text



@pytest.mark.server
def test_env_ab_serves_both_environments_in_turns_and_puts_them_side_by_side(tmp_path, lenient_windows):
    output = tmp_path / "ab.md"
    assert env_ab.main(["--b", "PIXELSERVE_MALLOC_TUNING=0", "--point", "noop_files:none:2", "--rounds", "1",
                        "--interval", "1000", "--title", "tiny", "--output", str(output)]) == 0
    text = output.read_text()
    assert text.startswith("## tiny\n") and "B: A with `PIXELSERVE_MALLOC_TUNING=0`" in text, text
    (line,) = [line for line in text.splitlines() if line.startswith("| 1 | noop_files none c2 |")]
    cells = [cell.strip() for cell in line.strip("|").split("|")][2:]
    assert len(cells) == 8 and all(float(cell) >= 0 for cell in cells), line  # no side failed
    assert float(cells[0]) > 0 and float(cells[1]) > 0, line
    for side in ("A", "B"):  # each side's profile_ensemble report and perf_analyzer CSV
        assert (tmp_path / "ab" / f"r1-{side}-noop_files-none-c2.md").is_file()
        assert (tmp_path / "ab" / f"r1-{side}-noop_files-none-c2.csv").is_file()


def test_env_ab_refuses_malformed_arguments(capsys):
    for bad in (["--b", "NOVALUE", "--point", "noop_files:none:2"], ["--b", "A=1", "--point", "noop_files:shm:2"],
                ["--b", "A=1", "--point", "noop_files:none"]):
        with pytest.raises(SystemExit):
            env_ab.main([*bad, "--output", "x.md"])
        assert "expected" in capsys.readouterr().err

@pytest.mark.server
def test_set_instances_reloads_a_model_with_the_admin_key(perf_server, monkeypatch, capsys):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from pixelserve.perf import set_instances

    client = grpcclient.InferenceServerClient(perf_server.grpc_url)
    monkeypatch.setattr(sys, "argv", ["set_instances.py", "preprocess", "2", "--parameter", "slow_log_ms=250",
                                      "--queue-delay-us", "123", "--url", perf_server.grpc_url])  # fmt: skip
    monkeypatch.delenv("PIXELSERVE_ADMIN_KEY", raising=False)
    with pytest.raises(InferenceServerException, match="restricted"):  # loading a model is a restricted API
        set_instances.main()
    assert client.get_model_config("preprocess", as_json=True)["config"]["instance_group"][0]["count"] == 1
    monkeypatch.setenv("PIXELSERVE_ADMIN_KEY", perf_server.admin_key)
    try:
        set_instances.main()
        assert capsys.readouterr().out.startswith("preprocess: instance_group [")
        config = client.get_model_config("preprocess", as_json=True)["config"]
        assert [group["count"] for group in config["instance_group"]] == [2]
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 123
        assert config["parameters"]["slow_log_ms"]["string_value"] == "250"
        assert config["parameters"]["resize_mode"]["string_value"] == "shorter_side_crop"  # the rest is kept
        # A peer matched to another model's count (preprocess now serves 2, noop_files's file says 1).
        monkeypatch.setattr(sys, "argv", ["set_instances.py", "noop_files", "--like", "preprocess",
                                          "--url", perf_server.grpc_url])  # fmt: skip
        set_instances.main()
        groups = client.get_model_config("noop_files", as_json=True)["config"]["instance_group"]
        assert [group["count"] for group in groups] == [2]
        monkeypatch.setattr(sys, "argv", ["set_instances.py", "noop_files", "3", "--like", "preprocess"])
        with pytest.raises(SystemExit):
            set_instances.main()
        assert "either COUNT or --like" in capsys.readouterr().err
    finally:
        client.load_model("preprocess", headers=perf_server.admin_headers)  # back to the files' configs
        client.load_model("noop_files", headers=perf_server.admin_headers)


# --- the benchmarks: CPU columns here, the GPU ones where there is a GPU -------------------------------------------

def test_bench_decode_runs_its_cpu_columns_and_names_why_the_gpu_ones_are_skipped(tmp_path, capsys, monkeypatch):
    # the CPU path, also on a GPU host
    monkeypatch.setattr(bench_decode, "cuda_available", lambda: "no CUDA GPU visible to torch")
    output = tmp_path / "decode.json"
    assert bench_decode.main(["--sizes", "48x64", "--batch", "2", "--repeat", "1", "--threads", "1",
                              "--columns", "pil,opencv,torchvision", "--json", str(output)]) == 0  # fmt: skip
    assert "torchvision: skipped (no CUDA GPU visible to torch)" in capsys.readouterr().out
    result = json.loads(output.read_text())
    assert result["device"] == "CPU only" and result["batch"] == 2
    assert result["skipped"]["torchvision"] == "no CUDA GPU visible to torch"
    assert [(row["size"], row["column"]) for row in result["rows"]] == [("48x64", "pil"), ("48x64", "opencv")]
    for row in result["rows"]:
        assert row["images_per_s"] > 0 and row["us_per_image"] == pytest.approx(1e6 / row["images_per_s"])
        # the same JPEG files through two libjpeg builds: the model inputs agree (0.05 is about 3 grey levels)
        assert row["max_abs_diff_vs_first"] < 0.05


def test_bench_decode_runs_cells_in_several_processes_at_once_and_adds_their_images(tmp_path):
    # The served mix in one batch, in two processes started together (the CPU columns: no GPU needed).
    output = tmp_path / "decode.json"
    assert bench_decode.main(["--sizes", "mix", "--batch", "2", "--repeat", "2", "--threads", "1", "--processes", "2",
                              "--columns", "pil,opencv", "--json", str(output)]) == 0  # fmt: skip
    result = json.loads(output.read_text())
    assert result["processes"] == 2
    assert sorted((row["size"], row["column"]) for row in result["rows"]) == [("mix", "opencv"), ("mix", "pil")]
    for row in result["rows"]:
        # 2 processes x 2 batches x 2 files over the slowest process's time; us per image is per process
        assert row["processes"] == 2 and row["images_per_s"] == pytest.approx(2 * 1e6 / row["us_per_image"])


@pytest.mark.parametrize("columns", ["pil,nvjpeg", "ours@2", "ours@1:-5", "dali@0.5:1000"])
def test_bench_decode_refuses_an_unknown_column(capsys, columns):
    with pytest.raises(SystemExit) as exit_info:
        bench_decode.main(["--columns", columns])
    assert exit_info.value.code == 2
    assert f"unknown columns [{columns.split(',')[-1]!r}]" in capsys.readouterr().err


@pytest.mark.gpu
def test_bench_decode_gpu_columns_run_on_a_gpu(tmp_path):
    _cuda_or_skip()
    output = tmp_path / "decode.json"
    result = _run_module("bench_decode", "--sizes", "48x64", "--batch", "2", "--repeat", "1", "--json", str(output),
                         timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["device"] != "CPU only"
    ran = {row["column"] for row in report["rows"]}
    # every column either ran or says why not (nvImageCodec or torchvision missing, no hardware decoder)
    assert ran | set(report["skipped"]) == set(bench_decode.COLUMNS) and all(report["skipped"].values())
    assert {"pil", "opencv"} <= ran
    assert all(row["images_per_s"] > 0 for row in report["rows"])
    if "ours-decode" in ran:  # a GPU column alone, in several processes (each builds its own decoder)
        result = _run_module("bench_decode", "--sizes", "48x64", "--batch", "2", "--repeat", "1", "--processes", "2",
                             "--columns", "ours-decode", "--json", str(output), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [row["column"] for row in json.loads(output.read_text())["rows"]] == ["ours-decode"]


def test_host_register_check_reports_every_variant_or_why_it_cannot_run():
    """On a GPU host each registration variant is named with its verdict (exit 0 or 1: that is the finding);
    without a GPU the tool says so and exits 2."""
    from pixelserve.perf import host_register_check

    result = _run_module("host_register_check", "--megabytes", "4", timeout=300)
    if bench_decode.cuda_available():
        assert result.returncode == 2 and "cannot run here" in result.stderr, result.stderr[-2000:]
        return
    assert result.returncode in (0, 1), result.stderr[-3000:]
    verdicts = dict(line.split(": ", 1) for line in result.stdout.splitlines() if not line.startswith("# "))
    assert list(verdicts) == [variant.name for variant in host_register_check.VARIANTS]
    assert result.returncode == (0 if set(verdicts.values()) == {"right bytes"} else 1)


@pytest.mark.gpu
def test_bench_kernels_runs_on_a_gpu(tmp_path):
    _cuda_or_skip()
    output = tmp_path / "kernels.json"
    # batch 1 only (the tool measures 1, 8 and 64): the whole table, in seconds
    code = ("import sys; from pixelserve.perf import bench_kernels as b; b.BATCHES = (1,); "
            f"sys.argv = ['bench_kernels', '--json', {str(output)!r}]; b.main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["copy_gbs"] > 0 and report["h2d_frame_us"] > 0
    assert [(row["mode"], row["antialias"], row["batch"]) for row in report["rows"]] == [
        ("stretch", False, 1), ("stretch", True, 1), ("shorter_side_crop", False, 1), ("shorter_side_crop", True, 1)]
    for row in report["rows"]:
        for key in ("ours_us", "floor_us", "torch_us", "opencv_us", "call_graph_us", "call_dispatcher_us"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)


@pytest.mark.gpu
def test_bench_classifier_runs_on_a_gpu():
    _cuda_or_skip()
    weights = MODEL_REPOSITORY / "classifier" / "1" / "model.pt"
    if not weights.is_file():
        pytest.skip(f"no torch weights at {weights} (python -m pixelserve.build.build_classifier --flavour torch)")
    result = _run_module("bench_classifier", "--max-batch-size", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| N")]
    variants = {(cells[0].strip(), cells[1].strip()) for cells in rows}
    assert variants == {("NHWC", "folded"), ("NHWC", "separate"), ("NCHW", "folded"), ("NCHW", "separate")}
    for cells in rows:
        replay_ms, run_ms = float(cells[3]), float(cells[5])
        assert 0 < replay_ms <= run_ms, cells  # run() is the replay plus the copies around it
