"""Batch jobs of pixelserve-classify (--output) against the real tritonserver: files sent as their encoded bytes
(or raw pixels with --send raw), streaming results, resume, summary, retries only for transient errors, and
shared-memory regions that never outlive the job."""
from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import tritonclient.grpc as grpcclient
from PIL import Image

from conftest import HAS_GPU
from images import photo_at, uncached
from terminal import read_terminal
from model_stats import moved, request_counts

from pixelserve.client import batch
from pixelserve.client.classify import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, main

pytestmark = pytest.mark.server
CAT_INDICES = range(281, 286)
ESPRESSO = 967
RAW, ENCODED = "image_classifier", "image_classifier_encoded"


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """A folder of 10 photos of several sizes (cats and espressos), one text file posing as a JPEG, and
    one image larger than the server accepts."""
    root = tmp_path_factory.mktemp("job")
    sizes = [(240, 320), (480, 640), (300, 451), (720, 1280), (600, 400)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(photo_at("chelsea", h, w)).save(root / f"cat{i}.png")
        Image.fromarray(photo_at("coffee", h, w)).save(root / f"coffee{i}.jpg", quality=90)
    (root / "broken.jpg").write_text("not an image\n")
    Image.fromarray(np.zeros((8200, 2, 3), np.uint8)).save(root / "too_tall.png")
    return root


def expected_top1(name: str) -> range:
    return CAT_INDICES if name.startswith("cat") else range(ESPRESSO, ESPRESSO + 1)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def admin_key(request, monkeypatch):
    """Shared-memory registration is a restricted API: the batch client reads the key from the environment."""
    if "triton_server" in request.fixturenames:
        from pixelserve.triton_local.access import KEY_ENV

        monkeypatch.setenv(KEY_ENV, request.getfixturevalue("triton_server").admin_key)


def our_regions(server) -> list[str]:
    """System shared-memory regions registered on the server by batch jobs, and their files in /dev/shm."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    status = client.get_system_shared_memory_status(headers=server.admin_headers, as_json=True).get("regions", {})
    registered = [name for name in status if name.startswith("pixelserve-")]
    files = [f for f in os.listdir("/dev/shm") if f.startswith(f"pixelserve-")]
    return registered + files


def test_batch_job_streams_results_and_summarises(triton_server, job, tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    code = main([str(job), "--output", str(output), "--url", triton_server.grpc_url, "--concurrency", "3",
                 "--top-k", "3", "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == EXIT_SOME_FAILED, err
    records = {Path(r["file"]).name: r for r in read_jsonl(output)}
    assert len(records) == 12
    for name, record in records.items():
        if name in ("broken.jpg", "too_tall.png"):
            continue
        assert "error" not in record, record
        assert len(record["predictions"]) == 3 and record["predictions"][0]["index"] in expected_top1(name), record
        assert record["latency_ms"] > 0 and record["attempts"] == 1
    # The files' bytes went to the server, whose preprocess step (decoding) named what is wrong with each bad one.
    assert records["broken.jpg"]["reason"] == "rejected" and "not a JPEG or PNG image" in records["broken.jpg"]["error"]
    assert records["too_tall.png"]["reason"] == "rejected" and "maximum side" in records["too_tall.png"]["error"]
    assert records["too_tall.png"]["attempts"] == 1  # bad input is not retried
    assert "12 inputs: 10 classified, 2 failed, 0 skipped" in out
    assert "failures: rejected 2" in out
    assert "throughput: " in out and "latency: p50 " in out and "p99 " in out
    assert "\x1b[" not in err  # --quiet (and no terminal): no progress bar


def test_raw_job_decodes_here_and_uses_the_raw_ensemble(triton_server, job, tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    before = request_counts(triton_server, RAW, ENCODED)
    code = main([str(job), "--output", str(output), "--url", triton_server.grpc_url, "--send", "raw", "--quiet"])
    out, err = capsys.readouterr()
    assert code == EXIT_SOME_FAILED, err
    assert moved(before, request_counts(triton_server, RAW, ENCODED))[ENCODED]["success"] == 0
    records = {Path(r["file"]).name: r for r in read_jsonl(output)}
    assert records["broken.jpg"]["reason"] == "unreadable"  # decoded here: the server never sees it
    assert records["too_tall.png"]["reason"] == "rejected" and "exceeds the maximum side" in records["too_tall.png"]["error"]
    assert all(r["predictions"][0]["index"] in expected_top1(name) for name, r in records.items() if name.startswith("c"))
    assert "failures: " in out and "unreadable 1" in out and "rejected 1" in out


def _successes(server, model: str = ENCODED) -> int:
    return request_counts(server, model)[model]["success"]


def test_resume_skips_answered_files_and_repairs_a_cut_line(triton_server, job, tmp_path, capsys):
    output = tmp_path / "results.csv"
    files = sorted(str(p) for p in job.glob("c*"))  # the 10 photos
    list_file = tmp_path / "inputs.txt"
    list_file.write_text("\n".join(files[:4]) + "\n")
    assert main(["--list", str(list_file), "--output", str(output), "--url", triton_server.grpc_url, "--quiet"]) == EXIT_OK
    with open(output, "a") as stream:
        stream.write(f"{files[5]},true,,,1.0")  # a job killed mid-line: no newline; must not count as answered
    list_file.write_text("# the whole job\n" + "\n".join(files) + "\n")
    capsys.readouterr()
    before = _successes(triton_server)
    code = main(["--list", str(list_file), "--output", str(output), "--resume", "--url", triton_server.grpc_url, "--quiet"])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert _successes(triton_server) - before == 6  # only the unanswered files were sent
    assert "10 inputs: 6 classified, 0 failed, 4 skipped" in out
    rows = list(csv.DictReader(output.open()))
    assert sorted(row["file"] for row in rows) == files  # each file once, the cut line gone
    assert all(row["ok"] == "true" and int(row["top1_index"]) in expected_top1(Path(row["file"]).name) for row in rows)


def test_existing_output_is_not_overwritten_without_resume(triton_server, job, tmp_path, capsys):
    output = tmp_path / "results.jsonl"
    output.write_text('{"file": "x"}\n')
    assert main([str(job / "cat0.png"), "--output", str(output), "--url", triton_server.grpc_url]) == 2
    assert "--resume" in capsys.readouterr().err and output.read_text() == '{"file": "x"}\n'


def test_timeouts_are_failures_not_retried(triton_server, job, tmp_path):
    # Raw pixels (2.7 MB) cannot reach the server within the 1 ms deadline, so it never starts the request.
    # A request cancelled while the server runs it can crash Triton 2.51's gRPC frontend (a race fixed in
    # a later release: triton-inference-server/server#7368); a small encoded file answered from the cache
    # in about a millisecond did so here.
    options = batch.BatchOptions(url=triton_server.grpc_url, timeout=0.001, send="raw")
    summary = batch.classify_files([job / "cat3.png"], options)
    assert dict(summary.failures) == {"timeout": 1} and summary.retries == 0


@pytest.mark.parametrize("send", ["encoded", "raw"])
def test_system_shared_memory_regions_are_reused_and_released(triton_server, job, send, tmp_path, capsys):
    fresh = tmp_path / "fresh.png"  # bytes and pixels the response cache has not seen: the server reads the region
    Image.fromarray(uncached(photo_at("chelsea", 300, 400))).save(fresh)
    output = tmp_path / "results.jsonl"
    before = request_counts(triton_server, RAW, ENCODED)
    code = main([str(job), str(fresh), "--output", str(output), "--url", triton_server.grpc_url, "--shared-memory",
                 "system", "--send", send, "--concurrency", "2", "--quiet"])  # fmt: skip
    assert code == EXIT_SOME_FAILED
    records = {Path(r["file"]).name: r for r in read_jsonl(output)}
    assert records["cat3.png"]["predictions"][0]["index"] in CAT_INDICES
    assert records["fresh.png"]["predictions"][0]["index"] in CAT_INDICES
    assert records["too_tall.png"]["reason"] == "rejected"
    delta = moved(before, request_counts(triton_server, RAW, ENCODED))
    assert delta[ENCODED if send == "encoded" else RAW]["inferences"] >= 1  # at least the fresh image ran the ensemble
    assert delta[RAW if send == "encoded" else ENCODED]["success"] == 0
    assert our_regions(triton_server) == []


def test_cuda_shared_memory_sends_raw_pixels():
    assert batch.BatchOptions(shared_memory="cuda").send == "raw"
    assert batch.BatchOptions(shared_memory="cuda").model == RAW
    assert (batch.BatchOptions().send, batch.BatchOptions().model) == ("encoded", ENCODED)
    with pytest.raises(ValueError, match="CUDA shared memory carries raw pixels"):
        batch.BatchOptions(shared_memory="cuda", send="encoded")


def test_regions_are_released_when_the_job_fails(triton_server, job):
    def explode(result):
        raise RuntimeError("disk full")

    options = batch.BatchOptions(url=triton_server.grpc_url, shared_memory="system", concurrency=2)
    with pytest.raises(RuntimeError, match="disk full"):  # the job's own error, not one from the cleanup
        batch.classify_files(sorted(job.glob("c*")), options, on_result=explode)
    # The requests in flight were let finish before their regions were unregistered (Triton refuses to
    # unregister a region in use): none is left, and the server is fine.
    assert our_regions(triton_server) == []
    assert triton_server.is_running()


FILES_TO_INTERRUPT = 300


def test_ctrl_c_stops_the_job_keeps_results_and_releases_regions(triton_server, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    # Distinct files (the response cache would answer copies of one file at once), and many more than are answered
    # before the signal, so that the job cannot end on its own first (CI once saw exit 0 with 81 files).
    for i in range(FILES_TO_INTERRUPT):
        Image.fromarray(uncached(skimage.data.chelsea())).save(folder / f"cat{i:03d}.png", compress_level=1)
    output = tmp_path / "results.jsonl"
    args = [str(folder), "--output", str(output), "--url", triton_server.grpc_url, "--shared-memory", "system",
            "--concurrency", "2"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "pixelserve.client.classify", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as at a terminal: a suite started in the background (`cmd &` in a script) passes SIGINT on ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 3):
        time.sleep(0.1)
    registered = our_regions(triton_server)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert len(registered) >= 1  # the job was using shared memory when interrupted
    records = read_jsonl(output)  # every line written is whole
    assert process.returncode == EXIT_INTERRUPTED, (process.returncode, len(records), err)
    assert 3 <= len(records) < FILES_TO_INTERRUPT and all(r["predictions"][0]["index"] in CAT_INDICES for r in records)
    assert our_regions(triton_server) == []
    assert triton_server.is_running()
    # One line says how many results the file holds and the command that continues the job.
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert f"interrupted: {len(records)} results written to {output};" in err, err
    resume = shlex.split(err.split("continue with: ", 1)[1])
    assert resume == ["pixelserve-classify", *args, "--resume"]


@pytest.mark.gpu
def test_cuda_shared_memory_regions_are_released(triton_server, job):
    # tritonclient's CUDA shared-memory helpers need cuda-python (`from cuda import cudart`); the device
    # image has none, and the client then says so instead of starting the job.
    try:  # an ImportError, not ModuleNotFoundError, where `cuda` is there without cudart: importorskip would fail
        import tritonclient.utils.cuda_shared_memory  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"needs cuda-python (tritonclient[cuda]): {exc}")
    options = batch.BatchOptions(url=triton_server.grpc_url, shared_memory="cuda", concurrency=2)
    summary = batch.classify_files(sorted(job.glob("c*")), options)
    assert summary.ok == 10
    status = grpcclient.InferenceServerClient(triton_server.grpc_url).get_cuda_shared_memory_status(as_json=True)
    assert not [name for name in status.get("regions", {}) if name.startswith("pixelserve-")]
    assert HAS_GPU


def test_progress_bar_on_a_terminal_only(triton_server, job, tmp_path):
    """stderr a terminal (a pseudo-terminal here): the bar shows done/total and images/s; --quiet: no bar."""
    import pty

    for quiet, expect_bar in ((False, True), (True, False)):
        primary, secondary = pty.openpty()
        output = tmp_path / f"results-{quiet}.jsonl"
        args = [sys.executable, "-m", "pixelserve.client.classify", str(job / "cat0.png"), str(job / "cat1.png"),
                "--output", str(output), "--url", triton_server.grpc_url] + (["--quiet"] if quiet else [])  # fmt: skip
        process = subprocess.run(args, stdout=subprocess.PIPE, stderr=secondary, timeout=120, text=True)
        os.close(secondary)
        seen = bytearray()
        read_terminal(primary, seen)
        os.close(primary)
        assert process.returncode == EXIT_OK
        assert ("2/2" in seen.decode(errors="replace") and b"images/s" in seen) == expect_bar, seen[-500:]
        assert "2 inputs: 2 classified" in process.stdout
